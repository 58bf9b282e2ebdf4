//! The one `sys_exit` program the domains share (`sys_exit_shared`). Every program on
//! that tracepoint runs for every syscall on the machine, so the process, filesystem
//! and network domains each turn their part of one program on instead of attaching one
//! each. With all three running, each part reports as its own program did (a cred
//! change, the 32-bit entry's file calls and connects, from unprivileged actors); the
//! kernel holds one link for the three; a second attach of a running domain leaves its
//! part alone; a reattach of the shared program is reported by every domain using it;
//! a stopped domain's part stops while the others go on (first and middle slots); the
//! program goes with the last domain. The same holds for `sys_enter_shared`, whose
//! parts (filesystem, network) read the file and socket calls' arguments at entry: the
//! connects below pass through it.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_common::abi::sys_enter::PROGRAM as SHARED_ENTER;
use collector_common::abi::sys_exit::PROGRAM as SHARED_EXIT;
use collector_common::RecordKind;
use collector_core::event::{FilesystemEventKind, NetworkEventKind, ProcessEventKind};
use collector_core::{CollectionEvent, EventSource};
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms};
use common::start_kernel_sources;
use tokio::sync::mpsc;

const NET_ACTOR: &str = env!("CARGO_BIN_EXE_collector-net-actor");
const FILE_ACTOR: &str = env!("CARGO_BIN_EXE_kfile-actor");
const PROC_ACTOR: &str = env!("CARGO_BIN_EXE_collector-proc-actor");

/// Links the kernel holds to program `id` (`bpftool link show`).
fn links_of(id: u32) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .expect("run bpftool (installed by xtask)");
    assert!(out.status.success(), "bpftool link show: {out:?}");
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["prog_id"].as_u64() == Some(u64::from(id)))
        .count()
}

/// Events of `pid` until `done` holds for them (bounded: 10 s).
async fn events_of(
    rx: &mut mpsc::Receiver<CollectionEvent>,
    pid: u32,
    done: impl Fn(&[CollectionEvent]) -> bool,
) -> Vec<CollectionEvent> {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = rx.recv().await {
            if ev.pid() == pid {
                seen.push(ev);
                if done(&seen) {
                    return;
                }
            }
        }
    })
    .await;
    seen
}

/// The file actor's i386 file calls as nobody in `dir`: its output and its events, up
/// to its last call (a failed open of `missing`).
async fn int80_file_calls(
    rx: &mut mpsc::Receiver<CollectionEvent>,
    dir: &str,
) -> (HashMap<String, String>, Vec<CollectionEvent>) {
    let files = run_actor(FILE_ACTOR, &["int80", dir, "nobody"]);
    let pid: u32 = files["pid"].parse().unwrap();
    let seen = events_of(rx, pid, |seen| {
        seen.iter()
            .any(|e| matches!(e, CollectionEvent::Filesystem(f) if f.path.ends_with("/missing")))
    })
    .await;
    (files, seen)
}

fn compat_file_events(seen: &[CollectionEvent]) -> usize {
    seen.iter()
        .filter(|e| matches!(e, CollectionEvent::Filesystem(f) if f.compat_syscall))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sys_exit_program_serves_every_domain_and_outlives_each_one() {
    if !kernel_or_skip("one_sys_exit_program_serves_every_domain_and_outlives_each_one") {
        return;
    }
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipping: int $0x80 is x86 only");
        return;
    }
    let programs = KernelPrograms::load(KernelConfig::default()).expect("load kernel programs");
    let (tx, mut rx) = mpsc::channel(65_536);
    let shutdown = Arc::new(AtomicBool::new(false));
    // In slot order, so the test below stops the first slot, then the middle one.
    let mut sources = start_kernel_sources(
        &programs,
        &[
            KernelDomain::Process,
            KernelDomain::Filesystem,
            KernelDomain::Network,
        ],
        &tx,
        &shutdown,
    );
    drop(tx);
    for (domain, _, _) in &sources {
        let attached = programs.attached_programs(*domain);
        assert!(attached.contains(&SHARED_EXIT), "{domain:?}: {attached:?}");
    }
    assert_eq!(
        programs.hooks().get(SHARED_EXIT).map(String::as_str),
        Some("tp_btf/sys_exit")
    );
    let id = programs.program_id(SHARED_EXIT).expect("loaded");
    assert_eq!(links_of(id), 1, "one link for the three domains");
    // The entry side: the filesystem and network domains have parts there, the
    // process domain none.
    for (domain, _, _) in &sources {
        let attached = programs.attached_programs(*domain);
        assert_eq!(
            attached.contains(&SHARED_ENTER),
            *domain != KernelDomain::Process,
            "{domain:?}: {attached:?}"
        );
    }
    assert_eq!(
        programs.hooks().get(SHARED_ENTER).map(String::as_str),
        Some("tp_btf/sys_enter")
    );
    let enter_id = programs.program_id(SHARED_ENTER).expect("loaded");
    assert_eq!(links_of(enter_id), 1, "one link for the two domains");
    // No per-syscall tracepoint: those would put the perf syscall probes on every
    // syscall next to the shared programs.
    let hooks = programs.hooks();
    assert!(
        hooks
            .values()
            .all(|h| !h.starts_with("tracepoint/syscalls/")),
        "{hooks:#?}"
    );

    // Process and network parts: the actor drops root with a native setresuid (a cred
    // change), then connects through `int $0x80` as nobody.
    let net = run_actor(NET_ACTOR, &["int80"]);
    let net_pid: u32 = net["pid"].parse().unwrap();
    assert_eq!(net["rc1"], "0", "socketcall connect: {net:?}");
    let seen = events_of(&mut rx, net_pid, |seen| {
        let compat_connects = seen
            .iter()
            .filter(|e| {
                matches!(e, CollectionEvent::Network(n)
                    if n.kind == NetworkEventKind::Connect && n.compat_syscall)
            })
            .count();
        let cred = seen.iter().any(|e| {
            matches!(e, CollectionEvent::Process(p)
                if p.kind == ProcessEventKind::CredChange && p.syscall_nr == Some(117))
        });
        compat_connects >= 2 && cred
    })
    .await;
    let cred = seen
        .iter()
        .find_map(|e| match e {
            CollectionEvent::Process(p)
                if p.kind == ProcessEventKind::CredChange && p.syscall_nr == Some(117) =>
            {
                Some(p)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no setresuid cred change of {net_pid}: {seen:#?}"));
    // Root drops to nobody (setresgid came first: the gid is nobody's on both sides).
    assert_eq!(cred.uid, Some(65534), "{cred:#?}");
    let old = cred.old_credentials.as_ref().expect("old side known");
    assert_eq!((old.uid, old.euid), (0, 0), "{cred:#?}");
    let connects: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            CollectionEvent::Network(n) if n.kind == NetworkEventKind::Connect => Some(n),
            _ => None,
        })
        .filter(|n| n.compat_syscall)
        .collect();
    assert_eq!(connects.len(), 2, "socketcall and i386 connect: {seen:#?}");
    for (c, p) in connects.iter().zip(["p1", "p2"]) {
        assert_eq!(c.uid, Some(65534), "{c:#?}");
        assert_eq!(c.dest_addr.to_string(), format!("127.0.0.1:{}", net[p]));
    }

    // Filesystem part: the 32-bit entry's file calls, as nobody.
    let (_tmp, dir) = common::shared_dir();
    let (files, seen) = int80_file_calls(&mut rx, &dir).await;
    let open5 = format!("{}/open5", files["dir"]);
    assert!(
        seen.iter()
            .any(|e| matches!(e, CollectionEvent::Filesystem(f)
            if f.kind == FilesystemEventKind::Create && f.path == open5 && f.compat_syscall
                && f.uid == Some(65534))),
        "i386 open (5) of {open5}: {seen:#?}"
    );
    let compat_before = compat_file_events(&seen);
    assert!(compat_before >= 9, "{seen:#?}");

    // A second attach of a running domain is refused and leaves the running one's parts
    // in their slots (checked by the opens below).
    let again = programs.attach(KernelDomain::Filesystem).unwrap_err();
    assert!(again.to_string().contains("attached already"), "{again}");
    assert_eq!(links_of(id), 1);

    // The shared program's link is closed (as from outside): the first domain's check
    // attaches it again, and every domain using it reports the loss once.
    assert!(programs.close_link(SHARED_EXIT).unwrap());
    assert_eq!(links_of(id), 0);
    let check = programs.check_links(KernelDomain::Network).unwrap();
    assert_eq!(check.reattached, [SHARED_EXIT], "{check:?}");
    assert_eq!(links_of(id), 1, "attached again, once");
    for domain in [KernelDomain::Filesystem, KernelDomain::Process] {
        let check = programs.check_links(domain).unwrap();
        assert_eq!(
            check.reattached,
            [SHARED_EXIT],
            "{domain:?} lost events too"
        );
        let again = programs.check_links(domain).unwrap();
        assert!(
            again.reattached.is_empty(),
            "{domain:?}: reported once: {again:?}"
        );
    }
    assert_eq!(programs.reattach_counts().get(SHARED_EXIT), Some(&1));
    // The same for the entry side, shared by the filesystem and network domains only.
    assert!(programs.close_link(SHARED_ENTER).unwrap());
    assert_eq!(links_of(enter_id), 0);
    let check = programs.check_links(KernelDomain::Filesystem).unwrap();
    assert_eq!(check.reattached, [SHARED_ENTER], "{check:?}");
    assert_eq!(links_of(enter_id), 1, "attached again, once");
    let check = programs.check_links(KernelDomain::Network).unwrap();
    assert_eq!(
        check.reattached,
        [SHARED_ENTER],
        "the network domain lost entries too"
    );
    let check = programs.check_links(KernelDomain::Process).unwrap();
    assert!(check.reattached.is_empty(), "no part of it: {check:?}");
    assert_eq!(programs.reattach_counts().get(SHARED_ENTER), Some(&1));

    // The process domain stops: its part is off, the program and the others' stay.
    let (domain, source, task) = sources.remove(0);
    assert_eq!(domain, KernelDomain::Process);
    source.stop().await.unwrap();
    task.await.unwrap().unwrap();
    assert!(programs.attached_programs(KernelDomain::Process).is_empty());
    assert_eq!(programs.program_id(SHARED_EXIT), Some(id), "still loaded");
    assert_eq!(links_of(id), 1, "still attached for the other two");
    let (cred_changes, _) = programs.kernel_counts(RecordKind::CredChange);
    let ids = run_actor(PROC_ACTOR, &["setresuid", "65534"]);
    assert_eq!(ids["uid_after"], "65534", "{ids:?}");
    assert_eq!(
        programs.kernel_counts(RecordKind::CredChange).0,
        cred_changes,
        "the process part is off: no cred change written"
    );
    let (_, seen) = int80_file_calls(&mut rx, &dir).await;
    assert_eq!(
        compat_file_events(&seen),
        compat_before,
        "the filesystem part goes on: {seen:#?}"
    );

    // The middle part stops too: the chain goes from the empty process and
    // filesystem slots on to the network part.
    let (domain, source, task) = sources.remove(0);
    assert_eq!(domain, KernelDomain::Filesystem);
    source.stop().await.unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(links_of(id), 1, "still attached for the network domain");
    assert_eq!(
        links_of(enter_id),
        1,
        "the entry side too: its first slot is empty now"
    );
    let (opens, _) = programs.kernel_counts(RecordKind::Open);
    let net = run_actor(NET_ACTOR, &["int80"]);
    let net_pid: u32 = net["pid"].parse().unwrap();
    let seen = events_of(&mut rx, net_pid, |seen| {
        seen.iter()
            .filter(|e| {
                matches!(e, CollectionEvent::Network(n)
                    if n.kind == NetworkEventKind::Connect && n.compat_syscall)
            })
            .count()
            >= 2
    })
    .await;
    assert!(
        seen.iter()
            .all(|e| matches!(e, CollectionEvent::Network(_))),
        "only the network source runs: {seen:#?}"
    );
    assert_eq!(
        seen.iter()
            .filter(
                |e| matches!(e, CollectionEvent::Network(n) if n.compat_syscall
                && n.kind == NetworkEventKind::Connect)
            )
            .count(),
        2,
        "the network part goes on: {seen:#?}"
    );
    assert_eq!(
        programs.kernel_counts(RecordKind::CredChange).0,
        cred_changes,
        "the process part stays off (the actor's setresuid)"
    );
    // Nor the filesystem part: no open on the host (the actor's loader opened its
    // libraries) is written.
    assert_eq!(programs.kernel_counts(RecordKind::Open).0, opens);

    // The last domain stops: the program goes with it.
    shutdown.store(true, Ordering::Relaxed);
    for (_, source, task) in sources {
        source.stop().await.unwrap();
        task.await.unwrap().unwrap();
    }
    assert!(!programs.hooks().contains_key(SHARED_EXIT));
    assert!(!programs.hooks().contains_key(SHARED_ENTER));
    assert_eq!(links_of(id), 0, "detached with the last domain");
    assert_eq!(links_of(enter_id), 0, "detached with the last domain");
}
