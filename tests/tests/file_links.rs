//! link/linkat, symlink/symlinkat (both paths), chown/lchown/fchownat (new owner) and
//! memfd_create (its name), seen on the real kernel from an unprivileged actor
//! (uid 65534).

mod common;

use collector_core::event::{FilesystemEvent, FilesystemEventKind};
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::KernelConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_chown_and_memfd_are_reported_with_fields() {
    if !kernel_or_skip("links_chown_and_memfd_are_reported_with_fields") {
        return;
    }
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(KernelConfig::default());
    let out = run_actor(
        env!("CARGO_BIN_EXE_kfile-actor"),
        &["links", &dir, "nobody"],
    );
    assert_eq!(out["uid"], "65534", "actor runs unprivileged");
    let pid: u32 = out["pid"].parse().unwrap();
    let l = out["l"].clone();
    for call in [
        "link",
        "linkat",
        "symlink",
        "symlinkat",
        "chown",
        "lchown",
        "fchownat",
    ] {
        assert_eq!(out[call], "0", "{call}: {out:?}");
    }
    assert!(out["memfd"].parse::<i32>().unwrap() >= 0, "{out:?}");
    assert_eq!(out["missing"], "-2", "ENOENT");

    // The failed chown is the actor's last file call.
    let events = watch
        .collect(pid, |_| true, |e| e.path.ends_with("/missing"))
        .await;

    let p = |name: &str| format!("{l}/{name}");
    let of = |kind: FilesystemEventKind| -> Vec<&FilesystemEvent> {
        let v: Vec<_> = events.iter().filter(|e| e.kind == kind).collect();
        for e in &v {
            assert_eq!(e.uid, Some(65534), "{e:?}");
            assert!(!e.compat_syscall, "{e:?}");
        }
        v
    };
    // A dirfd-relative path of a two-path record is resolved in the kernel at the call
    // (the directory fd walked there), so it is absolute although the actor is gone.
    let is = |got: &str, relative: bool, name: &str| got == p(name) && !relative;

    let links = of(FilesystemEventKind::Link);
    assert_eq!(links.len(), 2, "{events:#?}");
    assert_eq!(links[0].path, p("f"), "{:?}", links[0]);
    assert_eq!(links[0].new_path.as_deref(), Some(p("hl").as_str()));
    assert!(
        is(&links[1].path, links[1].path_relative, "f"),
        "{:?}",
        links[1]
    );
    let new = links[1].new_path.as_deref().unwrap();
    assert!(is(new, links[1].path_relative, "hl2"), "{:?}", links[1]);
    assert!(links.iter().all(|e| e.result == Some(0)));

    let symlinks = of(FilesystemEventKind::Symlink);
    assert_eq!(symlinks.len(), 2, "{events:#?}");
    // The target is the string as given, never resolved against the cwd.
    assert_eq!(symlinks[0].path, "../elsewhere/t", "{:?}", symlinks[0]);
    assert_eq!(symlinks[0].new_path.as_deref(), Some(p("sl").as_str()));
    assert_eq!(symlinks[1].path, "f", "{:?}", symlinks[1]);
    let new = symlinks[1].new_path.as_deref().unwrap();
    assert!(
        is(new, symlinks[1].path_relative, "sl2"),
        "{:?}",
        symlinks[1]
    );
    assert!(symlinks.iter().all(|e| e.result == Some(0)));

    let chowns = of(FilesystemEventKind::Chown);
    assert_eq!(chowns.len(), 4, "{events:#?}");
    let owners: Vec<_> = chowns
        .iter()
        .map(|e| (e.path.as_str(), e.owner_uid, e.owner_gid, e.result))
        .collect();
    assert_eq!(
        owners,
        vec![
            (p("f").as_str(), None, Some(65534), Some(0)),
            (p("sl").as_str(), Some(65534), None, Some(0)),
            (p("f").as_str(), Some(65534), Some(65534), Some(0)),
            (p("missing").as_str(), Some(0), Some(0), Some(-2)),
        ]
    );
    assert!(chowns
        .iter()
        .all(|e| e.path_user_supplied && e.mode.is_none()));

    let memfds = of(FilesystemEventKind::MemfdCreate);
    assert_eq!(memfds.len(), 1, "{events:#?}");
    let m = memfds[0];
    assert_eq!(m.path, "kfile3-memfd", "{m:?}");
    assert!(!m.path_relative && !m.path_unreadable, "{m:?}");
    assert_eq!(m.flags, Some(libc::MFD_CLOEXEC), "{m:?}");
    assert_eq!(m.result, Some(out["memfd"].parse().unwrap()), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_o_tmpfile_is_its_own_kind_and_its_naming_a_link() {
    if !kernel_or_skip("an_o_tmpfile_is_its_own_kind_and_its_naming_a_link") {
        return;
    }
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(KernelConfig::default());
    let out = run_actor(
        env!("CARGO_BIN_EXE_kfile-actor"),
        &["tmpfile", &dir, "nobody"],
    );
    assert_eq!(out["uid"], "65534", "actor runs unprivileged");
    let fd: i32 = out["fd"].parse().unwrap();
    assert!(fd >= 0, "{out:?}");
    assert_eq!(out["linked"], "0", "{out:?}");
    let pid: u32 = out["pid"].parse().unwrap();
    let t = out["t"].clone();
    let named = format!("{t}/named");
    let events = watch
        .collect(
            pid,
            |_| true,
            |e| e.kind == FilesystemEventKind::Link && e.new_path.as_deref() == Some(&named),
        )
        .await;
    let tmp: Vec<_> = events
        .iter()
        .filter(|e| e.kind == FilesystemEventKind::Tmpfile)
        .collect();
    assert_eq!(tmp.len(), 1, "{events:#?}");
    let e = tmp[0];
    // The kernel's own name for the unnamed file, in the directory it was made in.
    assert!(e.path.starts_with(&format!("{t}/#")), "{e:?}");
    assert!(!e.path_user_supplied && !e.path_relative, "{e:?}");
    assert_eq!(e.uid, Some(65534), "{e:?}");
    assert_eq!(e.result, Some(i64::from(fd)), "{e:?}");
    assert_eq!(
        e.flags.map(|f| f as i32 & libc::O_TMPFILE),
        Some(libc::O_TMPFILE),
        "{e:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(
            e.kind,
            FilesystemEventKind::Open | FilesystemEventKind::Create
        ) && e.path.starts_with(&format!("{t}/#"))),
        "the tmpfile was also reported as an open: {events:#?}"
    );
}
