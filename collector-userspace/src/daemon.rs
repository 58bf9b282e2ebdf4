//! `collector run`: builds the collector from configuration, registers every kernel
//! source the running kernel supports and, for each domain whose programs cannot run,
//! its procfs polling stand-in (each domain falls back on its own; `status` says which
//! mode each runs in and why), keeps the process store, serves IPC, and runs until
//! SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use collector_core::ipc::{CollectorIpcServer, IpcServerConfig, IpcSink, StatusProvider};
use collector_core::{Collector, CollectorConfig, DomainMode, DomainStatus, EventSource};

use crate::ebpf::{
    source_name, KernelConfig, KernelDomain, KernelPrograms, KernelSource, SyscallHooks,
};
use crate::exec_hash::{HashService, HashServiceConfig};
use crate::hash::HashLimits;
use crate::metrics_server::MetricsSource;
use crate::procfs::{
    NetworkPollSource, NetworkSourceConfig, PerformanceEventSource, PerformanceSourceConfig,
    ProcessEventSource, ProcessSourceConfig,
};
use crate::ptable::{ProcessTable, TableConfig};
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
    /// Serve Prometheus metrics at http://HOST:PORT/metrics and health at /healthz
    /// [default: from config, `metrics_addr`, none].
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Kernel domains to collect (process, network, filesystem) [default: from config,
    /// `kernel_domains`, all].
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
    /// Export events to this NATS JetStream server (repeat for a cluster); overrides
    /// `export.nats_servers`. The rest of `[export]` still applies.
    #[arg(long = "export-nats", value_name = "URL")]
    pub export_nats: Vec<String>,
}

fn parse_domains(names: &[String]) -> anyhow::Result<Vec<KernelDomain>> {
    if names.is_empty() {
        return Ok(KernelDomain::ALL.to_vec());
    }
    let mut domains: Vec<KernelDomain> = Vec::new();
    for n in names {
        let domain = match n.to_ascii_lowercase().as_str() {
            "process" => KernelDomain::Process,
            "network" => KernelDomain::Network,
            "filesystem" | "file" => KernelDomain::Filesystem,
            other => {
                anyhow::bail!("unknown domain `{other}` (expected process, network or filesystem)")
            }
        };
        // Named twice (`file` and `filesystem`): one source, not a second that fails.
        if !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    Ok(domains)
}

/// The kernel side's settings from the configuration (validated by
/// [`KernelConfig::validate`], whose errors name the same keys).
pub fn kernel_config(config: &CollectorConfig) -> anyhow::Result<KernelConfig> {
    let syscall_hooks = match config.syscall_hooks.as_str() {
        "auto" => SyscallHooks::Auto,
        "tracepoints" => SyscallHooks::Tracepoints,
        "raw" => SyscallHooks::Raw,
        "portable" => SyscallHooks::Portable,
        other => anyhow::bail!(
            "invalid kernel setting `syscall_hooks` = {other:?}: it must be auto, tracepoints, raw or portable"
        ),
    };
    Ok(KernelConfig {
        process_ring_bytes: config.process_ring_bytes,
        process_wakeup_bytes: config.process_wakeup_bytes,
        network_ring_bytes: config.network_ring_bytes,
        network_wakeup_bytes: config.network_wakeup_bytes,
        file_ring_bytes: config.file_ring_bytes,
        file_wakeup_bytes: config.file_wakeup_bytes,
        excluded_pids: config.excluded_pids.clone(),
        excluded_comms: config.excluded_comms.clone(),
        excluded_path_prefixes: config.excluded_path_prefixes.clone(),
        syscall_hooks,
        // A reload changes them in place (costs an array lookup per event and set).
        live_exclusions: true,
        poll_interval: config.kernel_poll_interval,
        max_send_wait: config.max_backpressure_wait,
        ..KernelConfig::default()
    })
}

/// Kernel sources for the domains that attached, and why the others did not.
pub struct KernelOutcome {
    /// One source per domain whose programs attached.
    pub sources: Vec<KernelSource>,
    /// Each domain that did not, with the error.
    pub failed: Vec<(KernelDomain, String)>,
}

/// Fault injection for tests of the per-domain fallback: a comma-separated list of
/// domains (`network`, ...) whose attach is treated as failed.
const FAIL_DOMAINS_ENV: &str = "COLLECTOR_TEST_FAIL_KERNEL_DOMAINS";

/// Loads the kernel programs and makes one source per domain that attaches. A domain
/// that fails is reported in [`KernelOutcome::failed`], and the rest keep working; an
/// error only when the programs cannot load at all.
pub fn kernel_sources(
    config: KernelConfig,
    domains: &[KernelDomain],
) -> anyhow::Result<KernelOutcome> {
    let programs = KernelPrograms::load(config).context("loading the kernel programs")?;
    let injected = std::env::var(FAIL_DOMAINS_ENV).unwrap_or_default();
    let mut outcome = KernelOutcome {
        sources: Vec::new(),
        failed: Vec::new(),
    };
    for &domain in domains {
        let name = domain_name(domain);
        if injected.split(',').any(|d| d.trim() == name) {
            outcome
                .failed
                .push((domain, format!("failure injected by {FAIL_DOMAINS_ENV}")));
            continue;
        }
        match KernelSource::new(Arc::clone(&programs), domain) {
            Ok(source) => {
                tracing::info!(source = source_name(domain), hooks = ?source.stats().hooks, "kernel source ready");
                outcome.sources.push(source);
            }
            Err(e) => {
                let reason = format!("{:#}", anyhow::Error::from(e));
                tracing::error!(
                    source = source_name(domain),
                    "kernel source unavailable: {reason}"
                );
                outcome.failed.push((domain, reason));
            }
        }
    }
    Ok(outcome)
}

/// The domain's name in `kernel_domains`, `status` and metrics.
fn domain_name(domain: KernelDomain) -> &'static str {
    match domain {
        KernelDomain::Process => "process",
        KernelDomain::Network => "network",
        KernelDomain::Filesystem => "filesystem",
    }
}

/// The polling source that stands in for `domain`'s kernel programs: `procfs-process`
/// and `procfs-network`; none for the filesystem (nothing to poll).
pub fn polling_source(
    config: &CollectorConfig,
    domain: KernelDomain,
    hashes: Option<&Arc<HashService>>,
) -> anyhow::Result<Option<Box<dyn EventSource>>> {
    Ok(match domain {
        KernelDomain::Process => {
            let mut source = ProcessEventSource::new(ProcessSourceConfig {
                max_send_wait: config.max_backpressure_wait,
                ..ProcessSourceConfig::default()
            })?;
            if let Some(hashes) = hashes {
                source.set_hash_service(hashes.clone());
            }
            Some(Box::new(source))
        }
        KernelDomain::Network => Some(Box::new(NetworkPollSource::new(NetworkSourceConfig {
            max_send_wait: config.max_backpressure_wait,
            ..NetworkSourceConfig::default()
        }))),
        KernelDomain::Filesystem => None,
    })
}

/// The host and collector metrics source; it runs in every mode.
pub fn performance_source(config: &CollectorConfig) -> anyhow::Result<Box<dyn EventSource>> {
    Ok(Box::new(PerformanceEventSource::new(
        PerformanceSourceConfig {
            max_send_wait: config.max_backpressure_wait,
            ..PerformanceSourceConfig::default()
        },
    )?))
}

/// Hands what loading used back to the kernel. Parsing the kernel's BTF and the kernel
/// object takes tens of MB for a moment; the allocator keeps freed memory in its arenas
/// until a purge, and the embedded object's pages stay resident once read: without this
/// both would stay in the daemon's resident set (the allocator's until its own purge,
/// which would then run inside an allocation on the event path).
fn release_load_memory() {
    crate::ebpf::loader::release_object_pages();
    release_freed_heap();
}

/// Registers one source per wanted domain: the kernel's when it attached, else the
/// polling stand-in, else none; and says which in `status` (`domains`).
fn register_domains(
    collector: &mut Collector,
    config: &CollectorConfig,
    domains: &[KernelDomain],
    kernel: anyhow::Result<KernelOutcome>,
    process_table: &Arc<ProcessTable>,
    hashes: Option<&Arc<HashService>>,
) -> anyhow::Result<Option<Arc<KernelPrograms>>> {
    let handle = collector.handle();
    let (sources, failed) = match kernel {
        Ok(outcome) => (outcome.sources, outcome.failed),
        Err(reason) => {
            let reason = format!("{reason:#}");
            tracing::warn!("no kernel programs: {reason}");
            (
                Vec::new(),
                domains.iter().map(|&d| (d, reason.clone())).collect(),
            )
        }
    };
    let programs = sources.first().map(|s| Arc::clone(s.programs()));
    for source in sources {
        handle.set_domain_status(DomainStatus {
            domain: domain_name(source.domain()).into(),
            mode: DomainMode::Kernel,
            source: Some(source_name(source.domain()).into()),
            reason: None,
        });
        source.set_process_table(process_table.clone());
        if let (KernelDomain::Process, Some(hashes)) = (source.domain(), hashes) {
            source.set_hash_service(hashes.clone());
        }
        collector.register_batch_source(Box::new(source))?;
    }
    for (domain, reason) in failed {
        let standin = polling_source(config, domain, hashes).with_context(|| {
            format!("starting the polling fallback for {}", domain_name(domain))
        })?;
        let status = DomainStatus {
            domain: domain_name(domain).into(),
            mode: if standin.is_some() {
                DomainMode::Polling
            } else {
                DomainMode::Unavailable
            },
            source: standin.as_ref().map(|s| s.name().to_owned()),
            reason: Some(reason),
        };
        match &standin {
            Some(s) => tracing::warn!(
                domain = status.domain,
                source = s.name(),
                "falling back to polling: events between two polls can be missed"
            ),
            None => tracing::warn!(
                domain = status.domain,
                "no polling fallback for this domain: its events are not collected"
            ),
        }
        handle.set_domain_status(status);
        if let Some(source) = standin {
            collector.register(source)?;
        }
    }
    let performance = performance_source(config)?;
    handle.set_domain_status(DomainStatus {
        domain: "performance".into(),
        mode: DomainMode::Polling,
        source: Some(performance.name().to_owned()),
        reason: None,
    });
    collector.register(performance)?;
    Ok(programs)
}

/// Flags that say where things go; they win over the configuration.
fn apply_place_flags(args: &RunArgs, config: &mut CollectorConfig) {
    if let Some(socket) = &args.socket {
        config.socket_path = socket.clone();
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(addr) = &args.metrics_addr {
        config.metrics_addr = Some(addr.clone());
    }
    if !args.export_nats.is_empty() {
        config.export.nats_servers = args.export_nats.clone();
    }
}

/// Kernel flags; they win over the configuration, as `--socket` does (and so over a
/// reloaded file too).
fn apply_kernel_flags(args: &RunArgs, config: &mut CollectorConfig) {
    if !args.exclude_pids.is_empty() {
        config.excluded_pids = args.exclude_pids.clone();
    }
    if !args.exclude_comms.is_empty() {
        config.excluded_comms = args.exclude_comms.clone();
    }
    if !args.exclude_paths.is_empty() {
        config.excluded_path_prefixes = args.exclude_paths.clone();
    }
    if let Some(b) = args.process_ring_bytes {
        config.process_ring_bytes = b;
    }
    if let Some(b) = args.network_ring_bytes {
        config.network_ring_bytes = b;
    }
    if let Some(b) = args.file_ring_bytes {
        config.file_ring_bytes = b;
    }
    if !args.domains.is_empty() {
        config.kernel_domains = args.domains.clone();
    }
}

/// Runs the collector until SIGINT/SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    purge_from_timer_only();
    let mut config =
        CollectorConfig::load(args.config.as_deref()).context("loading configuration")?;
    apply_place_flags(&args, &mut config);
    config.validate().context("invalid configuration")?;
    // Checked by `KernelConfig::validate` below, which names the setting.
    apply_kernel_flags(&args, &mut config);
    let kernel = kernel_config(&config)?;
    // A bad kernel setting is the operator's mistake: say which, don't fall back to polling.
    kernel.validate().context("invalid kernel setting")?;
    let domains = parse_domains(&config.kernel_domains).context("kernel_domains")?;

    // The live process table, kept by the process events (kernel or polls); it fills
    // the `process` of network and filesystem events as the kernel sources decode them.
    let process_table = Arc::new(ProcessTable::new(TableConfig {
        max_entries: config.process_table_max_entries,
        exited_retention: config.process_exited_retention,
    }));
    // Executable digests, off the hot path; the table and the store take the ones that
    // finish after their exec event.
    let hashes = if config.compute_executable_hashes {
        let hashes = HashService::start(HashServiceConfig {
            limits: HashLimits {
                max_bytes: config.executable_hash_max_bytes,
                ..HashLimits::default()
            },
            ..HashServiceConfig::default()
        })
        .context("starting the executable hash workers")?;
        process_table.set_hash_service(hashes.clone());
        Some(hashes)
    } else {
        None
    };
    let mut collector = Collector::new(config.clone())?;
    let kernel = if args.procfs {
        Err(anyhow::anyhow!("polling requested with --procfs"))
    } else {
        kernel_sources(kernel, &domains)
    };
    let kernel_programs = register_domains(
        &mut collector,
        &config,
        &domains,
        kernel,
        &process_table,
        hashes.as_ref(),
    )?;
    // Seeded once the kernel programs are attached: a process that starts from here on is
    // in the rings, one that started before is in /proc.
    match process_table.seed_from_proc() {
        Ok(n) => tracing::info!(processes = n, "process table seeded from /proc"),
        Err(e) => tracing::warn!("process table: cannot scan /proc: {e}"),
    }
    if let Some(hashes) = &hashes {
        // What ran before the collector: hashed in the background, waiting for room in
        // the pool's queue (events keep theirs).
        let (hashes, pending) = (hashes.clone(), process_table.unhashed());
        std::thread::Builder::new()
            .name("collector-hash-seed".into())
            .spawn(move || pending.into_iter().for_each(|r| hashes.request_wait(r)))
            .context("starting the executable hash seeding")?;
    }
    collector.add_sink(process_table.clone());
    if let Some(programs) = &kernel_programs {
        programs.release_btf();
    }
    release_load_memory();
    let mut process_store = None;
    if config.enable_process_store {
        // The operator asked for a store: one that cannot open is an error, not a warning
        // the daemon runs past without its memory.
        let store_config = StoreConfig {
            history_max_records: config.process_history_max_records,
            history_max_age: config.process_history_max_age,
            ..StoreConfig::default()
        };
        let store = ProcessStore::open_in(&config.data_dir, store_config).with_context(|| {
            format!(
                "opening the process store in data_dir {} (fix the directory, or set \
                     enable_process_store = false to run without a store)",
                config.data_dir.display()
            )
        })?;
        // Processes that exited while no collector ran never got their `exit`.
        let alive = |r: &ProcessRecord| crate::procfs::read::exists(r.pid);
        match store.retain_processes(alive) {
            Ok(gone) => tracing::info!(
                path = %store.path().display(),
                gone,
                "process store ready"
            ),
            Err(e) => tracing::warn!("process store: cannot prune exited processes: {e}"),
        }
        let store = Arc::new(store);
        if let Some(hashes) = &hashes {
            store.set_hash_service(hashes.clone());
        }
        collector.add_sink(store.clone());
        process_store = Some(store);
    } else {
        tracing::info!("process store off (enable_process_store = false)");
    }
    let stdout_sink = (!args.no_stdout).then(|| {
        let sink = Arc::new(StdoutSink::new(std::io::BufWriter::new(std::io::stdout())));
        collector.add_sink(sink.clone());
        sink
    });
    let handle = collector.handle();
    let exporter = crate::export::start_exporter(&config, &handle);
    if let Some(exporter) = &exporter {
        collector.add_sink(exporter.sink());
    }
    let status_source = crate::export::StatusWithExport {
        handle: handle.clone(),
        export: exporter.as_ref().map(|e| e.status_handle()),
        processes: Some(crate::ptable::ProcessStatusHandle {
            table: process_table.clone(),
            store: process_store.clone(),
            hashes: hashes.clone(),
        }),
    };

    let server_task = if args.no_ipc {
        None
    } else {
        let sink = IpcSink::new(config.subscriber_queue_batches);
        collector.add_sink(Arc::new(sink.clone()));
        let status: Arc<dyn StatusProvider> = Arc::new(status_source.clone());
        let tasks: Arc<dyn collector_core::ipc::TaskHandler> =
            Arc::new(crate::tasks::HostTaskHandler::new().with_process_table(
                crate::process_query::ProcessQuery {
                    table: process_table.clone(),
                    store: process_store.clone(),
                    max_frame_bytes: config.max_frame_bytes,
                },
            ));
        let server = CollectorIpcServer::bind(
            IpcServerConfig::from_collector_config(&config),
            status,
            sink,
            Some(tasks),
        )
        .await
        .with_context(|| format!("serving IPC on {}", config.socket_path.display()))?;
        // The server has its own stop, given only after the collector's final flush:
        // subscribers then get every batch queued for them and an end-of-stream message.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Some((stop, task))
    };

    let metrics = Arc::new(crate::daemon_metrics::DaemonMetrics::new(
        status_source.clone(),
        kernel_programs.clone(),
    ));
    let metrics_task = args.metrics_file.clone().map(|path| {
        let metrics = Arc::clone(&metrics);
        let handle = handle.clone();
        let every = config.telemetry_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = write_metrics(&path, metrics.as_ref(), &metrics.status()) {
                    tracing::warn!(path = %path.display(), "cannot write metrics: {e}");
                }
                if handle.is_shutting_down() {
                    return;
                }
            }
        })
    });

    // Bursts (an exec storm, 10,000 new processes) leave freed event memory in the heap;
    // give it back now and then rather than carry the peak.
    let trim_task = {
        let token = handle.shutdown_token();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEAP_TRIM_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tick.tick() => {
                        let _ = tokio::task::spawn_blocking(release_freed_heap).await;
                    }
                }
            }
        })
    };

    // Held for the daemon's life: the kernel counts program run time while it is open.
    let _bpf_stats = if config.kernel_bpf_stats {
        Some(crate::ebpf::enable_bpf_stats().context("kernel_bpf_stats")?)
    } else {
        None
    };
    let metrics_server = match &config.metrics_addr {
        Some(addr) => {
            let server = crate::metrics_server::MetricsServer::bind(addr, metrics.clone())
                .await
                .context("metrics_addr")?;
            tracing::info!(addr = %server.local_addr()?, "serving metrics at /metrics, health at /healthz");
            let token = handle.shutdown_token();
            Some(tokio::spawn(
                server.run(async move { token.cancelled().await }),
            ))
        }
        None => None,
    };

    let reload_task = {
        let flags = args.clone();
        crate::reload::spawn(
            args.config.clone(),
            config.clone(),
            // The command line wins over a reloaded file too.
            move |c| {
                apply_place_flags(&flags, c);
                apply_kernel_flags(&flags, c);
            },
            kernel_programs.clone(),
            handle.shutdown_token(),
        )
        .context("installing the SIGHUP handler")?
    };

    let summary = collector.run().await?;
    reload_task.abort();
    trim_task.abort();
    if let Some(task) = metrics_server {
        let _ = task.await;
    }
    let mut final_status = summary.status.clone();
    final_status.export = status_source.export.as_ref().map(|e| e.status());
    if let Some(task) = metrics_task {
        task.abort();
        if let Some(path) = &args.metrics_file {
            write_metrics(path, metrics.as_ref(), &final_status)?;
        }
    }
    if let Some(exporter) = exporter {
        // The shutdown token stopped it; what it did not publish stays in the spool.
        exporter.join().await;
        if let Some(export) = &final_status.export {
            tracing::info!(
                published = export.published,
                acked = export.acked,
                left_in_spool = export.spool_events,
                "fleet export stopped"
            );
        }
    }
    if let Some((stop, task)) = server_task {
        let _ = stop.send(());
        let _ = task.await;
    }
    if let Some(sink) = stdout_sink {
        // Every batch is in the writer's queue; wait until it is written and flushed.
        sink.finish();
    }
    let c = &summary.status.counters;
    tracing::info!(
        received = c.events_received,
        dropped = ?c.dropped,
        "collector stopped"
    );
    Ok(())
}

/// How often the daemon hands freed heap back (a forced purge: well under a millisecond
/// on a quiet heap).
const HEAP_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// mimalloc's purge delay while the daemon runs, in ms (arenas wait ten times this):
/// longer than [`HEAP_TRIM_INTERVAL`], so the timer's forced purge comes first.
const ALLOCATOR_PURGE_DELAY_MS: std::os::raw::c_long = 3_000;

/// `mi_option_purge_delay` in mimalloc v3's `mimalloc.h` (the Rust bindings of
/// libmimalloc-sys 0.1.49 do not name it); a test checks it against its default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Leaves purging (handing freed pages back to the kernel) to the daemon's timer. Left
/// to itself, mimalloc purges an arena from inside whichever allocation finds its delay
/// expired: measured at 80 execs/s, an exec's `malloc` on the event path spent 6-7.5 ms
/// in `madvise`, once per run, purging what loading had freed.
fn purge_from_timer_only() {
    // SAFETY: sets a process-wide allocator option; mimalloc reads options atomically.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS);
    }
}

/// Hands freed heap back to the kernel, now, on the calling thread (the daemon calls it
/// on the blocking pool, never on the event path). Parsing the kernel's BTF and the
/// programs' object allocates tens of MB that are freed once the programs are attached;
/// a storm's batches, more. mimalloc's forced collect purges every freed arena range
/// whatever its delay; glibc's trim covers what C code allocated from its own heap.
pub fn release_freed_heap() {
    // SAFETY: mi_collect only returns free pages to the kernel; no live pointer changes.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; no pointer changes.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Writes the metrics atomically (temp file + rename), so a scraper never reads half.
fn write_metrics(
    path: &std::path::Path,
    metrics: &dyn MetricsSource,
    status: &collector_core::StatusSnapshot,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, metrics.render(status))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector_core::SourceCaps;

    /// The option index the daemon sets is mimalloc's purge delay: the one option whose
    /// v3 default is 1,000 ms (the arena multiplier's is 10, the OOM retry's 400). Nothing
    /// else in this test binary sets it.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads and restores a process-wide allocator option.
        unsafe {
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1_000);
            purge_from_timer_only();
            assert_eq!(
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                ALLOCATOR_PURGE_DELAY_MS
            );
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1_000);
        }
        assert!(ALLOCATOR_PURGE_DELAY_MS * 10 > HEAP_TRIM_INTERVAL.as_millis() as i64 * 2);
        // A forced collect on a heap in use changes nothing it holds.
        let held = vec![7u8; 1 << 20];
        release_freed_heap();
        assert!(held.iter().all(|&b| b == 7));
    }

    #[test]
    fn domains_parse_or_explain() {
        assert_eq!(parse_domains(&[]).unwrap().len(), 3);
        assert_eq!(
            parse_domains(&["Network".into()]).unwrap(),
            [KernelDomain::Network]
        );
        let err = parse_domains(&["disk".into()]).unwrap_err().to_string();
        assert!(err.contains("disk") && err.contains("expected"), "{err}");
        // One domain named twice is one source.
        assert_eq!(
            parse_domains(&["file".into(), "network".into(), "filesystem".into()]).unwrap(),
            [KernelDomain::Filesystem, KernelDomain::Network]
        );
    }

    #[test]
    fn polling_stands_in_for_process_and_network_not_filesystem() {
        let config = CollectorConfig::default();
        let name = |domain| {
            polling_source(&config, domain, None)
                .unwrap()
                .map(|s| s.name())
        };
        assert_eq!(name(KernelDomain::Process), Some("procfs-process"));
        assert_eq!(name(KernelDomain::Network), Some("procfs-network"));
        assert_eq!(name(KernelDomain::Filesystem), None);
        let sources = KernelDomain::ALL
            .into_iter()
            .filter_map(|d| polling_source(&config, d, None).unwrap())
            .chain([performance_source(&config).unwrap()]);
        for source in sources {
            let caps = source.capabilities();
            assert!(
                !caps.contains(SourceCaps::KERNEL_LEVEL),
                "{}",
                source.name()
            );
            // Polling is REALTIME only within the threshold (procfs-process, 1 s <= 10 s).
            assert_eq!(
                caps.contains(SourceCaps::REALTIME),
                source.name() == "procfs-process"
            );
        }
    }

    /// The configuration's kernel defaults are the kernel side's own defaults.
    #[test]
    fn kernel_settings_from_the_default_configuration_are_the_kernel_defaults() {
        let from_config = kernel_config(&CollectorConfig::default()).unwrap();
        let own = KernelConfig::default();
        assert_eq!(from_config.process_ring_bytes, own.process_ring_bytes);
        assert_eq!(from_config.process_wakeup_bytes, own.process_wakeup_bytes);
        assert_eq!(from_config.network_ring_bytes, own.network_ring_bytes);
        assert_eq!(from_config.network_wakeup_bytes, own.network_wakeup_bytes);
        assert_eq!(from_config.file_ring_bytes, own.file_ring_bytes);
        assert_eq!(from_config.file_wakeup_bytes, own.file_wakeup_bytes);
        assert_eq!(from_config.syscall_hooks, own.syscall_hooks);
        assert_eq!(from_config.poll_interval, own.poll_interval);
        let bad = CollectorConfig {
            syscall_hooks: "fast".into(),
            ..CollectorConfig::default()
        };
        let err = kernel_config(&bad).unwrap_err().to_string();
        assert!(err.contains("syscall_hooks"), "{err}");
    }
}
