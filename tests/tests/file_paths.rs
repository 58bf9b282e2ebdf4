//! Paths resolved in the kernel (collector-ebpf/src/path.rs), seen on the real kernel
//! from an unprivileged actor (uid 65534): cwd-relative after chdir, openat(dirfd) with
//! the dirfd closed at once, a ~3,000-byte path, exclusion by canonical path only
//! (an excluded prefix spelled through `..`), and a failed relative open.

mod common;

use collector_core::event::FilesystemEventKind;
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::KernelConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_resolves_paths_for_an_unprivileged_actor() {
    if !kernel_or_skip("kernel_resolves_paths_for_an_unprivileged_actor") {
        return;
    }
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(KernelConfig {
        excluded_path_prefixes: vec![format!("{dir}/quiet/")],
        ..KernelConfig::default()
    });
    let out = run_actor(
        env!("CARGO_BIN_EXE_kfile-actor"),
        &["paths", &dir, "nobody"],
    );
    assert_eq!(out["uid"], "65534", "actor runs unprivileged");
    let pid: u32 = out["pid"].parse().unwrap();

    // The failed relative open is the actor's last file operation.
    let events = watch
        .collect(pid, |_| true, |e| e.path.ends_with("missing-rel"))
        .await;

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
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(KernelConfig::default());
    let out = run_actor(env!("CARGO_BIN_EXE_kfile-actor"), &["fifo", &dir, "nobody"]);
    let pid: u32 = out["pid"].parse().unwrap();
    // The read-only open (flags 0) is the one raced.
    let events = watch
        .collect(
            pid,
            |e| e.kind == FilesystemEventKind::Open && e.flags == Some(0),
            |_| true,
        )
        .await;
    let e = events
        .first()
        .unwrap_or_else(|| panic!("no read open of the FIFO"));
    assert_eq!(e.path, out["fifo"], "{e:?}");
    assert_ne!(e.path, out["decoy"]);
    assert!(!e.path_user_supplied && !e.path_truncated, "{e:?}");
    assert!(e.result.unwrap() >= 0, "{e:?}");
}
