//! `procfs-process`: process lifecycle events by polling the process table.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use collector_core::event::SourceName;
use collector_core::pressure::{BackpressurePolicy, SendOutcome};
use collector_core::{CollectionEvent, EventSource, SourceCaps, SourceStats};
use tokio::sync::mpsc;

use super::diff::ProcessDiff;
use super::scan::{ProcessSnapshot, ProcessTable, ProcfsProcessTable, ScanError};
use super::{process_event, wait_or_stop};
use crate::exec_hash::{HashService, HashServiceConfig};
use crate::hash::{FileKey, HashAlgorithm, HashLimits};
use crate::store::ProcessStore;
use collector_core::event::ProcessEventKind;
use collector_core::{Delivery, EventBatch, EventSink};

/// Name of the polling process source.
pub const PROCESS_SOURCE_NAME: &str = "procfs-process";

/// Scans that fail in a row before the source reports itself unhealthy.
const UNHEALTHY_AFTER_FAILED_SCANS: u64 = 3;

/// How [`ProcessEventSource`] polls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSourceConfig {
    /// Time between two scans of the process table (the collection interval).
    /// Processes that start and exit within one interval are never seen.
    pub poll_interval: Duration,
    /// Longest wait for room in the collector's queue before an event is dropped
    /// (and counted as `backpressure`).
    pub max_send_wait: Duration,
    /// The source advertises `REALTIME` when `poll_interval` is at most this long.
    pub realtime_threshold: Duration,
    /// Fill `executable_hash` / `hash_algorithm` of `snapshot` and `exec` events.
    pub compute_executable_hashes: bool,
    /// The algorithm of those hashes.
    pub hash_algorithm: HashAlgorithm,
    /// Size cap and deadline of one executable hash.
    pub hash_limits: HashLimits,
    /// At most this many processes are tracked per scan (`None`: all). Processes
    /// already tracked keep their place; the rest are counted as `over_scan_limit`.
    pub max_processes_per_scan: Option<usize>,
    /// Command line, uid and gid in events; off, events carry only pid, ppid, name,
    /// executable path and start time.
    pub enhanced_metadata: bool,
}

/// Default `realtime_threshold`: a poll every 10 s or more often counts as real time.
pub const DEFAULT_REALTIME_THRESHOLD: Duration = Duration::from_secs(10);

impl Default for ProcessSourceConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            max_send_wait: Duration::from_millis(500),
            realtime_threshold: DEFAULT_REALTIME_THRESHOLD,
            compute_executable_hashes: false,
            hash_algorithm: HashAlgorithm::Sha256,
            hash_limits: HashLimits::default(),
            max_processes_per_scan: None,
            enhanced_metadata: true,
        }
    }
}

impl ProcessSourceConfig {
    /// The capabilities a source with this config advertises: `REALTIME` only when the
    /// interval is within `realtime_threshold`.
    pub fn capabilities(&self) -> SourceCaps {
        let caps = SourceCaps::PROCESS | SourceCaps::SYSTEM_WIDE;
        if self.poll_interval <= self.realtime_threshold {
            caps | SourceCaps::REALTIME
        } else {
            caps
        }
    }
}

/// Counters of the polling loop.
#[derive(Debug, Default)]
pub struct PollStats {
    /// Scans completed.
    pub scans: AtomicU64,
    /// Scans that failed (the table was left as it was).
    pub failed_scans: AtomicU64,
    /// Failed scans since the last good one.
    pub failed_in_a_row: AtomicU64,
    /// Events handed to the collector.
    pub delivered: AtomicU64,
    /// Events dropped after waiting `max_send_wait` for room.
    pub backpressure_drops: AtomicU64,
    /// Events dropped because the collector's queue was closed.
    pub closed_drops: AtomicU64,
    /// Processes left untracked by `max_processes_per_scan` (summed over scans).
    pub over_scan_limit: AtomicU64,
    /// Events handed to the database.
    pub stored: AtomicU64,
    /// Events the database refused (its queue full).
    pub store_drops: AtomicU64,
}

/// Process events (`snapshot`, `exec`, `exit`) from diffs of successive process table
/// scans: the fallback where the kernel programs cannot run. Needs no privileges, but
/// without root the executable of other users' processes is unknown, and anything that
/// lives shorter than `poll_interval` can be missed.
pub struct ProcessEventSource {
    config: ProcessSourceConfig,
    table: Mutex<Option<Box<dyn ProcessTable>>>,
    stats: Arc<PollStats>,
    stop: Arc<super::StopSignal>,
    db: Option<Arc<ProcessStore>>,
    hashes: Option<Arc<HashService>>,
    /// The interval in use, in nanoseconds: changeable at runtime, and with it the
    /// capabilities (the collector re-reads them).
    interval_nanos: Arc<AtomicU64>,
}

/// Changes a running [`ProcessEventSource`]'s interval (it is boxed into the collector,
/// so this is how its owner keeps a hand on it).
#[derive(Debug, Clone)]
pub struct IntervalHandle(Arc<AtomicU64>);

impl IntervalHandle {
    /// Changes the collection interval from the next scan on; `REALTIME` follows the
    /// threshold rule, and the collector publishes the change to IPC clients.
    pub fn set(&self, interval: Duration) {
        let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        self.0.store(nanos.max(1), Ordering::Relaxed);
    }
}

impl ProcessEventSource {
    /// A source over the host's process table.
    pub fn new(config: ProcessSourceConfig) -> Result<Self, ScanError> {
        Ok(Self::with_table(config, ProcfsProcessTable::new()?))
    }

    /// The design's form: a source over the host's process table that also writes
    /// every event it emits to `db_manager`, the process store.
    pub fn with_config(
        db_manager: Arc<ProcessStore>,
        process_config: ProcessSourceConfig,
    ) -> Result<Self, ScanError> {
        let mut source = Self::new(process_config)?;
        if let Some(hashes) = &source.hashes {
            db_manager.set_hash_service(hashes.clone());
        }
        source.db = Some(db_manager);
        Ok(source)
    }

    /// A source over any [`ProcessTable`] (tests use scripted ones).
    pub fn with_table(config: ProcessSourceConfig, table: impl ProcessTable) -> Self {
        Self {
            config,
            table: Mutex::new(Some(Box::new(table))),
            stats: Arc::default(),
            stop: Arc::default(),
            interval_nanos: Arc::new(AtomicU64::new(
                u64::try_from(config.poll_interval.as_nanos()).unwrap_or(u64::MAX),
            )),
            db: None,
            hashes: config
                .compute_executable_hashes
                .then(|| {
                    HashService::start(HashServiceConfig {
                        limits: config.hash_limits,
                        ..HashServiceConfig::default()
                    })
                    .map_err(|e| {
                        tracing::error!(
                            source = PROCESS_SOURCE_NAME,
                            "cannot start the executable hash workers; events carry no hash: {e}"
                        )
                    })
                    .ok()
                })
                .flatten(),
        }
    }

    /// The collection interval in use.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos.load(Ordering::Relaxed))
    }

    /// A handle that changes the interval while the source runs.
    pub fn interval_handle(&self) -> IntervalHandle {
        IntervalHandle(self.interval_nanos.clone())
    }

    /// Fills exec and snapshot events' digests from `hashes` (the daemon's service,
    /// shared with its process table and store) instead of a service of its own.
    pub fn set_hash_service(&mut self, hashes: Arc<HashService>) {
        self.hashes = Some(hashes);
    }

    /// The executable hash service (with `compute_executable_hashes`): the daemon hands
    /// it to the process table, so digests that finish after their event reach it.
    pub fn hash_service(&self) -> Option<&Arc<HashService>> {
        self.hashes.as_ref()
    }

    /// The polling loop's counters.
    pub fn poll_stats(&self) -> &PollStats {
        &self.stats
    }
}

impl ProcessEventSource {
    /// Applies `max_processes_per_scan`: processes tracked by the last scan keep their
    /// place (so none is reported as exited just because others appeared), then new
    /// ones by pid.
    fn limit_rows(
        &self,
        mut rows: Vec<ProcessSnapshot>,
        diff: &ProcessDiff,
    ) -> Vec<ProcessSnapshot> {
        let Some(max) = self.config.max_processes_per_scan else {
            return rows;
        };
        if rows.len() <= max {
            return rows;
        }
        rows.sort_by_key(|r| (!diff.contains(r.pid), r.pid));
        let over = rows.len() - max;
        rows.truncate(max);
        self.stats
            .over_scan_limit
            .fetch_add(over as u64, Ordering::Relaxed);
        rows
    }
}

#[async_trait]
impl EventSource for ProcessEventSource {
    fn name(&self) -> &'static str {
        PROCESS_SOURCE_NAME
    }

    fn capabilities(&self) -> SourceCaps {
        // Polling is never KERNEL_LEVEL; REALTIME by the interval (see the config).
        ProcessSourceConfig {
            poll_interval: self.poll_interval(),
            ..self.config
        }
        .capabilities()
    }

    async fn start(
        &self,
        tx: mpsc::Sender<CollectionEvent>,
        shutdown_signal: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        let mut table = self
            .table
            .lock()
            .expect("table lock poisoned")
            .take()
            .ok_or_else(|| anyhow::anyhow!("{PROCESS_SOURCE_NAME} was already started"))?;
        let source: SourceName = PROCESS_SOURCE_NAME.into();
        // A scan's events go out as fast as the queue takes them; when it is full,
        // each waits up to `max_send_wait`, then is dropped and counted. (`send` looks
        // only at `max_wait`; the threshold is for sources that shed earlier.)
        let policy = BackpressurePolicy {
            threshold: 1.0,
            max_wait: self.config.max_send_wait,
        };
        let stats = &self.stats;
        let mut diff = ProcessDiff::new();
        let mut next_scan = tokio::time::Instant::now();

        'poll: while wait_or_stop(next_scan, &shutdown_signal, &self.stop).await {
            next_scan += self.poll_interval();
            // The scan reads /proc synchronously: keep it off the runtime's workers.
            let (returned, scan) = tokio::task::spawn_blocking(move || {
                let scan = table.scan();
                (table, scan)
            })
            .await
            .map_err(|source| ScanError::Task { source })?;
            table = returned;
            let scan = scan.map(|rows| self.limit_rows(rows, &diff));
            let rows = match scan {
                Ok(rows) => rows,
                Err(e) => {
                    let failed = stats.failed_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                    stats.failed_scans.fetch_add(1, Ordering::Relaxed);
                    if failed == 1 {
                        tracing::warn!(
                            source = PROCESS_SOURCE_NAME,
                            "process table scan failed: {e}"
                        );
                    }
                    continue;
                }
            };
            stats.failed_in_a_row.store(0, Ordering::Relaxed);
            stats.scans.fetch_add(1, Ordering::Relaxed);
            let mut events = diff.apply(rows, Utc::now(), &source);
            if !self.config.enhanced_metadata {
                for ev in &mut events {
                    ev.command_line.clear();
                    ev.uid = None;
                    ev.gid = None;
                }
            }
            if let Some(hashes) = &self.hashes {
                // Never waits: a cached version's digest goes on the event, else the
                // pool hashes it and the digest follows in the table and the store.
                // (stat of `/proc/<pid>/exe` is the running image's; no read.)
                for ev in &mut events {
                    if matches!(ev.kind, ProcessEventKind::Exit) {
                        continue;
                    }
                    if let Ok(meta) = std::fs::metadata(format!("/proc/{}/exe", ev.pid)) {
                        hashes.fill(ev, Some(FileKey::of(&meta)), None);
                    }
                }
            }
            if let Some(db) = &self.db {
                let batch: EventBatch = events.iter().cloned().map(process_event).collect();
                let n = batch.len() as u64;
                match db.deliver(&batch) {
                    Delivery::Accepted => stats.stored.fetch_add(n, Ordering::Relaxed),
                    _ => stats.store_drops.fetch_add(n, Ordering::Relaxed),
                };
            }
            for event in events {
                match policy.send(&tx, process_event(event)).await {
                    SendOutcome::Sent => stats.delivered.fetch_add(1, Ordering::Relaxed),
                    SendOutcome::Dropped(_) => {
                        stats.backpressure_drops.fetch_add(1, Ordering::Relaxed)
                    }
                    SendOutcome::Closed(_) => {
                        stats.closed_drops.fetch_add(1, Ordering::Relaxed);
                        break 'poll;
                    }
                };
            }
        }
        Ok(())
    }

    async fn stop(&self) -> anyhow::Result<()> {
        self.stop.stop();
        Ok(())
    }

    async fn health_check(&self) -> anyhow::Result<()> {
        if self.stop.is_stopped() {
            anyhow::bail!("stopped");
        }
        let failed = self.stats.failed_in_a_row.load(Ordering::Relaxed);
        if failed >= UNHEALTHY_AFTER_FAILED_SCANS {
            anyhow::bail!("the last {failed} process table scans failed (is /proc readable?)");
        }
        Ok(())
    }

    fn stats(&self) -> SourceStats {
        let mut stats = SourceStats::default();
        let s = &self.stats;
        for (reason, counter) in [
            ("backpressure", &s.backpressure_drops),
            ("closed", &s.closed_drops),
            ("over_scan_limit", &s.over_scan_limit),
            ("store_full", &s.store_drops),
        ] {
            stats
                .dropped
                .insert(reason.into(), counter.load(Ordering::Relaxed));
        }
        stats.hooks.insert(
            "process_table".into(),
            format!("procfs poll every {:?}", self.poll_interval()),
        );
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::ProcessSnapshot;
    use collector_core::event::{ProcessEvent, ProcessEventKind};
    use std::collections::VecDeque;

    /// Returns the scripted scans in order, then the last one forever.
    struct Scripted(VecDeque<Result<Vec<ProcessSnapshot>, ()>>);

    impl ProcessTable for Scripted {
        fn scan(&mut self) -> Result<Vec<ProcessSnapshot>, ScanError> {
            let next = if self.0.len() > 1 {
                self.0.pop_front().unwrap()
            } else {
                self.0.front().unwrap().clone()
            };
            next.map_err(|()| ScanError::Incomplete { pid: 0, count: 0 })
        }
    }

    fn row(pid: u32, start: u64) -> ProcessSnapshot {
        ProcessSnapshot {
            pid,
            ppid: Some(1),
            uid: Some(0),
            gid: Some(0),
            name: format!("p{pid}"),
            executable_path: Some(format!("/bin/p{pid}")),
            command_line: vec![format!("p{pid}")],
            start_time_secs: start,
        }
    }

    fn fast() -> ProcessSourceConfig {
        ProcessSourceConfig {
            poll_interval: Duration::from_millis(5),
            max_send_wait: Duration::from_millis(20),
            ..ProcessSourceConfig::default()
        }
    }

    async fn next_process(rx: &mut mpsc::Receiver<CollectionEvent>) -> ProcessEvent {
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("source still running");
        match ev {
            CollectionEvent::Process(p) => ProcessEvent::clone(&p),
            other => panic!("not a process event: {other:?}"),
        }
    }

    #[tokio::test]
    async fn scripted_scans_become_snapshot_exec_exit_and_shutdown_stops() {
        let script = vec![
            Ok(vec![row(1, 1)]),
            Err(()), // a failed scan changes nothing
            Ok(vec![row(1, 1), row(2, 5)]),
            Ok(vec![row(1, 1)]),
        ];
        let source = Arc::new(ProcessEventSource::with_table(
            fast(),
            Scripted(script.into()),
        ));
        let (tx, mut rx) = mpsc::channel(64);
        let shutdown = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (source, shutdown) = (source.clone(), shutdown.clone());
            async move { source.start(tx, shutdown).await }
        });
        let got: Vec<(ProcessEventKind, u32)> = [
            next_process(&mut rx).await,
            next_process(&mut rx).await,
            next_process(&mut rx).await,
        ]
        .iter()
        .map(|e| (e.kind, e.pid))
        .collect();
        assert_eq!(
            got,
            [
                (ProcessEventKind::Snapshot, 1),
                (ProcessEventKind::Exec, 2),
                (ProcessEventKind::Exit, 2)
            ]
        );
        assert_eq!(source.poll_stats().failed_scans.load(Ordering::Relaxed), 1);
        shutdown.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("source stops on shutdown")
            .unwrap()
            .unwrap();
        assert!(source.start(mpsc::channel(1).0, shutdown).await.is_err());
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_after_max_send_wait() {
        let rows: Vec<ProcessSnapshot> = (1..=5).map(|pid| row(pid, 1)).collect();
        let source = Arc::new(ProcessEventSource::with_table(
            fast(),
            Scripted(vec![Ok(rows)].into()),
        ));
        // Room for one event, and nobody reads.
        let (tx, _rx) = mpsc::channel(1);
        let shutdown = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (source, shutdown) = (source.clone(), shutdown.clone());
            async move { source.start(tx, shutdown).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while source.stats().dropped["backpressure"] < 4 {
            assert!(tokio::time::Instant::now() < deadline, "drops not counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.store(true, Ordering::Relaxed);
        task.await.unwrap().unwrap();
        let stats = source.stats();
        assert_eq!(stats.dropped["backpressure"], 4);
        assert_eq!(source.poll_stats().delivered.load(Ordering::Relaxed), 1);
        assert!(stats.hooks["process_table"].contains("procfs poll"));
    }

    #[tokio::test]
    async fn repeated_scan_failures_make_the_source_unhealthy() {
        let source = Arc::new(ProcessEventSource::with_table(
            fast(),
            Scripted(vec![Err(())].into()),
        ));
        assert!(source.health_check().await.is_ok());
        let shutdown = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (source, shutdown) = (source.clone(), shutdown.clone());
            async move { source.start(mpsc::channel(8).0, shutdown).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while source.health_check().await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "never unhealthy");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let err = source.health_check().await.unwrap_err().to_string();
        assert!(err.contains("scans failed"), "{err}");
        source.stop().await.unwrap();
        task.await.unwrap().unwrap();
        shutdown.store(true, Ordering::Relaxed);
    }

    #[tokio::test]
    async fn sees_a_real_child_start_and_exit() {
        let config = ProcessSourceConfig {
            poll_interval: Duration::from_millis(100),
            ..ProcessSourceConfig::default()
        };
        let source = Arc::new(ProcessEventSource::new(config).unwrap());
        // A 100 ms poll is within the 10 s REALTIME threshold.
        assert_eq!(
            source.capabilities(),
            SourceCaps::PROCESS | SourceCaps::SYSTEM_WIDE | SourceCaps::REALTIME
        );
        let (tx, mut rx) = mpsc::channel(100_000);
        let shutdown = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (source, shutdown) = (source.clone(), shutdown.clone());
            async move { source.start(tx, shutdown).await }
        });

        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        // The child shows up as a snapshot if the first scan already saw it, else as
        // an exec.
        let started = loop {
            let ev = next_process(&mut rx).await;
            // Before its execve the child is a copy of this test binary.
            if ev.pid == pid
                && ev.kind != ProcessEventKind::Exit
                && ev.name.as_deref() == Some("sleep")
            {
                break ev;
            }
        };
        assert!(
            matches!(
                started.kind,
                ProcessEventKind::Exec | ProcessEventKind::Snapshot
            ),
            "{started:?}"
        );
        assert_eq!(started.source, PROCESS_SOURCE_NAME);
        assert_eq!(started.ppid, Some(std::process::id()));
        assert_eq!(started.command_line, ["sleep", "5"]);
        assert!(started
            .executable_path
            .as_deref()
            .is_some_and(|p| p.ends_with("/sleep")));
        assert!(started.start_time.is_some());

        child.kill().unwrap();
        child.wait().unwrap();
        let exited = loop {
            let ev = next_process(&mut rx).await;
            if ev.pid == pid && ev.kind == ProcessEventKind::Exit {
                break ev;
            }
        };
        assert_eq!(exited.exit_code, None);
        assert_eq!(exited.name.as_deref(), Some("sleep"));

        shutdown.store(true, Ordering::Relaxed);
        task.await.unwrap().unwrap();
    }
}

/// The design's procmond integration: `ProcessEventSource::with_config(db_manager,
/// process_config)`, registered with a `Collector` and run.
#[cfg(test)]
mod design_usage {
    use std::sync::Arc;
    use std::time::Duration;

    use collector_core::{
        CollectionEvent, Collector, CollectorConfig, Delivery, EventBatch, EventSink, SourceCaps,
    };
    use sha2::{Digest, Sha256};

    use super::{ProcessEventSource, ProcessSourceConfig};
    use crate::store::{ProcessStore, StoreConfig};

    struct Captured(std::sync::mpsc::Sender<CollectionEvent>);
    impl EventSink for Captured {
        fn name(&self) -> &str {
            "captured"
        }
        fn deliver(&self, batch: &EventBatch) -> Delivery {
            for e in batch.iter() {
                let _ = self.0.send(e.clone());
            }
            Delivery::Accepted
        }
    }

    #[test]
    fn realtime_is_advertised_up_to_the_threshold() {
        let at = |secs| {
            ProcessSourceConfig {
                poll_interval: Duration::from_secs(secs),
                ..ProcessSourceConfig::default()
            }
            .capabilities()
        };
        assert!(at(10).contains(SourceCaps::REALTIME));
        assert!(!at(11).contains(SourceCaps::REALTIME));
        assert!(at(11).contains(SourceCaps::PROCESS | SourceCaps::SYSTEM_WIDE));
        assert!(!at(10).contains(SourceCaps::KERNEL_LEVEL));
        let custom = ProcessSourceConfig {
            poll_interval: Duration::from_secs(11),
            realtime_threshold: Duration::from_secs(30),
            ..ProcessSourceConfig::default()
        };
        assert!(custom.capabilities().contains(SourceCaps::REALTIME));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn procmond_usage_as_the_design_shows() {
        let dir = tempfile::tempdir().unwrap();
        let db_manager =
            Arc::new(ProcessStore::open_in(dir.path(), StoreConfig::default()).unwrap());
        let process_config = ProcessSourceConfig {
            poll_interval: Duration::from_millis(200),
            compute_executable_hashes: true,
            ..ProcessSourceConfig::default()
        };
        let process_source =
            ProcessEventSource::with_config(db_manager.clone(), process_config).unwrap();
        let collector_config = CollectorConfig::default();
        let mut collector = Collector::new(collector_config).unwrap();
        collector.register(Box::new(process_source)).unwrap();
        assert!(collector.capabilities().contains(SourceCaps::REALTIME));
        let (tx, rx) = std::sync::mpsc::channel();
        collector.add_sink(Arc::new(Captured(tx)));
        let handle = collector.handle();
        let run = tokio::spawn(collector.run());

        let me = std::process::id();
        let want = format!(
            "{:x}",
            Sha256::digest(std::fs::read("/proc/self/exe").unwrap())
        );
        let ours = tokio::task::spawn_blocking(move || loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(CollectionEvent::Process(p)) if p.pid == me => return p,
                Ok(_) => continue,
                Err(e) => panic!("no event for our own pid: {e}"),
            }
        })
        .await
        .unwrap();
        handle.shutdown();
        run.await.unwrap().unwrap();

        // The event went out without waiting for the cold cache; its digest follows in
        // the store.
        assert!(
            ours.executable_hash.is_none() || ours.executable_hash.as_deref() == Some(&want),
            "{ours:?}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let record = loop {
            db_manager.flush();
            let record = db_manager
                .process(me)
                .unwrap()
                .expect("our record in the store");
            if record.executable_hash.is_some() {
                break record;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the digest never reached the store"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(record.executable_hash.as_deref(), Some(want.as_str()));
        assert_eq!(record.hash_algorithm.as_deref(), Some("sha256"));
        assert_eq!(record.executable_path, ours.executable_path);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_capability_change_at_runtime_reaches_an_ipc_client() {
        use collector_core::event::Domain;
        use collector_core::ipc::{
            CollectorIpcClient, CollectorIpcServer, IpcServerConfig, IpcSink, SubscriptionItem,
        };
        use futures::StreamExt;

        let dir = tempfile::tempdir().unwrap();
        let db_manager = Arc::new(
            ProcessStore::open_in(&dir.path().join("db"), StoreConfig::default()).unwrap(),
        );
        let source = ProcessEventSource::with_config(
            db_manager,
            ProcessSourceConfig {
                poll_interval: Duration::from_secs(11),
                ..ProcessSourceConfig::default()
            },
        )
        .unwrap();
        let interval = source.interval_handle();
        let mut collector = Collector::new(CollectorConfig::default()).unwrap();
        collector.register(Box::new(source)).unwrap();
        assert!(!collector.capabilities().contains(SourceCaps::REALTIME));
        let sink = IpcSink::default();
        collector.add_sink(Arc::new(sink.clone()));
        let handle = collector.handle();
        let run = tokio::spawn(collector.run());
        let socket = dir.path().join("run/collector.sock");
        let server = CollectorIpcServer::bind(
            IpcServerConfig {
                socket_path: socket.clone(),
                ..IpcServerConfig::default()
            },
            Arc::new(handle.clone()),
            sink,
            None,
        )
        .await
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));

        let client = CollectorIpcClient::connect(&socket).await.unwrap();
        let stream = client
            .subscribe(&[Domain::Network], &[] as &[&str])
            .await
            .unwrap();
        futures::pin_mut!(stream);
        interval.set(Duration::from_secs(10));
        let caps = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.next().await {
                    Some(Ok(SubscriptionItem::CapabilitiesChanged(caps))) => break caps,
                    Some(Ok(_)) => continue,
                    other => panic!("stream ended: {other:?}"),
                }
            }
        })
        .await
        .expect("a CapabilityUpdate within 10 s");
        assert!(caps.contains(SourceCaps::REALTIME | SourceCaps::PROCESS));
        assert!(handle.capabilities().contains(SourceCaps::REALTIME));

        let _ = stop.send(());
        serving.await.unwrap();
        handle.shutdown();
        run.await.unwrap().unwrap();
    }
}
