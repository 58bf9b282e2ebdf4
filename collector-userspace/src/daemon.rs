//! `collector run`: builds the collector from configuration, registers every kernel
//! source the running kernel supports (or, when none can run, the procfs polling
//! sources), keeps the process store, serves IPC, and runs until SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use collector_core::ipc::{CollectorIpcServer, IpcServerConfig, IpcSink, StatusProvider};
use collector_core::{Collector, CollectorConfig, EventSource};

use crate::ebpf::{source_name, KernelConfig, KernelDomain, KernelPrograms, KernelSource};
use crate::procfs::{
    PerformanceEventSource, PerformanceSourceConfig, ProcessEventSource, ProcessSourceConfig,
};
use crate::stdout_sink::StdoutSink;
use crate::store::{ProcessRecord, ProcessStore, StoreConfig};

/// Options of `collector run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Configuration file, layered over /etc/collector/config.toml and the user's file
    /// (environment `COLLECTOR_<FIELD>` still overrides it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// IPC socket path [default: from config, /run/collector/collector.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Directory for the collector's data [default: from config, /var/lib/collector].
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,
    /// Do not print events on stdout (they still stream over IPC).
    #[arg(long)]
    pub no_stdout: bool,
    /// Do not serve IPC.
    #[arg(long)]
    pub no_ipc: bool,
    /// Keep Prometheus metrics in this file, rewritten every `telemetry_interval`
    /// (for node_exporter's textfile collector).
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Kernel domains to collect (process, network, filesystem); all by default.
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domains: Vec<String>,
    /// Exclude these task names (comm) in the kernel.
    #[arg(long = "exclude-comm", value_name = "COMM")]
    pub exclude_comms: Vec<String>,
    /// Drop file events under this path prefix in the kernel (e.g. /proc/, /sys/).
    #[arg(long = "exclude-path", value_name = "PREFIX")]
    pub exclude_paths: Vec<String>,
    /// Exclude these process ids in the kernel.
    #[arg(long = "exclude-pid", value_name = "PID")]
    pub exclude_pids: Vec<u32>,
    /// Process ring buffer size in bytes (power of two, >= page size).
    #[arg(long, value_name = "BYTES")]
    pub process_ring_bytes: Option<u32>,
    /// Network ring buffer size in bytes.
    #[arg(long, value_name = "BYTES")]
    pub network_ring_bytes: Option<u32>,
    /// Filesystem ring buffer size in bytes.
    #[arg(long, value_name = "BYTES")]
    pub file_ring_bytes: Option<u32>,
    /// Poll /proc instead of loading the kernel programs (the automatic fallback when
    /// they cannot load). Short-lived processes can be missed.
    #[arg(long)]
    pub procfs: bool,
}

fn parse_domains(names: &[String]) -> anyhow::Result<Vec<KernelDomain>> {
    if names.is_empty() {
        return Ok(KernelDomain::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| match n.to_ascii_lowercase().as_str() {
            "process" => Ok(KernelDomain::Process),
            "network" => Ok(KernelDomain::Network),
            "filesystem" | "file" => Ok(KernelDomain::Filesystem),
            other => {
                anyhow::bail!("unknown domain `{other}` (expected process, network or filesystem)")
            }
        })
        .collect()
}

/// Loads the kernel programs and makes one source per domain that attaches. Domains
/// that fail are logged with the reason and left out; the rest keep working.
pub fn kernel_sources(
    config: KernelConfig,
    domains: &[KernelDomain],
) -> anyhow::Result<Vec<KernelSource>> {
    let programs = KernelPrograms::load(config).context("loading the kernel programs")?;
    let mut sources = Vec::new();
    for &domain in domains {
        match KernelSource::new(Arc::clone(&programs), domain) {
            Ok(source) => {
                tracing::info!(source = source_name(domain), hooks = ?source.stats().hooks, "kernel source ready");
                sources.push(source);
            }
            Err(e) => tracing::error!(
                source = source_name(domain),
                "kernel source unavailable: {:#}",
                anyhow::Error::from(e)
            ),
        }
    }
    if sources.is_empty() {
        anyhow::bail!("no kernel source could be attached (see the errors above)");
    }
    Ok(sources)
}

/// The procfs polling sources that stand in for the kernel ones: `procfs-process` when
/// the process domain is wanted, and `procfs-performance`. Network and filesystem
/// events have no polling fallback.
pub fn procfs_sources(
    config: &CollectorConfig,
    domains: &[KernelDomain],
) -> anyhow::Result<Vec<Box<dyn EventSource>>> {
    let mut sources: Vec<Box<dyn EventSource>> = Vec::new();
    if domains.contains(&KernelDomain::Process) {
        let process = ProcessEventSource::new(ProcessSourceConfig {
            max_send_wait: config.max_backpressure_wait,
            ..ProcessSourceConfig::default()
        })?;
        sources.push(Box::new(process));
    }
    let unavailable: Vec<&str> = domains
        .iter()
        .filter(|&&d| d != KernelDomain::Process)
        .map(|&d| source_name(d))
        .collect();
    if !unavailable.is_empty() {
        tracing::warn!(
            ?unavailable,
            "no procfs fallback for network and filesystem events: they are not collected"
        );
    }
    sources.push(Box::new(PerformanceEventSource::new(
        PerformanceSourceConfig {
            max_send_wait: config.max_backpressure_wait,
            ..PerformanceSourceConfig::default()
        },
    )?));
    Ok(sources)
}

/// Runs the collector until SIGINT/SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config =
        CollectorConfig::load(args.config.as_deref()).context("loading configuration")?;
    if let Some(socket) = &args.socket {
        config.socket_path = socket.clone();
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    config.validate().context("invalid configuration")?;

    let mut kernel = KernelConfig {
        excluded_pids: args.exclude_pids.clone(),
        excluded_comms: args.exclude_comms.clone(),
        excluded_path_prefixes: args.exclude_paths.clone(),
        max_send_wait: config.max_backpressure_wait,
        ..KernelConfig::default()
    };
    if let Some(b) = args.process_ring_bytes {
        kernel.process_ring_bytes = b;
    }
    if let Some(b) = args.network_ring_bytes {
        kernel.network_ring_bytes = b;
    }
    if let Some(b) = args.file_ring_bytes {
        kernel.file_ring_bytes = b;
    }
    let domains = parse_domains(&args.domains)?;

    let mut collector = Collector::new(config.clone())?;
    let kernel = if args.procfs {
        Err(anyhow::anyhow!("requested with --procfs"))
    } else {
        kernel_sources(kernel, &domains)
    };
    match kernel {
        Ok(sources) => {
            for source in sources {
                collector.register(Box::new(source))?;
            }
        }
        Err(reason) => {
            tracing::warn!(
                "falling back to procfs polling: {reason:#}; exec events of short-lived \
                 processes can be missed"
            );
            for source in
                procfs_sources(&config, &domains).context("starting the procfs polling fallback")?
            {
                collector.register(source)?;
            }
        }
    }
    match ProcessStore::open_in(&config.data_dir, StoreConfig::default()) {
        Ok(store) => {
            // Processes that exited while no collector ran never got their `exit`.
            let alive = |r: &ProcessRecord| Path::new("/proc").join(r.pid.to_string()).exists();
            match store.retain_processes(alive) {
                Ok(gone) => tracing::info!(
                    path = %store.path().display(),
                    gone,
                    "process store ready"
                ),
                Err(e) => tracing::warn!("process store: cannot prune exited processes: {e}"),
            }
            collector.add_sink(Arc::new(store));
        }
        Err(e) => tracing::warn!("process store disabled: {e}"),
    }
    if !args.no_stdout {
        collector.add_sink(Arc::new(StdoutSink::new(std::io::BufWriter::new(
            std::io::stdout(),
        ))));
    }
    let handle = collector.handle();

    let server_task = if args.no_ipc {
        None
    } else {
        let sink = IpcSink::new(config.subscriber_queue_batches);
        collector.add_sink(Arc::new(sink.clone()));
        let status: Arc<dyn StatusProvider> = Arc::new(handle.clone());
        let tasks: Arc<dyn collector_core::ipc::TaskHandler> =
            Arc::new(crate::tasks::HostTaskHandler::new());
        let server = CollectorIpcServer::bind(
            IpcServerConfig::from_collector_config(&config),
            status,
            sink,
            Some(tasks),
        )
        .await
        .with_context(|| format!("serving IPC on {}", config.socket_path.display()))?;
        let token = handle.shutdown_token();
        Some(tokio::spawn(
            server.run(async move { token.cancelled().await }),
        ))
    };

    let metrics_task = args.metrics_file.clone().map(|path| {
        let handle = handle.clone();
        let every = config.telemetry_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = write_metrics(&path, &handle.status()) {
                    tracing::warn!(path = %path.display(), "cannot write metrics: {e}");
                }
                if handle.is_shutting_down() {
                    return;
                }
            }
        })
    });

    let summary = collector.run().await?;
    if let Some(task) = metrics_task {
        task.abort();
        if let Some(path) = &args.metrics_file {
            write_metrics(path, &summary.status)?;
        }
    }
    if let Some(task) = server_task {
        let _ = task.await;
    }
    let c = &summary.status.counters;
    tracing::info!(
        received = c.events_received,
        dropped = ?c.dropped,
        "collector stopped"
    );
    Ok(())
}

/// Writes the metrics atomically (temp file + rename), so a scraper never reads half.
fn write_metrics(
    path: &std::path::Path,
    status: &collector_core::StatusSnapshot,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, collector_core::metrics::render_prometheus(status))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector_core::SourceCaps;

    #[test]
    fn domains_parse_or_explain() {
        assert_eq!(parse_domains(&[]).unwrap().len(), 3);
        assert_eq!(
            parse_domains(&["Network".into()]).unwrap(),
            [KernelDomain::Network]
        );
        let err = parse_domains(&["disk".into()]).unwrap_err().to_string();
        assert!(err.contains("disk") && err.contains("expected"), "{err}");
    }

    #[test]
    fn procfs_fallback_covers_processes_and_host_metrics_only() {
        let config = CollectorConfig::default();
        let names = |domains: &[KernelDomain]| -> Vec<&'static str> {
            procfs_sources(&config, domains)
                .unwrap()
                .iter()
                .map(|s| s.name())
                .collect()
        };
        assert_eq!(
            names(&KernelDomain::ALL),
            ["procfs-process", "procfs-performance"]
        );
        assert_eq!(names(&[KernelDomain::Network]), ["procfs-performance"]);
        for source in procfs_sources(&config, &KernelDomain::ALL).unwrap() {
            let caps = source.capabilities();
            assert!(!caps.contains(SourceCaps::KERNEL_LEVEL));
            // Polling is REALTIME only within the threshold (procfs-process, 1 s <= 10 s).
            assert_eq!(
                caps.contains(SourceCaps::REALTIME),
                source.name() == "procfs-process"
            );
        }
    }
}
