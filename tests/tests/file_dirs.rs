//! mkdir/mkdirat, rmdir/unlinkat(AT_REMOVEDIR) and chmod/fchmodat, seen on the real
//! kernel from an unprivileged actor (uid 65534): the path (directory resolved in the
//! kernel + the user's last component), the mode (setuid/setgid bits kept) and the result.

mod common;

use collector_core::event::{FilesystemEvent, FilesystemEventKind};
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::{KernelConfig, SyscallHooks};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkdir_rmdir_chmod_are_reported_with_paths_and_modes() {
    if !kernel_or_skip("mkdir_rmdir_chmod_are_reported_with_paths_and_modes") {
        return;
    }
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(KernelConfig::default());
    let out = run_actor(env!("CARGO_BIN_EXE_kfile-actor"), &["dirs", &dir, "nobody"]);
    assert_eq!(out["uid"], "65534", "actor runs unprivileged");
    let pid: u32 = out["pid"].parse().unwrap();
    let d = out["d"].clone();
    for call in ["mkdir", "mkdirat", "rmdir", "unlinkat", "chmod", "fchmodat"] {
        assert_eq!(out[call], "0", "{call}: {out:?}");
    }
    assert_eq!(out["missing"], "-2", "ENOENT");

    // The failed chmod is the actor's last file call.
    let events = watch
        .collect(pid, |_| true, |e| e.path.ends_with("/missing"))
        .await;

    let p = |name: &str| format!("{d}/{name}");
    let one = |kind: FilesystemEventKind, path: &str| -> &FilesystemEvent {
        let found: Vec<_> = events
            .iter()
            .filter(|e| e.kind == kind && e.path == path)
            .collect();
        assert_eq!(found.len(), 1, "one {kind:?} of {path} in {events:#?}");
        let e = found[0];
        assert_eq!(e.uid, Some(65534), "{e:?}");
        assert!(!e.compat_syscall, "{e:?}");
        assert!(
            !e.path_truncated && !e.path_unreadable && !e.path_relative,
            "{e:?}"
        );
        // Kernel-resolved directory + the user's last component.
        assert!(e.path_user_supplied, "{e:?}");
        e
    };
    for (name, mode) in [("m1", 0o750), ("m2", 0o700)] {
        let e = one(FilesystemEventKind::Mkdir, &p(name));
        assert_eq!(e.mode, Some(mode), "{e:?}");
        assert_eq!(e.result, Some(0), "{e:?}");
    }
    for name in ["m1", "m2"] {
        let e = one(FilesystemEventKind::Rmdir, &p(name));
        assert_eq!(e.result, Some(0), "{e:?}");
        assert_eq!(e.mode, None, "{e:?}");
    }
    // Not reported as unlinks as well.
    assert!(
        !events
            .iter()
            .any(|e| e.kind == FilesystemEventKind::Unlink && e.path.starts_with(&p("m"))),
        "{events:#?}"
    );
    let chmods: Vec<_> = events
        .iter()
        .filter(|e| e.kind == FilesystemEventKind::Chmod && e.path == p("f"))
        .collect();
    assert_eq!(chmods.len(), 2, "{events:#?}");
    assert_eq!(
        chmods[0].mode,
        Some(0o4755),
        "setuid visible: {:?}",
        chmods[0]
    );
    assert_eq!(
        chmods[1].mode,
        Some(0o2750),
        "setgid visible: {:?}",
        chmods[1]
    );
    assert!(chmods
        .iter()
        .all(|e| e.result == Some(0) && e.path_user_supplied));
    let e = one(FilesystemEventKind::Chmod, &p("missing"));
    assert_eq!(e.result, Some(-2), "{e:?}");
    assert_eq!(e.mode, Some(0o644), "{e:?}");
}

/// mknod/mknodat, native and through `int $0x80`, from an unprivileged actor: FIFOs, a
/// regular file made setuid without an open, and a character device refused (EPERM), each
/// with its type bits, permissions and device number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mknod_reports_the_node_type_mode_and_device() {
    if !kernel_or_skip("mknod_reports_the_node_type_mode_and_device") {
        return;
    }
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(KernelConfig::default());
    let out = run_actor(
        env!("CARGO_BIN_EXE_kfile-actor"),
        &["mknod", &dir, "nobody"],
    );
    assert_eq!(out["uid"], "65534", "actor runs unprivileged");
    for call in ["fifo", "suid", "fifo2", "fifo32", "reg32"] {
        assert_eq!(out[call], "0", "{call}: {out:?}");
    }
    assert_eq!(out["null"], "-1", "EPERM: {out:?}");
    let pid: u32 = out["pid"].parse().unwrap();
    let n = out["n"].clone();
    let events = watch
        .collect(
            pid,
            |e| e.kind == FilesystemEventKind::Mknod,
            |e| e.path.ends_with("/reg32"),
        )
        .await;
    // (name in DIR/n, mode, result, device, 32-bit entry)
    type Node = (String, Option<u32>, Option<i64>, Option<(u32, u32)>, bool);
    let got: Vec<Node> = events
        .iter()
        .map(|e| {
            assert_eq!(e.uid, Some(65534), "{e:?}");
            assert!(
                e.path_user_supplied && !e.path_truncated && !e.path_unreadable,
                "{e:?}"
            );
            (
                e.path
                    .strip_prefix(&format!("{n}/"))
                    .unwrap_or(&e.path)
                    .to_owned(),
                e.mode,
                e.result,
                e.device_major.zip(e.device_minor),
                e.compat_syscall,
            )
        })
        .collect();
    let s = |p: &str| p.to_owned();
    assert_eq!(
        got,
        [
            (s("fifo"), Some(0o010640), Some(0), Some((0, 0)), false),
            (s("suid"), Some(0o104755), Some(0), Some((0, 0)), false),
            (s("fifo2"), Some(0o010600), Some(0), Some((0, 0)), false),
            (s("null"), Some(0o020666), Some(-1), Some((1, 3)), false),
            (s("fifo32"), Some(0o010644), Some(0), Some((0, 0)), true),
            (s("reg32"), Some(0o102755), Some(0), Some((0, 0)), true),
        ],
        "{events:#?}"
    );
}

/// (path, length, result, user-supplied path, 32-bit entry) of a truncate event.
type TruncateCall = (String, Option<u64>, Option<i64>, bool, bool);

/// The native calls of `kfile-actor truncate` as their events report them, `log` being
/// the actor's file.
fn native_truncates(log: &str) -> [TruncateCall; 3] {
    [
        (log.to_owned(), Some(0), Some(0), true, false),
        // By descriptor: the fd's file, walked in the kernel.
        (log.to_owned(), Some(5_000_000_000), Some(0), false, false),
        ("/etc/shadow".to_owned(), Some(0), Some(-13), true, false),
    ]
}

/// Runs `kfile-actor SCENARIO` as nobody under `config` (see [`common::run_watched`]):
/// the actor's output, and its `kind` events up to the first that `last` matches.
async fn actor_events(
    config: KernelConfig,
    scenario: &str,
    results: &[(&str, &str)],
    kind: FilesystemEventKind,
    last: impl Fn(&FilesystemEvent) -> bool,
) -> (
    std::collections::HashMap<String, String>,
    Vec<FilesystemEvent>,
) {
    let run = common::run_watched(env!("CARGO_BIN_EXE_kfile-actor"), config, scenario, results);
    let events = run.watch.collect(run.pid, |e| e.kind == kind, last).await;
    (run.out, events)
}

/// Runs `kfile-actor truncate` as nobody under `config`; the actor's output and its
/// truncate events up to the first that `last` matches, as [`TruncateCall`]s.
async fn truncate_calls(
    config: KernelConfig,
    last: impl Fn(&FilesystemEvent) -> bool,
) -> (std::collections::HashMap<String, String>, Vec<TruncateCall>) {
    let results = [("wipe", "0"), ("grow", "0"), ("shadow", "-13")];
    let (out, events) = actor_events(
        config,
        "truncate",
        &results,
        FilesystemEventKind::Truncate,
        last,
    )
    .await;
    let calls = events
        .iter()
        .map(|e| {
            assert_eq!(e.uid, Some(65534), "{e:?}");
            assert!(!e.path_truncated && !e.path_unreadable, "{e:?}");
            (
                e.path.clone(),
                e.length,
                e.result,
                e.path_user_supplied,
                e.compat_syscall,
            )
        })
        .collect();
    (out, calls)
}

/// truncate and ftruncate, native and through `int $0x80`, from an unprivileged actor:
/// the log wipe (length 0) that needs no truncating open, a length past 4 GiB, a refused
/// truncate of /etc/shadow (EACCES), and the 32-bit calls with their own length layouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_reports_the_file_and_the_new_length() {
    if !kernel_or_skip("truncate_reports_the_file_and_the_new_length") {
        return;
    }
    let (out, got) = truncate_calls(KernelConfig::default(), |e| {
        e.compat_syscall && e.length == Some(3)
    })
    .await;
    for call in ["t64", "f32"] {
        assert_eq!(out[call], "0", "{call}: {out:?}");
    }
    assert_eq!(out["neg"], "-22", "EINVAL: {out:?}");
    let l = || out["log"].clone();
    let mut want = native_truncates(&out["log"]).to_vec();
    want.extend([
        (l(), Some((1 << 32) + 7), Some(0), true, true),
        (l(), Some(u64::MAX), Some(-22), true, true),
        (l(), Some(3), Some(0), false, true),
    ]);
    assert_eq!(got, want);
}

/// The per-syscall tracepoints of another architecture (`syscall_hooks = "portable"`).
fn portable() -> KernelConfig {
    KernelConfig {
        syscall_hooks: SyscallHooks::Portable,
        ..KernelConfig::default()
    }
}

/// The per-syscall tracepoints of another architecture (`syscall_hooks = "portable"`)
/// report the native truncate calls the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portable_hooks_report_truncate() {
    if !kernel_or_skip("portable_hooks_report_truncate") {
        return;
    }
    let (out, got) = truncate_calls(portable(), |e| e.path == "/etc/shadow").await;
    assert_eq!(got, native_truncates(&out["log"]));
}

/// A process that chroots (as root of its own user namespace: no privilege on the host,
/// as `nobody`) is reported with the paths of the mount namespace, not the ones it sees
/// inside its jail: its open of `/etc/passwd` is the jail's decoy file, and reads as
/// that file's real path, not as `/etc/passwd`. So are the file it creates and removes
/// by a name relative to its cwd, and a failed open of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chrooted_process_is_reported_with_the_real_paths() {
    if !kernel_or_skip("a_chrooted_process_is_reported_with_the_real_paths") {
        return;
    }
    let run = common::run_watched(
        env!("CARGO_BIN_EXE_kfile-actor"),
        KernelConfig::default(),
        "chroot",
        &[
            ("passwd", "1"),
            ("created", "1"),
            ("unlinked", "0"),
            ("gone", "-2"),
        ],
    );
    let (out, pid, watch) = (&run.out, run.pid, run.watch);
    let jail = out["jail"].clone();
    let new = format!("{jail}/w/new");
    let events = watch
        .collect(
            pid,
            |e| e.kind != FilesystemEventKind::Mkdir && e.path.starts_with(&jail),
            |e| e.path == new && e.result == Some(-2),
        )
        .await;
    use FilesystemEventKind::*;
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.kind, e.path.clone(), e.path_user_supplied))
        .collect();
    let passwd = format!("{jail}/etc/passwd");
    let want = vec![
        // Written before the chroot.
        (Create, passwd.clone(), false),
        // Inside it: "/etc/passwd", walked from the opened file.
        (Open, passwd, false),
        // "new" in the cwd "/w": the file created, then the cwd walked + the name.
        (Create, new.clone(), false),
        (Unlink, new.clone(), true),
        (Open, new, true),
    ];
    assert_eq!(got, want, "{events:#?}");
    for e in &events {
        assert_eq!(e.uid, Some(65534), "{e:?}");
        assert!(
            !e.path_relative && !e.path_unreadable && !e.path_truncated && !e.path_changed,
            "{e:?}"
        );
    }
    assert!(
        events[1].result.is_some_and(|fd| fd >= 0),
        "{:?}",
        events[1]
    );
    assert_eq!(events[3].result, Some(0), "{:?}", events[3]);
}

/// (path, attribute, flags, size, result, user-supplied path, 32-bit entry) of a
/// setxattr event.
type XattrCall = (
    String,
    String,
    Option<u32>,
    Option<u64>,
    Option<i64>,
    bool,
    bool,
);

fn xattr_row(path: &str, name: &str, flags: u32, len: u64, res: i64, user: bool) -> XattrCall {
    let c32 = name.ends_with("32");
    (
        path.to_string(),
        name.to_string(),
        Some(flags),
        Some(len),
        Some(res),
        user,
        c32,
    )
}

/// The native calls of `kfile-actor xattr`, in order, up to the `trusted.t` one.
fn native_setxattrs(x: &str) -> Vec<XattrCall> {
    let f = format!("{x}/f");
    vec![
        xattr_row(&f, "user.note", 1, 5, 0, true),
        xattr_row(&format!("{x}/sl"), "user.l", 0, 1, -1, true),
        // By descriptor: the file walked in the kernel.
        xattr_row(&f, "user.fd", 2, 2, -61, false),
        xattr_row(&f, "security.capability", 0, 20, -1, true),
        // "f" relative to the cwd, walked in the kernel.
        xattr_row(&f, "trusted.t", 0, 1, -1, true),
    ]
}

/// Runs `kfile-actor xattr` as `nobody` under `config`; its setxattr events up to the
/// one that sets `last`, with the actor's output.
async fn setxattr_calls(
    config: KernelConfig,
    last: &str,
) -> (std::collections::HashMap<String, String>, Vec<XattrCall>) {
    let mut results = vec![
        ("note", "0"),
        ("link", "-1"),
        ("byfd", "-61"),
        ("caps", "-1"),
        ("trusted", "-1"),
        ("at", "0"),
        ("at_fd", "0"),
    ];
    if cfg!(target_arch = "x86_64") {
        results.extend([("c32", "0"), ("fd32", "0")]);
    }
    let (out, events) = actor_events(
        config,
        "xattr",
        &results,
        FilesystemEventKind::Setxattr,
        |e| e.xattr_name.as_deref() == Some(last),
    )
    .await;
    for e in &events {
        assert_eq!(e.uid, Some(65534), "{e:?}");
        assert!(
            !e.path_relative && !e.path_unreadable && !e.path_truncated && !e.path_changed,
            "{e:?}"
        );
        assert!(
            e.new_path.is_none() && e.mode.is_none() && !e.io_uring,
            "{e:?}"
        );
    }
    let got = events
        .iter()
        .map(|e| {
            (
                e.path.clone(),
                e.xattr_name.clone().unwrap_or_default(),
                e.flags,
                e.length,
                e.result,
                e.path_user_supplied,
                e.compat_syscall,
            )
        })
        .collect();
    (out, got)
}

/// setxattr, lsetxattr, fsetxattr and setxattrat, native and through `int $0x80`, as
/// `nobody`: each is a `setxattr` event with the file's path (by descriptor: walked in
/// the kernel), the attribute's name, its flags and the value's size. A refused attempt
/// to give a file capabilities (`security.capability` with cap_setuid) is reported with
/// its EPERM, as is a `trusted.*` attribute through a relative path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setxattr_reports_the_file_the_attribute_and_the_size() {
    if !kernel_or_skip("setxattr_reports_the_file_the_attribute_and_the_size") {
        return;
    }
    let last = if cfg!(target_arch = "x86_64") {
        "user.fd32"
    } else {
        "user.at"
    };
    let (out, got) = setxattr_calls(KernelConfig::default(), last).await;
    let x = &out["x"];
    let f = format!("{x}/f");
    let mut want = native_setxattrs(x);
    // setxattrat: relative to its dirfd; size and flags from its argument struct.
    want.push(xattr_row(&f, "user.at", 0, 3, 0, true));
    // setxattrat on its descriptor (an empty path, AT_EMPTY_PATH): the fd's file.
    want.push(xattr_row(&f, "user.atfd", 0, 3, 0, false));
    if cfg!(target_arch = "x86_64") {
        want.push(xattr_row(&f, "user.c32", 0, 3, 0, true));
        want.push(xattr_row(&f, "user.fd32", 1, 4, 0, false));
    }
    assert_eq!(got, want);
}

/// The same native calls through the portable hooks (`sys_{enter,exit}_setxattr`,
/// `_lsetxattr`, `_fsetxattr`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portable_hooks_report_setxattr() {
    if !kernel_or_skip("portable_hooks_report_setxattr") {
        return;
    }
    let (out, got) = setxattr_calls(portable(), "trusted.t").await;
    assert_eq!(got, native_setxattrs(&out["x"]));
}
