//! rename, link and symlink with both paths from the kernel: each path is its directory
//! (dirfd or cwd) walked in the kernel at the call + the string the process passed; no
//! /proc lookup after the fact. Run by an unprivileged actor (uid 65534).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use collector_core::event::{FilesystemEvent, FilesystemEventKind};
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::KernelConfig;

fn two_path_kind(e: &FilesystemEvent) -> bool {
    matches!(
        e.kind,
        FilesystemEventKind::Rename | FilesystemEventKind::Link | FilesystemEventKind::Symlink
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_resolve_in_the_kernel_after_dirfd_close_and_chdir() {
    if !kernel_or_skip("both_paths_resolve_in_the_kernel_after_dirfd_close_and_chdir") {
        return;
    }
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(KernelConfig::default());
    let out = run_actor(
        env!("CARGO_BIN_EXE_kuring-actor"),
        &["twopaths", &dir, "nobody"],
    );
    assert_eq!(out["uid"], "65534", "actor runs unprivileged");
    let pid: u32 = out["pid"].parse().unwrap();
    let r = out["r"].clone();
    for call in [
        "renameat", "linkat", "rename", "link", "symlink", "long_res", "exchange",
    ] {
        assert_eq!(out[call], "0", "{call}: {out:?}");
    }
    assert_eq!(out["missing"], "-2", "ENOENT");
    let p = |name: &str| format!("{r}/{name}");
    let nope = p("nope");
    let events = watch.collect(pid, two_path_kind, |e| e.path == nope).await;

    use FilesystemEventKind::*;
    let long = p(&out["long"]);
    assert_eq!(long.len(), r.len() + 1 + 3000);
    let want: Vec<(FilesystemEventKind, String, String, i64)> = vec![
        // renameat/linkat relative to a dirfd closed right after the call.
        (Rename, p("a"), p("b"), 0),
        (Link, p("b"), p("lnk"), 0),
        // cwd-relative after chdir (the actor chdirs back to / at once).
        (Rename, p("b"), p("c"), 0),
        (Link, p("c"), p("hl"), 0),
        // A symlink's target is content: verbatim, never resolved.
        (Symlink, "../t/./x".into(), p("sl"), 0),
        // A 3,000-byte target, whole.
        (Rename, p("c"), long.clone(), 0),
        (Rename, p("e1"), p("e2"), 0),
        (Rename, p("nope"), p("nope2"), -2),
    ];
    let got: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.path.clone(),
                e.new_path.clone().unwrap_or_default(),
                e.result.unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want, "{events:#?}");
    // renameat2's flags: RENAME_EXCHANGE (2) swapped e1 and e2.
    let flags: Vec<_> = events.iter().map(|e| e.flags).collect();
    let none = Some(0);
    assert_eq!(
        flags,
        vec![none, none, none, none, None, none, Some(2), none],
        "{events:#?}"
    );
    for e in &events {
        assert_eq!(e.uid, Some(65534), "{e:?}");
        // Each path's last part is the process's string: flagged, per path.
        assert!(e.path_user_supplied && e.new_path_user_supplied, "{e:?}");
        assert!(!e.path_truncated && !e.new_path_truncated, "{e:?}");
        assert!(!e.path_unreadable && !e.new_path_unreadable, "{e:?}");
        assert!(!e.path_changed && !e.new_path_changed, "{e:?}");
        assert!(
            !e.path_relative && !e.io_uring && !e.compat_syscall,
            "{e:?}"
        );
    }
}

/// A second thread rewrites the rename's path buffer once during the call: every
/// rename is reported, and its path either is the file the kernel really renamed or is
/// flagged `path_changed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_rename_buffer_is_flagged_or_names_what_the_kernel_renamed() {
    if !kernel_or_skip("a_rewritten_rename_buffer_is_flagged_or_names_what_the_kernel_renamed") {
        return;
    }
    const N: usize = 2000;
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(KernelConfig::default());
    let out = run_actor(
        env!("CARGO_BIN_EXE_kuring-actor"),
        &["race", &dir, "nobody", &N.to_string()],
    );
    let pid: u32 = out["pid"].parse().unwrap();
    let (x, a, b, did) = (&out["x"], &out["a"], &out["b"], &out["did"]);
    assert_eq!(did.len(), N);
    let dst = format!("{x}/dst");
    let seen = AtomicUsize::new(0);
    // The racy renames are those onto dst; each is followed by one back from dst.
    let events = watch
        .collect(
            pid,
            |e| e.kind == FilesystemEventKind::Rename && e.new_path.as_deref() == Some(&dst),
            |_| seen.fetch_add(1, Ordering::Relaxed) + 1 == N,
        )
        .await;
    assert_eq!(events.len(), N, "every racy rename is reported");
    let mut changed = 0;
    for (e, kernel_did) in events.iter().zip(did.chars()) {
        assert_eq!(e.result, Some(0), "{e:?}");
        let truth = if kernel_did == 'A' { a } else { b };
        if e.path_changed {
            changed += 1;
            assert!(e.path == *a || e.path == *b, "{e:?}");
        } else {
            assert_eq!(
                &e.path, truth,
                "unflagged path must be what the kernel renamed"
            );
        }
        assert!(e.path_user_supplied && !e.new_path_changed, "{e:?}");
    }
    let moved_b = did.chars().filter(|&c| c == 'B').count();
    eprintln!("{N} racy renames: kernel renamed BBBB {moved_b} times, path_changed on {changed}");
}
