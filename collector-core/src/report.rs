//! Printing an error with its causes, each once.
//!
//! The errors of this workspace follow one rule: an error's own message never repeats
//! its source's (the source is reachable through `Error::source`). Whoever prints an
//! error for a person (a log line, a message to an IPC client, a task result) prints the
//! whole chain with [`Report`]; `anyhow`'s `{:#}` does the same for `anyhow::Error`.

use std::fmt;

/// Displays `outer: cause: root cause`.
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// `Report(e).to_string()`.
pub fn report(e: &(dyn std::error::Error + 'static)) -> String {
    Report(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open /x")]
    struct Outer {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_printed_once_in_order() {
        let e = Outer {
            source: std::io::Error::from_raw_os_error(2),
        };
        let text = report(&e);
        assert!(
            text.starts_with("cannot open /x: No such file or directory"),
            "{text}"
        );
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        // anyhow's alternate form agrees.
        assert_eq!(format!("{:#}", anyhow::Error::from(e)), text);
    }
}
