//! Create, rename and unlink in a temporary directory, from the real kernel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_core::event::{FilesystemEvent, FilesystemEventKind};
use collector_core::{CollectionEvent, EventSource};
use collector_tests::{actor, kernel_or_skip};
use collector_userspace::ebpf::{
    KernelConfig, KernelDomain, KernelPrograms, KernelSource, SyscallHooks,
};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rename_unlink_with_both_paths() {
    if !kernel_or_skip("create_rename_unlink_with_both_paths") {
        return;
    }
    create_rename_unlink(SyscallHooks::Tracepoints).await;
}

/// The fallback for hosts without tracefs: raw sys_enter/sys_exit tracepoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_syscall_hooks_see_the_same_file_operations() {
    if !kernel_or_skip("raw_syscall_hooks_see_the_same_file_operations") {
        return;
    }
    create_rename_unlink(SyscallHooks::Raw).await;
}

async fn create_rename_unlink(hooks: SyscallHooks) {
    let programs = KernelPrograms::load(KernelConfig {
        syscall_hooks: hooks,
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
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap().display().to_string();
    let out = actor!("files", &dir_path);
    let pid: u32 = out["pid"].parse().unwrap();
    let rel = format!("{dir_path}/rel");

    let mut events: Vec<FilesystemEvent> = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = rx.recv().await {
            if let CollectionEvent::Filesystem(f) = ev {
                let ours = f.path.starts_with(&dir_path) || (f.path == "rel" && f.path_relative);
                if f.pid == pid && ours {
                    let done = f.kind == FilesystemEventKind::Unlink && f.path.ends_with("rel");
                    events.push(*f);
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

    let find = |kind: FilesystemEventKind, path: &str| {
        events
            .iter()
            .find(|e| e.kind == kind && e.path == path)
            .unwrap_or_else(|| panic!("no {kind:?} of {path} in {events:#?}"))
    };
    let create = find(FilesystemEventKind::Create, &out["a"]);
    assert!(create.result.unwrap() >= 0);
    assert_eq!(create.flags.unwrap() & 0o100, 0o100, "O_CREAT in flags");
    let rename = find(FilesystemEventKind::Rename, &out["a"]);
    assert_eq!(rename.new_path.as_deref(), Some(out["b"].as_str()));
    assert_eq!(rename.result, Some(0));
    assert_eq!(find(FilesystemEventKind::Unlink, &out["b"]).result, Some(0));
    // A relative path is resolved against the process's cwd while the process lives;
    // once it has exited it is reported as given and marked relative, never guessed.
    let rel_create = events
        .iter()
        .find(|e| e.kind == FilesystemEventKind::Create && e.path.ends_with("rel"))
        .expect("create of the relative path");
    assert!(
        (rel_create.path == rel && !rel_create.path_relative)
            || (rel_create.path == "rel" && rel_create.path_relative),
        "{rel_create:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_path_prefix_is_dropped_in_the_kernel() {
    if !kernel_or_skip("excluded_path_prefix_is_dropped_in_the_kernel") {
        return;
    }
    let quiet = tempfile::tempdir().unwrap();
    let loud = tempfile::tempdir().unwrap();
    let quiet_path = quiet.path().canonicalize().unwrap().display().to_string();
    let loud_path = loud.path().canonicalize().unwrap().display().to_string();
    let programs = KernelPrograms::load(KernelConfig {
        excluded_path_prefixes: vec![format!("{quiet_path}/")],
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
    let q = actor!("files", &quiet_path);
    let l = actor!("files", &loud_path);
    let pids: Vec<u32> = [&q, &l].iter().map(|o| o["pid"].parse().unwrap()).collect();
    let mut events: Vec<FilesystemEvent> = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = rx.recv().await {
            if let CollectionEvent::Filesystem(f) = ev {
                if pids.contains(&f.pid) {
                    let done = f.kind == FilesystemEventKind::Unlink && f.path == l["b"];
                    events.push(*f);
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
    assert!(
        events
            .iter()
            .any(|e| e.kind == FilesystemEventKind::Rename && e.path == l["a"]),
        "events outside the prefix still arrive: {events:#?}"
    );
    // Only kernel-resolved canonical paths are matched: the create under the prefix
    // (its path comes from the opened file) is gone; rename and unlink carry the user's
    // strings, which could reach anywhere through `..`, so they are reported, flagged.
    assert!(
        !events
            .iter()
            .any(|e| e.kind == FilesystemEventKind::Create && e.path == q["a"]),
        "no create under the excluded prefix: {events:#?}"
    );
    let unlink = events
        .iter()
        .find(|e| e.kind == FilesystemEventKind::Unlink && e.path == q["b"])
        .unwrap_or_else(|| panic!("user-supplied unlink path is reported: {events:#?}"));
    assert!(unlink.path_user_supplied, "{unlink:?}");
}
