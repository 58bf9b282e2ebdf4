//! Paths resolved in the kernel (collector-ebpf/src/path.rs), seen on the real kernel
//! from an unprivileged actor (uid 65534): cwd-relative after chdir, openat(dirfd) with
//! the dirfd closed at once, a ~3,000-byte path, exclusion by canonical path only
//! (an excluded prefix spelled through `..`), and a failed relative open.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_core::event::{FilesystemEvent, FilesystemEventKind};
use collector_core::{CollectionEvent, EventSource};
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms, KernelSource};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_resolves_paths_for_an_unprivileged_actor() {
    if !kernel_or_skip("kernel_resolves_paths_for_an_unprivileged_actor") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dir = tmp.path().canonicalize().unwrap().display().to_string();
    let programs = KernelPrograms::load(KernelConfig {
        excluded_path_prefixes: vec![format!("{dir}/quiet/")],
        ..KernelConfig::default()
    })
    .expect("load kernel programs");
    let source =
        Arc::new(KernelSource::new(programs, KernelDomain::Filesystem).expect("filesystem source"));
    let (tx, mut rx) = mpsc::channel(65536);
    let shutdown = Arc::new(AtomicBool::new(false));
    let task = {
        let (source, shutdown) = (source.clone(), shutdown.clone());
        tokio::spawn(async move { source.start(tx, shutdown).await })
    };
    let out = run_actor(
        env!("CARGO_BIN_EXE_kfile-actor"),
        &["paths", &dir, "nobody"],
    );
    assert_eq!(out["uid"], "65534", "actor runs unprivileged");
    let pid: u32 = out["pid"].parse().unwrap();

    let mut events: Vec<FilesystemEvent> = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = rx.recv().await {
            if let CollectionEvent::Filesystem(f) = ev {
                if f.pid == pid {
                    // The failed relative open is the actor's last file operation.
                    let done = f.path.ends_with("missing-rel");
                    events.push(f);
                    if done {
                        return;
                    }
                }
            }
        }
    })
    .await;
    source.stop().await.unwrap();
    shutdown.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();

    let find = |path: &str| {
        events
            .iter()
            .find(|e| e.kind == FilesystemEventKind::Create && e.path == path)
            .unwrap_or_else(|| panic!("no create of {path} in {events:#?}"))
    };
    for key in ["cwd", "dirfd", "long", "via_quiet"] {
        let e = find(&out[key]);
        assert!(!e.path_user_supplied, "{key}: kernel-resolved: {e:?}");
        assert!(!e.path_truncated && !e.path_unreadable, "{key}: {e:?}");
        assert!(!e.path_relative, "{key}: {e:?}");
        assert_eq!(e.uid, Some(65534), "{key}: {e:?}");
        assert!(e.result.unwrap() >= 0, "{key}: {e:?}");
    }
    assert!(out["long"].len() > 3000, "the long path is long");
    // Spelled through the excluded directory, but the file is elsewhere: reported under
    // its real path. The file really under the excluded prefix (spelled through `loud`)
    // is dropped.
    assert!(
        !events.iter().any(|e| e.path.contains("/quiet/")),
        "nothing reported under the excluded prefix: {events:#?}"
    );
    let missing = events
        .iter()
        .find(|e| e.path == out["missing"])
        .unwrap_or_else(|| panic!("no failed open of {} in {events:#?}", out["missing"]));
    assert_eq!(missing.kind, FilesystemEventKind::Open);
    assert_eq!(missing.result, Some(-2), "ENOENT");
    assert!(missing.path_user_supplied, "{missing:?}");
    assert!(!missing.path_unreadable, "{missing:?}");
}

/// A thread rewrites the path buffer while the main thread is blocked opening a FIFO:
/// the event names the FIFO the call opened, not what the buffer says at exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reports_the_file_opened_not_the_rewritten_buffer() {
    if !kernel_or_skip("open_reports_the_file_opened_not_the_rewritten_buffer") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dir = tmp.path().canonicalize().unwrap().display().to_string();
    let programs = KernelPrograms::load(KernelConfig::default()).expect("load kernel programs");
    let source =
        Arc::new(KernelSource::new(programs, KernelDomain::Filesystem).expect("filesystem source"));
    let (tx, mut rx) = mpsc::channel(65536);
    let shutdown = Arc::new(AtomicBool::new(false));
    let task = {
        let (source, shutdown) = (source.clone(), shutdown.clone());
        tokio::spawn(async move { source.start(tx, shutdown).await })
    };
    let out = run_actor(env!("CARGO_BIN_EXE_kfile-actor"), &["fifo", &dir, "nobody"]);
    let pid: u32 = out["pid"].parse().unwrap();
    let mut events: Vec<FilesystemEvent> = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = rx.recv().await {
            if let CollectionEvent::Filesystem(f) = ev {
                // The read-only open (flags 0) is the one raced.
                if f.pid == pid && f.kind == FilesystemEventKind::Open && f.flags == Some(0) {
                    events.push(f);
                    return;
                }
            }
        }
    })
    .await;
    source.stop().await.unwrap();
    shutdown.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();
    let e = events
        .first()
        .unwrap_or_else(|| panic!("no read open of the FIFO"));
    assert_eq!(e.path, out["fifo"], "{e:?}");
    assert_ne!(e.path, out["decoy"]);
    assert!(!e.path_user_supplied && !e.path_truncated, "{e:?}");
    assert!(e.result.unwrap() >= 0, "{e:?}");
}
