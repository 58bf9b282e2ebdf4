//! Fleet export glue for the `collector` binary: starting the exporter from the
//! configuration, putting its figures into the status, and `collector consume`.

use std::time::Duration;

use collector_core::ipc::StatusProvider;
use collector_core::{CollectorConfig, CollectorHandle, SourceCaps, StatusSnapshot};
use collector_export::{ExportStatusHandle, Exporter};

/// Starts the exporter when `[export]` names servers. A spool that cannot be opened
/// disables export (logged); collection goes on locally either way.
pub fn start_exporter(config: &CollectorConfig, handle: &CollectorHandle) -> Option<Exporter> {
    if !config.export.enabled() {
        return None;
    }
    match Exporter::start(&config.export, &config.data_dir, handle.shutdown_token()) {
        Ok(exporter) => {
            tracing::info!(
                servers = ?config.export.nats_servers,
                stream = %config.export.stream,
                spool = %collector_export::spool_dir(&config.data_dir).display(),
                "fleet export to NATS JetStream"
            );
            Some(exporter)
        }
        Err(e) => {
            tracing::error!("fleet export disabled: {}", collector_core::Report(&e));
            None
        }
    }
}

/// The collector's status with the exporter's figures in `export`.
#[derive(Clone)]
pub struct StatusWithExport {
    /// The collector.
    pub handle: CollectorHandle,
    /// The exporter, when one runs.
    pub export: Option<ExportStatusHandle>,
    /// The process table and its store.
    pub processes: Option<crate::ptable::ProcessStatusHandle>,
}

impl StatusWithExport {
    /// The snapshot.
    pub fn snapshot(&self) -> StatusSnapshot {
        let mut status = self.handle.status();
        status.export = self.export.as_ref().map(ExportStatusHandle::status);
        status.processes = self.processes.as_ref().map(|p| p.status());
        status
    }
}

impl StatusProvider for StatusWithExport {
    fn status(&self) -> StatusSnapshot {
        self.snapshot()
    }

    fn watch_capabilities(&self) -> tokio::sync::watch::Receiver<SourceCaps> {
        self.handle.watch_capabilities()
    }

    fn set_subscribers(&self, subscribers: u64) {
        self.handle.set_subscribers(subscribers);
    }
}

/// Options of `collector consume`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumeArgs {
    /// NATS server URL (repeat for a cluster).
    #[arg(long = "nats", value_name = "URL", required = true)]
    pub servers: Vec<String>,
    /// Subject filter.
    #[arg(long, default_value = "collector.>")]
    pub subject: String,
    /// JetStream stream.
    #[arg(long, default_value = "COLLECTOR")]
    pub stream: String,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Stop when no event arrived for this long (e.g. `5s`); by default wait for more.
    #[arg(long, value_name = "DURATION", value_parser = humantime_duration)]
    pub idle_exit: Option<Duration>,
    /// A NATS `.creds` file (decentralized JWT authentication) to log in with.
    #[arg(long = "creds", value_name = "FILE")]
    pub creds_file: Option<std::path::PathBuf>,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 5s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("`{s}` is not a duration like 500ms, 5s or 2m")),
    }
}

/// `collector consume`: prints the stream's events as JSON lines on stdout.
pub async fn run_consume(args: &ConsumeArgs) -> anyhow::Result<()> {
    let opts = collector_export::consume::ConsumeOptions {
        servers: args.servers.clone(),
        subject: args.subject.clone(),
        stream: args.stream.clone(),
        limit: args.limit,
        idle_exit: args.idle_exit,
        creds_file: args.creds_file.clone(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let summary = collector_export::consume::consume(&opts, &mut out).await?;
    if summary.undecodable > 0 {
        tracing::warn!(
            skipped = summary.undecodable,
            "messages that were not collector events were skipped"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_or_explain() {
        assert_eq!(humantime_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(
            humantime_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(humantime_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(humantime_duration("soon").unwrap_err().contains("500ms"));
    }

    #[test]
    fn export_is_off_without_servers() {
        let config = CollectorConfig::default();
        let collector = collector_core::Collector::new(config.clone()).unwrap();
        assert!(start_exporter(&config, &collector.handle()).is_none());
    }
}
