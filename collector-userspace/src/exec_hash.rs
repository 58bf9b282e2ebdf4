//! Executable hashes off the hot path: a bounded pool of worker threads hashes the file
//! each exec loaded, so no event ever waits for one.
//!
//! - An exec whose file version (device, inode, size, mtime, ctime, as the kernel read
//!   them at the exec, or from a `statx` in polling mode) was hashed before carries its
//!   digest at once: [`HashService::fill`] is a map lookup.
//! - Otherwise the event goes on without it and a [`HashRequest`] is queued. A worker
//!   hashes the running image through `/proc/<pid>/exe`, or, when the process is already
//!   gone, the kernel-resolved path, only if that file is still the version executed.
//! - The result is kept in a bounded list of recent results (by pid and exec time) and
//!   every listener is told: the process table and the store put the digest on the
//!   record of that exec, whichever of the exec and the digest reaches them first.
//! - A full queue drops the request, counted (`queue_full`); the event is unaffected.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use collector_core::event::ProcessEvent;

use crate::hash::{ExecutableHasher, FileHash, FileKey, HashLimits};

/// Limits of a [`HashService`].
#[derive(Debug, Clone, Copy)]
pub struct HashServiceConfig {
    /// Size cap and deadline of one hash.
    pub limits: HashLimits,
    /// Worker threads (each hashes one file at a time).
    pub workers: usize,
    /// Requests waiting for a worker; past it requests are dropped and counted.
    pub queue: usize,
    /// Digests the cache keeps (cleared when full).
    pub cache_entries: usize,
    /// Finished results kept for consumers that see the exec after its digest.
    pub recent_results: usize,
}

impl Default for HashServiceConfig {
    fn default() -> Self {
        Self {
            limits: HashLimits::default(),
            workers: 2,
            queue: 1024,
            cache_entries: 8192,
            recent_results: 4096,
        }
    }
}

/// One exec whose executable is to be hashed.
#[derive(Debug, Clone)]
pub struct HashRequest {
    /// The process.
    pub pid: u32,
    /// Its process key (`<pid>:<start ns>`), when the source gives one.
    pub process_key: Option<String>,
    /// When the exec happened (the event's timestamp): with `pid`, which exec.
    pub exec_time: DateTime<Utc>,
    /// The file's version at the exec, when known: the result is cached under it, and a
    /// file that is no longer that version is not hashed.
    pub version: Option<FileKey>,
    /// Where the file is when the process has gone (the kernel-resolved path), or the
    /// file to hash when it is not the running image (a script).
    pub path: Option<PathBuf>,
    /// The file is the process's running image, readable at `/proc/<pid>/exe` (false for
    /// a script, whose running image is its interpreter).
    pub running_image: bool,
}

/// A finished hash of one exec's executable.
#[derive(Debug, Clone)]
pub struct HashedExec {
    /// The process.
    pub pid: u32,
    /// Its process key, when the source gave one.
    pub process_key: Option<String>,
    /// Its exec's timestamp.
    pub exec_time: DateTime<Utc>,
    /// The digest.
    pub hash: FileHash,
}

/// Counters of a [`HashService`].
#[derive(Debug, Default)]
pub struct HashServiceStats {
    /// Requests queued.
    pub requested: AtomicU64,
    /// Requests dropped because the queue was full.
    pub queue_full: AtomicU64,
    /// Requests answered with a digest.
    pub hashed: AtomicU64,
    /// Requests that ended without one (gone, changed, not regular, too large, late).
    pub failed: AtomicU64,
}

type Listener = Box<dyn Fn(&HashedExec) + Send + Sync>;

struct Shared {
    hasher: ExecutableHasher,
    stats: HashServiceStats,
    listeners: RwLock<Vec<Listener>>,
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    by_exec: HashMap<(u32, DateTime<Utc>), FileHash>,
    order: VecDeque<(u32, DateTime<Utc>)>,
    cap: usize,
}

impl Recent {
    fn insert(&mut self, key: (u32, DateTime<Utc>), hash: FileHash) {
        if self.by_exec.insert(key, hash).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.by_exec.remove(&old);
            }
        }
    }
}

/// The executable-hash cache and its worker pool. Dropping the last handle stops the
/// workers once their current file is done (each bounded by the hash deadline).
pub struct HashService {
    shared: Arc<Shared>,
    tx: SyncSender<HashRequest>,
}

impl std::fmt::Debug for HashService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashService").finish_non_exhaustive()
    }
}

impl HashService {
    /// Starts `config.workers` worker threads.
    pub fn start(config: HashServiceConfig) -> std::io::Result<Arc<Self>> {
        let shared = Arc::new(Shared {
            hasher: ExecutableHasher::new(config.limits, config.cache_entries),
            stats: HashServiceStats::default(),
            listeners: RwLock::default(),
            recent: Mutex::new(Recent {
                cap: config.recent_results.max(1),
                ..Recent::default()
            }),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..config.workers.max(1) {
            let (shared, rx) = (shared.clone(), rx.clone());
            std::thread::Builder::new()
                .name(format!("collector-hash-{i}"))
                .spawn(move || {
                    lower_priority();
                    work(&shared, &rx)
                })?;
        }
        Ok(Arc::new(Self { shared, tx }))
    }

    /// Counters.
    pub fn stats(&self) -> &HashServiceStats {
        &self.shared.stats
    }

    /// The cache (its hit and miss counters).
    pub fn hasher(&self) -> &ExecutableHasher {
        &self.shared.hasher
    }

    /// Calls `listener` with every finished hash (from a worker thread: keep it short).
    pub fn on_hashed(&self, listener: impl Fn(&HashedExec) + Send + Sync + 'static) {
        self.shared
            .listeners
            .write()
            .expect("hash listeners")
            .push(Box::new(listener));
    }

    /// The digest of an exec that finished hashing, if it is still among the recent ones.
    pub fn result_for(&self, pid: u32, exec_time: DateTime<Utc>) -> Option<FileHash> {
        self.shared
            .recent
            .lock()
            .expect("recent hashes")
            .by_exec
            .get(&(pid, exec_time))
            .cloned()
    }

    /// Puts the cached digest of the running image's `version` on `event`, or queues a
    /// request for it (`path`: where the file is if the process has gone). Never blocks:
    /// a full queue drops the request (counted).
    pub fn fill(&self, event: &mut ProcessEvent, version: Option<FileKey>, path: Option<&Path>) {
        if let Some(hit) = version.and_then(|v| self.shared.hasher.cached(&v)) {
            set_hash(event, &hit);
            return;
        }
        self.request(HashRequest {
            pid: event.pid,
            process_key: event.process_key.as_deref().map(str::to_owned),
            exec_time: event.timestamp,
            version,
            path: path.map(Path::to_owned),
            running_image: true,
        });
    }

    /// Queues the hash of a script (`path`, which is not the running image): its digest
    /// always follows the event.
    pub fn fill_script(&self, event: &ProcessEvent, path: &Path) {
        self.request(HashRequest {
            pid: event.pid,
            process_key: event.process_key.as_deref().map(str::to_owned),
            exec_time: event.timestamp,
            version: None,
            path: Some(path.to_owned()),
            running_image: false,
        });
    }

    /// Queues a request, waiting for room: for background work (hashing what was
    /// running at start), never for events.
    pub fn request_wait(&self, request: HashRequest) {
        if self.tx.send(request).is_ok() {
            self.shared.stats.requested.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues a request; false (counted) when the queue is full.
    pub fn request(&self, request: HashRequest) -> bool {
        match self.tx.try_send(request) {
            Ok(()) => {
                self.shared.stats.requested.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Sets `executable_hash` and `hash_algorithm` of `event`.
pub fn set_hash(event: &mut ProcessEvent, hash: &FileHash) {
    event.executable_hash = Some(hash.hex_digest.clone());
    event.hash_algorithm = Some(hash.algorithm.name().to_owned());
}

/// Nice value of the hash workers: digests are background work (no event waits for one),
/// and hashing a large executable must not take a busy host's CPU from its workload.
pub const WORKER_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`WORKER_NICE`], never raises it
/// (a daemon started at nice 15 keeps its workers there). Best effort: a thread left at
/// its priority still hashes correctly.
fn lower_priority() {
    // SAFETY: gettid has no preconditions; getpriority/setpriority(PRIO_PROCESS, tid)
    // read and change only this thread's nice value (Linux threads have their own).
    // getpriority returns the nice value itself (-20..=19), so -1 is not an error sign.
    let result = unsafe {
        let tid = libc::gettid() as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, current.max(WORKER_NICE))
    };
    if result != 0 {
        tracing::debug!(
            "hash worker keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn work(shared: &Shared, rx: &Mutex<Receiver<HashRequest>>) {
    loop {
        // The lock is held only while waiting; the hash runs without it.
        let request = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(request) = request else {
            return;
        };
        let hashed = hash_request(&shared.hasher, &request);
        match hashed {
            Some(hash) => {
                shared.stats.hashed.fetch_add(1, Ordering::Relaxed);
                let done = HashedExec {
                    pid: request.pid,
                    process_key: request.process_key,
                    exec_time: request.exec_time,
                    hash,
                };
                // Recorded before the listeners hear of it: a consumer that looks the
                // exec up under its own lock either finds the result or gets the call.
                shared
                    .recent
                    .lock()
                    .expect("recent hashes")
                    .insert((done.pid, done.exec_time), done.hash.clone());
                for listener in shared.listeners.read().expect("hash listeners").iter() {
                    // A listener that panics loses its own update, not the worker.
                    let call = std::panic::AssertUnwindSafe(|| listener(&done));
                    if std::panic::catch_unwind(call).is_err() {
                        tracing::error!(pid = done.pid, "an executable hash listener panicked");
                    }
                }
            }
            None => {
                shared.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The running image first (`/proc/<pid>/exe` is the executed file even when it was
/// renamed or deleted), then the kernel-resolved path; with a known version, only a file
/// that is still that version.
fn hash_request(hasher: &ExecutableHasher, request: &HashRequest) -> Option<FileHash> {
    if let Some(hit) = request.version.as_ref().and_then(|v| hasher.cached(v)) {
        return Some(hit);
    }
    if !request.running_image {
        let path = request.path.as_deref()?;
        return hasher
            .hash_path(path, false)
            .map_err(|e| tracing::trace!(pid = request.pid, "script not hashed: {e}"))
            .ok();
    }
    let exe = PathBuf::from(format!("/proc/{}/exe", request.pid));
    let running = match &request.version {
        Some(version) => hasher.hash_version(&exe, true, version),
        None => hasher.hash_path(&exe, true),
    };
    match (running, &request.version, &request.path) {
        (Ok(hash), ..) => Some(hash),
        // Gone (or exec'd again): the file on disk, if it is still the one executed.
        (Err(_), Some(version), Some(path)) => hasher.hash_version(path, false, version).ok(),
        (Err(e), ..) => {
            tracing::trace!(pid = request.pid, "executable not hashed: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector_core::event::ProcessEventKind;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    fn wait_for(service: &HashService, pid: u32, at: DateTime<Utc>) -> Option<FileHash> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(h) = service.result_for(pid, at) {
                return Some(h);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Nice values of this process's threads named `name*`.
    fn nice_of_threads(name: &str) -> Vec<i32> {
        let mut nice = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(name) {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // After the `(comm)`: state is field 3, nice field 19.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            if let Some(n) = rest.split_whitespace().nth(16) {
                nice.push(n.parse().unwrap());
            }
        }
        nice
    }

    #[test]
    fn hash_workers_run_at_a_lower_priority() {
        let _service = HashService::start(HashServiceConfig::default()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let nice = nice_of_threads("collector-hash-");
            if nice.len() >= 2 && nice.iter().all(|&n| n >= WORKER_NICE) {
                break;
            }
            assert!(Instant::now() < deadline, "hash workers' nice: {nice:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_running_image_is_hashed_once_then_served_from_the_cache() {
        let service = HashService::start(HashServiceConfig::default()).unwrap();
        let heard = Arc::new(AtomicU64::new(0));
        let h = heard.clone();
        service.on_hashed(move |_| {
            h.fetch_add(1, Ordering::Relaxed);
        });
        let pid = std::process::id();
        let meta = std::fs::metadata(format!("/proc/{pid}/exe")).unwrap();
        let version = FileKey::of(&meta);
        let mut ev = ProcessEvent::new(ProcessEventKind::Exec, Utc::now(), pid, "test");
        service.fill(&mut ev, Some(version), None);
        assert_eq!(
            ev.executable_hash, None,
            "a cold cache never blocks the event"
        );
        let hash = wait_for(&service, pid, ev.timestamp).expect("hashed");
        let want = crate::hash::hash_open_file(
            &mut std::fs::File::open(format!("/proc/{pid}/exe")).unwrap(),
            Path::new("exe"),
            HashLimits::default(),
        )
        .unwrap();
        assert_eq!(hash.hex_digest, want.hex_digest);
        assert_eq!(heard.load(Ordering::Relaxed), 1);
        let mut again = ProcessEvent::new(ProcessEventKind::Exec, Utc::now(), pid, "test");
        service.fill(&mut again, Some(version), None);
        assert_eq!(
            again.executable_hash.as_deref(),
            Some(want.hex_digest.as_str())
        );
        assert_eq!(again.hash_algorithm.as_deref(), Some("sha256"));
        assert_eq!(service.hasher().stats().misses.load(Ordering::Relaxed), 1);
        assert_eq!(meta.size(), want.size_bytes);
    }

    #[test]
    fn a_file_changed_since_the_exec_is_not_reported_as_the_executed_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        std::fs::write(&path, b"version one").unwrap();
        let version = FileKey::of(&std::fs::metadata(&path).unwrap());
        // Rewritten in place: same inode, new size and ctime.
        std::fs::write(&path, b"version two, longer").unwrap();
        let service = HashService::start(HashServiceConfig::default()).unwrap();
        let at = Utc::now();
        // pid 0 has no /proc entry: the worker goes to the path, and refuses it.
        assert!(service.request(HashRequest {
            pid: 0,
            process_key: None,
            exec_time: at,
            version: Some(version),
            path: Some(path.clone()),
            running_image: true,
        }));
        let deadline = Instant::now() + Duration::from_secs(10);
        while service.stats().failed.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "never answered");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(service.result_for(0, at), None);
        assert_eq!(service.stats().hashed.load(Ordering::Relaxed), 0);
        // The version it is now hashes fine.
        let now = FileKey::of(&std::fs::metadata(&path).unwrap());
        let at2 = at + chrono::Duration::nanoseconds(1);
        service.request(HashRequest {
            pid: 0,
            process_key: None,
            exec_time: at2,
            version: Some(now),
            path: Some(path),
            running_image: true,
        });
        assert!(wait_for(&service, 0, at2).is_some());
    }

    #[test]
    fn a_full_queue_drops_requests_counted_without_blocking() {
        let service = HashService::start(HashServiceConfig {
            workers: 1,
            queue: 1,
            ..HashServiceConfig::default()
        })
        .unwrap();
        let started = Instant::now();
        let mut sent = 0u64;
        for i in 0..200u32 {
            let mut ev = ProcessEvent::new(
                ProcessEventKind::Exec,
                Utc::now(),
                std::process::id(),
                "test",
            );
            ev.timestamp += chrono::Duration::nanoseconds(i64::from(i));
            service.fill(&mut ev, None, None);
            sent += 1;
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        let stats = service.stats();
        assert!(stats.queue_full.load(Ordering::Relaxed) > 0);
        assert_eq!(
            stats.requested.load(Ordering::Relaxed) + stats.queue_full.load(Ordering::Relaxed),
            sent
        );
    }
}
