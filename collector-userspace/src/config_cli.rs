//! `collector config`: the effective configuration, key by key, with where each value
//! came from (default, a file, or an environment variable).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use collector_core::CollectorConfig;

/// Arguments of `collector config`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file layered over the system and user files, as `collector run --config`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON (one array of {key, value, origin}) instead of annotated TOML.
    #[arg(long)]
    pub json: bool,
}

/// Prints the effective configuration; an invalid one is an error naming the key.
pub fn run_config(args: &ConfigArgs) -> anyhow::Result<()> {
    let figment = CollectorConfig::layered_figment(args.config.as_deref())
        .context("loading configuration")?;
    let rows = CollectorConfig::explain(&figment).context("invalid configuration")?;
    match print(&rows, args.json) {
        // `collector config | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn print(rows: &[collector_core::config::ConfigValueSource], json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, rows)?;
        writeln!(out)?;
    } else {
        let width = rows
            .iter()
            .map(|r| r.key.len() + r.value.len() + 3)
            .max()
            .unwrap_or(0);
        for row in rows {
            let line = format!("{} = {}", row.key, row.value);
            writeln!(out, "{line:<width$}  # {}", row.origin)?;
        }
    }
    out.flush()
}
