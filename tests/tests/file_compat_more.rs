//! The rest of the file calls through the 32-bit entry (`int $0x80`), from an
//! unprivileged actor: mkdir, mkdirat, rmdir, chmod (setuid bit), fchmodat (setgid),
//! chown32, the 16-bit lchown, fchownat, link, linkat, symlink, symlinkat and
//! memfd_create, each reported once with the native call's fields and `compat_syscall`.

#![cfg(target_arch = "x86_64")]

mod common;

use collector_core::event::{FilesystemEvent, FilesystemEventKind};
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::KernelConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int80_dir_mode_owner_link_and_memfd_calls_are_reported() {
    if !kernel_or_skip("int80_dir_mode_owner_link_and_memfd_calls_are_reported") {
        return;
    }
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(KernelConfig::default());
    let out = run_actor(
        env!("CARGO_BIN_EXE_kfile-actor"),
        &["int80-more", &dir, "nobody"],
    );
    assert_eq!(out["uid"], "65534", "actor runs unprivileged");
    for call in [
        "mkdir",
        "mkdirat",
        "rmdir",
        "chmod",
        "fchmodat",
        "chown32",
        "lchown16",
        "fchownat",
        "link",
        "linkat",
        "symlink",
        "symlinkat",
        "memfd",
    ] {
        assert!(out[call].parse::<i32>().unwrap() >= 0, "{call}: {out:?}");
    }
    let pid: u32 = out["pid"].parse().unwrap();
    let m = out["m"].clone();
    let gid: u32 = out["gid"].parse().unwrap();
    // memfd_create is the actor's last call.
    let events = watch
        .collect(
            pid,
            |e| e.compat_syscall,
            |e| e.kind == FilesystemEventKind::MemfdCreate,
        )
        .await;
    let p = |name: &str| format!("{m}/{name}");
    let one = |kind: FilesystemEventKind, path: &str| -> &FilesystemEvent {
        let found: Vec<_> = events
            .iter()
            .filter(|e| e.kind == kind && e.path == path)
            .collect();
        assert_eq!(found.len(), 1, "one {kind:?} of {path} in {events:#?}");
        let e = found[0];
        assert_eq!(e.uid, Some(65534), "{e:?}");
        assert_eq!(e.result, Some(0), "{e:?}");
        assert!(!e.path_truncated && !e.path_unreadable, "{e:?}");
        e
    };
    assert_eq!(one(FilesystemEventKind::Mkdir, &p("d39")).mode, Some(0o750));
    assert_eq!(
        one(FilesystemEventKind::Mkdir, &p("d296")).mode,
        Some(0o700)
    );
    one(FilesystemEventKind::Rmdir, &p("d39"));
    let modes: Vec<Option<u32>> = events
        .iter()
        .filter(|e| e.kind == FilesystemEventKind::Chmod && e.path == p("f"))
        .map(|e| e.mode)
        .collect();
    assert_eq!(modes, [Some(0o4755), Some(0o2750)], "chmod then fchmodat");
    let owners: Vec<(Option<u32>, Option<u32>)> = events
        .iter()
        .filter(|e| e.kind == FilesystemEventKind::Chown && e.path == p("f"))
        .map(|e| (e.owner_uid, e.owner_gid))
        .collect();
    // -1 (and the 16-bit 0xffff) mean "unchanged": absent.
    assert_eq!(
        owners,
        [(None, Some(gid)), (None, None), (Some(65534), None)],
        "chown32, lchown16, fchownat"
    );
    for (name, new) in [("link", "hl"), ("linkat", "hl2")] {
        let found = events
            .iter()
            .filter(|e| {
                e.kind == FilesystemEventKind::Link
                    && e.path == p("f")
                    && e.new_path.as_deref() == Some(p(new).as_str())
            })
            .count();
        assert_eq!(found, 1, "{name} of f to {new}: {events:#?}");
    }
    let sl = events
        .iter()
        .find(|e| {
            e.kind == FilesystemEventKind::Symlink
                && e.new_path.as_deref() == Some(p("sl").as_str())
        })
        .unwrap_or_else(|| panic!("symlink: {events:#?}"));
    assert_eq!(sl.path, "t/x", "the target is a string");
    assert!(events.iter().any(|e| e.kind == FilesystemEventKind::Symlink
        && e.new_path.as_deref() == Some(p("sl2").as_str())));
    let memfd = events
        .iter()
        .find(|e| e.kind == FilesystemEventKind::MemfdCreate)
        .unwrap();
    assert_eq!(memfd.path, "m32-memfd");
    assert!(memfd.result.unwrap() >= 0);
    assert!(events.iter().all(|e| e.compat_syscall));
}
