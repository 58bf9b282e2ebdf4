//! [`ProcessTable`]: the daemon's live view of every process, keyed by process key
//! (pid + start time), so a reused pid is a new row, never an update of the old one.
//!
//! - Seeded from `/proc` at start ([`ProcessTable::seed_from_proc`]), then kept by the
//!   process events the collector delivers to it as an [`EventSink`] (kernel `fork`,
//!   `exec`, `exit`, `cred_change`; or the procfs polls' `snapshot`, `exec`, `exit` in
//!   fallback mode).
//! - Exited processes stay for [`TableConfig::exited_retention`], so `collector processes
//!   --exited` can list what ended recently.
//! - Bounded: past [`TableConfig::max_entries`] the oldest exited rows go first
//!   (`evicted_exited`); when only live rows remain, a new process is not tracked and is
//!   counted (`over_capacity`). Every loss is counted once, under its reason.
//!
//! Keys. The kernel gives `<pid>:<start, CLOCK_BOOTTIME ns>`. `/proc/<pid>/stat` gives the
//! same start in clock ticks (10 ms), and a `fork` event gives the child's start as
//! wall-clock time, so rows made from those carry an *approximate* start until the first
//! kernel event of the process arrives with the exact key; the row is then re-keyed. An
//! approximate row matches an exact key only within [`APPROX_TOLERANCE_NS`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use collector_core::event::{CompactString, ProcessContext, ProcessEvent, ProcessEventKind};
use collector_core::{CollectionEvent, Delivery, EventBatch, EventSink};

use crate::ebpf::clock::BootClock;
use crate::exec_hash::{HashRequest, HashService, HashedExec};

/// How far an approximate start (clock ticks from `/proc`, or a fork's wall-clock time)
/// may be from the exact kernel start and still be the same process.
pub const APPROX_TOLERANCE_NS: u64 = 100_000_000;

/// A process's identity: pid and start time (CLOCK_BOOTTIME ns). Displayed as the
/// events' `process_key`, `<pid>:<start ns>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    /// Process id (thread-group id).
    pub pid: u32,
    /// Start of the thread-group leader, CLOCK_BOOTTIME nanoseconds.
    pub start_ns: u64,
}

impl ProcessKey {
    /// Parses `<pid>:<start ns>` (decimal digits only). Every kernel event's key is
    /// parsed once to enrich it: a byte loop, not `str::parse`.
    pub fn parse(s: &str) -> Option<Self> {
        fn digits(s: &[u8]) -> Option<u64> {
            if s.is_empty() || s.len() > 20 {
                return None;
            }
            s.iter().try_fold(0u64, |n, &b| {
                let d = b.wrapping_sub(b'0');
                if d > 9 {
                    return None;
                }
                n.checked_mul(10)?.checked_add(u64::from(d))
            })
        }
        let (pid, start) = s.split_once(':')?;
        Some(Self {
            pid: u32::try_from(digits(pid.as_bytes())?).ok()?,
            start_ns: digits(start.as_bytes())?,
        })
    }
}

impl fmt::Display for ProcessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.pid, self.start_ns)
    }
}

/// One process as the table knows it. Field names are those of process events.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRow {
    /// Its key.
    pub key: ProcessKey,
    /// False while `key.start_ns` is approximate (from `/proc` ticks or a fork's time).
    pub key_exact: bool,
    /// Parent pid.
    pub ppid: Option<u32>,
    /// The parent's key, when the parent was in the table.
    pub parent_key: Option<ProcessKey>,
    /// Real uid.
    pub uid: Option<u32>,
    /// Real gid.
    pub gid: Option<u32>,
    /// Task name (`comm`).
    pub name: Option<String>,
    /// Task name at the last exec (what the process was started as, before any rename).
    pub exec_name: Option<String>,
    /// Executable path.
    pub executable_path: Option<String>,
    /// Arguments, argv[0] first. Shared: a fork's child holds its parent's until it
    /// execs (a copy per fork was most of the table's time in an exec storm).
    pub command_line: Arc<[String]>,
    /// Start, wall clock.
    pub start_time: Option<DateTime<Utc>>,
    /// When it exited (absent while it runs).
    pub exit_time: Option<DateTime<Utc>>,
    /// Exit code, when the exit was seen.
    pub exit_code: Option<i32>,
    /// Digest of the executable (with `compute_executable_hashes`), set by the exec's
    /// event or, when the file was not hashed yet, when its hash finishes.
    pub executable_hash: Option<String>,
    /// Algorithm of `executable_hash` (`sha256`).
    pub hash_algorithm: Option<String>,
    /// Timestamp of the event that set the executable (the exec, or the snapshot that
    /// first saw the process): which exec a finished hash belongs to.
    pub exec_time: Option<DateTime<Utc>>,
    /// The event that last changed the row.
    pub last_event: ProcessEventKind,
    /// When that event happened.
    pub updated_at: DateTime<Utc>,
    /// A fork of it was seen (some row may hold its key as `parent_key`).
    pub has_children: bool,
}

impl ProcessRow {
    fn new(key: ProcessKey, key_exact: bool, at: DateTime<Utc>, kind: ProcessEventKind) -> Self {
        Self {
            key,
            key_exact,
            ppid: None,
            parent_key: None,
            uid: None,
            gid: None,
            name: None,
            exec_name: None,
            executable_path: None,
            command_line: Arc::from([]),
            start_time: None,
            exit_time: None,
            exit_code: None,
            executable_hash: None,
            hash_algorithm: None,
            exec_time: None,
            last_event: kind,
            updated_at: at,
            has_children: false,
        }
    }

    /// Whether the process still runs (as far as the table saw).
    pub fn is_live(&self) -> bool {
        self.exit_time.is_none()
    }
}

/// Limits of a [`ProcessTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableConfig {
    /// Rows kept, live and exited together.
    pub max_entries: usize,
    /// How long an exited process stays listed.
    pub exited_retention: Duration,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            max_entries: 65_536,
            exited_retention: Duration::from_secs(600),
        }
    }
}

/// Counters of a [`ProcessTable`]. Losses (`evicted_exited`, `over_capacity`) are
/// counted once each, here; status and metrics read these.
#[derive(Debug, Default)]
pub struct TableCounters {
    /// Process events applied.
    pub events: AtomicU64,
    /// Rows seeded from `/proc`.
    pub seeded: AtomicU64,
    /// Exited rows removed before their retention ended, to make room.
    pub evicted_exited: AtomicU64,
    /// New processes not tracked because the table was full of live ones.
    pub over_capacity: AtomicU64,
    /// Exited rows removed at the end of their retention (not a loss).
    pub expired: AtomicU64,
    /// Live rows closed because a new process took their pid before their exit was seen.
    pub exit_missed: AtomicU64,
}

/// Counter values at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Live rows.
    pub live: usize,
    /// Exited rows still kept.
    pub exited: usize,
    /// See [`TableCounters::events`].
    pub events: u64,
    /// See [`TableCounters::seeded`].
    pub seeded: u64,
    /// See [`TableCounters::evicted_exited`].
    pub evicted_exited: u64,
    /// See [`TableCounters::over_capacity`].
    pub over_capacity: u64,
    /// See [`TableCounters::expired`].
    pub expired: u64,
    /// See [`TableCounters::exit_missed`].
    pub exit_missed: u64,
}

/// The table's maps: every event does a few lookups, and SipHash (std's default) was a
/// visible part of the daemon. foldhash is seeded per process like std's hasher, and the
/// keys (pids, kernel start times) are not chosen by a process anyway.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Inner {
    rows: Map<ProcessKey, ProcessRow>,
    live_by_pid: Map<u32, ProcessKey>,
    /// The latest exited row of each pid: an event read after its process's exit was
    /// applied (rings drain independently) still finds the process.
    exited_by_pid: Map<u32, ProcessKey>,
    /// Contexts handed to network and filesystem events, built once per row version:
    /// enriching an event is a lookup and a reference count, not string copies. An event
    /// about a process drops its entry before changing the row.
    contexts: Map<ProcessKey, Arc<ProcessContext>>,
    /// Exited rows in exit order (oldest first). A key may be stale (row re-keyed or
    /// already evicted): checked when popped.
    exited: VecDeque<(DateTime<Utc>, ProcessKey)>,
}

/// The live process table. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug)]
pub struct ProcessTable {
    config: TableConfig,
    inner: Mutex<Inner>,
    /// Bumped by every [`lock`](Self::lock), before the table can change: a
    /// [`ContextMemo`] taken at one value still holds while the counter has it.
    changes: AtomicU64,
    counters: TableCounters,
    /// Finished executable hashes an exec may find when it arrives after its digest.
    hashes: std::sync::OnceLock<Arc<HashService>>,
}

/// The context one caller of [`ProcessTable::enrich_with`] (a drain loop) was given
/// last, with the table's change count then. In a storm one process's events follow each
/// other: while the table is unchanged, the next event of the same pid and key gets the
/// same context without the table's lock, key parse and lookup. A process the table does
/// not know is remembered as unknown the same way (a filesystem-only daemon, or events
/// read before their process's exec): that answer too holds until the table changes.
#[derive(Default)]
pub struct ContextMemo {
    last: Option<(u32, CompactString, u64, Option<Arc<ProcessContext>>)>,
}

/// Where a query starts and how much it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Processes running now.
    Live,
    /// Processes that exited at or after this time.
    ExitedSince(DateTime<Utc>),
}

impl ProcessTable {
    /// An empty table.
    pub fn new(config: TableConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner::default()),
            changes: AtomicU64::new(0),
            counters: TableCounters::default(),
            hashes: std::sync::OnceLock::new(),
        }
    }

    /// Rows get executable digests from `hashes`: registers for its finished hashes, and
    /// an exec applied after its digest finished looks it up. Set once, before events.
    pub fn set_hash_service(self: &Arc<Self>, hashes: Arc<HashService>) {
        let table = Arc::downgrade(self);
        hashes.on_hashed(move |done| {
            if let Some(table) = table.upgrade() {
                table.executable_hashed(done);
            }
        });
        let _ = self.hashes.set(hashes);
    }

    /// Puts a finished digest on the row of its exec, if the row is still at that exec
    /// (a later exec replaced the image: the digest is not its).
    pub fn executable_hashed(&self, done: &HashedExec) {
        let mut inner = self.lock();
        let key = done
            .process_key
            .as_deref()
            .and_then(ProcessKey::parse)
            .or_else(|| inner.live_by_pid.get(&done.pid).copied());
        let Some(key) = key else {
            return;
        };
        if let Some(row) = inner.rows.get_mut(&key) {
            if row.exec_time == Some(done.exec_time) {
                row.executable_hash = Some(done.hash.hex_digest.clone());
                row.hash_algorithm = Some(done.hash.algorithm.name().to_owned());
            }
        }
    }

    /// Live rows whose executable has no digest yet, as hash requests (the rows seeded
    /// from `/proc`, whose exec the collector did not see).
    pub fn unhashed(&self) -> Vec<HashRequest> {
        let inner = self.lock();
        inner
            .live_by_pid
            .values()
            .filter_map(|k| inner.rows.get(k))
            .filter(|r| r.executable_hash.is_none())
            .filter_map(|r| {
                Some(HashRequest {
                    pid: r.key.pid,
                    process_key: r.key_exact.then(|| r.key.to_string()),
                    exec_time: r.exec_time?,
                    version: None,
                    path: None,
                    running_image: true,
                })
            })
            .collect()
    }

    /// Its limits.
    pub fn config(&self) -> TableConfig {
        self.config
    }

    /// The table, for any use: counted as a change (see [`ContextMemo`]).
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        let inner = self.lock_unchanged();
        self.changes.fetch_add(1, Ordering::AcqRel);
        inner
    }

    /// The table, for a lookup that changes no row (it may fill `contexts`, which is
    /// made from the rows).
    fn lock_unchanged(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counter values now.
    pub fn stats(&self) -> TableStats {
        let (live, total) = {
            let inner = self.lock();
            (inner.live_by_pid.len(), inner.rows.len())
        };
        let c = &self.counters;
        TableStats {
            live,
            exited: total - live,
            events: c.events.load(Ordering::Relaxed),
            seeded: c.seeded.load(Ordering::Relaxed),
            evicted_exited: c.evicted_exited.load(Ordering::Relaxed),
            over_capacity: c.over_capacity.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            exit_missed: c.exit_missed.load(Ordering::Relaxed),
        }
    }

    /// Adds every process in `/proc` that the table does not know yet; returns how many
    /// were added. Processes that vanish mid-scan are skipped.
    pub fn seed_from_proc(&self) -> std::io::Result<usize> {
        let all = crate::procfs::read::processes(None).map_err(std::io::Error::other)?;
        let now = Utc::now();
        let clock = BootClock::new();
        let mut rows = Vec::new();
        for proc in all {
            let start_ns = proc.start_ns_since_boot();
            let key = ProcessKey {
                pid: proc.pid,
                start_ns,
            };
            let mut row = ProcessRow::new(key, false, now, ProcessEventKind::Snapshot);
            row.ppid = Some(proc.ppid);
            row.uid = proc.ruid;
            row.gid = proc.rgid;
            row.name = Some(proc.comm);
            row.executable_path = proc.executable_path;
            row.command_line = proc.command_line.into();
            row.start_time = Some(clock.to_utc(start_ns));
            row.exec_time = Some(now);
            rows.push(row);
        }
        Ok(self.seed(rows))
    }

    /// Adds rows from a scan (pids the table already tracks are left alone); returns
    /// how many were added.
    pub fn seed(&self, rows: Vec<ProcessRow>) -> usize {
        let mut inner = self.lock();
        let mut added = 0;
        for row in rows {
            if inner.live_by_pid.contains_key(&row.key.pid) {
                continue;
            }
            if self.insert(&mut inner, row) {
                added += 1;
            }
        }
        // Parents' keys, now that every row is in.
        let links: Vec<(ProcessKey, ProcessKey)> = inner
            .rows
            .values()
            .filter(|r| r.parent_key.is_none())
            .filter_map(|r| Some((r.key, *inner.live_by_pid.get(&r.ppid?)?)))
            .collect();
        for (child, parent) in links {
            if let Some(row) = inner.rows.get_mut(&child) {
                row.parent_key = Some(parent);
            }
            if let Some(row) = inner.rows.get_mut(&parent) {
                row.has_children = true;
            }
            inner.contexts.remove(&child);
        }
        self.counters
            .seeded
            .fetch_add(added as u64, Ordering::Relaxed);
        added
    }

    /// Applies one process event.
    pub fn apply(&self, ev: &ProcessEvent) {
        self.counters.events.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        self.expire(&mut inner, ev.timestamp);
        // Whatever row this event changes, its cached context is stale from here.
        let touched = [Some(ev.pid), ev.child_pid]
            .into_iter()
            .flatten()
            .filter_map(|pid| inner.live_by_pid.get(&pid).copied())
            .chain(ev.process_key.as_deref().and_then(ProcessKey::parse));
        for key in touched.collect::<Vec<_>>() {
            inner.contexts.remove(&key);
        }
        match ev.kind {
            ProcessEventKind::Fork => self.apply_fork(&mut inner, ev),
            ProcessEventKind::Exec | ProcessEventKind::Snapshot => {
                let Some(key) = self.row_for(&mut inner, ev) else {
                    return;
                };
                let parent_key = ev.ppid.and_then(|p| inner.live_by_pid.get(&p).copied());
                if let Some(parent) = parent_key.and_then(|k| inner.rows.get_mut(&k)) {
                    parent.has_children = true;
                }
                let Some(row) = inner.rows.get_mut(&key) else {
                    return;
                };
                fill_from(row, ev);
                if parent_key.is_some() {
                    row.parent_key = parent_key;
                }
                if ev.kind == ProcessEventKind::Exec || row.exec_name.is_none() {
                    row.exec_name = ev.name.as_deref().map(str::to_owned);
                }
                if ev.executable_path.is_some() {
                    row.executable_path = ev.executable_path.clone();
                }
                if !ev.command_line.is_empty() || ev.kind == ProcessEventKind::Exec {
                    row.command_line = Arc::from(ev.command_line.as_slice());
                }
                if ev.kind == ProcessEventKind::Exec || ev.executable_path.is_some() {
                    // A new image: the digest is the event's, or one that finished first.
                    row.exec_time = Some(ev.timestamp);
                    let (hash, algorithm) = match &ev.executable_hash {
                        Some(h) => (Some(h.clone()), ev.hash_algorithm.clone()),
                        None => match self
                            .hashes
                            .get()
                            .and_then(|s| s.result_for(ev.pid, ev.timestamp))
                        {
                            Some(done) => (
                                Some(done.hex_digest),
                                Some(done.algorithm.name().to_owned()),
                            ),
                            None => (None, None),
                        },
                    };
                    row.executable_hash = hash;
                    row.hash_algorithm = algorithm;
                }
            }
            ProcessEventKind::CredChange => {
                let Some(key) = self.row_for(&mut inner, ev) else {
                    return;
                };
                if let Some(row) = inner.rows.get_mut(&key) {
                    fill_from(row, ev);
                    if let Some(c) = &ev.credentials {
                        row.uid = Some(c.uid);
                        row.gid = Some(c.gid);
                    }
                }
            }
            ProcessEventKind::Exit => {
                let Some(key) = self.row_for(&mut inner, ev) else {
                    return;
                };
                if let Some(row) = inner.rows.get_mut(&key) {
                    fill_from(row, ev);
                    row.exit_code = ev.exit_code;
                }
                self.close(&mut inner, key, ev.timestamp);
            }
            ProcessEventKind::ExecFailed => {}
        }
    }

    /// The row of the process `ev` is about, created when new. `None` when the table is
    /// full (counted) or the event is about a process already gone.
    fn row_for(&self, inner: &mut Inner, ev: &ProcessEvent) -> Option<ProcessKey> {
        let exact = ev.process_key.as_deref().and_then(ProcessKey::parse);
        if let Some(&live) = inner.live_by_pid.get(&ev.pid) {
            let row = &inner.rows[&live];
            let same = match exact {
                Some(k) if row.key_exact => k == live,
                Some(k) => k.start_ns.abs_diff(live.start_ns) <= APPROX_TOLERANCE_NS,
                // Procfs events: same start second (their resolution), or no start.
                None => match (ev.start_time, row.start_time) {
                    (Some(a), Some(b)) => (a - b).num_milliseconds().abs() < 1_500,
                    _ => true,
                },
            };
            if same {
                return Some(match exact {
                    Some(k) if k != live => self.rekey(inner, live, k),
                    _ => live,
                });
            }
            // A new process holds the pid: the old one's exit was not seen.
            self.counters.exit_missed.fetch_add(1, Ordering::Relaxed);
            self.close(inner, live, ev.timestamp);
        } else if let Some(k) = exact {
            // Already exited (a late event for it): no new live row for a dead process.
            if inner.rows.contains_key(&k) {
                return (ev.kind != ProcessEventKind::Exit).then_some(k);
            }
        }
        if ev.kind == ProcessEventKind::Exit && exact.is_none() && ev.start_time.is_none() {
            return None;
        }
        let (key, key_exact) = match exact {
            Some(k) => (k, true),
            None => (
                ProcessKey {
                    pid: ev.pid,
                    start_ns: ev.start_time.map(|t| self.boot_ns(t)).unwrap_or(0),
                },
                false,
            ),
        };
        let row = ProcessRow::new(key, key_exact, ev.timestamp, ev.kind);
        self.insert(inner, row).then_some(key)
    }

    fn apply_fork(&self, inner: &mut Inner, ev: &ProcessEvent) {
        let Some(child_pid) = ev.child_pid else {
            return;
        };
        let parent_key = self.row_for(inner, ev);
        let parent = parent_key.and_then(|k| inner.rows.get_mut(&k)).map(|p| {
            p.has_children = true;
            (
                p.exec_name.clone().or_else(|| p.name.clone()),
                p.executable_path.clone(),
                p.command_line.clone(),
            )
        });
        if let Some(&old) = inner.live_by_pid.get(&child_pid) {
            // The child's pid was still listed: its previous holder's exit was missed.
            self.counters.exit_missed.fetch_add(1, Ordering::Relaxed);
            self.close(inner, old, ev.timestamp);
        }
        let start = ev.child_start_time.unwrap_or(ev.timestamp);
        let key = ProcessKey {
            pid: child_pid,
            start_ns: self.boot_ns(start),
        };
        let mut row = ProcessRow::new(key, false, ev.timestamp, ProcessEventKind::Fork);
        row.ppid = Some(ev.pid);
        row.parent_key = parent_key;
        row.start_time = Some(start);
        row.uid = ev.uid;
        row.gid = ev.gid;
        row.name = ev.name.as_deref().map(str::to_owned);
        if let Some((exec_name, executable_path, command_line)) = parent {
            row.exec_name = exec_name;
            row.executable_path = executable_path;
            row.command_line = command_line;
        }
        self.insert(inner, row);
    }

    /// Wall-clock time -> CLOCK_BOOTTIME ns, with the clocks' offset as it is now: the
    /// kernel source turned the boot time into wall-clock time moments ago with its own
    /// current offset (re-read every second), so a wall-clock step since the table was
    /// made (NTP at boot, a VM resume) does not move fork rows' keys out of the tolerance.
    fn boot_ns(&self, t: DateTime<Utc>) -> u64 {
        let epoch_ns = t.timestamp_nanos_opt().unwrap_or(0);
        let offset = BootClock::new()
            .to_utc(0)
            .timestamp_nanos_opt()
            .unwrap_or(0);
        u64::try_from(epoch_ns - offset).unwrap_or(0)
    }

    fn rekey(&self, inner: &mut Inner, old: ProcessKey, new: ProcessKey) -> ProcessKey {
        inner.contexts.remove(&old);
        if let Some(mut row) = inner.rows.remove(&old) {
            row.key = new;
            row.key_exact = true;
            let had_children = row.has_children;
            inner.rows.insert(new, row);
            inner.live_by_pid.insert(new.pid, new);
            // Children that pointed at the old key. Only a row that forked has any: the
            // common re-key (a fork's child at its first exec) skips the scan, which
            // was most of the table's cost in an exec storm (every row, every exec).
            if had_children {
                for r in inner.rows.values_mut() {
                    if r.parent_key == Some(old) {
                        r.parent_key = Some(new);
                        inner.contexts.remove(&r.key);
                    }
                }
            }
        }
        new
    }

    /// Inserts a new live row, making room if needed; false when it did not fit.
    fn insert(&self, inner: &mut Inner, row: ProcessRow) -> bool {
        while inner.rows.len() >= self.config.max_entries {
            if !self.evict_oldest_exited(inner) {
                self.counters.over_capacity.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        let key = row.key;
        if row.is_live() {
            inner.live_by_pid.insert(key.pid, key);
        }
        inner.rows.insert(key, row);
        true
    }

    fn close(&self, inner: &mut Inner, key: ProcessKey, at: DateTime<Utc>) {
        if inner.live_by_pid.get(&key.pid) == Some(&key) {
            inner.live_by_pid.remove(&key.pid);
        }
        if let Some(row) = inner.rows.get_mut(&key) {
            if row.exit_time.is_none() {
                row.exit_time = Some(at);
                row.last_event = ProcessEventKind::Exit;
                row.updated_at = at;
                inner.exited.push_back((at, key));
                inner.exited_by_pid.insert(key.pid, key);
            }
        }
    }

    /// Removes the oldest exited row; false when there is none.
    fn evict_oldest_exited(&self, inner: &mut Inner) -> bool {
        while let Some((at, key)) = inner.exited.pop_front() {
            if inner.rows.get(&key).and_then(|r| r.exit_time) == Some(at) {
                inner.rows.remove(&key);
                inner.contexts.remove(&key);
                if inner.exited_by_pid.get(&key.pid) == Some(&key) {
                    inner.exited_by_pid.remove(&key.pid);
                }
                self.counters.evicted_exited.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Drops exited rows past their retention, measured against `now`.
    fn expire(&self, inner: &mut Inner, now: DateTime<Utc>) {
        let retention = chrono::Duration::from_std(self.config.exited_retention)
            .unwrap_or(chrono::Duration::MAX);
        while let Some(&(at, key)) = inner.exited.front() {
            if now - at < retention {
                break;
            }
            inner.exited.pop_front();
            if inner.rows.get(&key).and_then(|r| r.exit_time) == Some(at) {
                inner.rows.remove(&key);
                inner.contexts.remove(&key);
                if inner.exited_by_pid.get(&key.pid) == Some(&key) {
                    inner.exited_by_pid.remove(&key.pid);
                }
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops exited rows past their retention now (the table also does it as events
    /// arrive; a quiet host needs this from a timer or a query).
    pub fn expire_now(&self) {
        let mut inner = self.lock();
        self.expire(&mut inner, Utc::now());
    }

    /// Rows of `selection`, ordered by key, starting after `after` (for paging).
    pub fn select(
        &self,
        selection: Selection,
        after: Option<ProcessKey>,
        mut keep: impl FnMut(&ProcessRow) -> bool,
    ) -> Vec<ProcessRow> {
        let mut inner = self.lock();
        self.expire(&mut inner, Utc::now());
        let mut rows: Vec<ProcessRow> = inner
            .rows
            .values()
            .filter(|r| after.is_none_or(|a| r.key > a))
            .filter(|r| match selection {
                Selection::Live => r.is_live(),
                Selection::ExitedSince(t) => r.exit_time.is_some_and(|e| e >= t),
            })
            .filter(|r| keep(r))
            .cloned()
            .collect();
        drop(inner);
        rows.sort_unstable_by_key(|r| r.key);
        rows
    }

    /// Visits the rows of `selection` in key order after `after`, under the table's lock,
    /// until `visit` returns false: a page is built without copying the table.
    pub fn visit_sorted(
        &self,
        selection: Selection,
        after: Option<ProcessKey>,
        mut keep: impl FnMut(&ProcessRow) -> bool,
        mut visit: impl FnMut(&ProcessRow) -> bool,
    ) {
        let mut inner = self.lock();
        self.expire(&mut inner, Utc::now());
        let mut keys: Vec<ProcessKey> = match selection {
            Selection::Live => inner.live_by_pid.values().copied().collect(),
            Selection::ExitedSince(t) => inner
                .rows
                .values()
                .filter(|r| r.exit_time.is_some_and(|e| e >= t))
                .map(|r| r.key)
                .collect(),
        };
        keys.retain(|k| after.is_none_or(|a| *k > a));
        keys.sort_unstable();
        for key in keys {
            let Some(row) = inner.rows.get(&key) else {
                continue;
            };
            if keep(row) && !visit(row) {
                break;
            }
        }
    }

    /// The live process `pid`, or else its latest exited row.
    pub fn by_pid(&self, pid: u32) -> Option<ProcessRow> {
        let inner = self.lock();
        if let Some(key) = inner.live_by_pid.get(&pid) {
            return inner.rows.get(key).cloned();
        }
        inner
            .rows
            .values()
            .filter(|r| r.key.pid == pid)
            .max_by_key(|r| r.key.start_ns)
            .cloned()
    }

    /// The live process `pid` (for enrichment: cheap, no clone of exited rows).
    pub fn live(&self, pid: u32) -> Option<ProcessRow> {
        let inner = self.lock();
        inner
            .live_by_pid
            .get(&pid)
            .and_then(|k| inner.rows.get(k))
            .cloned()
    }

    /// What a network or filesystem event of `pid` gets from the table: its process's
    /// key, image and parent. Only what the event needs is copied.
    ///
    /// An event with an exact `key` (every kernel event has one) gets that process or
    /// nothing. The rings are drained on their own, so when the event is read the pid's
    /// row may already be a later process on the reused pid, or still an earlier one
    /// whose exit is not applied yet: matched by pid, the event would be attributed to
    /// another program. A row whose start is approximate (seeded from `/proc`, or made
    /// by a fork) matches within [`APPROX_TOLERANCE_NS`].
    ///
    /// Without a key (procfs events): the live process of `pid`, or, when the pid's
    /// latest process exited at or after `at`, that one.
    pub fn context(
        &self,
        pid: u32,
        key: Option<&str>,
        at: DateTime<Utc>,
    ) -> Option<Arc<ProcessContext>> {
        let mut inner = self.lock_unchanged();
        Self::context_locked(&mut inner, pid, key, at)
    }

    fn context_locked(
        inner: &mut Inner,
        pid: u32,
        key: Option<&str>,
        at: DateTime<Utc>,
    ) -> Option<Arc<ProcessContext>> {
        let key = match key {
            Some(key) => {
                // A key naming another pid is nobody's.
                let exact = ProcessKey::parse(key).filter(|k| k.pid == pid)?;
                // The common case: the context of that very key is built already.
                if let Some(c) = inner.contexts.get(&exact) {
                    return Some(c.clone());
                }
                Self::row_of(inner, exact)?
            }
            None => match inner.live_by_pid.get(&pid) {
                Some(k) => *k,
                None => *inner
                    .exited_by_pid
                    .get(&pid)
                    .filter(|k| inner.rows.get(k).and_then(|r| r.exit_time) >= Some(at))?,
            },
        };
        if let Some(c) = inner.contexts.get(&key) {
            return Some(c.clone());
        }
        let row = inner.rows.get(&key)?;
        let context = Arc::new(ProcessContext {
            process_key: row.key.to_string(),
            executable_path: row.executable_path.clone(),
            exec_name: row.exec_name.clone().or_else(|| row.name.clone()),
            ppid: row.ppid,
            parent_process_key: row.parent_key.map(|k| k.to_string()),
        });
        inner.contexts.insert(key, context.clone());
        Some(context)
    }

    /// The row of the process with the exact key `exact`: that row, or its pid's live or
    /// latest exited row when its start is approximate and close enough.
    fn row_of(inner: &Inner, exact: ProcessKey) -> Option<ProcessKey> {
        if inner.rows.contains_key(&exact) {
            return Some(exact);
        }
        [
            inner.live_by_pid.get(&exact.pid),
            inner.exited_by_pid.get(&exact.pid),
        ]
        .into_iter()
        .flatten()
        .copied()
        .find(|k| {
            inner.rows.get(k).is_some_and(|r| !r.key_exact)
                && k.start_ns.abs_diff(exact.start_ns) <= APPROX_TOLERANCE_NS
        })
    }

    /// Fills the `process` field of network and filesystem events the table knows the
    /// process of (the kernel records carry only pid, `comm` and the process key).
    pub fn enrich(&self, ev: &mut CollectionEvent) {
        self.enrich_with(&mut ContextMemo::default(), ev);
    }

    /// [`enrich`](Self::enrich) for a caller that keeps `memo` from one event to the next.
    pub fn enrich_with(&self, memo: &mut ContextMemo, ev: &mut CollectionEvent) {
        let (pid, key, at, slot) = match ev {
            CollectionEvent::Network(n) if n.process.is_none() => {
                (n.pid, n.process_key.as_ref(), n.timestamp, &mut n.process)
            }
            CollectionEvent::Filesystem(f) if f.process.is_none() => {
                (f.pid, f.process_key.as_ref(), f.timestamp, &mut f.process)
            }
            _ => return,
        };
        let Some(key) = key else {
            // Without a key the answer depends on the time too: not memoised.
            *slot = self.context(pid, None, at);
            return;
        };
        if let Some((last_pid, last_key, changes, context)) = &memo.last {
            if *last_pid == pid
                && last_key == key
                && *changes == self.changes.load(Ordering::Acquire)
            {
                slot.clone_from(context);
                return;
            }
        }
        let mut inner = self.lock_unchanged();
        // Read under the lock: a change counts itself when it takes the lock, before
        // changing anything, so no change can slip in between this and the lookup.
        let changes = self.changes.load(Ordering::Acquire);
        let found = Self::context_locked(&mut inner, pid, Some(key), at);
        drop(inner);
        memo.last = Some((pid, key.clone(), changes, found.clone()));
        *slot = found;
    }

    /// `pid` and its ancestors up to pid 1 (or the first one the table does not know),
    /// the process itself first. Parents are followed by key where known, so a parent
    /// pid reused since is not mistaken for the parent.
    pub fn ancestry(&self, pid: u32) -> Vec<ProcessRow> {
        let first = self.by_pid(pid);
        let inner = self.lock();
        let mut chain: Vec<ProcessRow> = Vec::new();
        let mut next = first;
        // A cycle cannot come from the kernel, but a confused table must not loop.
        while let Some(row) = next.take() {
            if chain.len() >= 512 || chain.iter().any(|r| r.key == row.key) {
                break;
            }
            let parent = match (row.parent_key, row.ppid) {
                _ if row.key.pid <= 1 => None,
                (Some(k), _) => inner.rows.get(&k).cloned(),
                (None, Some(p)) => inner
                    .live_by_pid
                    .get(&p)
                    .and_then(|k| inner.rows.get(k))
                    .cloned(),
                (None, None) => None,
            };
            chain.push(row);
            next = parent;
        }
        chain
    }
}

/// What every process event says of its process.
fn fill_from(row: &mut ProcessRow, ev: &ProcessEvent) {
    row.last_event = ev.kind;
    row.updated_at = ev.timestamp;
    if ev.ppid.is_some() {
        row.ppid = ev.ppid;
    }
    if ev.uid.is_some() {
        row.uid = ev.uid;
    }
    if ev.gid.is_some() {
        row.gid = ev.gid;
    }
    if ev.name.is_some() {
        row.name = ev.name.as_deref().map(str::to_owned);
    }
    if ev.start_time.is_some() {
        row.start_time = ev.start_time;
    }
}

impl EventSink for ProcessTable {
    fn name(&self) -> &str {
        "process-table"
    }

    fn deliver(&self, batch: &EventBatch) -> Delivery {
        for ev in batch.iter() {
            if let CollectionEvent::Process(p) = ev {
                self.apply(p);
            }
        }
        Delivery::Accepted
    }
}

/// Reads the table's and the store's counters for `status`.
#[derive(Clone)]
pub struct ProcessStatusHandle {
    /// The table.
    pub table: Arc<ProcessTable>,
    /// Its store, when one is kept.
    pub store: Option<Arc<crate::store::ProcessStore>>,
    /// The executable hash service, with `compute_executable_hashes`.
    pub hashes: Option<Arc<HashService>>,
}

impl ProcessStatusHandle {
    /// The counters now.
    pub fn status(&self) -> collector_core::ProcessTableStatus {
        let t = self.table.stats();
        let mut status = collector_core::ProcessTableStatus {
            live: t.live as u64,
            exited: t.exited as u64,
            events: t.events,
            seeded: t.seeded,
            evicted_exited: t.evicted_exited,
            over_capacity: t.over_capacity,
            exit_missed: t.exit_missed,
            ..Default::default()
        };
        if let Some(store) = &self.store {
            let c = store.counters();
            status.store_written_events = c.written_events.load(Ordering::Relaxed);
            status.store_commits = c.commits.load(Ordering::Relaxed);
            status.store_dropped_events = c.dropped_events.load(Ordering::Relaxed);
            status.store_failed_events = c.failed_events.load(Ordering::Relaxed);
            status.store_history_trimmed = c.history_trimmed.load(Ordering::Relaxed);
            status.store_hash_updates_dropped = c.hash_updates_dropped.load(Ordering::Relaxed);
        }
        if let Some(hashes) = &self.hashes {
            let (s, cache) = (hashes.stats(), hashes.hasher().stats());
            status.hash_requested = s.requested.load(Ordering::Relaxed);
            status.hash_computed = s.hashed.load(Ordering::Relaxed);
            status.hash_failed = s.failed.load(Ordering::Relaxed);
            status.hash_queue_full = s.queue_full.load(Ordering::Relaxed);
            status.hash_cache_hits = cache.hits.load(Ordering::Relaxed);
            status.hash_cache_misses = cache.misses.load(Ordering::Relaxed);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector_core::event::{FilesystemEvent, FilesystemEventKind};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn ev(kind: ProcessEventKind, pid: u32, start_ns: u64, t: i64) -> ProcessEvent {
        let mut e = ProcessEvent::new(kind, at(t), pid, "ebpf-process");
        e.process_key = Some(ProcessKey { pid, start_ns }.to_string().into());
        e
    }

    fn exec(pid: u32, start_ns: u64, ppid: u32, exe: &str, t: i64) -> ProcessEvent {
        let mut e = ev(ProcessEventKind::Exec, pid, start_ns, t);
        e.ppid = Some(ppid);
        e.name = Some(exe.rsplit('/').next().unwrap().to_string().into());
        e.executable_path = Some(exe.to_string());
        e.command_line = vec![exe.to_string(), "-x".into()];
        e
    }

    fn exit(pid: u32, start_ns: u64, code: i32, t: i64) -> ProcessEvent {
        let mut e = ev(ProcessEventKind::Exit, pid, start_ns, t);
        e.exit_code = Some(code);
        e
    }

    fn table(max_entries: usize) -> ProcessTable {
        ProcessTable::new(TableConfig {
            max_entries,
            exited_retention: Duration::from_secs(60),
        })
    }

    #[test]
    fn keys_parse_as_they_print_and_nothing_else() {
        for key in [
            ProcessKey {
                pid: 0,
                start_ns: 0,
            },
            ProcessKey {
                pid: u32::MAX,
                start_ns: u64::MAX,
            },
            ProcessKey {
                pid: 4242,
                start_ns: 987_654_321_000,
            },
        ] {
            assert_eq!(ProcessKey::parse(&key.to_string()), Some(key));
        }
        for bad in [
            "",
            ":",
            "1:",
            ":1",
            "1",
            "1:2:3",
            "-1:2",
            "+1:2",
            "1:+2",
            "a:1",
            "1: 2",
            "4294967296:1",
            "1:18446744073709551616",
            "1:٣",
        ] {
            assert_eq!(ProcessKey::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pid_reuse_makes_a_new_row_and_keeps_the_old_one_as_exited() {
        let t = table(100);
        t.apply(&exec(500, 1_000, 1, "/usr/bin/first", 0));
        t.apply(&exit(500, 1_000, 3, 1));
        t.apply(&exec(500, 9_000, 1, "/usr/bin/second", 2));
        let live = t.live(500).unwrap();
        assert_eq!(live.key.to_string(), "500:9000");
        assert_eq!(live.executable_path.as_deref(), Some("/usr/bin/second"));
        let exited = t.select(Selection::ExitedSince(at(0)), None, |_| true);
        assert_eq!(exited.len(), 1);
        assert_eq!(exited[0].key.to_string(), "500:1000");
        assert_eq!(exited[0].exit_code, Some(3));
        assert_eq!(exited[0].exit_time, Some(at(1)));
        assert_eq!(exited[0].executable_path.as_deref(), Some("/usr/bin/first"));
    }

    #[test]
    fn a_missed_exit_is_closed_and_counted_when_the_pid_comes_back() {
        let t = table(100);
        t.apply(&exec(77, 1_000, 1, "/bin/a", 0));
        t.apply(&exec(77, 5_000_000_000, 1, "/bin/b", 5));
        assert_eq!(t.stats().exit_missed, 1);
        assert_eq!(t.stats().live, 1);
        assert_eq!(t.stats().exited, 1);
    }

    #[test]
    fn fork_copies_the_parent_and_the_first_kernel_event_fixes_the_key() {
        let t = table(100);
        t.apply(&exec(10, 1_000, 1, "/bin/sh", 0));
        let mut fork = ev(ProcessEventKind::Fork, 10, 1_000, 1);
        fork.child_pid = Some(11);
        let child_start = at(1);
        fork.child_start_time = Some(child_start);
        t.apply(&fork);
        let child = t.live(11).unwrap();
        assert!(!child.key_exact);
        assert_eq!(child.ppid, Some(10));
        assert_eq!(child.parent_key.unwrap().to_string(), "10:1000");
        assert_eq!(child.executable_path.as_deref(), Some("/bin/sh"));
        // The child's exact start, as the kernel reports it, is within the tolerance.
        let exact = t.boot_ns(child_start) + 3_000_000;
        t.apply(&exec(11, exact, 10, "/bin/ls", 2));
        let child = t.live(11).unwrap();
        assert!(child.key_exact);
        assert_eq!(child.key.start_ns, exact);
        assert_eq!(child.executable_path.as_deref(), Some("/bin/ls"));
        assert_eq!(child.exec_name.as_deref(), Some("ls"));
        assert_eq!(t.stats().live, 2);
        let chain: Vec<u32> = t.ancestry(11).iter().map(|r| r.key.pid).collect();
        assert_eq!(chain, [11, 10]);
    }

    /// A re-keyed row's children follow it: the scan for them runs only for a row that
    /// forked (the common re-key, a child's first exec, has none).
    #[test]
    fn a_rekeyed_parent_keeps_its_children() {
        let t = table(100);
        t.apply(&exec(10, 1_000, 1, "/bin/sh", 0));
        let mut fork = ev(ProcessEventKind::Fork, 10, 1_000, 1);
        fork.child_pid = Some(11);
        fork.child_start_time = Some(at(1));
        t.apply(&fork);
        // The child forks before its own first exact event: the grandchild points at
        // the child's approximate key.
        let approximate = t.live(11).unwrap().key;
        let mut grand = ProcessEvent::new(ProcessEventKind::Fork, at(1), 11, "ebpf-process");
        grand.child_pid = Some(12);
        grand.child_start_time = Some(at(1));
        t.apply(&grand);
        assert_eq!(t.live(12).unwrap().parent_key, Some(approximate));
        assert!(t.live(11).unwrap().has_children);
        let exact = t.boot_ns(at(1)) + 1_000;
        t.apply(&exec(11, exact, 10, "/bin/ls", 2));
        let child = t.live(11).unwrap();
        assert_eq!(child.key.start_ns, exact);
        assert_eq!(t.live(12).unwrap().parent_key, Some(child.key));
        let chain: Vec<u32> = t.ancestry(12).iter().map(|r| r.key.pid).collect();
        assert_eq!(chain, [12, 11, 10]);
    }

    /// An event read after its process's exit was applied still gets the process; one
    /// from after the exit (another process on a reused pid not yet seen) does not.
    #[test]
    fn context_covers_events_read_after_the_exit() {
        let t = table(100);
        t.apply(&exec(40, 1_000, 1, "/usr/bin/curl", 0));
        for key in [None, Some("40:1000")] {
            let live = t.context(40, key, at(1)).unwrap();
            assert!(
                Arc::ptr_eq(&live, &t.context(40, key, at(2)).unwrap()),
                "built once, shared"
            );
            assert_eq!(live.process_key, "40:1000");
            assert_eq!(live.executable_path.as_deref(), Some("/usr/bin/curl"));
            assert_eq!(live.exec_name.as_deref(), Some("curl"));
            assert_eq!(live.ppid, Some(1));
        }
        let live = t.context(40, None, at(1)).unwrap();
        t.apply(&exit(40, 1_000, 0, 5));
        assert_eq!(t.context(40, None, at(4)), Some(live.clone()));
        assert_eq!(t.context(40, None, at(6)), None);
        assert_eq!(t.context(40, Some("40:1000"), at(4)), Some(live));
        // Another process on the pid, whose exec is not applied yet.
        assert_eq!(t.context(40, Some("40:9000"), at(6)), None);
    }

    /// An open by `pid` under process key `key` at second `secs`, not yet enriched.
    fn open_event(pid: u32, key: &str, secs: i64) -> CollectionEvent {
        let kind = FilesystemEventKind::Open;
        let mut open = FilesystemEvent::new(kind, at(secs), pid, "fs", "/etc/shadow");
        (open.flags, open.result, open.uid) = (Some(0), Some(3), Some(0));
        open.name = Some("reader".into());
        open.path_user_supplied = false;
        open.process_key = Some(key.to_string().into());
        CollectionEvent::from(open)
    }

    /// A drain loop's memo hands out the context it found last only while the table is
    /// unchanged: an exec that keeps the pid and key (a new image) is seen at once, as
    /// are another key on the same pid and another pid.
    #[test]
    fn a_memoised_context_lasts_only_while_the_table_is_unchanged() {
        let t = table(100);
        t.apply(&exec(40, 1_000, 1, "/usr/bin/curl", 0));
        t.apply(&exec(41, 2_000, 1, "/usr/bin/wget", 0));
        let mut memo = ContextMemo::default();
        let mut enriched = |pid: u32, key: &str| {
            let mut e = open_event(pid, key, 1);
            t.enrich_with(&mut memo, &mut e);
            match e {
                CollectionEvent::Filesystem(f) => f.process,
                _ => unreachable!(),
            }
        };
        let exe = |c: Option<Arc<ProcessContext>>| c.and_then(|c| c.executable_path.clone());
        let first = enriched(40, "40:1000").unwrap();
        let again = enriched(40, "40:1000").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(
            exe(enriched(41, "41:2000")).as_deref(),
            Some("/usr/bin/wget")
        );
        assert_eq!(
            exe(enriched(40, "40:1000")).as_deref(),
            Some("/usr/bin/curl")
        );
        assert_eq!(enriched(40, "40:9999"), None);
        assert_eq!(enriched(42, "40:1000"), None);
        assert_eq!(
            exe(enriched(40, "40:1000")).as_deref(),
            Some("/usr/bin/curl")
        );
        // The same process runs another program: same pid, same key, new image.
        t.apply(&exec(40, 1_000, 1, "/usr/bin/nc", 2));
        assert_eq!(exe(enriched(40, "40:1000")).as_deref(), Some("/usr/bin/nc"));
        assert_eq!(exe(enriched(40, "40:1000")).as_deref(), Some("/usr/bin/nc"));
        // A process the table does not know yet stays unknown only until the table
        // learns of it: the remembered miss ends with the change.
        assert_eq!(enriched(43, "43:3000"), None);
        assert_eq!(enriched(43, "43:3000"), None);
        t.apply(&exec(43, 3_000, 1, "/usr/bin/late", 3));
        assert_eq!(
            exe(enriched(43, "43:3000")).as_deref(),
            Some("/usr/bin/late")
        );
    }

    /// The rings drain on their own: a filesystem or network event can be read after a
    /// later process took its pid, or before its own process's exec replaced an earlier
    /// one in the table. Either way it gets its own process (by its key) or none, never
    /// the other program.
    #[test]
    fn a_keyed_event_is_never_given_another_process_on_its_pid() {
        let t = table(100);
        t.apply(&exec(500, 1_000, 1, "/usr/bin/first", 0));
        t.apply(&exit(500, 1_000, 0, 1));
        t.apply(&exec(500, 9_000, 1, "/usr/bin/second", 2));
        let open = |key: &str, secs: i64| open_event(500, key, secs);
        let enriched = |mut e: CollectionEvent| match &mut e {
            CollectionEvent::Filesystem(_) => {
                t.enrich(&mut e);
                match e {
                    CollectionEvent::Filesystem(f) => f.process,
                    _ => unreachable!(),
                }
            }
            _ => unreachable!(),
        };
        // The first process's open, read after the second one's exec.
        let first = enriched(open("500:1000", 0)).expect("the exited process");
        assert_eq!(first.process_key, "500:1000");
        assert_eq!(first.executable_path.as_deref(), Some("/usr/bin/first"));
        let second = enriched(open("500:9000", 3)).expect("the live process");
        assert_eq!(second.executable_path.as_deref(), Some("/usr/bin/second"));
        // A third process's open, read before its exec: neither of the two.
        assert_eq!(enriched(open("500:20000", 4)), None);
        // A key naming another pid is nobody's.
        assert_eq!(t.context(500, Some("501:9000"), at(3)), None);
        assert_eq!(t.context(500, Some("garbage"), at(3)), None);
    }

    /// A row seeded from `/proc` (start in clock ticks) serves the exact kernel key of
    /// the same process, within the tolerance, and not beyond it.
    #[test]
    fn an_approximate_row_serves_a_close_exact_key_only() {
        let t = table(100);
        let mut snap = ProcessEvent::new(ProcessEventKind::Snapshot, at(0), 60, "procfs-process");
        snap.start_time = Some(at(-100));
        snap.executable_path = Some("/usr/sbin/cron".into());
        t.apply(&snap);
        let row = t.live(60).unwrap();
        assert!(!row.key_exact);
        let close = ProcessKey {
            pid: 60,
            start_ns: row.key.start_ns + APPROX_TOLERANCE_NS / 2,
        };
        let far = ProcessKey {
            pid: 60,
            start_ns: row.key.start_ns + 2 * APPROX_TOLERANCE_NS,
        };
        let c = t.context(60, Some(&close.to_string()), at(1)).unwrap();
        assert_eq!(c.executable_path.as_deref(), Some("/usr/sbin/cron"));
        assert_eq!(t.context(60, Some(&far.to_string()), at(1)), None);
    }

    /// Fallback mode: procfs events carry no key, only a start time (whole seconds).
    /// Snapshot, exec and exit of one process stay one row; a new start is a new row.
    #[test]
    fn procfs_events_without_keys_keep_one_row_per_process() {
        let t = table(100);
        let polled = |kind, pid, start: i64, now: i64| {
            let mut e = ProcessEvent::new(kind, at(now), pid, "procfs-process");
            e.start_time = Some(at(start));
            e.ppid = Some(1);
            e.executable_path = Some("/usr/sbin/sshd".into());
            e
        };
        t.apply(&polled(ProcessEventKind::Snapshot, 90, 0, 1));
        t.apply(&polled(ProcessEventKind::Exec, 90, 0, 2));
        let row = t.live(90).unwrap();
        assert!(!row.key_exact);
        assert_eq!(row.start_time, Some(at(0)));
        t.apply(&polled(ProcessEventKind::Exit, 90, 0, 3));
        assert!(t.live(90).is_none());
        t.apply(&polled(ProcessEventKind::Snapshot, 90, 10, 11));
        let s = t.stats();
        assert_eq!((s.live, s.exited, s.exit_missed), (1, 1, 0));
        let exited = t.select(Selection::ExitedSince(at(0)), None, |_| true);
        assert_eq!(exited[0].exit_time, Some(at(3)));
        assert_eq!(exited[0].key, row.key);
    }

    #[test]
    fn the_oldest_exited_rows_make_room_and_are_counted() {
        let t = table(3);
        for pid in 1..=3 {
            t.apply(&exec(pid, 100, 0, "/bin/x", 0));
            t.apply(&exit(pid, 100, 0, i64::from(pid)));
        }
        t.apply(&exec(4, 100, 0, "/bin/y", 10));
        let s = t.stats();
        assert_eq!(s.evicted_exited, 1);
        assert_eq!((s.live, s.exited), (1, 2));
        let exited: Vec<u32> = t
            .select(Selection::ExitedSince(at(0)), None, |_| true)
            .iter()
            .map(|r| r.key.pid)
            .collect();
        assert_eq!(exited, [2, 3], "pid 1 exited first and went first");
        // Full of live rows: the next new process is counted, not tracked.
        t.apply(&exec(5, 100, 0, "/bin/z", 11));
        t.apply(&exec(6, 100, 0, "/bin/z", 11));
        t.apply(&exec(7, 100, 0, "/bin/z", 11));
        let s = t.stats();
        assert_eq!(s.live, 3);
        assert_eq!(s.over_capacity, 1);
    }

    #[test]
    fn exited_rows_expire_after_the_retention() {
        let t = table(100);
        t.apply(&exec(5, 100, 1, "/bin/x", 0));
        t.apply(&exit(5, 100, 0, 1));
        t.apply(&exec(6, 100, 1, "/bin/x", 30));
        assert_eq!(t.stats().exited, 1);
        t.apply(&exec(7, 100, 1, "/bin/x", 62));
        assert_eq!(t.stats().exited, 0);
        assert_eq!(t.stats().expired, 1);
        assert_eq!(t.stats().evicted_exited, 0);
    }

    #[test]
    fn paging_by_key_returns_every_row_once() {
        let t = table(1000);
        for pid in 100..400 {
            t.apply(&exec(pid, u64::from(pid), 1, "/bin/x", 0));
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page: Vec<_> = t
                .select(Selection::Live, after, |_| true)
                .into_iter()
                .take(64)
                .collect();
            let Some(last) = page.last() else { break };
            after = Some(last.key);
            seen.extend(page.iter().map(|r| r.key.pid));
        }
        assert_eq!(seen, (100..400).collect::<Vec<_>>());
    }

    #[test]
    fn seeding_from_proc_finds_this_process_with_its_parent_and_ancestry_reaches_pid_1() {
        let t = table(1 << 20);
        assert!(t.seed_from_proc().unwrap() > 1);
        let me = t.live(std::process::id()).unwrap();
        assert_eq!(me.ppid, Some(std::os::unix::process::parent_id()), "{me:?}");
        assert!(me.executable_path.is_some());
        let chain = t.ancestry(std::process::id());
        assert_eq!(chain.first().unwrap().key.pid, std::process::id());
        // Inside a pid namespace pid 1 may be absent; on the host it ends the chain.
        if t.live(1).is_some() {
            assert_eq!(chain.last().unwrap().key.pid, 1);
        }
    }
}
