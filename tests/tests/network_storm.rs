//! A loopback connect storm: every connection's connect, accept and both closes arrive,
//! paired by connection id, with the ports the connection really had.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_core::event::{NetworkEvent, NetworkEventKind};
use collector_core::{CollectionEvent, EventSource};
use collector_tests::kernel_or_skip;
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms, KernelSource};
use tokio::sync::mpsc;

const CONNECTIONS: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_storm_pairs_every_close_with_its_ports() {
    if !kernel_or_skip("connect_storm_pairs_every_close_with_its_ports") {
        return;
    }
    let programs = KernelPrograms::load(KernelConfig::default()).expect("load");
    let source =
        Arc::new(KernelSource::new(programs, KernelDomain::Network).expect("network source"));
    let (tx, mut rx) = mpsc::channel(8192);
    let shutdown = Arc::new(AtomicBool::new(false));
    let task = {
        let (source, shutdown) = (source.clone(), shutdown.clone());
        tokio::spawn(async move { source.start(tx, shutdown).await })
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_collector-test-actor"))
        .args(["connect-storm", &CONNECTIONS.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("actor");
    let pid = child.id().expect("pid");
    let mut events: Vec<NetworkEvent> = Vec::new();
    let want = CONNECTIONS * 4;
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(ev) = rx.recv().await {
            if let CollectionEvent::Network(n) = ev {
                if n.pid == pid
                    && matches!(
                        n.kind,
                        NetworkEventKind::Connect
                            | NetworkEventKind::Accept
                            | NetworkEventKind::Close
                    )
                {
                    events.push(*n);
                    if events.len() >= want {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(child.wait().await.unwrap().success());
    let stats = source.stats();
    source.stop().await.unwrap();
    shutdown.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();

    let mut opened: HashMap<u64, &NetworkEvent> = HashMap::new();
    let mut closes: HashMap<u64, &NetworkEvent> = HashMap::new();
    for e in &events {
        let map = if e.kind == NetworkEventKind::Close {
            &mut closes
        } else {
            &mut opened
        };
        assert!(
            map.insert(e.connection_id, e).is_none(),
            "connection id {:#x} reused within the storm: {e:#?}",
            e.connection_id
        );
    }
    let missing: Vec<_> = opened
        .values()
        .filter(|o| !closes.contains_key(&o.connection_id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} connections without a close (kernel stats {stats:?}); first: {:#?}",
        missing.len(),
        opened.len(),
        missing.first()
    );
    assert_eq!(
        opened.len(),
        CONNECTIONS * 2,
        "connects and accepts: {stats:?}"
    );
    assert_eq!(closes.len(), CONNECTIONS * 2, "closes: {stats:?}");
    for o in opened.values() {
        let c = closes[&o.connection_id];
        // The connection's local end: an accept's dest, a connect's source.
        let local = if o.kind == NetworkEventKind::Accept {
            o.dest_addr
        } else {
            o.source_addr
        };
        assert_ne!(local.port(), 0, "{o:#?}");
        assert_eq!(
            c.source_addr, local,
            "close reports the connection's local end: {o:#?} {c:#?}"
        );
    }
}
