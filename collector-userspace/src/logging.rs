//! The daemon's logs: stderr (the journal under systemd), as text or one JSON object per
//! line, with a level that a configuration reload (SIGHUP) can change while running.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people (colours on a terminal).
    Text,
    /// One JSON object per line, for the journal and log shippers.
    Json,
}

/// The filter that [`set_debug`] swaps, and whether `COLLECTOR_LOG` pinned it.
static FILTER: OnceLock<(reload::Handle<EnvFilter, Registry>, bool)> = OnceLock::new();

fn level(debug: bool) -> &'static str {
    if debug {
        "debug"
    } else {
        "info"
    }
}

/// Installs the global subscriber. `COLLECTOR_LOG` (an `EnvFilter`) wins over `debug`
/// (the configuration's `enable_debug_logging`), now and on reloads.
pub fn init(format: LogFormat, debug: bool) {
    let from_env = EnvFilter::try_from_env("COLLECTOR_LOG").ok();
    let pinned = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(level(debug)));
    let (filter, handle) = reload::Layer::new(filter);
    let _ = FILTER.set((handle, pinned));
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => registry
            .with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .init(),
        LogFormat::Json => registry.with(fmt.json().with_current_span(false)).init(),
    }
}

/// Applies a reloaded `enable_debug_logging`. Returns false when nothing changed because
/// `COLLECTOR_LOG` pins the filter or logging was not initialised here.
pub fn set_debug(debug: bool) -> bool {
    match FILTER.get() {
        Some((handle, false)) => handle.reload(EnvFilter::new(level(debug))).is_ok(),
        _ => false,
    }
}
