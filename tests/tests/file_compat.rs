//! File calls through the 32-bit syscall entry (`int $0x80`), seen on the real kernel
//! from an unprivileged actor (uid 65534): open, creat, openat, openat2, rename,
//! renameat, renameat2, unlink, unlinkat and a failed open, each reported once with the
//! same fields as the native call and `compat_syscall` set.

#![cfg(target_arch = "x86_64")]

mod common;

use collector_core::event::{FilesystemEvent, FilesystemEventKind};
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::KernelConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int80_file_calls_are_reported_with_compat_flag() {
    if !kernel_or_skip("int80_file_calls_are_reported_with_compat_flag") {
        return;
    }
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(KernelConfig::default());
    let out = run_actor(
        env!("CARGO_BIN_EXE_kfile-actor"),
        &["int80", &dir, "nobody"],
    );
    assert_eq!(out["uid"], "65534", "actor runs unprivileged");
    let pid: u32 = out["pid"].parse().unwrap();
    let c32 = out["dir"].clone();
    for call in [
        "open",
        "creat",
        "openat",
        "openat2",
        "rename",
        "renameat",
        "renameat2",
        "unlink",
        "unlinkat",
    ] {
        assert!(out[call].parse::<i32>().unwrap() >= 0, "{call}: {out:?}");
    }
    assert_eq!(out["missing"], "-2", "ENOENT");

    // The failed open is the actor's last file call.
    let events = watch
        .collect(pid, |_| true, |e| e.path.ends_with("/missing"))
        .await;

    let p = |name: &str| format!("{c32}/{name}");
    let one = |kind: FilesystemEventKind, path: &str| -> &FilesystemEvent {
        let found: Vec<_> = events
            .iter()
            .filter(|e| e.kind == kind && e.path == path)
            .collect();
        assert_eq!(found.len(), 1, "one {kind:?} of {path} in {events:#?}");
        let e = found[0];
        assert!(e.compat_syscall, "{e:?}");
        assert_eq!(e.uid, Some(65534), "{e:?}");
        assert_eq!(e.name.as_deref(), Some("kfile-actor"), "{e:?}");
        assert!(
            !e.path_truncated && !e.path_unreadable && !e.path_relative,
            "{e:?}"
        );
        e
    };
    let creat = (libc::O_CREAT | libc::O_WRONLY) as u32;
    let truncating = creat | libc::O_TRUNC as u32;
    for (name, flags, mode, call) in [
        ("open5", creat, 0o644, "open"),
        ("creat8", truncating, 0o640, "creat"),
        ("at295", creat, 0o600, "openat"),
        ("at2_437", creat, 0o600, "openat2"),
    ] {
        let e = one(FilesystemEventKind::Create, &p(name));
        assert_eq!(e.flags, Some(flags), "{name}: {e:?}");
        assert_eq!(e.mode, Some(mode), "{name}: {e:?}");
        assert_eq!(e.result, Some(out[call].parse().unwrap()), "{name}: {e:?}");
        // Resolved from the file the call produced, not the user string.
        assert!(!e.path_user_supplied, "{name}: {e:?}");
    }
    for (from, to) in [
        ("creat8", "ren38"),
        ("ren38", "ren302"),
        ("ren302", "ren353"),
    ] {
        let e = one(FilesystemEventKind::Rename, &p(from));
        assert_eq!(e.new_path.as_deref(), Some(p(to).as_str()), "{e:?}");
        assert_eq!(e.result, Some(0), "{e:?}");
    }
    // unlinkat through a dirfd: the directory is walked in the kernel.
    for name in ["open5", "at295"] {
        let e = one(FilesystemEventKind::Unlink, &p(name));
        assert_eq!(e.result, Some(0), "{e:?}");
    }
    let e = one(FilesystemEventKind::Open, &p("missing"));
    assert_eq!(e.result, Some(-2), "{e:?}");
    assert!(e.path_user_supplied, "{e:?}");
    // Each call was reported once (4 creates, 3 renames, 2 unlinks, the failed open), all
    // flagged; the actor's own mkdir and open of c32 itself are native.
    let under = format!("{c32}/");
    assert_eq!(
        events.iter().filter(|e| e.path.starts_with(&under)).count(),
        10,
        "{events:#?}"
    );
    assert_eq!(events.iter().filter(|e| e.compat_syscall).count(), 10);
}
