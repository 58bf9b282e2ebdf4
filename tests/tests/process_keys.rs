//! One process key on every domain: the file and network events of a process carry the
//! same `process_key` as its exec, from the real kernel, so consumers join them without
//! pid-reuse mistakes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_core::event::{FilesystemEventKind, NetworkEventKind, ProcessEventKind};
use collector_core::{CollectionEvent, EventSource};
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms};
use common::start_kernel_sources;
use tokio::sync::mpsc;

const ACTOR: &str = env!("CARGO_BIN_EXE_collector-test-actor");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_network_events_carry_the_process_key_of_their_exec() {
    if !kernel_or_skip("file_and_network_events_carry_the_process_key_of_their_exec") {
        return;
    }
    let programs = KernelPrograms::load(KernelConfig::default()).expect("load kernel programs");
    let (tx, mut rx) = mpsc::channel(65_536);
    let shutdown = Arc::new(AtomicBool::new(false));
    let running = start_kernel_sources(&programs, &KernelDomain::ALL, &tx, &shutdown);
    drop(tx);

    let dir = tempfile::tempdir().unwrap();
    let files = run_actor(ACTOR, &["files", dir.path().to_str().unwrap()]);
    let tcp = run_actor(ACTOR, &["tcp", "127.0.0.1"]);
    let (file_pid, net_pid): (u32, u32) =
        (files["pid"].parse().unwrap(), tcp["pid"].parse().unwrap());

    // Each actor's exec and exit, the file actor's last operation (the unlink) and the
    // tcp actor's closes. The domains have their own rings and wakeups, so they arrive
    // in any order between them.
    let complete = |seen: &[CollectionEvent]| {
        let exits = seen
            .iter()
            .filter(
                |e| matches!(e, CollectionEvent::Process(p) if p.kind == ProcessEventKind::Exit),
            )
            .count();
        let unlinked = seen.iter().any(|e| {
            matches!(e, CollectionEvent::Filesystem(f) if f.kind == FilesystemEventKind::Unlink)
        });
        let closes = seen
            .iter()
            .filter(
                |e| matches!(e, CollectionEvent::Network(n) if n.kind == NetworkEventKind::Close),
            )
            .count();
        exits == 2 && unlinked && closes >= 2
    };
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = rx.recv().await {
            let pid = ev.pid();
            if pid != file_pid && pid != net_pid {
                continue;
            }
            seen.push(ev);
            if complete(&seen) {
                return;
            }
        }
    })
    .await;
    shutdown.store(true, Ordering::Relaxed);
    for (_, source, task) in running {
        source.stop().await.unwrap();
        task.await.unwrap().unwrap();
    }

    for pid in [file_pid, net_pid] {
        let key = seen
            .iter()
            .find_map(|e| match e {
                CollectionEvent::Process(p) if p.pid == pid && p.kind == ProcessEventKind::Exec => {
                    p.process_key.clone()
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no exec of {pid} with a key in {seen:#?}"));
        assert!(key.starts_with(&format!("{pid}:")), "{key}");
        let mut others = 0;
        for e in seen.iter().filter(|e| e.pid() == pid) {
            let other = match e {
                CollectionEvent::Filesystem(f) => f.process_key.as_deref(),
                CollectionEvent::Network(n) => n.process_key.as_deref(),
                CollectionEvent::Process(p) => p.process_key.as_deref(),
                _ => continue,
            };
            assert_eq!(other, Some(key.as_str()), "{e:#?}");
            others += 1;
        }
        assert!(others >= 5, "exec, events and exit of {pid}: {seen:#?}");
    }
    // The connection's events all came (connect, accept, close) and carry the key.
    let net_kinds: Vec<NetworkEventKind> = seen
        .iter()
        .filter_map(|e| match e {
            CollectionEvent::Network(n) if n.pid == net_pid => Some(n.kind),
            _ => None,
        })
        .collect();
    for kind in [
        NetworkEventKind::Connect,
        NetworkEventKind::Accept,
        NetworkEventKind::Close,
    ] {
        assert!(net_kinds.contains(&kind), "{kind:?} in {net_kinds:?}");
    }
}
