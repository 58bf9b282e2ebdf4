//! File operations submitted through io_uring (OPENAT, OPENAT2, MKDIRAT, RENAMEAT,
//! LINKAT, SYMLINKAT, UNLINKAT, UNLINKAT+AT_REMOVEDIR, a failed OPENAT), by an
//! unprivileged actor (uid 65534): each is reported with `io_uring` set, its paths
//! and result.

mod common;

use collector_core::event::FilesystemEventKind;
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::KernelConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_uring_file_operations_are_reported_with_paths_and_results() {
    if !kernel_or_skip("io_uring_file_operations_are_reported_with_paths_and_results") {
        return;
    }
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(KernelConfig::default());
    let out = run_actor(
        env!("CARGO_BIN_EXE_kuring-actor"),
        &["uring", &dir, "nobody"],
    );
    assert_eq!(out["uid"], "65534", "actor runs unprivileged");
    let pid: u32 = out["pid"].parse().unwrap();
    let u = out["u"].clone();
    let n = |k: &str| -> i64 { out[k].parse().unwrap() };
    assert!(n("open_fd") >= 0 && n("open2_fd") >= 0, "{out:?}");
    for call in [
        "mkdirat",
        "renameat",
        "linkat",
        "symlinkat",
        "unlinkat",
        "rmdirat",
        "skip_mkdirat",
        "fixed_open",
    ] {
        assert_eq!(out[call], "0", "{call}: {out:?}");
    }
    assert_eq!(out["missing"], "-2", "ENOENT");
    let p = |name: &str| format!("{u}/{name}");
    let missing = p("missing");
    let events = watch
        .collect(pid, |e| e.io_uring, |e| e.path == missing)
        .await;

    use FilesystemEventKind::*;
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.kind, e.path.clone(), e.new_path.clone(), e.result))
        .collect();
    let want = vec![
        (Create, p("f"), None, Some(n("open_fd"))),
        (Open, p("f"), None, Some(n("open2_fd"))),
        (Mkdir, p("md"), None, Some(0)),
        (Rename, p("f"), Some(p("g")), Some(0)),
        (Link, p("g"), Some(p("hl")), Some(0)),
        (Symlink, "g".to_string(), Some(p("sl")), Some(0)),
        // Into a fixed-file slot: no fd to walk, so the directory walked at submission +
        // the kernel's copy of the name; result 0.
        (Open, p("g"), None, Some(0)),
        (Unlink, p("hl"), None, Some(0)),
        (Rmdir, p("md"), None, Some(0)),
        // No completion comes for it on success: reported at submission, no result.
        (Mkdir, p("skipd"), None, None),
        (Open, p("missing"), None, Some(-2)),
    ];
    assert_eq!(got, want, "{events:#?}");
    for e in &events {
        assert_eq!(e.uid, Some(65534), "{e:?}");
        assert!(
            !e.path_truncated && !e.path_unreadable && !e.path_changed,
            "{e:?}"
        );
        assert!(!e.compat_syscall && !e.path_relative, "{e:?}");
    }
    // A successful open reports the file the kernel opened (walked from the new fd);
    // everything else is the directory walked in the kernel + the kernel's copy of the
    // string.
    let by_kind = |k| events.iter().find(|e| e.kind == k).unwrap();
    assert!(!by_kind(Create).path_user_supplied);
    assert_eq!(
        by_kind(Create).flags.map(|f| f & libc::O_CREAT as u32),
        Some(libc::O_CREAT as u32)
    );
    assert_eq!(by_kind(Create).mode, Some(0o640));
    assert!(!events[1].path_user_supplied);
    assert!(
        events[6].path_user_supplied,
        "fixed-file open: {:?}",
        events[6]
    );
    assert!(events[10].path_user_supplied);
    assert_eq!(by_kind(Mkdir).mode, Some(0o750));
    assert!(by_kind(Rename).path_user_supplied && by_kind(Rename).new_path_user_supplied);
}

/// Completions that overflow a full completion queue (the process does not reap) are
/// reported too: an unprivileged process cannot hide io_uring file operations by never
/// reading its CQ. With distinct `user_data` every one comes with its result; when all
/// requests share one `user_data` (so an overflowed completion cannot be told apart),
/// every one is still reported, some without a result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_uring_completions_through_the_overflow_list_are_reported() {
    if !kernel_or_skip("io_uring_completions_through_the_overflow_list_are_reported") {
        return;
    }
    for same in [false, true] {
        overflow_run(same).await;
    }
}

async fn overflow_run(same_user_data: bool) {
    const N: usize = 16;
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(KernelConfig::default());
    let mut args = vec!["uring-overflow", &dir, "nobody", "16"];
    if same_user_data {
        args.push("same");
    }
    let out = run_actor(env!("CARGO_BIN_EXE_kuring-actor"), &args);
    assert_eq!(out["ok"], N.to_string(), "{out:?}");
    let pid: u32 = out["pid"].parse().unwrap();
    let o = out["o"].clone();
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let events = watch
        .collect(
            pid,
            |e| e.io_uring && e.kind == FilesystemEventKind::Mkdir,
            |_| seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == N,
        )
        .await;
    let mut paths: Vec<_> = events.iter().map(|e| e.path.clone()).collect();
    paths.sort();
    let mut want: Vec<_> = (0..N).map(|i| format!("{o}/d{i}")).collect();
    want.sort();
    assert_eq!(paths, want, "same user_data: {same_user_data}: {events:#?}");
    if same_user_data {
        // Either the result, or none (flushed when the next request took its key).
        assert!(
            events.iter().all(|e| matches!(e.result, Some(0) | None)),
            "{events:#?}"
        );
    } else {
        assert!(events.iter().all(|e| e.result == Some(0)), "{events:#?}");
    }
}

/// FTRUNCATE through io_uring (Linux >= 6.9), as `nobody`: each is a `truncate` event
/// marked `io_uring`, with the new length and the path of the file the request acted on:
/// a registered-file slot is named by its file, and a descriptor swapped (dup2) between
/// the submission and the moment the request ran is reported as the file it truncated,
/// not the one it named when submitted. A refused wipe of /etc/passwd is reported with
/// its EINVAL; a bad descriptor with EBADF and no path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_uring_ftruncate_reports_the_file_it_truncated() {
    if !kernel_or_skip("io_uring_ftruncate_reports_the_file_it_truncated") {
        return;
    }
    let run = common::run_watched(
        env!("CARGO_BIN_EXE_kuring-actor"),
        KernelConfig::default(),
        "uring-truncate",
        &[
            ("big", "0"),
            ("fixed", "0"),
            ("passwd", "-22"),
            ("badfd", "-9"),
            ("swap", "0"),
            ("f_len", "5000000000"),
            ("g_len", "3"),
            ("h_len", "1"),
            ("decoy_len", "100"),
        ],
    );
    let (out, pid, watch) = (&run.out, run.pid, run.watch);
    let t = out["t"].clone();
    let last = format!("{t}/h");
    let events = watch
        .collect(
            pid,
            |e| e.kind == FilesystemEventKind::Truncate,
            |e| e.path == last,
        )
        .await;
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.path.clone(), e.length, e.result, e.path_unreadable))
        .collect();
    let want = vec![
        (format!("{t}/f"), Some(5_000_000_000), Some(0), false),
        (format!("{t}/g"), Some(3), Some(0), false),
        ("/etc/passwd".to_string(), Some(0), Some(-22), false),
        (String::new(), Some(0), Some(-9), true),
        (format!("{t}/h"), Some(1), Some(0), false),
    ];
    assert_eq!(got, want, "{events:#?}");
    for e in &events {
        assert!(e.io_uring && !e.compat_syscall, "{e:?}");
        assert_eq!(e.uid, Some(65534), "{e:?}");
        assert_eq!(e.name.as_deref(), Some("kuring-actor"), "{e:?}");
        assert!(
            !e.path_user_supplied && !e.path_relative && !e.path_truncated,
            "{e:?}"
        );
        assert_eq!((e.flags, e.mode), (None, None), "{e:?}");
    }
}

/// SETXATTR and FSETXATTR through io_uring, as `nobody`: `setxattr` events marked
/// `io_uring`, with the attribute's name and size from the kernel's own copies, and
/// FSETXATTR's path the file the request ran on (a descriptor swapped by dup2 between
/// submission and execution reads as the file that got the attribute; one that posts
/// no completion, as the descriptor's file at submission, without a result). A refused
/// attempt to give a file capabilities is reported with its EPERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_uring_setxattr_reports_the_file_and_the_attribute() {
    if !kernel_or_skip("io_uring_setxattr_reports_the_file_and_the_attribute") {
        return;
    }
    let run = common::run_watched(
        env!("CARGO_BIN_EXE_kuring-actor"),
        KernelConfig::default(),
        "uring-xattr",
        &[
            ("set", "0"),
            ("fset", "0"),
            ("skipped", "0"),
            ("f_skip", "1"),
            ("caps", "-1"),
            ("swap", "0"),
            ("h_has", "1"),
            ("decoy_has", "0"),
        ],
    );
    let (out, pid, watch) = (&run.out, run.pid, run.watch);
    let ux = out["ux"].clone();
    let events = watch
        .collect(
            pid,
            |e| e.kind == FilesystemEventKind::Setxattr,
            |e| e.xattr_name.as_deref() == Some("user.swap"),
        )
        .await;
    let got: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.path.clone(),
                e.xattr_name.clone().unwrap_or_default(),
                e.flags,
                e.length,
                e.result,
                e.path_user_supplied,
            )
        })
        .collect();
    let f = format!("{ux}/f");
    let want = vec![
        (
            f.clone(),
            "user.u".to_string(),
            Some(1),
            Some(3),
            Some(0),
            true,
        ),
        // By descriptor: the file the request ran on, walked in the kernel.
        (
            f.clone(),
            "user.fu".to_string(),
            Some(0),
            Some(2),
            Some(0),
            false,
        ),
        // No completion comes on success: reported at submission, without a result,
        // named by the descriptor's file then.
        (
            f.clone(),
            "user.skip".to_string(),
            Some(0),
            Some(1),
            None,
            false,
        ),
        (
            f,
            "security.capability".to_string(),
            Some(0),
            Some(20),
            Some(-1),
            true,
        ),
        (
            format!("{ux}/h"),
            "user.swap".to_string(),
            Some(0),
            Some(1),
            Some(0),
            false,
        ),
    ];
    assert_eq!(got, want, "{events:#?}");
    for e in &events {
        assert!(e.io_uring && !e.compat_syscall, "{e:?}");
        assert_eq!(e.uid, Some(65534), "{e:?}");
        assert!(
            !e.path_relative && !e.path_unreadable && !e.path_truncated && !e.path_changed,
            "{e:?}"
        );
    }
}
