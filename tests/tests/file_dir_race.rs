//! A relative path's directory changed by another thread while the call runs. The
//! directory is walked in the kernel at the syscall's exit, so a thread that flips the
//! shared cwd (`fchdir`) between the kernel's lookup and the exit would make a successful
//! chmod or unlink of `real/rN` be reported under `decoy/`, a directory where nothing
//! was touched. The entry takes the cwd's identity with `fs->seq`, which every cwd
//! change bumps: whatever the interleaving, an event whose directory may not be the one
//! the kernel used carries `path_changed`.

mod common;

use collector_core::event::FilesystemEventKind;
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::KernelConfig;

const ACTOR: &str = env!("CARGO_BIN_EXE_kfile-actor");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cwd_flipped_during_the_call_is_flagged() {
    if !kernel_or_skip("a_cwd_flipped_during_the_call_is_flagged") {
        return;
    }
    // Rounds until the race has put at least one successful call's report in the wrong
    // directory (on two busy cores the first round nearly always does).
    let mut wrong_seen = 0;
    for round in 0..8 {
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
        let ok_expected: usize =
            out["chmod_ok"].parse::<usize>().unwrap() + out["unlink_ok"].parse::<usize>().unwrap();
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
        wrong_seen += wrong.len();
        if wrong_seen > 0 {
            return;
        }
    }
    panic!("the race never reported a call in the wrong directory: nothing was tested");
}
