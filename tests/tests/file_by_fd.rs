//! The calls that name their file by a descriptor, not by a path: `fchmod`, `fchown` and
//! `open_by_handle_at`, native and through the 32-bit entry, seen on the real kernel.
//! An attacker who knows that `chmod u+s` is watched uses `fchmod(fd, 04755)`; a
//! container's root who wants a file outside its mount namespace opens it by handle.
//! Each is reported with the path of the file the kernel acted on, walked in the kernel
//! from the descriptor (never a user string), and the fields of the path-based calls.

mod common;

use collector_core::event::{FilesystemEvent, FilesystemEventKind};
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::{KernelConfig, SyscallHooks};

const ACTOR: &str = env!("CARGO_BIN_EXE_kfile-actor");

/// Runs the `byfd` scenario under `config` (as `nobody` when `unprivileged`) and
/// returns the actor's output and its file events, up to its last call: the 32-bit
/// open by handle, or the native one where the 32-bit entry is not watched.
async fn byfd(
    config: KernelConfig,
    unprivileged: bool,
    compat_seen: bool,
) -> (
    std::collections::HashMap<String, String>,
    Vec<FilesystemEvent>,
) {
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(config);
    let mut args = vec!["byfd", dir.as_str()];
    if unprivileged {
        args.push("nobody");
    }
    let out = run_actor(ACTOR, &args);
    let pid: u32 = out["pid"].parse().unwrap();
    let events = watch
        .collect(
            pid,
            |e| e.path.starts_with(&out["h"]),
            |e| e.kind == FilesystemEventKind::OpenByHandleAt && e.compat_syscall == compat_seen,
        )
        .await;
    (out, events)
}

/// The events of `kind` through the entry `compat` names, each checked for `path` and
/// the fields every descriptor call shares.
fn calls<'a>(
    events: &'a [FilesystemEvent],
    kind: FilesystemEventKind,
    compat: bool,
    path: &str,
    uid: u32,
) -> Vec<&'a FilesystemEvent> {
    let found: Vec<_> = events
        .iter()
        .filter(|e| e.kind == kind && e.compat_syscall == compat)
        .collect();
    for e in &found {
        assert_eq!(e.path, path, "{e:?}");
        // Walked in the kernel from the descriptor: never the user's string.
        assert!(!e.path_user_supplied, "{e:?}");
        assert!(
            !e.path_truncated && !e.path_unreadable && !e.path_relative && !e.path_changed,
            "{e:?}"
        );
        assert_eq!(e.uid, Some(uid), "{e:?}");
        assert!(!e.io_uring, "{e:?}");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fchmod_fchown_and_handle_opens_are_reported_unprivileged() {
    if !kernel_or_skip("fchmod_fchown_and_handle_opens_are_reported_unprivileged") {
        return;
    }
    let (out, events) = byfd(KernelConfig::default(), true, true).await;
    assert_eq!(out["uid"], "65534", "actor runs unprivileged: {out:?}");
    for call in ["fchmod", "fchown", "fchmod32", "fchown32", "fchown16"] {
        assert_eq!(out[call], "0", "{call}: {out:?}");
    }
    // No CAP_DAC_READ_SEARCH: the attempt fails, and is reported all the same.
    assert_eq!(out["by_handle"], "-1", "EPERM: {out:?}");
    assert_eq!(out["by_handle32"], "-1", "EPERM: {out:?}");
    let (h, gid) = (out["h"].clone(), out["gid"].parse::<u32>().unwrap());
    let f = format!("{h}/f");

    let chmod = calls(&events, FilesystemEventKind::Chmod, false, &f, 65534);
    assert_eq!(chmod.len(), 1, "{events:#?}");
    assert_eq!(
        chmod[0].mode,
        Some(0o4755),
        "setuid visible: {:?}",
        chmod[0]
    );
    assert_eq!(chmod[0].result, Some(0));
    let chmod32 = calls(&events, FilesystemEventKind::Chmod, true, &f, 65534);
    assert_eq!(chmod32.len(), 1, "{events:#?}");
    assert_eq!(chmod32[0].mode, Some(0o2750), "setgid: {:?}", chmod32[0]);

    let chown = calls(&events, FilesystemEventKind::Chown, false, &f, 65534);
    assert_eq!(chown.len(), 1, "{events:#?}");
    assert_eq!((chown[0].owner_uid, chown[0].owner_gid), (None, Some(gid)));
    let chown32: Vec<_> = calls(&events, FilesystemEventKind::Chown, true, &f, 65534)
        .iter()
        .map(|e| (e.owner_uid, e.owner_gid, e.result))
        .collect();
    // fchown32 then the 16-bit fchown (0xffff: unchanged).
    assert_eq!(
        chown32,
        [(Some(65534), None, Some(0)), (None, None, Some(0))],
        "{events:#?}"
    );

    // A failed open by handle names the mount fd's directory, walked in the kernel.
    for compat in [false, true] {
        let opens = calls(
            &events,
            FilesystemEventKind::OpenByHandleAt,
            compat,
            &h,
            65534,
        );
        assert_eq!(opens.len(), 1, "compat {compat}: {events:#?}");
        assert_eq!(opens[0].result, Some(-1), "EPERM: {:?}", opens[0]);
        assert_eq!(opens[0].flags, Some(0), "O_RDONLY: {:?}", opens[0]);
    }
    // Not reported as plain opens as well.
    assert!(
        !events
            .iter()
            .any(|e| e.kind == FilesystemEventKind::Open && e.result.is_some_and(|r| r < 0)),
        "{events:#?}"
    );
}

/// Root in a container: the open by handle succeeds, and the event names the file the
/// handle reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_by_handle_at_reports_the_file_it_opened() {
    if !kernel_or_skip("open_by_handle_at_reports_the_file_it_opened") {
        return;
    }
    let (out, events) = byfd(KernelConfig::default(), false, true).await;
    assert_eq!(out["uid"], "0", "{out:?}");
    let f = format!("{}/f", out["h"]);
    for (compat, key) in [(false, "by_handle"), (true, "by_handle32")] {
        let fd: i64 = out[key].parse().unwrap();
        assert!(fd >= 0, "{key}: {out:?}");
        let opens = calls(&events, FilesystemEventKind::OpenByHandleAt, compat, &f, 0);
        assert_eq!(opens.len(), 1, "{key}: {events:#?}");
        assert_eq!(opens[0].result, Some(fd), "{key}: {:?}", opens[0]);
    }
}

/// The per-syscall tracepoints another architecture gets (`syscall_hooks = "portable"`)
/// report the native calls the same way (the 32-bit entry is x86's, not watched there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portable_hooks_report_the_descriptor_calls() {
    if !kernel_or_skip("portable_hooks_report_the_descriptor_calls") {
        return;
    }
    let config = KernelConfig {
        syscall_hooks: SyscallHooks::Portable,
        ..KernelConfig::default()
    };
    let (out, events) = byfd(config, true, false).await;
    let (h, gid) = (out["h"].clone(), out["gid"].parse::<u32>().unwrap());
    let f = format!("{h}/f");
    let chmod = calls(&events, FilesystemEventKind::Chmod, false, &f, 65534);
    assert_eq!(chmod.len(), 1, "{events:#?}");
    assert_eq!(chmod[0].mode, Some(0o4755), "{:?}", chmod[0]);
    let chown = calls(&events, FilesystemEventKind::Chown, false, &f, 65534);
    assert_eq!(chown.len(), 1, "{events:#?}");
    assert_eq!((chown[0].owner_uid, chown[0].owner_gid), (None, Some(gid)));
    let opens = calls(
        &events,
        FilesystemEventKind::OpenByHandleAt,
        false,
        &h,
        65534,
    );
    assert_eq!(opens.len(), 1, "{events:#?}");
    assert_eq!(opens[0].result, Some(-1), "{:?}", opens[0]);
    assert!(events.iter().all(|e| !e.compat_syscall), "{events:#?}");
}
