//! A relative path's directory changed by another thread while the call runs. The
//! directory is walked in the kernel at the syscall's exit, so a thread that flips the
//! shared cwd (`fchdir`) between the kernel's lookup and the exit would make a successful
//! chmod or unlink of `real/rN` be reported under `decoy/`, a directory where nothing
//! was touched. The entry takes the cwd's identity with `fs->seq`, which every cwd
//! change bumps: whatever the interleaving, an event whose directory may not be the one
//! the kernel used carries `path_changed`.

mod common;

use collector_core::event::FilesystemEventKind;
use collector_tests::{kernel_or_skip, run_actor, until_raced};
use collector_userspace::ebpf::KernelConfig;

const ACTOR: &str = env!("CARGO_BIN_EXE_kfile-actor");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cwd_flipped_during_the_call_is_flagged() {
    if !kernel_or_skip("a_cwd_flipped_during_the_call_is_flagged") {
        return;
    }
    // Rounds until the race has put at least one successful call's report in the wrong
    // directory (on two busy cores the first round nearly always does).
    until_raced(
        "the race never reported a call in the wrong directory",
        |round| async move {
            let (_tmp, dir) = common::shared_dir();
            let watch = common::FsWatch::start(KernelConfig::default());
            let out = run_actor(ACTOR, &["cwd-race", &dir, "1500", "nobody"]);
            assert_eq!(out["uid"], "65534", "actor runs unprivileged: {out:?}");
            let pid: u32 = out["pid"].parse().unwrap();
            let (real, decoy) = (out["real"].clone(), out["decoy"].clone());
            let end = format!("{real}/end");
            let events = watch
                .collect(
                    pid,
                    |e| {
                        matches!(
                            e.kind,
                            FilesystemEventKind::Chmod | FilesystemEventKind::Unlink
                        )
                    },
                    |e| e.path == end,
                )
                .await;
            assert!(
                events.iter().any(|e| e.path == end),
                "the actor's last call arrived: {} events",
                events.len()
            );
            let ok: Vec<_> = events.iter().filter(|e| e.result == Some(0)).collect();
            let ok_expected: usize = out["chmod_ok"].parse::<usize>().unwrap()
                + out["unlink_ok"].parse::<usize>().unwrap();
            assert_eq!(
                ok.len(),
                ok_expected,
                "every successful call reported: {out:?}"
            );
            // The kernel acted in `real` (the files exist nowhere else): a report under
            // `decoy` is the race, and must say so.
            let wrong: Vec<_> = ok
                .iter()
                .filter(|e| e.path.starts_with(&format!("{decoy}/")))
                .collect();
            let unflagged: Vec<_> = wrong.iter().filter(|e| !e.path_changed).collect();
            assert!(
                unflagged.is_empty(),
                "wrong directory, not flagged: {unflagged:#?}"
            );
            let flagged = events.iter().filter(|e| e.path_changed).count();
            eprintln!(
                "round {round}: {} successful calls, {} reported under decoy, {flagged} flagged",
                ok.len(),
                wrong.len()
            );
            wrong.len()
        },
    )
    .await;
}

/// An open's new descriptor swapped by another thread before the exit reads it. The
/// path of a successful open is walked from the file behind the returned descriptor,
/// which the program can only look up at the syscall's exit: a thread that `dup2`s a
/// file of its choice over the descriptor in between would have the open of `secret`
/// reported as an open of `benign`. A file just opened is held once (by the table); one
/// `dup2`ed there is held twice, and the descriptor is read again after the walk: every
/// such report carries `fd_raced`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_swapped_after_an_open_is_flagged() {
    if !kernel_or_skip("a_descriptor_swapped_after_an_open_is_flagged") {
        return;
    }
    // Rounds until the race has put at least one open's report on the wrong file (about
    // one open in twenty does on two busy cores).
    until_raced(
        "the swap never landed between an open and its exit",
        |round| async move {
            let (_tmp, dir) = common::shared_dir();
            let watch = common::FsWatch::start(KernelConfig::default());
            let out = run_actor(ACTOR, &["fd-swap", &dir, "20000", "nobody"]);
            assert_eq!(out["uid"], "65534", "actor runs unprivileged: {out:?}");
            let pid: u32 = out["pid"].parse().unwrap();
            let (secret, benign) = (out["secret"].clone(), out["benign"].clone());
            let benign_fd: i64 = out["benign_fd"].parse().unwrap();
            let end = format!("{dir}/swap/end");
            let events = watch
                .collect(
                    pid,
                    |e| {
                        matches!(
                            e.kind,
                            FilesystemEventKind::Open | FilesystemEventKind::Create
                        )
                    },
                    |e| e.path == end,
                )
                .await;
            assert!(
                events.iter().any(|e| e.path == end),
                "the actor's last call arrived: {} events",
                events.len()
            );
            // The one real open of benign, before the race: held once, not flagged (the
            // files were written, `create` events, just before).
            let is_benign_open = |e: &&collector_core::event::FilesystemEvent| {
                e.kind == FilesystemEventKind::Open
                    && e.path == benign
                    && e.result == Some(benign_fd)
            };
            let first_benign: Vec<_> = events.iter().filter(is_benign_open).collect();
            assert!(
                first_benign.first().is_some_and(|e| !e.fd_raced),
                "benign's own open, unflagged: {first_benign:#?}"
            );
            // After benign's other opens (the swaps' sources), the race.
            let last_source: i64 = out["last_source_fd"].parse().unwrap();
            let race: Vec<_> = events
                .iter()
                .skip_while(|e| {
                    !(e.kind == FilesystemEventKind::Open
                        && e.path == benign
                        && e.result == Some(last_source))
                })
                .skip(1)
                .filter(|e| e.path != end)
                .collect();
            let opened: usize = out["opened"].parse().unwrap();
            assert_eq!(
                race.len(),
                opened,
                "every open of secret reported once: {out:?}"
            );
            // Every one of them opened secret (the actor opens nothing else): a report
            // naming benign is the swap, and must say so.
            let wrong: Vec<_> = race.iter().filter(|e| e.path != secret).collect();
            let unflagged: Vec<_> = wrong.iter().filter(|e| !e.fd_raced).collect();
            assert!(
                unflagged.is_empty(),
                "an open reported on a swapped-in file, not flagged: {:#?}",
                &unflagged[..unflagged.len().min(5)]
            );
            let flagged = race.iter().filter(|e| e.fd_raced).count();
            eprintln!(
                "round {round}: {} opens of secret, {} reported on another file, {flagged} flagged",
                race.len(),
                wrong.len()
            );
            wrong.len()
        },
    )
    .await;
}

/// A call that names its file by a descriptor (ftruncate), the descriptor moved on to
/// another file by another thread while calls run. The path is the descriptor's file
/// walked at exit, after the kernel took the file it truncates: a `dup2` in between
/// would report the other file. The entry notes the descriptor's file (native and
/// 32-bit entry alike) and the exit compares it with the one it walks: every report
/// naming a file the call did not truncate carries `fd_raced`. (A flip back to the
/// entry's file within the call, A -> B -> A, is not seen: docs/kernel.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_swapped_during_a_call_is_flagged() {
    if !kernel_or_skip("a_descriptor_swapped_during_a_call_is_flagged") {
        return;
    }
    until_raced("no swap landed inside a call", |round| async move {
        let (_tmp, dir) = common::shared_dir();
        let watch = common::FsWatch::start(KernelConfig::default());
        let out = run_actor(ACTOR, &["fd-flip", &dir, "3000", "nobody"]);
        assert_eq!(out["uid"], "65534", "actor runs unprivileged: {out:?}");
        let pid: u32 = out["pid"].parse().unwrap();
        let flip = out["dir"].clone();
        let hits: Vec<usize> = out["hits"]
            .split(',')
            .map(|k| k.parse().expect("each call truncated one of the files"))
            .collect();
        assert_eq!(hits.len(), 3000, "one hit per call");
        let end = format!("{flip}/end");
        let events = watch
            .collect(
                pid,
                |e| e.kind == FilesystemEventKind::Truncate || e.path == end,
                |e| e.path == end,
            )
            .await;
        assert!(
            events.iter().any(|e| e.path == end),
            "the actor's last call arrived: {} events",
            events.len()
        );
        let calls: Vec<_> = events
            .iter()
            .filter(|e| e.kind == FilesystemEventKind::Truncate)
            .collect();
        assert_eq!(calls.len(), hits.len(), "every call reported once");
        let mut wrong = 0;
        for e in &calls {
            let i = e.length.expect("truncate length") as usize;
            let truncated = format!("{flip}/f{}", hits[i - 1]);
            #[cfg(target_arch = "x86_64")]
            assert_eq!(
                e.compat_syscall,
                i.is_multiple_of(2),
                "entry of call {i}: {e:#?}"
            );
            if e.path != truncated {
                wrong += 1;
                assert!(
                    e.fd_raced,
                    "call {i} truncated {truncated}, reported on {} unflagged: {e:#?}",
                    e.path
                );
            }
        }
        let flagged = calls.iter().filter(|e| e.fd_raced).count();
        eprintln!(
            "round {round}: {} calls, {wrong} reported on another file, {flagged} flagged",
            calls.len()
        );
        wrong
    })
    .await;
}
