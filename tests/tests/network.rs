//! Connect, accept, listen and close over IPv4 and IPv6 loopback, from the real kernel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_core::event::{AddressFamily, NetworkEvent, NetworkEventKind, TransportProtocol};
use collector_core::{CollectionEvent, EventSource};
use collector_tests::{actor, kernel_or_skip};
use collector_userspace::ebpf::{
    KernelConfig, KernelDomain, KernelPrograms, KernelSource, SyscallHooks,
};
use tokio::sync::mpsc;

async fn run_pair(ip: &str, hooks: SyscallHooks) -> (u32, String, String, Vec<NetworkEvent>) {
    let programs = KernelPrograms::load(KernelConfig {
        syscall_hooks: hooks,
        ..KernelConfig::default()
    })
    .expect("load kernel programs");
    let source =
        Arc::new(KernelSource::new(programs, KernelDomain::Network).expect("network source"));
    let expected_hook = match hooks {
        SyscallHooks::Raw => ("raw_net_sys_exit", "raw_tp/sys_exit"),
        _ => ("sys_exit_connect", "tracepoint/syscalls/sys_exit_connect"),
    };
    assert_eq!(
        source
            .stats()
            .hooks
            .get(expected_hook.0)
            .map(String::as_str),
        Some(expected_hook.1),
        "status reports the hook each program got"
    );
    let (tx, mut rx) = mpsc::channel(4096);
    let shutdown = Arc::new(AtomicBool::new(false));
    let task = {
        let (source, shutdown) = (source.clone(), shutdown.clone());
        tokio::spawn(async move { source.start(tx, shutdown).await })
    };
    let out = actor!("tcp", ip);
    let pid: u32 = out["pid"].parse().unwrap();
    let mut events = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = rx.recv().await {
            if let CollectionEvent::Network(n) = ev {
                if n.pid == pid {
                    events.push(n);
                    // listen, connect, accept, and two closes
                    if events.len() >= 5 {
                        return;
                    }
                }
            }
        }
    })
    .await;
    source.stop().await.unwrap();
    shutdown.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();
    (pid, out["server"].clone(), out["client"].clone(), events)
}

fn one(events: &[NetworkEvent], kind: NetworkEventKind) -> &NetworkEvent {
    let found: Vec<_> = events.iter().filter(|e| e.kind == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind:?} event in {events:#?}");
    found[0]
}

async fn check(ip: &str, family: AddressFamily, hooks: SyscallHooks) {
    let (pid, server, client, events) = run_pair(ip, hooks).await;
    let listen = one(&events, NetworkEventKind::Listen);
    assert_eq!(listen.dest_addr.to_string(), server);
    let connect = one(&events, NetworkEventKind::Connect);
    assert_eq!(connect.pid, pid);
    assert_eq!(
        connect.source_addr.to_string(),
        client,
        "connect: source is the client end"
    );
    assert_eq!(
        connect.dest_addr.to_string(),
        server,
        "connect: dest is the server end"
    );
    assert_eq!(connect.family, family);
    assert_eq!(connect.protocol, TransportProtocol::Tcp);
    let accept = one(&events, NetworkEventKind::Accept);
    assert_eq!(
        accept.source_addr.to_string(),
        client,
        "accept: source is the initiator"
    );
    assert_eq!(
        accept.dest_addr.to_string(),
        server,
        "accept: dest is the local listening address"
    );
    assert_eq!(accept.state.as_deref(), Some("ESTABLISHED"));
    let closes: Vec<_> = events
        .iter()
        .filter(|e| e.kind == NetworkEventKind::Close)
        .collect();
    assert_eq!(closes.len(), 2, "both ends' closes: {events:#?}");
    assert!(closes
        .iter()
        .any(|c| c.connection_id == connect.connection_id));
    assert!(closes
        .iter()
        .any(|c| c.connection_id == accept.connection_id));
    assert!(
        closes.iter().all(|c| c.pid == pid),
        "closes attributed to the owner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_ipv4_loopback_connect_accept_close() {
    if !kernel_or_skip("tcp_ipv4_loopback_connect_accept_close") {
        return;
    }
    check("127.0.0.1", AddressFamily::Ipv4, SyscallHooks::Tracepoints).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_ipv6_loopback_connect_accept_close() {
    if !kernel_or_skip("tcp_ipv6_loopback_connect_accept_close") {
        return;
    }
    check("::1", AddressFamily::Ipv6, SyscallHooks::Tracepoints).await;
}

/// The fallback for hosts without tracefs: raw sys_enter/sys_exit tracepoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_syscall_hooks_see_the_same_connections() {
    if !kernel_or_skip("raw_syscall_hooks_see_the_same_connections") {
        return;
    }
    check("127.0.0.1", AddressFamily::Ipv4, SyscallHooks::Raw).await;
    check("::1", AddressFamily::Ipv6, SyscallHooks::Raw).await;
}
