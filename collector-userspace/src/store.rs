//! [`ProcessStore`]: the embedded database (redb, `<data_dir>/processes.redb`) that keeps
//! the process table and a log of recent execs, fed as an [`EventSink`].
//!
//! `deliver` only queues the batch for a writer thread (bounded; when full the batch is
//! dropped and counted), so a slow disk never stalls the pipeline. The writer commits
//! one transaction per round: every batch queued at that moment, never one per event.
//! A round starts with the first batch and gathers for `commit_interval`, asleep: a
//! queued batch does not wake the writer (a process storm would otherwise pay a thread
//! wakeup per batch), only a full round's worth of batches, a flush, or shutdown do.
//! The writer keeps the live processes' records decoded in memory (it is their only
//! writer), so an event does not parse its process's JSON back from the table.
//!
//! Tables:
//! - `processes`: pid -> the latest [`ProcessRecord`] (JSON) of each live process; an
//!   `exec` or `snapshot` writes it, a `fork` creates the child's from its parent's, an
//!   `exit` removes it.
//! - `history`: sequence number -> the [`ProcessRecord`] of an `exec` or an `exit`, with
//!   its `process_key` (a reused pid is another key); `history_by_pid`: (pid, sequence)
//!   -> (), the index that answers "pid N since T". Retention by size
//!   ([`StoreConfig::history_max_records`]) and age ([`StoreConfig::history_max_age`]),
//!   applied in the same transaction as the writes. Its `exec` rows are the exec log
//!   ([`ProcessStore::recent_execs`]).
//! - `meta`: `schema_version` -> [`SCHEMA_VERSION`]. A store without it is version 1 (no
//!   history) and is upgraded in place, as is version 2 (whose separate `execs` table
//!   duplicated the history's exec rows: dropped); a newer version is refused with an
//!   error that says what to do.

use std::borrow::Cow;
use std::collections::HashMap;

/// The writer's per-pid maps (a few lookups per event; std's SipHash showed).
type PidMap<V> = HashMap<u32, V, foldhash::fast::RandomState>;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use collector_core::event::{ProcessEvent, ProcessEventKind};
use collector_core::{CollectionEvent, Delivery, EventBatch, EventSink};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::exec_hash::{HashService, HashedExec};

/// File name of the store under the data directory.
pub const STORE_FILE: &str = "processes.redb";

const PROCESSES: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("processes");
const EXECS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("execs");
const HISTORY: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("history");
const HISTORY_BY_PID: TableDefinition<'_, (u32, u64), ()> = TableDefinition::new("history_by_pid");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// Layout version this build reads and writes: 1 had `processes` and `execs` only; 2
/// added `history`, `history_by_pid` and `meta`; 3 drops `execs` (every exec was
/// written twice: there and as a history row).
pub const SCHEMA_VERSION: u64 = 3;

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
    #[serde(
        default,
        with = "collector_core::event::rfc3339_nanos::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_time: Option<DateTime<Utc>>,
    /// Hex digest of the executable (with `compute_executable_hashes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable_hash: Option<String>,
    /// Algorithm of `executable_hash` (`sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_algorithm: Option<String>,
    /// The event that last wrote this record (`exec`, `snapshot`, `fork`).
    pub last_event: ProcessEventKind,
    /// When that event happened. (Both times are written with nine fractional digits
    /// by a formatter that does not allocate; any RFC 3339 text reads back.)
    #[serde(with = "collector_core::event::rfc3339_nanos")]
    pub updated_at: DateTime<Utc>,
    /// The source that reported it (`ebpf-process`, `procfs-process`).
    pub source: String,
    /// The process key of the event (`<pid>:<start ns>`), when the source gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_key: Option<String>,
    /// Exit code, on a history row of an `exit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// One row of the process history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// Its sequence number (the paging cursor).
    pub seq: u64,
    /// The record.
    pub record: ProcessRecord,
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
            name: event.name.as_deref().map(str::to_owned),
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
            process_key: event
                .process_key
                .as_deref()
                .map(str::to_owned)
                .or_else(|| previous.and_then(|r| r.process_key.clone())),
            exit_code: None,
        }
    }

    /// The history row of an `exit`: what the store knew of the process, closed.
    fn exited(event: &ProcessEvent, previous: Option<ProcessRecord>) -> Self {
        let mut record = match previous {
            Some(p) => p,
            None => Self::from_event(event, None),
        };
        record.last_event = ProcessEventKind::Exit;
        record.updated_at = event.timestamp;
        record.exit_code = event.exit_code;
        record.source = event.source.to_string();
        if event.process_key.is_some() {
            record.process_key = event.process_key.as_deref().map(str::to_owned);
        }
        record.ppid = event.ppid.or(record.ppid);
        record
    }

    /// The child a `fork` creates: a copy of its parent until it execs.
    fn forked(parent: Option<&ProcessRecord>, event: &ProcessEvent, child: u32) -> Self {
        Self {
            pid: child,
            ppid: Some(event.pid),
            uid: event.uid.or_else(|| parent.and_then(|p| p.uid)),
            gid: event.gid.or_else(|| parent.and_then(|p| p.gid)),
            name: parent
                .and_then(|p| p.name.clone())
                .or(event.name.as_deref().map(str::to_owned)),
            executable_path: parent.and_then(|p| p.executable_path.clone()),
            command_line: parent.map(|p| p.command_line.clone()).unwrap_or_default(),
            // The child's own start (the kernel's), which its exit carries: the fork's
            // time is later, and an exit whose start differs is taken for a stale one,
            // which left every child that exited without exec in the table.
            start_time: event.child_start_time.or(Some(event.timestamp)),
            executable_hash: parent.and_then(|p| p.executable_hash.clone()),
            hash_algorithm: parent.and_then(|p| p.hash_algorithm.clone()),
            last_event: ProcessEventKind::Fork,
            updated_at: event.timestamp,
            source: event.source.to_string(),
            process_key: None,
            exit_code: None,
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
    /// The file was written by a collector with another layout.
    #[error("process store {}: schema version {found}, this collector reads version {expected} (written by a newer collector: run that one, or move the file away to start a new store)", path.display())]
    SchemaMismatch {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// The version this build reads.
        expected: u64,
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
    /// History rows (exec, exit) kept; the oldest go first.
    pub history_max_records: u64,
    /// History rows older than this go.
    pub history_max_age: std::time::Duration,
    /// redb's page cache. Its default (1 GiB) lets the cache grow with every page the
    /// writer touches: tens of MB for a 10,000-process table, held for good.
    pub cache_bytes: usize,
    /// How long the writer gathers batches into one transaction after the first one
    /// arrives (a flush request commits at once). Each commit is an fsync: one per
    /// batch cost an exec storm most of the daemon's CPU. A process event reaches the
    /// disk at most this much later; `status` counts it committed only then.
    pub commit_interval: std::time::Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            queue_batches: 1024,
            history_max_records: 100_000,
            history_max_age: std::time::Duration::from_secs(7 * 24 * 3600),
            cache_bytes: 4 << 20,
            commit_interval: std::time::Duration::from_millis(200),
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
    /// History rows removed by retention (size or age): not a loss, the policy.
    pub history_trimmed: AtomicU64,
    /// Finished executable hashes not written because the writer's queue was full (the
    /// exec's record keeps no digest).
    pub hash_updates_dropped: AtomicU64,
}

enum Command {
    Write(EventBatch),
    Hashed(HashedExec),
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
    hashes: Arc<OnceLock<Arc<HashService>>>,
    /// Batches queued and not yet taken by the writer: a full round's worth wakes it.
    queued: Arc<AtomicUsize>,
    /// Bumped when the `processes` table is changed outside the writer
    /// (`retain_processes`): the writer then forgets its decoded records.
    outside_writes: Arc<AtomicU64>,
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
        let db = Database::builder()
            .set_cache_size(config.cache_bytes)
            .create(path)
            .map_err(|e| open_error(e.into()))?;
        // Create every table, so readers find them before the first event; a version-1
        // store (no `meta`) gets the new tables and its version, a newer one is refused.
        let found = (|| -> Result<u64, redb::Error> {
            let txn = db.begin_write()?;
            let found = {
                let mut meta = txn.open_table(META)?;
                let found = meta.get("schema_version")?.map(|v| v.value());
                if found.is_none() {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
                found
            };
            if found.is_some_and(|v| v > SCHEMA_VERSION) {
                txn.abort()?;
                return Ok(found.unwrap_or_default());
            }
            txn.open_table(PROCESSES)?;
            if found != Some(SCHEMA_VERSION) {
                // Versions 1 and 2 kept the exec log in its own table.
                let rows = txn.open_table(EXECS)?.len()?;
                txn.delete_table(EXECS)?;
                if rows > 0 {
                    tracing::warn!(
                        "process store {}: upgraded from schema version {}: dropped the old \
                         exec log ({rows} rows; a version-2 store also has each of them as a \
                         history row unless the history's retention removed it, a version-1 \
                         store had no history)",
                        path.display(),
                        found.unwrap_or(1)
                    );
                }
            }
            txn.open_table(HISTORY)?;
            txn.open_table(HISTORY_BY_PID)?;
            if found.is_some_and(|v| v < SCHEMA_VERSION) {
                txn.open_table(META)?
                    .insert("schema_version", SCHEMA_VERSION)?;
            }
            txn.commit()?;
            Ok(found.unwrap_or(SCHEMA_VERSION))
        })()
        .map_err(open_error)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaMismatch {
                path: path.to_owned(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        let db = Arc::new(db);
        let counters = Arc::new(StoreCounters::default());
        let hashes: Arc<OnceLock<Arc<HashService>>> = Arc::default();
        let (tx, rx) = sync_channel(config.queue_batches.max(1));
        let queued: Arc<AtomicUsize> = Arc::default();
        let outside_writes: Arc<AtomicU64> = Arc::default();
        let writer = std::thread::Builder::new()
            .name("process-store".into())
            .spawn({
                let (db, counters, path) = (db.clone(), counters.clone(), path.to_owned());
                let (hashes, queued) = (hashes.clone(), queued.clone());
                let outside_writes = outside_writes.clone();
                move || {
                    let writer = Writer {
                        db: &db,
                        path: &path,
                        config,
                        counters: &counters,
                        hashes: &hashes,
                        queued: &queued,
                        outside_writes: &outside_writes,
                    };
                    writer.run(rx)
                }
            })
            .expect("spawn the process store writer thread");
        Ok(Self {
            db,
            path: path.to_owned(),
            tx: Some(tx),
            writer: Some(writer),
            counters,
            hashes,
            queued,
            outside_writes,
        })
    }

    /// Records get executable digests from `hashes`: an exec written after its digest
    /// finished looks it up, and a digest that finishes after its exec was written is
    /// put on the process's record and the exec's history row. Set once.
    pub fn set_hash_service(self: &Arc<Self>, hashes: Arc<HashService>) {
        let store = Arc::downgrade(self);
        hashes.on_hashed(move |done| {
            let Some(store) = store.upgrade() else {
                return;
            };
            let sent = store
                .tx
                .as_ref()
                .is_some_and(|tx| tx.try_send(Command::Hashed(done.clone())).is_ok());
            if !sent {
                store
                    .counters
                    .hash_updates_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        });
        let _ = self.hashes.set(hashes);
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

    /// The latest `limit` execs, newest first: the history's exec rows (kept as long as
    /// the history keeps them).
    pub fn recent_execs(&self, limit: usize) -> Result<Vec<ProcessRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_error(e.into()))?;
        let table = txn
            .open_table(HISTORY)
            .map_err(|e| self.db_error(e.into()))?;
        let mut execs = Vec::new();
        for row in table.iter().map_err(|e| self.db_error(e.into()))?.rev() {
            if execs.len() >= limit {
                break;
            }
            let (seq, bytes) = row.map_err(|e| self.db_error(e.into()))?;
            let record = ProcessRecord::from_json("history", seq.value(), bytes.value())?;
            if record.last_event == ProcessEventKind::Exec {
                execs.push(record);
            }
        }
        Ok(execs)
    }

    /// History rows of `pid` (every process that held it, told apart by `process_key`)
    /// written at or after `since`, after sequence number `after`, oldest first.
    pub fn history(
        &self,
        pid: u32,
        since: DateTime<Utc>,
        after: Option<u64>,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let read = || -> Result<Vec<(u64, Vec<u8>)>, redb::Error> {
            let txn = self.db.begin_read()?;
            let index = txn.open_table(HISTORY_BY_PID)?;
            let history = txn.open_table(HISTORY)?;
            let from = after.map_or(0, |a| a.saturating_add(1));
            let mut rows = Vec::new();
            for entry in index.range((pid, from)..=(pid, u64::MAX))? {
                let (k, _) = entry?;
                let seq = k.value().1;
                if let Some(v) = history.get(seq)? {
                    rows.push((seq, v.value().to_vec()));
                }
            }
            Ok(rows)
        };
        let mut out = Vec::new();
        for (seq, bytes) in read().map_err(|source| self.db_error(source))? {
            let record = ProcessRecord::from_json("history", seq, &bytes)?;
            if record.updated_at >= since {
                out.push(HistoryRow { seq, record });
            }
        }
        Ok(out)
    }

    /// Number of history rows.
    pub fn history_len(&self) -> Result<u64, StoreError> {
        let read = || -> Result<u64, redb::Error> {
            let txn = self.db.begin_read()?;
            Ok(txn.open_table(HISTORY)?.len()?)
        };
        read().map_err(|source| self.db_error(source))
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
        self.outside_writes.fetch_add(1, Ordering::Release);
        Ok(dead.len())
    }

    /// Waits until every batch accepted so far is committed (or failed). Blocking: for
    /// shutdown paths and tests, not for the pipeline.
    pub fn flush(&self) {
        let (done_tx, done_rx) = sync_channel(1);
        if let Some(tx) = &self.tx {
            if tx.send(Command::Flush(done_tx)).is_ok() {
                self.wake_writer();
                let _ = done_rx.recv();
            }
        }
    }

    /// Ends the writer's sleep in a round (a queued command alone does not).
    fn wake_writer(&self) {
        if let Some(writer) = &self.writer {
            writer.thread().unpark();
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
        self.wake_writer();
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
        // Counted before the send: the writer may take the batch (and count it off)
        // before `try_send` returns.
        let queued = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        match tx.try_send(Command::Write(batch.clone())) {
            Ok(()) => {
                if queued == MAX_BATCHES_PER_COMMIT {
                    self.wake_writer();
                }
                Delivery::Accepted
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                self.counters
                    .dropped_events
                    .fetch_add(events as u64, Ordering::Relaxed);
                Delivery::Dropped(events)
            }
        }
    }
}

/// The writer thread's view of the store.
struct Writer<'a> {
    db: &'a Database,
    path: &'a Path,
    config: StoreConfig,
    counters: &'a StoreCounters,
    hashes: &'a OnceLock<Arc<HashService>>,
    queued: &'a AtomicUsize,
    outside_writes: &'a AtomicU64,
}

/// Most decoded records the writer keeps (one per live process; more means exits were
/// missed, and then it starts over from the table).
const MAX_CACHED_RECORDS: usize = 1 << 16;

/// The writer's decoded copy of the `processes` table's rows it has read or written.
#[derive(Default)]
struct RecordCache {
    records: PidMap<ProcessRecord>,
    /// `outside_writes` when the records were last known to match the table.
    generation: u64,
}

impl Writer<'_> {
    fn run(&self, rx: Receiver<Command>) {
        let (config, counters) = (self.config, self.counters);
        let mut warned = false;
        let mut cache = RecordCache::default();
        while let Ok(first) = rx.recv() {
            let mut batches = Vec::new();
            let mut hashed = Vec::new();
            let mut flushes = Vec::new();
            let mut take =
                |command, batches: &mut Vec<EventBatch>, flushes: &mut Vec<SyncSender<()>>| {
                    match command {
                        Command::Write(batch) => {
                            self.queued.fetch_sub(1, Ordering::AcqRel);
                            batches.push(batch);
                        }
                        Command::Hashed(done) => hashed.push(done),
                        Command::Flush(done) => flushes.push(done),
                    }
                };
            take(first, &mut batches, &mut flushes);
            // Group commit: gather until the window closes, the transaction is full, a
            // flush is asked for, or the sender is gone (shutdown: commit what there is).
            // Asleep in between: `deliver` wakes the writer only for a full round.
            let window_end = std::time::Instant::now() + config.commit_interval;
            loop {
                let mut closed = false;
                loop {
                    match rx.try_recv() {
                        Ok(command) => take(command, &mut batches, &mut flushes),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                if closed || batches.len() >= MAX_BATCHES_PER_COMMIT || !flushes.is_empty() {
                    break;
                }
                let left = window_end.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::park_timeout(left);
            }
            let generation = self.outside_writes.load(Ordering::Acquire);
            if generation != cache.generation || cache.records.len() > MAX_CACHED_RECORDS {
                cache.records.clear();
                cache.generation = generation;
            }
            if !batches.is_empty() || !hashed.is_empty() {
                let events: u64 = batches
                    .iter()
                    .flat_map(|b| b.iter())
                    .filter(|e| matches!(e, CollectionEvent::Process(_)))
                    .count() as u64;
                let hashes = self.hashes.get().map(|h| &**h);
                let written = write_batches(
                    self.db,
                    &batches,
                    &hashed,
                    hashes,
                    config,
                    Utc::now(),
                    &mut cache.records,
                );
                if written.is_err() {
                    // What the cache says was written was not: back to the table.
                    cache.records.clear();
                }
                match written {
                    Ok(trimmed) => {
                        counters
                            .history_trimmed
                            .fetch_add(trimmed, Ordering::Relaxed);
                        counters.written_events.fetch_add(events, Ordering::Relaxed);
                        counters.commits.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        counters.failed_events.fetch_add(events, Ordering::Relaxed);
                        if !warned {
                            warned = true;
                            tracing::warn!(
                                "process store {}: a write failed, its events are lost: {e}",
                                self.path.display()
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
}

/// Whether an exit is of the process `record` describes, not of an older holder of the
/// pid: the same process key when both have one (the kernel's identity), otherwise
/// starts within [`crate::ptable::APPROX_TOLERANCE_NS`]. Starts are wall-clock times
/// converted from the kernel's boot time at different moments (a fork's and its exit's),
/// so they need not be equal to the nanosecond; a pid is not reused within 100 ms.
fn same_process(record: &ProcessRecord, exit: &ProcessEvent) -> bool {
    if let (Some(a), Some(b)) = (&record.process_key, &exit.process_key) {
        return a == b;
    }
    match (record.start_time, exit.start_time) {
        (Some(a), Some(b)) => (a - b)
            .num_nanoseconds()
            .is_some_and(|d| d.unsigned_abs() <= crate::ptable::APPROX_TOLERANCE_NS),
        _ => true,
    }
}

/// What a round leaves in a `processes` row.
enum FinalRow {
    /// The cached record, as this JSON when it is known (`None`: made from the cache).
    Write(Option<Vec<u8>>),
    /// Nothing: the process exited.
    Remove,
}

fn write_batches(
    db: &Database,
    batches: &[EventBatch],
    hashed: &[HashedExec],
    hashes: Option<&HashService>,
    config: StoreConfig,
    now: DateTime<Utc>,
    cache: &mut PidMap<ProcessRecord>,
) -> Result<u64, redb::Error> {
    let txn = db.begin_write()?;
    let trimmed;
    {
        let mut processes = txn.open_table(PROCESSES)?;
        let mut history = txn.open_table(HISTORY)?;
        let mut by_pid = txn.open_table(HISTORY_BY_PID)?;
        let mut next_history = history.last()?.map_or(0, |(k, _)| k.value() + 1);
        // `bytes`: the record's JSON (an exec's is also its `processes` row).
        let mut log = |pid: u32, bytes: &[u8]| -> Result<(), redb::Error> {
            history.insert(next_history, bytes)?;
            by_pid.insert((pid, next_history), ())?;
            next_history += 1;
            Ok(())
        };
        // The `processes` rows this round changes, written once at its end: a process
        // that forks, execs and exits within one round (most of an exec storm) costs no
        // `processes` write at all, only its history rows.
        let mut final_rows: PidMap<FinalRow> = PidMap::default();
        // Borrowed from the cache when it is there: records carry argv and paths, and a
        // clone per event was a good part of the writer's time in an exec storm.
        fn stored<'c>(
            processes: &redb::Table<'_, u32, &[u8]>,
            cache: &'c PidMap<ProcessRecord>,
            final_rows: &PidMap<FinalRow>,
            pid: u32,
        ) -> Result<Option<Cow<'c, ProcessRecord>>, redb::Error> {
            if let Some(record) = cache.get(&pid) {
                return Ok(Some(Cow::Borrowed(record)));
            }
            if matches!(final_rows.get(&pid), Some(FinalRow::Remove)) {
                // Exited earlier in this round; the table still has it until the end.
                return Ok(None);
            }
            // An undecodable record is as good as none: the event rewrites it.
            Ok(processes
                .get(pid)?
                .and_then(|v| serde_json::from_slice(v.value()).ok())
                .map(Cow::Owned))
        }
        for event in batches.iter().flat_map(|b| b.iter()) {
            let CollectionEvent::Process(event) = event else {
                continue;
            };
            match event.kind {
                ProcessEventKind::Exec | ProcessEventKind::Snapshot => {
                    let previous = stored(&processes, cache, &final_rows, event.pid)?;
                    let mut record = ProcessRecord::from_event(event, previous.as_deref());
                    drop(previous);
                    if record.executable_hash.is_none() {
                        // Its digest may have finished before the exec got here.
                        if let Some(done) =
                            hashes.and_then(|h| h.result_for(event.pid, event.timestamp))
                        {
                            record.executable_hash = Some(done.hex_digest);
                            record.hash_algorithm = Some(done.algorithm.name().to_owned());
                        }
                    }
                    let bytes = record.to_json();
                    if event.kind == ProcessEventKind::Exec {
                        log(event.pid, &bytes)?;
                    }
                    final_rows.insert(event.pid, FinalRow::Write(Some(bytes)));
                    cache.insert(event.pid, record);
                }
                ProcessEventKind::Fork => {
                    let Some(child) = event.child_pid else {
                        continue;
                    };
                    // The child's own exec may already be in (events of two CPUs).
                    let known = cache.contains_key(&child)
                        || (!matches!(final_rows.get(&child), Some(FinalRow::Remove))
                            && processes.get(child)?.is_some());
                    if !known {
                        let parent = stored(&processes, cache, &final_rows, event.pid)?;
                        let record = ProcessRecord::forked(parent.as_deref(), event, child);
                        drop(parent);
                        final_rows.insert(child, FinalRow::Write(None));
                        cache.insert(child, record);
                    }
                }
                ProcessEventKind::Exit => {
                    // An exit of an older process with this pid must not remove the
                    // one that reused it.
                    let current = stored(&processes, cache, &final_rows, event.pid)?;
                    let same = current
                        .as_deref()
                        .is_none_or(|record| same_process(record, event));
                    let current = if same {
                        final_rows.insert(event.pid, FinalRow::Remove);
                        // Taken out of the cache, not cloned: it leaves the table.
                        match current {
                            Some(Cow::Owned(record)) => Some(record),
                            Some(Cow::Borrowed(_)) => cache.remove(&event.pid),
                            None => None,
                        }
                    } else {
                        None
                    };
                    let exited = ProcessRecord::exited(event, current);
                    log(exited.pid, &exited.to_json())?;
                }
                // Neither starts nor ends a process, nor changes its image.
                ProcessEventKind::CredChange | ProcessEventKind::ExecFailed => {}
            }
        }
        for (pid, row) in final_rows {
            match row {
                FinalRow::Write(Some(bytes)) => {
                    processes.insert(pid, bytes.as_slice())?;
                }
                FinalRow::Write(None) => {
                    if let Some(record) = cache.get(&pid) {
                        processes.insert(pid, record.to_json().as_slice())?;
                    }
                }
                FinalRow::Remove => {
                    processes.remove(pid)?;
                }
            }
        }
        for done in hashed {
            // put_hash rewrites the row from the table: the decoded copy is stale.
            cache.remove(&done.pid);
            put_hash(&mut processes, &mut history, &by_pid, done)?;
        }
        trimmed = trim_history(&mut history, &mut by_pid, config, now)?;
    }
    txn.commit()?;
    Ok(trimmed)
}

/// Puts a digest that finished after its exec was written on the process's record and
/// on the exec's history row, if they are still that exec's (same process key and exec
/// time): a later exec of the same pid keeps its own.
fn put_hash(
    processes: &mut redb::Table<'_, u32, &[u8]>,
    history: &mut redb::Table<'_, u64, &[u8]>,
    by_pid: &redb::Table<'_, (u32, u64), ()>,
    done: &HashedExec,
) -> Result<(), redb::Error> {
    let is_its_exec = |r: &ProcessRecord| {
        r.updated_at == done.exec_time
            && matches!(
                r.last_event,
                ProcessEventKind::Exec | ProcessEventKind::Snapshot
            )
            && (done.process_key.is_none() || r.process_key == done.process_key)
    };
    let with_hash = |mut r: ProcessRecord| {
        r.executable_hash = Some(done.hash.hex_digest.clone());
        r.hash_algorithm = Some(done.hash.algorithm.name().to_owned());
        r.to_json()
    };
    let current = processes
        .get(done.pid)?
        .and_then(|v| serde_json::from_slice::<ProcessRecord>(v.value()).ok());
    if let Some(record) = current.filter(is_its_exec) {
        processes.insert(done.pid, with_hash(record).as_slice())?;
    }
    // The exec's row is among the pid's last few (its exit may follow it).
    let seqs: Vec<u64> = by_pid
        .range((done.pid, 0)..=(done.pid, u64::MAX))?
        .rev()
        .take(4)
        .filter_map(|r| r.ok().map(|(k, _)| k.value().1))
        .collect();
    for seq in seqs {
        let row = history
            .get(seq)?
            .and_then(|v| serde_json::from_slice::<ProcessRecord>(v.value()).ok());
        if let Some(row) = row.filter(is_its_exec) {
            history.insert(seq, with_hash(row).as_slice())?;
            break;
        }
    }
    Ok(())
}

/// Removes the oldest history rows past the size cap, then those past the age limit.
fn trim_history(
    history: &mut redb::Table<'_, u64, &[u8]>,
    by_pid: &mut redb::Table<'_, (u32, u64), ()>,
    config: StoreConfig,
    now: DateTime<Utc>,
) -> Result<u64, redb::Error> {
    let oldest_kept = chrono::Duration::from_std(config.history_max_age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age));
    let mut trimmed = 0;
    let mut excess = history.len()?.saturating_sub(config.history_max_records);
    loop {
        let Some((seq, pid, at)) = history.first()?.map(|(k, v)| {
            // A row that does not decode cannot be dated: retention takes it first.
            let record: Option<ProcessRecord> = serde_json::from_slice(v.value()).ok();
            (
                k.value(),
                record.as_ref().map(|r| r.pid),
                record.map(|r| r.updated_at),
            )
        }) else {
            break;
        };
        let too_old = match (at, oldest_kept) {
            (Some(at), Some(limit)) => at < limit,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if excess == 0 && !too_old {
            break;
        }
        history.remove(seq)?;
        if let Some(pid) = pid {
            by_pid.remove((pid, seq))?;
        }
        excess = excess.saturating_sub(1);
        trimmed += 1;
    }
    Ok(trimmed)
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
    fn exec_log_is_the_historys_execs_and_other_domains_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessStore::open(&dir.path().join(STORE_FILE)).unwrap();
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
        let CollectionEvent::Process(mut exit) = process(Exit, 103, "/bin/true") else {
            unreachable!()
        };
        exit.exit_code = Some(0);
        store.deliver(&batch(vec![CollectionEvent::Process(exit)]));
        store.flush();
        // The exit's history row is not an exec.
        assert_eq!(pids(&store.recent_execs(3).unwrap()), [104, 103, 102]);
        assert_eq!(
            pids(&store.recent_execs(100).unwrap()),
            [104, 103, 102, 101, 100]
        );
        assert_eq!(store.history_len().unwrap(), 6);
        assert_eq!(store.processes().unwrap().len(), 4);
        assert_eq!(store.counters().written_events.load(Ordering::Relaxed), 6);
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

    /// The writer's decoded records follow the table: a process that
    /// `retain_processes` removed behind the writer's back is gone for it too, so a
    /// later fork that reuses the pid writes the child.
    #[test]
    fn records_removed_outside_the_writer_are_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessStore::open(&dir.path().join(STORE_FILE)).unwrap();
        store.deliver(&batch(vec![
            process(Snapshot, 1, "/sbin/init"),
            process(Exec, 7, "/bin/old"),
        ]));
        store.flush();
        assert_eq!(store.retain_processes(|r| r.pid != 7).unwrap(), 1);
        let CollectionEvent::Process(mut fork) = process(Fork, 1, "/sbin/init") else {
            unreachable!()
        };
        fork.child_pid = Some(7);
        store.deliver(&batch(vec![CollectionEvent::Process(fork)]));
        store.flush();
        let child = store
            .process(7)
            .unwrap()
            .expect("the fork's child is written");
        assert_eq!(child.last_event, Fork);
        assert_eq!(child.executable_path.as_deref(), Some("/sbin/init"));
        // And what the writer remembers of a live process is what the table holds.
        let CollectionEvent::Process(mut exit) = process(Exit, 7, "/sbin/init") else {
            unreachable!()
        };
        exit.start_time = child.start_time;
        store.deliver(&batch(vec![CollectionEvent::Process(exit)]));
        store.flush();
        assert!(store.process(7).unwrap().is_none());
        let rows = store.history(7, DateTime::<Utc>::MIN_UTC, None).unwrap();
        let exit = rows.last().expect("the exit's history row");
        assert_eq!(exit.record.last_event, Exit);
        assert_eq!(exit.record.executable_path.as_deref(), Some("/sbin/init"));
    }

    /// A round sleeps for `commit_interval` without waking per batch; a flush ends the
    /// sleep at once (here a round of 2 minutes would otherwise hold it).
    #[test]
    fn a_flush_does_not_wait_for_the_round() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessStore::open_with(
            &dir.path().join(STORE_FILE),
            StoreConfig {
                commit_interval: std::time::Duration::from_secs(120),
                ..StoreConfig::default()
            },
        )
        .unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for pid in 100..110 {
                    store.deliver(&batch(vec![process(Exec, pid, "/bin/true")]));
                }
                store.flush();
                let _ = done_tx.send(());
            });
            done_rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("flush returned before the 2-minute round ended");
        });
        assert_eq!(store.counters().written_events.load(Ordering::Relaxed), 10);
        assert_eq!(store.processes().unwrap().len(), 10);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessStore::open_with(
            &dir.path().join(STORE_FILE),
            StoreConfig {
                queue_batches: 1,
                // No gathering: the writer goes to the database as soon as it has
                // taken what is queued.
                commit_interval: std::time::Duration::ZERO,
                ..StoreConfig::default()
            },
        )
        .unwrap();
        // Hold the database's single write transaction: the writer blocks at its first
        // commit, so the queue of one fills. How many batches the writer takes before
        // it blocks depends on how its thread and this one interleave; what must hold
        // whatever the interleaving is that every batch is accepted or dropped and
        // counted, that `deliver` never waits, and that what was accepted is written.
        let held = store.db.begin_write().unwrap();
        let two = batch(vec![process(Exec, 1, "/bin/a"), process(Exec, 2, "/bin/b")]);
        let (mut accepted, mut dropped, mut deliveries) = (0usize, 0usize, 0usize);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // Until the queue has dropped ten batches (the writer is stuck by then).
        while dropped < 2 * 10 {
            assert!(
                std::time::Instant::now() < deadline,
                "no drop in 30 s with a queue of one and the writer blocked: \
                 accepted {accepted} of {deliveries}"
            );
            deliveries += 1;
            match store.deliver(&two) {
                Delivery::Accepted => accepted += 1,
                Delivery::Dropped(n) => dropped += n,
            }
        }
        assert_eq!(2 * accepted + dropped, 2 * deliveries);
        assert_eq!(store.dropped(), dropped as u64);
        held.abort().unwrap();
        store.flush();
        let written = store.counters().written_events.load(Ordering::Relaxed);
        assert_eq!(written, 2 * accepted as u64);
        let logged = store.recent_execs(written as usize + 1).unwrap().len();
        assert_eq!(logged, written as usize);
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

    /// One round (one transaction) with a whole life and a pid reuse in it: the table
    /// ends with what the round leaves (the short-lived process gone, the pid's new
    /// process there), and the history has every exec and exit in order.
    #[test]
    fn a_round_leaves_each_pid_as_its_last_event_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessStore::open(&dir.path().join(STORE_FILE)).unwrap();
        let with_start = |ev: CollectionEvent, start: i64| match ev {
            CollectionEvent::Process(mut p) => {
                p.start_time = DateTime::from_timestamp(start, 0);
                CollectionEvent::Process(p)
            }
            other => other,
        };
        let fork = |child: u32, start: i64| match process(Fork, 10, "/bin/sh") {
            CollectionEvent::Process(mut p) => {
                p.child_pid = Some(child);
                p.child_start_time = DateTime::from_timestamp(start, 0);
                CollectionEvent::Process(p)
            }
            other => other,
        };
        store.deliver(&batch(vec![
            process(Exec, 10, "/bin/sh"),
            fork(11, 100),
            with_start(process(Exec, 11, "/bin/true"), 100),
            with_start(process(Exit, 11, "/bin/true"), 100),
            // A child that exits without exec (a subshell): its exit carries its start.
            fork(12, 101),
            with_start(process(Exit, 12, "/bin/sh"), 101),
            fork(11, 200),
            with_start(process(Exec, 11, "/usr/bin/sleep"), 200),
        ]));
        store.flush();
        assert_eq!(pids(&store.processes().unwrap()), [10, 11]);
        let reused = store.process(11).unwrap().unwrap();
        assert_eq!(reused.executable_path.as_deref(), Some("/usr/bin/sleep"));
        assert_eq!(reused.start_time, DateTime::from_timestamp(200, 0));
        assert!(store.process(12).unwrap().is_none(), "forked and exited");
        let rows = store.history(11, DateTime::UNIX_EPOCH, None).unwrap();
        let seen: Vec<(ProcessEventKind, Option<&str>)> = rows
            .iter()
            .map(|r| (r.record.last_event, r.record.executable_path.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                (Exec, Some("/bin/true")),
                (Exit, Some("/bin/true")),
                (Exec, Some("/usr/bin/sleep")),
            ]
        );
        // The next round starts from what this one left.
        store.deliver(&batch(vec![with_start(
            process(Exit, 11, "/usr/bin/sleep"),
            200,
        )]));
        store.flush();
        assert_eq!(pids(&store.processes().unwrap()), [10]);
    }

    /// An exit is its process's when the keys match, or, without keys, when the starts
    /// are within the tolerance: a fork's start and its exit's are converted from the
    /// kernel's boot time at different moments and may differ by nanoseconds.
    #[test]
    fn an_exit_matches_its_process_by_key_or_by_close_start() {
        let start = DateTime::from_timestamp(1_800_000_000, 5).unwrap();
        let mut exec = ProcessEvent::new(Exec, start, 9, "ebpf-process");
        exec.start_time = Some(start);
        let record = ProcessRecord::from_event(&exec, None);
        let mut exit = ProcessEvent::new(Exit, start, 9, "ebpf-process");
        exit.start_time = Some(start + chrono::Duration::nanoseconds(37));
        assert!(same_process(&record, &exit));
        exit.start_time = Some(start + chrono::Duration::seconds(5));
        assert!(!same_process(&record, &exit), "another holder of the pid");
        let mut keyed = record.clone();
        keyed.process_key = Some("9:100".into());
        exit.start_time = Some(start);
        exit.process_key = Some("9:200".into());
        assert!(
            !same_process(&keyed, &exit),
            "keys decide when both have one"
        );
        exit.process_key = Some("9:100".into());
        exit.start_time = Some(start + chrono::Duration::seconds(5));
        assert!(same_process(&keyed, &exit));
    }

    /// Records written before the times had nine fixed digits (chrono's own text, as
    /// few digits as needed) read back; new ones are written with nine.
    #[test]
    fn records_with_chrono_formatted_times_still_read() {
        let old = br#"{"pid":7,"ppid":1,"start_time":"2026-11-27T13:04:39Z","last_event":"exec","updated_at":"2026-11-27T13:04:40.5Z","source":"ebpf-process"}"#;
        let record = ProcessRecord::from_json("processes", 7, old).unwrap();
        assert_eq!(
            record.start_time,
            Some(
                DateTime::parse_from_rfc3339("2026-11-27T13:04:39Z")
                    .unwrap()
                    .into()
            )
        );
        assert_eq!(record.updated_at.timestamp_subsec_millis(), 500);
        let text = String::from_utf8(record.to_json()).unwrap();
        assert!(
            text.contains(r#""updated_at":"2026-11-27T13:04:40.500000000Z""#),
            "{text}"
        );
        assert_eq!(
            ProcessRecord::from_json("processes", 7, text.as_bytes()).unwrap(),
            record
        );
    }

    fn keyed(kind: ProcessEventKind, pid: u32, start_ns: u64, at: DateTime<Utc>) -> ProcessEvent {
        let mut ev = ProcessEvent::new(kind, at, pid, "ebpf-process");
        ev.process_key = Some(format!("{pid}:{start_ns}").into());
        ev.ppid = Some(1);
        ev.name = Some(format!("p{start_ns}").into());
        ev.executable_path = Some(format!("/bin/p{start_ns}"));
        ev
    }

    /// Two processes that held pid 300 one after the other: their history rows are told
    /// apart by process key, the exit row carries its code, and a time window selects.
    #[test]
    fn history_by_pid_tells_reused_pids_apart_and_honours_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessStore::open_in(dir.path(), StoreConfig::default()).unwrap();
        let t0 = Utc::now() - chrono::Duration::minutes(30);
        let mut exit1 = keyed(Exit, 300, 1, t0 + chrono::Duration::seconds(1));
        exit1.exit_code = Some(7);
        let events = vec![
            keyed(Exec, 300, 1, t0),
            keyed(Exec, 301, 5, t0),
            exit1,
            keyed(Exec, 300, 2, t0 + chrono::Duration::minutes(20)),
        ];
        store.deliver(&batch(
            events.into_iter().map(CollectionEvent::from).collect(),
        ));
        store.flush();
        let all = store
            .history(300, t0 - chrono::Duration::seconds(1), None)
            .unwrap();
        let rows: Vec<(Option<&str>, ProcessEventKind, Option<i32>)> = all
            .iter()
            .map(|h| {
                (
                    h.record.process_key.as_deref(),
                    h.record.last_event,
                    h.record.exit_code,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (Some("300:1"), Exec, None),
                (Some("300:1"), Exit, Some(7)),
                (Some("300:2"), Exec, None)
            ]
        );
        assert_eq!(all[1].record.executable_path.as_deref(), Some("/bin/p1"));
        let recent = store
            .history(300, Utc::now() - chrono::Duration::minutes(15), None)
            .unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].record.process_key.as_deref(), Some("300:2"));
        // Paging: after the first row's sequence number come the other two.
        let after = store
            .history(300, t0 - chrono::Duration::seconds(1), Some(all[0].seq))
            .unwrap();
        assert_eq!(after.len(), 2);
    }

    #[test]
    fn history_retention_by_size_and_by_age_is_applied_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProcessStore::open_in(
            dir.path(),
            StoreConfig {
                history_max_records: 5,
                history_max_age: std::time::Duration::from_secs(3600),
                ..StoreConfig::default()
            },
        )
        .unwrap();
        let old = Utc::now() - chrono::Duration::hours(2);
        // Two rows past the age limit, then eight recent ones: the size cap keeps 5.
        let mut events: Vec<CollectionEvent> = (0..2)
            .map(|i| keyed(Exec, 400 + i, 1, old).into())
            .collect();
        events.extend((0..8).map(|i| keyed(Exec, 500 + i, 1, Utc::now()).into()));
        store.deliver(&batch(events));
        store.flush();
        assert_eq!(store.history_len().unwrap(), 5);
        assert_eq!(store.counters().history_trimmed.load(Ordering::Relaxed), 5);
        assert!(store
            .history(400, old - chrono::Duration::hours(1), None)
            .unwrap()
            .is_empty());
        assert_eq!(store.history(507, old, None).unwrap().len(), 1);
        assert!(
            store.history(502, old, None).unwrap().is_empty(),
            "oldest by size went"
        );
    }

    #[test]
    fn a_store_of_a_newer_schema_is_refused_and_a_version_1_store_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        // A version-1 store: only `processes` and `execs`, no `meta`.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(PROCESSES)
                .unwrap()
                .insert(9, br#"{"pid":9,"last_event":"exec","updated_at":"2026-01-01T00:00:00Z","source":"ebpf-process"}"#.as_slice())
                .unwrap();
            txn.open_table(EXECS).unwrap();
            txn.commit().unwrap();
        }
        {
            let store = ProcessStore::open(&path).unwrap();
            assert_eq!(
                store.process(9).unwrap().unwrap().pid,
                9,
                "old rows still read"
            );
            assert_eq!(store.history_len().unwrap(), 0);
        }
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let version = txn
                .open_table(META)
                .unwrap()
                .get("schema_version")
                .unwrap()
                .unwrap()
                .value();
            assert_eq!(version, SCHEMA_VERSION, "upgraded in place");
            use redb::TableHandle;
            assert!(
                !txn.list_tables().unwrap().any(|t| t.name() == "execs"),
                "the old exec log is gone"
            );
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = ProcessStore::open(&path)
            .err()
            .expect("a newer schema is refused");
        assert!(
            matches!(err, StoreError::SchemaMismatch { found, .. } if found == SCHEMA_VERSION + 1)
        );
        let text = err.to_string();
        assert!(
            text.contains("schema version 4") && text.contains("move the file away"),
            "{text}"
        );
    }
}
