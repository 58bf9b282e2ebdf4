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
use super::scan::{ProcessTable, ScanError, SysinfoProcessTable};
use super::{process_event, wait_or_stop};

/// Name of the polling process source.
pub const PROCESS_SOURCE_NAME: &str = "procfs-process";

/// Scans that fail in a row before the source reports itself unhealthy.
const UNHEALTHY_AFTER_FAILED_SCANS: u64 = 3;

/// How [`ProcessEventSource`] polls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSourceConfig {
    /// Time between two scans of the process table. Processes that start and exit
    /// within one interval are never seen.
    pub poll_interval: Duration,
    /// Longest wait for room in the collector's queue before an event is dropped
    /// (and counted as `backpressure`).
    pub max_send_wait: Duration,
}

impl Default for ProcessSourceConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            max_send_wait: Duration::from_millis(500),
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
}

/// Process events (`snapshot`, `exec`, `exit`) from diffs of successive process table
/// scans: the fallback where the kernel programs cannot run. Needs no privileges, but
/// without root the executable of other users' processes is unknown, and anything that
/// lives shorter than `poll_interval` can be missed.
pub struct ProcessEventSource {
    config: ProcessSourceConfig,
    table: Mutex<Option<Box<dyn ProcessTable>>>,
    stats: Arc<PollStats>,
    stop: Arc<AtomicBool>,
}

impl ProcessEventSource {
    /// A source over the host's process table.
    pub fn new(config: ProcessSourceConfig) -> Result<Self, ScanError> {
        Ok(Self::with_table(config, SysinfoProcessTable::new()?))
    }

    /// A source over any [`ProcessTable`] (tests use scripted ones).
    pub fn with_table(config: ProcessSourceConfig, table: impl ProcessTable) -> Self {
        Self {
            config,
            table: Mutex::new(Some(Box::new(table))),
            stats: Arc::default(),
            stop: Arc::default(),
        }
    }

    /// The polling loop's counters.
    pub fn poll_stats(&self) -> &PollStats {
        &self.stats
    }
}

#[async_trait]
impl EventSource for ProcessEventSource {
    fn name(&self) -> &'static str {
        PROCESS_SOURCE_NAME
    }

    fn capabilities(&self) -> SourceCaps {
        // Polling: neither KERNEL_LEVEL nor REALTIME.
        SourceCaps::PROCESS | SourceCaps::SYSTEM_WIDE
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
            next_scan += self.config.poll_interval;
            // sysinfo reads /proc synchronously: keep it off the runtime's workers.
            let (returned, scan) = tokio::task::spawn_blocking(move || {
                let scan = table.scan();
                (table, scan)
            })
            .await
            .map_err(|source| ScanError::Task { source })?;
            table = returned;
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
            for event in diff.apply(rows, Utc::now(), &source) {
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
        self.stop.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn health_check(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
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
        ] {
            stats
                .dropped
                .insert(reason.into(), counter.load(Ordering::Relaxed));
        }
        stats.hooks.insert(
            "process_table".into(),
            format!("procfs poll every {:?}", self.config.poll_interval),
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
        assert_eq!(
            source.capabilities(),
            SourceCaps::PROCESS | SourceCaps::SYSTEM_WIDE
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
