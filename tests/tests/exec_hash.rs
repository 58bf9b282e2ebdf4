//! Executable hashes of kernel exec events, from the real kernel and real files, tried
//! as an attacker would: as `nobody`, with a binary rewritten in place between two execs
//! (same size, mtime put back), and with a script.
//!
//! - The first exec of a new file goes out at once without a digest; the digest follows
//!   in the process table and the store, even though the process has already exited (the
//!   worker hashes the kernel-resolved path, checked against the version the kernel read
//!   at the exec).
//! - The next exec of the same version carries the digest on the event (cache hit on the
//!   kernel's inode, size, mtime and ctime).
//! - After an in-place rewrite that restores mtime, the old digest is never reported: the
//!   kernel's ctime differs, and the digest that follows is the new content's.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::DateTime;
use collector_core::event::{ProcessEvent, ProcessEventKind};
use collector_core::{CollectionEvent, EventBatch, EventSink, EventSource};
use collector_tests::kernel_or_skip;
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms, KernelSource};
use collector_userspace::exec_hash::{HashService, HashServiceConfig};
use collector_userspace::ptable::{ProcessTable, TableConfig};
use collector_userspace::store::{ProcessStore, StoreConfig};
use tokio::sync::mpsc;

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// Runs `path` as nobody and returns its pid.
fn run_as_nobody(path: &Path) -> u32 {
    let mut child = std::process::Command::new(path)
        .uid(65534)
        .gid(65534)
        .spawn()
        .expect("run as nobody");
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    pid
}

struct Rig {
    rx: mpsc::Receiver<CollectionEvent>,
    table: Arc<ProcessTable>,
    store: Arc<ProcessStore>,
}

impl Rig {
    /// Feeds every process event to the table and the store (the daemon's sinks) until
    /// the exec of `pid`, which it returns.
    async fn exec_of(&mut self, pid: u32) -> ProcessEvent {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no exec event of {pid}"))
                .expect("source ended");
            let CollectionEvent::Process(p) = &ev else {
                continue;
            };
            self.table.apply(p);
            let batch: EventBatch = vec![ev.clone()].into();
            assert!(matches!(
                self.store.deliver(&batch),
                collector_core::Delivery::Accepted
            ));
            if p.pid == pid && p.kind == ProcessEventKind::Exec {
                return (**p).clone();
            }
        }
    }

    /// The digest the table's row of `pid` gets, waiting for it.
    fn row_hash(&self, pid: u32) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(h) = self.table.by_pid(pid).and_then(|r| r.executable_hash) {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "no digest reached the row of {pid}: {:?}",
                self.table.by_pid(pid)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The digest on the store's history row of `pid`'s exec, waiting for it.
    fn stored_hash(&self, pid: u32) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.store.flush();
            let rows = self.store.history(pid, DateTime::UNIX_EPOCH, None).unwrap();
            if let Some(h) = rows
                .iter()
                .filter(|r| r.record.last_event == ProcessEventKind::Exec)
                .find_map(|r| r.record.executable_hash.clone())
            {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "no digest reached the store for {pid}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_events_get_digests_that_an_in_place_rewrite_cannot_keep() {
    if !kernel_or_skip("exec_events_get_digests_that_an_in_place_rewrite_cannot_keep") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tool = dir.path().join("tool");
    std::fs::copy("/bin/true", &tool).unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.path().join("job.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let hashes = HashService::start(HashServiceConfig::default()).unwrap();
    let table = Arc::new(ProcessTable::new(TableConfig::default()));
    table.set_hash_service(hashes.clone());
    let store = Arc::new(ProcessStore::open_in(dir.path(), StoreConfig::default()).unwrap());
    store.set_hash_service(hashes.clone());
    let programs = KernelPrograms::load(KernelConfig::default()).expect("load kernel programs");
    let source = Arc::new(KernelSource::new(programs, KernelDomain::Process).expect("source"));
    source.set_hash_service(hashes.clone());
    let (tx, rx) = mpsc::channel(65_536);
    let shutdown = Arc::new(AtomicBool::new(false));
    let (s, flag) = (source.clone(), shutdown.clone());
    let task = tokio::spawn(async move { s.start(tx, flag).await });
    let mut rig = Rig { rx, table, store };

    // 1. A file never hashed: the event does not wait; the digest follows although the
    //    process is gone by then.
    let first_digest = sha256(&tool);
    let pid = run_as_nobody(&tool);
    let exec = rig.exec_of(pid).await;
    assert_eq!(exec.executable_path.as_deref(), tool.to_str());
    assert_eq!(exec.credentials.as_ref().map(|c| c.uid), Some(65534));
    assert_eq!(
        exec.executable_hash, None,
        "a cold cache never holds the event"
    );
    assert_eq!(rig.row_hash(pid), first_digest);
    assert_eq!(rig.stored_hash(pid), first_digest);

    // 2. The same version again: the digest is on the event.
    let pid = run_as_nobody(&tool);
    let exec = rig.exec_of(pid).await;
    assert_eq!(exec.executable_hash.as_deref(), Some(first_digest.as_str()));
    assert_eq!(exec.hash_algorithm.as_deref(), Some("sha256"));

    // 3. Rewritten in place (same inode), with mtime put back: /bin/false has the size
    //    of /bin/true on most distributions, so only ctime tells.
    let mtime = std::fs::metadata(&tool).unwrap().modified().unwrap();
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&tool).unwrap());
    std::fs::write(&tool, std::fs::read("/bin/false").unwrap()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tool)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&tool).unwrap()),
        ino
    );
    let second_digest = sha256(&tool);
    assert_ne!(first_digest, second_digest);
    let mut child = std::process::Command::new(&tool)
        .uid(65534)
        .gid(65534)
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(!child.wait().unwrap().success(), "it runs /bin/false now");
    let exec = rig.exec_of(pid).await;
    assert_ne!(
        exec.executable_hash.as_deref(),
        Some(first_digest.as_str()),
        "the old digest was reported for the rewritten file"
    );
    assert_eq!(rig.row_hash(pid), second_digest);
    assert_eq!(rig.stored_hash(pid), second_digest);

    // 4. A script: its running image is the interpreter; the digest that follows is the
    //    script's.
    let pid = run_as_nobody(&script);
    let exec = rig.exec_of(pid).await;
    assert_eq!(exec.executable_path.as_deref(), script.to_str());
    assert!(exec.interpreter.is_some(), "{exec:?}");
    assert_eq!(rig.row_hash(pid), sha256(&script));

    let stats = hashes.stats();
    assert_eq!(stats.queue_full.load(Ordering::Relaxed), 0);
    assert!(hashes.hasher().stats().hits.load(Ordering::Relaxed) >= 1);
    shutdown.store(true, Ordering::Relaxed);
    source.stop().await.unwrap();
    task.await.unwrap().unwrap();
}
