//! [`ProcessStore`]: the embedded database (redb, `<data_dir>/processes.redb`) that keeps
//! the process table and a log of recent execs, fed as an [`EventSink`].
//!
//! `deliver` only queues the batch for a writer thread (bounded; when full the batch is
//! dropped and counted), so a slow disk never stalls the pipeline. The writer commits
//! one transaction per round: every batch queued at that moment, never one per event.
//!
//! Tables:
//! - `processes`: pid -> the latest [`ProcessRecord`] (JSON) of each live process; an
//!   `exec` or `snapshot` writes it, a `fork` creates the child's from its parent's, an
//!   `exit` removes it.
//! - `execs`: sequence number -> the [`ProcessRecord`] of an `exec`, append-only, the
//!   oldest trimmed past [`StoreConfig::max_execs`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use collector_core::event::{ProcessEvent, ProcessEventKind};
use collector_core::{CollectionEvent, Delivery, EventBatch, EventSink};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// File name of the store under the data directory.
pub const STORE_FILE: &str = "processes.redb";

const PROCESSES: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("processes");
const EXECS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("execs");

/// Most queued batches the writer merges into one transaction.
const MAX_BATCHES_PER_COMMIT: usize = 64;

/// What the store knows of one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    /// Real uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Real gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Task name (`comm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path of the executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable_path: Option<String>,
    /// Arguments, argv[0] first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command_line: Vec<String>,
    /// When the process started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// Hex digest of the executable (with `compute_executable_hashes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable_hash: Option<String>,
    /// Algorithm of `executable_hash` (`sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_algorithm: Option<String>,
    /// The event that last wrote this record (`exec`, `snapshot`, `fork`).
    pub last_event: ProcessEventKind,
    /// When that event happened.
    pub updated_at: DateTime<Utc>,
    /// The source that reported it (`ebpf-process`, `procfs-process`).
    pub source: String,
}

impl ProcessRecord {
    /// The record an `exec` or `snapshot` leaves. What an exec does not change (parent,
    /// ids, start time) is kept from `previous` when the event does not say.
    fn from_event(event: &ProcessEvent, previous: Option<&ProcessRecord>) -> Self {
        let kept = |field: fn(&ProcessRecord) -> Option<u32>| previous.and_then(field);
        Self {
            pid: event.pid,
            ppid: event.ppid.or_else(|| kept(|r| r.ppid)),
            uid: event.uid.or_else(|| kept(|r| r.uid)),
            gid: event.gid.or_else(|| kept(|r| r.gid)),
            name: event.name.clone(),
            executable_path: event.executable_path.clone(),
            command_line: event.command_line.clone(),
            start_time: event
                .start_time
                .or_else(|| previous.and_then(|r| r.start_time)),
            executable_hash: event.executable_hash.clone(),
            hash_algorithm: event.hash_algorithm.clone(),
            last_event: event.kind,
            updated_at: event.timestamp,
            source: event.source.to_string(),
        }
    }

    /// The child a `fork` creates: a copy of its parent until it execs.
    fn forked(parent: Option<&ProcessRecord>, event: &ProcessEvent, child: u32) -> Self {
        Self {
            pid: child,
            ppid: Some(event.pid),
            uid: event.uid.or_else(|| parent.and_then(|p| p.uid)),
            gid: event.gid.or_else(|| parent.and_then(|p| p.gid)),
            name: parent.and_then(|p| p.name.clone()).or(event.name.clone()),
            executable_path: parent.and_then(|p| p.executable_path.clone()),
            command_line: parent.map(|p| p.command_line.clone()).unwrap_or_default(),
            start_time: Some(event.timestamp),
            executable_hash: parent.and_then(|p| p.executable_hash.clone()),
            hash_algorithm: parent.and_then(|p| p.hash_algorithm.clone()),
            last_event: ProcessEventKind::Fork,
            updated_at: event.timestamp,
            source: event.source.to_string(),
        }
    }

    fn to_json(&self) -> Vec<u8> {
        // Plain fields and strings: serialization cannot fail.
        serde_json::to_vec(self).expect("ProcessRecord serializes to JSON")
    }

    fn from_json(table: &'static str, key: u64, bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { table, key, source })
    }
}

/// Errors of the process store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {}: {source} (set `data_dir` to a writable directory, or run as root)", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be opened or created.
    #[error("cannot open the process store {}: {source} (another collector using the same `data_dir`? a damaged file can be deleted: it is rebuilt from the next scan)", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// Reading or writing the database failed.
    #[error("process store {}: {source}", path.display())]
    Database {
        /// The file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// A stored record is not valid JSON of a [`ProcessRecord`].
    #[error("process store: record {key} of table `{table}` does not decode: {source}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The record's key.
        key: u64,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Limits of a [`ProcessStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Batches queued for the writer before `deliver` drops.
    pub queue_batches: usize,
    /// Entries kept in the exec log; the oldest go first.
    pub max_execs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            queue_batches: 1024,
            max_execs: 10_000,
        }
    }
}

/// Counters of a [`ProcessStore`].
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Process events dropped because the writer's queue was full.
    pub dropped_events: AtomicU64,
    /// Process events written.
    pub written_events: AtomicU64,
    /// Process events lost because their transaction failed.
    pub failed_events: AtomicU64,
    /// Transactions committed.
    pub commits: AtomicU64,
}

enum Command {
    Write(EventBatch),
    Flush(SyncSender<()>),
}

/// The process table and exec log on disk; an [`EventSink`] named `store`.
///
/// Dropping it stops the writer after it has written what was queued.
pub struct ProcessStore {
    db: Arc<Database>,
    path: PathBuf,
    tx: Option<SyncSender<Command>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<StoreCounters>,
}

impl ProcessStore {
    /// Opens (or creates) `<data_dir>/processes.redb`, creating `data_dir` (mode 0700)
    /// if needed.
    pub fn open_in(data_dir: &Path, config: StoreConfig) -> Result<Self, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|source| StoreError::CreateDir {
                path: data_dir.to_owned(),
                source,
            })?;
        Self::open_with(&data_dir.join(STORE_FILE), config)
    }

    /// Opens (or creates) the store at `path` with the default limits.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StoreConfig::default())
    }

    /// Opens (or creates) the store at `path`.
    pub fn open_with(path: &Path, config: StoreConfig) -> Result<Self, StoreError> {
        let open_error = |source: redb::Error| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let db = Database::create(path).map_err(|e| open_error(e.into()))?;
        // Create both tables, so readers find them before the first event.
        (|| -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(PROCESSES)?;
            txn.open_table(EXECS)?;
            txn.commit()?;
            Ok(())
        })()
        .map_err(open_error)?;
        let db = Arc::new(db);
        let counters = Arc::new(StoreCounters::default());
        let (tx, rx) = sync_channel(config.queue_batches.max(1));
        let writer = std::thread::Builder::new()
            .name("process-store".into())
            .spawn({
                let (db, counters, path) = (db.clone(), counters.clone(), path.to_owned());
                move || write_loop(&db, &path, rx, config.max_execs, &counters)
            })
            .expect("spawn the process store writer thread");
        Ok(Self {
            db,
            path: path.to_owned(),
            tx: Some(tx),
            writer: Some(writer),
            counters,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's counters.
    pub fn counters(&self) -> &StoreCounters {
        &self.counters
    }

    /// Process events dropped because the writer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped_events.load(Ordering::Relaxed)
    }

    /// Every process in the table, by pid.
    pub fn processes(&self) -> Result<Vec<ProcessRecord>, StoreError> {
        let read = || -> Result<Vec<(u32, Vec<u8>)>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(PROCESSES)?;
            table
                .iter()?
                .map(|row| {
                    let (k, v) = row?;
                    Ok((k.value(), v.value().to_vec()))
                })
                .collect()
        };
        read()
            .map_err(|source| self.db_error(source))?
            .into_iter()
            .map(|(pid, bytes)| ProcessRecord::from_json("processes", pid.into(), &bytes))
            .collect()
    }

    /// The record of `pid`, if it is in the table.
    pub fn process(&self, pid: u32) -> Result<Option<ProcessRecord>, StoreError> {
        let read = || -> Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(PROCESSES)?;
            Ok(table.get(pid)?.map(|v| v.value().to_vec()))
        };
        read()
            .map_err(|source| self.db_error(source))?
            .map(|bytes| ProcessRecord::from_json("processes", pid.into(), &bytes))
            .transpose()
    }

    /// The latest `limit` execs, newest first.
    pub fn recent_execs(&self, limit: usize) -> Result<Vec<ProcessRecord>, StoreError> {
        let read = || -> Result<Vec<(u64, Vec<u8>)>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(EXECS)?;
            table
                .iter()?
                .rev()
                .take(limit)
                .map(|row| {
                    let (k, v) = row?;
                    Ok((k.value(), v.value().to_vec()))
                })
                .collect()
        };
        read()
            .map_err(|source| self.db_error(source))?
            .into_iter()
            .map(|(seq, bytes)| ProcessRecord::from_json("execs", seq, &bytes))
            .collect()
    }

    /// Removes the processes `alive` says are gone; returns how many. For startup: what
    /// exited while no collector ran never got its `exit`.
    pub fn retain_processes(
        &self,
        mut alive: impl FnMut(&ProcessRecord) -> bool,
    ) -> Result<usize, StoreError> {
        let dead: Vec<u32> = self
            .processes()?
            .into_iter()
            .filter(|record| !alive(record))
            .map(|record| record.pid)
            .collect();
        let remove = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(PROCESSES)?;
                for &pid in &dead {
                    table.remove(pid)?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        remove().map_err(|source| self.db_error(source))?;
        Ok(dead.len())
    }

    /// Waits until every batch accepted so far is committed (or failed). Blocking: for
    /// shutdown paths and tests, not for the pipeline.
    pub fn flush(&self) {
        let (done_tx, done_rx) = sync_channel(1);
        if let Some(tx) = &self.tx {
            if tx.send(Command::Flush(done_tx)).is_ok() {
                let _ = done_rx.recv();
            }
        }
    }

    fn db_error(&self, source: redb::Error) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for ProcessStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has written what is queued; joining
        // it releases its handle on the database, so the file can be opened again.
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl EventSink for ProcessStore {
    fn name(&self) -> &str {
        "store"
    }

    fn deliver(&self, batch: &EventBatch) -> Delivery {
        let events = batch
            .iter()
            .filter(|e| matches!(e, CollectionEvent::Process(_)))
            .count();
        if events == 0 {
            return Delivery::Accepted;
        }
        let Some(tx) = &self.tx else {
            return Delivery::Dropped(events);
        };
        match tx.try_send(Command::Write(batch.clone())) {
            Ok(()) => Delivery::Accepted,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters
                    .dropped_events
                    .fetch_add(events as u64, Ordering::Relaxed);
                Delivery::Dropped(events)
            }
        }
    }
}

fn write_loop(
    db: &Database,
    path: &Path,
    rx: Receiver<Command>,
    max_execs: u64,
    counters: &StoreCounters,
) {
    let mut warned = false;
    while let Ok(first) = rx.recv() {
        let mut batches = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Write(batch) => batches.push(batch),
                Command::Flush(done) => flushes.push(done),
            }
            if batches.len() < MAX_BATCHES_PER_COMMIT {
                next = rx.try_recv().ok();
            }
        }
        if !batches.is_empty() {
            let events: u64 = batches
                .iter()
                .flat_map(|b| b.iter())
                .filter(|e| matches!(e, CollectionEvent::Process(_)))
                .count() as u64;
            match write_batches(db, &batches, max_execs) {
                Ok(()) => {
                    counters.written_events.fetch_add(events, Ordering::Relaxed);
                    counters.commits.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.failed_events.fetch_add(events, Ordering::Relaxed);
                    if !warned {
                        warned = true;
                        tracing::warn!(
                            "process store {}: a write failed, its events are lost: {e}",
                            path.display()
                        );
                    }
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Applies `batches` in one transaction.
fn write_batches(db: &Database, batches: &[EventBatch], max_execs: u64) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut processes = txn.open_table(PROCESSES)?;
        let mut execs = txn.open_table(EXECS)?;
        let mut next_seq = execs.last()?.map_or(0, |(k, _)| k.value() + 1);
        let stored = |processes: &redb::Table<'_, u32, &[u8]>,
                      pid: u32|
         -> Result<Option<ProcessRecord>, redb::Error> {
            // An undecodable record is as good as none: the event rewrites it.
            Ok(processes
                .get(pid)?
                .and_then(|v| serde_json::from_slice(v.value()).ok()))
        };
        for event in batches.iter().flat_map(|b| b.iter()) {
            let CollectionEvent::Process(event) = event else {
                continue;
            };
            match event.kind {
                ProcessEventKind::Exec | ProcessEventKind::Snapshot => {
                    let previous = stored(&processes, event.pid)?;
                    let record = ProcessRecord::from_event(event, previous.as_ref());
                    let bytes = record.to_json();
                    processes.insert(event.pid, bytes.as_slice())?;
                    if event.kind == ProcessEventKind::Exec {
                        execs.insert(next_seq, bytes.as_slice())?;
                        next_seq += 1;
                    }
                }
                ProcessEventKind::Fork => {
                    let Some(child) = event.child_pid else {
                        continue;
                    };
                    // The child's own exec may already be in (events of two CPUs).
                    if processes.get(child)?.is_none() {
                        let parent = stored(&processes, event.pid)?;
                        let record = ProcessRecord::forked(parent.as_ref(), event, child);
                        processes.insert(child, record.to_json().as_slice())?;
                    }
                }
                ProcessEventKind::Exit => {
                    // An exit of an older process with this pid must not remove the
                    // one that reused it.
                    let current = stored(&processes, event.pid)?;
                    let same = match (current.and_then(|r| r.start_time), event.start_time) {
                        (Some(stored), Some(exited)) => stored == exited,
                        _ => true,
                    };
                    if same {
                        processes.remove(event.pid)?;
                    }
                }
                // Neither starts nor ends a process, nor changes its image.
                ProcessEventKind::CredChange | ProcessEventKind::ExecFailed => {}
            }
        }
        let excess = execs.len()?.saturating_sub(max_execs);
        for _ in 0..excess {
            execs.pop_first()?;
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector_core::event::{PerformanceEvent, PerformanceEventKind};

    fn process(kind: ProcessEventKind, pid: u32, exe: &str) -> CollectionEvent {
        let mut ev = ProcessEvent::new(kind, Utc::now(), pid, "procfs-process");
        ev.ppid = Some(1);
        ev.uid = Some(1000);
        ev.name = Some(exe.rsplit('/').next().unwrap().into());
        ev.executable_path = Some(exe.into());
        ev.command_line = vec![exe.into(), "-x".into()];
        ev.start_time = DateTime::from_timestamp(1_700_000_000 + i64::from(pid), 0);
        crate::procfs::process_event(ev)
    }

    fn batch(events: Vec<CollectionEvent>) -> EventBatch {
        events.into()
    }

    fn pids(records: &[ProcessRecord]) -> Vec<u32> {
        records.iter().map(|r| r.pid).collect()
    }

    use ProcessEventKind::{Exec, Exit, Fork, Snapshot};

    #[test]
    fn keeps_the_table_and_exec_log_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        {
            let store = ProcessStore::open_in(&data_dir, StoreConfig::default()).unwrap();
            assert!(store.processes().unwrap().is_empty());
            let batches = [
                batch(vec![
                    process(Snapshot, 1, "/sbin/init"),
                    process(Snapshot, 10, "/bin/bash"),
                ]),
                batch(vec![
                    process(Exec, 20, "/bin/ls"),
                    process(Exec, 21, "/bin/cat"),
                    process(Exit, 10, "/bin/bash"),
                ]),
                batch(vec![process(Exit, 20, "/bin/ls")]),
            ];
            for b in &batches {
                assert_eq!(store.deliver(b), Delivery::Accepted);
            }
            store.flush();
            assert_eq!(store.counters().written_events.load(Ordering::Relaxed), 6);
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        let store = ProcessStore::open(&data_dir.join(STORE_FILE)).unwrap();
        let table = store.processes().unwrap();
        assert_eq!(pids(&table), [1, 21]);
        let cat = &table[1];
        assert_eq!(cat.executable_path.as_deref(), Some("/bin/cat"));
        assert_eq!(cat.command_line, ["/bin/cat", "-x"]);
        assert_eq!((cat.ppid, cat.uid), (Some(1), Some(1000)));
        assert_eq!(cat.last_event, Exec);
        assert_eq!(cat.source, "procfs-process");
        assert_eq!(store.process(1).unwrap().unwrap().last_event, Snapshot);
        assert!(store.process(10).unwrap().is_none());
        // The exec log keeps exited processes, newest first.
        assert_eq!(pids(&store.recent_execs(10).unwrap()), [21, 20]);
        assert_eq!(pids(&store.recent_execs(1).unwrap()), [21]);
    }

    #[test]
    fn exec_log_is_capped_and_other_domains_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessStore::open_with(
            &dir.path().join(STORE_FILE),
            StoreConfig {
                max_execs: 3,
                ..StoreConfig::default()
            },
        )
        .unwrap();
        let metric = CollectionEvent::Performance(PerformanceEvent {
            kind: PerformanceEventKind::Metric,
            timestamp: Utc::now(),
            pid: 0,
            source: "procfs-performance".into(),
            metric_name: "cpu_usage".into(),
            value: 1.0,
            unit: "percent".into(),
            component: "host".into(),
        });
        assert_eq!(store.deliver(&batch(vec![metric])), Delivery::Accepted);
        for pid in 100..105 {
            store.deliver(&batch(vec![process(Exec, pid, "/bin/true")]));
        }
        store.flush();
        assert_eq!(pids(&store.recent_execs(100).unwrap()), [104, 103, 102]);
        assert_eq!(store.processes().unwrap().len(), 5);
        assert_eq!(store.counters().written_events.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn fork_copies_the_parent_and_a_stale_exit_keeps_the_reused_pid() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessStore::open(&dir.path().join(STORE_FILE)).unwrap();
        let CollectionEvent::Process(mut fork) = process(Fork, 1, "/sbin/init") else {
            unreachable!()
        };
        fork.child_pid = Some(7);
        let CollectionEvent::Process(mut stale_exit) = process(Exit, 50, "/bin/old") else {
            unreachable!()
        };
        stale_exit.start_time = DateTime::from_timestamp(1, 0);
        store.deliver(&batch(vec![
            process(Snapshot, 1, "/sbin/init"),
            CollectionEvent::Process(fork),
            process(Exec, 50, "/bin/new"),
            CollectionEvent::Process(stale_exit),
        ]));
        store.flush();
        let child = store.process(7).unwrap().expect("forked child recorded");
        assert_eq!(child.ppid, Some(1));
        assert_eq!(child.executable_path.as_deref(), Some("/sbin/init"));
        assert_eq!(child.last_event, Fork);
        let reused = store.process(50).unwrap().expect("stale exit ignored");
        assert_eq!(reused.executable_path.as_deref(), Some("/bin/new"));
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessStore::open_with(
            &dir.path().join(STORE_FILE),
            StoreConfig {
                queue_batches: 1,
                ..StoreConfig::default()
            },
        )
        .unwrap();
        // Hold the database's single write transaction: the writer blocks on its
        // first batch, so at most one more fits in the queue.
        let held = store.db.begin_write().unwrap();
        let two = batch(vec![process(Exec, 1, "/bin/a"), process(Exec, 2, "/bin/b")]);
        let mut dropped = 0;
        let mut accepted = 0;
        for _ in 0..10 {
            match store.deliver(&two) {
                Delivery::Accepted => accepted += 1,
                Delivery::Dropped(n) => dropped += n,
            }
        }
        assert!(accepted <= 2, "accepted {accepted} with a queue of one");
        assert_eq!(dropped, 2 * (10 - accepted));
        assert_eq!(store.dropped(), dropped as u64);
        held.abort().unwrap();
        store.flush();
        let written = store.counters().written_events.load(Ordering::Relaxed);
        assert_eq!(written, 2 * accepted as u64);
        assert_eq!(store.recent_execs(100).unwrap().len(), written as usize);
    }

    #[test]
    fn retain_removes_what_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessStore::open(&dir.path().join(STORE_FILE)).unwrap();
        store.deliver(&batch(vec![
            process(Snapshot, 1, "/sbin/init"),
            process(Snapshot, 2, "/bin/gone"),
            process(Snapshot, 3, "/bin/sh"),
        ]));
        store.flush();
        assert_eq!(store.retain_processes(|r| r.pid != 2).unwrap(), 1);
        assert_eq!(pids(&store.processes().unwrap()), [1, 3]);
    }

    #[test]
    fn a_second_open_of_the_same_file_explains_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        let _first = ProcessStore::open(&path).unwrap();
        let err = ProcessStore::open(&path)
            .err()
            .expect("already open")
            .to_string();
        assert!(err.contains("another collector"), "{err}");
    }

    #[test]
    fn an_uncreatable_data_dir_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let err = ProcessStore::open_in(&file.join("data"), StoreConfig::default())
            .err()
            .expect("cannot create under a file")
            .to_string();
        assert!(err.contains("cannot create the data directory"), "{err}");
    }
}
