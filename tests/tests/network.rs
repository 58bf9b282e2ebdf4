//! Network events from the real kernel: TCP connect, accept, listen, bind and close over
//! IPv4 and IPv6 loopback, failed and in-progress connects, UDP sends, unix sockets,
//! dual-stack accepts and the 32-bit syscall entry. Every test acts through a separate
//! actor process and keeps only that process's events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_core::event::{AddressFamily, NetworkEvent, NetworkEventKind, TransportProtocol};
use collector_core::{CollectionEvent, EventSource};
use collector_tests::{actor, kernel_or_skip, run_actor, until_raced};
use collector_userspace::ebpf::{
    KernelConfig, KernelDomain, KernelPrograms, KernelSource, SyscallHooks,
};
use tokio::sync::mpsc;

const NET_ACTOR: &str = env!("CARGO_BIN_EXE_collector-net-actor");

/// A running network source and its event stream.
struct Net {
    programs: Arc<KernelPrograms>,
    source: Arc<KernelSource>,
    rx: mpsc::Receiver<CollectionEvent>,
    shutdown: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Net {
    fn start(config: KernelConfig) -> Self {
        let programs = KernelPrograms::load(config).expect("load kernel programs");
        let source = Arc::new(
            KernelSource::new(programs.clone(), KernelDomain::Network).expect("network source"),
        );
        let (tx, rx) = mpsc::channel(65536);
        let shutdown = Arc::new(AtomicBool::new(false));
        let task = {
            let (source, shutdown) = (source.clone(), shutdown.clone());
            tokio::spawn(async move { source.start(tx, shutdown).await })
        };
        Self {
            programs,
            source,
            rx,
            shutdown,
            task,
        }
    }

    /// `pid`'s events until `done` says enough (at most 10 s), then whatever else of
    /// `pid`'s arrives within `grace`.
    async fn collect(
        &mut self,
        pid: u32,
        grace: Duration,
        done: impl Fn(&[NetworkEvent]) -> bool,
    ) -> Vec<NetworkEvent> {
        let mut events = Vec::new();
        let rx = &mut self.rx;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(ev) = rx.recv().await {
                if let CollectionEvent::Network(n) = ev {
                    if n.pid == pid {
                        events.push(*n);
                        if done(&events) {
                            return;
                        }
                    }
                }
            }
        })
        .await;
        let _ = tokio::time::timeout(grace, async {
            while let Some(ev) = rx.recv().await {
                if let CollectionEvent::Network(n) = ev {
                    if n.pid == pid {
                        events.push(*n);
                    }
                }
            }
        })
        .await;
        events
    }

    async fn stop(self) {
        self.source.stop().await.unwrap();
        self.shutdown.store(true, Ordering::Relaxed);
        self.task.await.unwrap().unwrap();
    }
}

fn of(events: &[NetworkEvent], kind: NetworkEventKind) -> Vec<&NetworkEvent> {
    events.iter().filter(|e| e.kind == kind).collect()
}

fn one(events: &[NetworkEvent], kind: NetworkEventKind) -> &NetworkEvent {
    let found = of(events, kind);
    assert_eq!(found.len(), 1, "expected one {kind:?} event in {events:#?}");
    found[0]
}

fn count(events: &[NetworkEvent], kind: NetworkEventKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

/// A connection id must not be (or look like) a kernel address: x86_64 kernel
/// pointers start with 0xffff. Ids are 64-bit keyed hashes, so a random one starts
/// so with probability 2^-16.
fn assert_no_kernel_address(events: &[NetworkEvent]) {
    for e in events {
        assert_ne!(
            e.connection_id >> 48,
            0xffff,
            "connection id {:#x} looks like a kernel address: {e:#?}",
            e.connection_id
        );
    }
}

fn config(hooks: SyscallHooks) -> KernelConfig {
    KernelConfig {
        syscall_hooks: hooks,
        ..KernelConfig::default()
    }
}

async fn check_tcp(ip: &str, family: AddressFamily, hooks: SyscallHooks) {
    let mut net = Net::start(config(hooks));
    let expected_hook = match hooks {
        SyscallHooks::Raw => ("raw_net_sys_enter", "raw_tp/sys_enter"),
        SyscallHooks::Auto => ("sys_enter_net", "tail call from sys_enter_shared"),
        _ => ("sys_exit_connect", "tracepoint/syscalls/sys_exit_connect"),
    };
    assert_eq!(
        net.source
            .stats()
            .hooks
            .get(expected_hook.0)
            .map(String::as_str),
        Some(expected_hook.1),
        "status reports the hook each program got"
    );
    let out = actor!("tcp", ip);
    let pid: u32 = out["pid"].parse().unwrap();
    let (server, client) = (out["server"].clone(), out["client"].clone());
    let events = net
        .collect(pid, Duration::from_millis(300), |e| {
            count(e, NetworkEventKind::Close) >= 2
                && count(e, NetworkEventKind::Accept) >= 1
                && count(e, NetworkEventKind::Bind) >= 1
        })
        .await;
    let stats = net.source.stats();
    // Our reading of bpf_prog_info (for recursion_misses) lines up with aya's.
    let (ours, aya_count) = net
        .programs
        .program_run_counts("inet_sock_set_state")
        .expect("program info");
    assert!(
        ours <= aya_count && aya_count - ours < 1_000_000,
        "run_cnt read at our offset ({ours}) matches aya's ({aya_count})"
    );
    net.stop().await;

    let bind = one(&events, NetworkEventKind::Bind);
    assert_eq!(
        bind.dest_addr.to_string(),
        server,
        "bind: the bound address"
    );
    assert_eq!(bind.errno, None);
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
    assert_eq!(connect.errno, None, "a blocking connect that succeeded");
    assert!(!connect.compat_syscall && !connect.io_uring);
    let accept = one(&events, NetworkEventKind::Accept);
    assert_eq!(
        accept.source_addr.to_string(),
        client,
        "accept: source is the initiator"
    );
    assert_eq!(
        accept.dest_addr.to_string(),
        server,
        "accept: dest is the local address"
    );
    assert_eq!(accept.state.as_deref(), Some("ESTABLISHED"));
    let closes = of(&events, NetworkEventKind::Close);
    assert_eq!(closes.len(), 2, "both ends' closes: {events:#?}");
    let client_close = closes
        .iter()
        .find(|c| c.connection_id == connect.connection_id)
        .expect("the client's close pairs with its connect");
    let server_close = closes
        .iter()
        .find(|c| c.connection_id == accept.connection_id)
        .expect("the server's close pairs with its accept");
    assert_ne!(connect.connection_id, accept.connection_id);
    assert_eq!(
        client_close.source_addr, connect.source_addr,
        "close: the client's real local port, as at connect"
    );
    assert_eq!(client_close.dest_addr, connect.dest_addr);
    assert_eq!(
        server_close.source_addr.port(),
        accept.dest_addr.port(),
        "close: the accepted connection's local port"
    );
    for c in &closes {
        assert_eq!(c.pid, pid, "closes attributed to the owner");
        assert_eq!(c.state.as_deref(), Some("CLOSE"));
        assert!(
            c.previous_state.is_some(),
            "close says which state it left: {c:#?}"
        );
    }
    assert_no_kernel_address(&events);
    assert!(
        stats
            .kernel_lost
            .contains_key("inet_sock_set_state_recursion_misses"),
        "status carries the close program's recursion misses: {stats:?}"
    );
    assert_eq!(stats.kernel_lost.get("owner_map_full"), Some(&0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_ipv4_loopback_connect_accept_close() {
    if !kernel_or_skip("tcp_ipv4_loopback_connect_accept_close") {
        return;
    }
    // The default hooks (the shared syscall programs' network parts).
    check_tcp("127.0.0.1", AddressFamily::Ipv4, SyscallHooks::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_ipv6_loopback_connect_accept_close() {
    if !kernel_or_skip("tcp_ipv6_loopback_connect_accept_close") {
        return;
    }
    // The per-syscall tracepoints (`syscall_hooks = "tracepoints"`).
    check_tcp("::1", AddressFamily::Ipv6, SyscallHooks::Tracepoints).await;
}

/// The fallback for hosts without tracefs: raw sys_enter/sys_exit tracepoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_syscall_hooks_see_the_same_connections() {
    if !kernel_or_skip("raw_syscall_hooks_see_the_same_connections") {
        return;
    }
    check_tcp("127.0.0.1", AddressFamily::Ipv4, SyscallHooks::Raw).await;
    check_tcp("::1", AddressFamily::Ipv6, SyscallHooks::Raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connect_reports_its_errno_and_the_close_its_error() {
    if !kernel_or_skip("refused_connect_reports_its_errno_and_the_close_its_error") {
        return;
    }
    let mut net = Net::start(KernelConfig::default());
    let out = run_actor(NET_ACTOR, &["refused"]);
    let pid: u32 = out["pid"].parse().unwrap();
    let port: u16 = out["port"].parse().unwrap();
    assert_eq!(out["errno"], "111", "the actor saw ECONNREFUSED");
    let events = net
        .collect(pid, Duration::from_millis(300), |e| {
            count(e, NetworkEventKind::Connect) >= 1 && count(e, NetworkEventKind::Close) >= 1
        })
        .await;
    net.stop().await;
    let connect = one(&events, NetworkEventKind::Connect);
    assert_eq!(connect.errno, Some(111), "ECONNREFUSED: {connect:#?}");
    assert_eq!(connect.dest_addr.to_string(), format!("127.0.0.1:{port}"));
    assert_ne!(connect.source_addr.port(), 0, "the port the SYN left from");
    let close = one(&events, NetworkEventKind::Close);
    assert_eq!(close.connection_id, connect.connection_id);
    assert_eq!(close.previous_state.as_deref(), Some("SYN_SENT"));
    assert_eq!(
        close.socket_error,
        Some(111),
        "sk_err of the reset connection"
    );
    // The failed connect's local address was reset by the kernel on the way out
    // (tcp_disconnect); the port is the one the SYN left from, as at close.
    assert_eq!(
        close.source_addr.port(),
        connect.source_addr.port(),
        "same local port at close"
    );
    assert_eq!(close.dest_addr, connect.dest_addr);
    assert_no_kernel_address(&events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonblocking_connect_reports_einprogress() {
    if !kernel_or_skip("nonblocking_connect_reports_einprogress") {
        return;
    }
    let mut net = Net::start(KernelConfig::default());
    let out = run_actor(NET_ACTOR, &["nonblock"]);
    let pid: u32 = out["pid"].parse().unwrap();
    let (port, client_port): (u16, u16) = (
        out["port"].parse().unwrap(),
        out["client_port"].parse().unwrap(),
    );
    let events = net
        .collect(pid, Duration::from_millis(300), |e| {
            count(e, NetworkEventKind::Close) >= 2
        })
        .await;
    net.stop().await;
    let connect = one(&events, NetworkEventKind::Connect);
    assert_eq!(connect.errno, Some(115), "EINPROGRESS: {connect:#?}");
    assert_eq!(connect.source_addr.port(), client_port);
    assert_eq!(connect.dest_addr.to_string(), format!("127.0.0.1:{port}"));
    let close = of(&events, NetworkEventKind::Close)
        .into_iter()
        .find(|c| c.connection_id == connect.connection_id)
        .expect("the connect's close");
    assert_eq!(
        close.source_addr.port(),
        client_port,
        "close: the real local port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sends_are_reported_once_per_destination_with_a_count() {
    if !kernel_or_skip("udp_sends_are_reported_once_per_destination_with_a_count") {
        return;
    }
    // Default: later sends are only counted (updates at most every 10 s).
    let mut net = Net::start(KernelConfig::default());
    let out = run_actor(NET_ACTOR, &["udp"]);
    let pid: u32 = out["pid"].parse().unwrap();
    let events = net
        .collect(pid, Duration::from_millis(500), |e| {
            count(e, NetworkEventKind::UdpSend) >= 3
        })
        .await;
    net.stop().await;
    let sends = of(&events, NetworkEventKind::UdpSend);
    assert_eq!(sends.len(), 3, "one event per new destination: {events:#?}");
    for (send, p) in sends.iter().zip(["p1", "p2", "p3"]) {
        assert_eq!(send.dest_addr.to_string(), format!("127.0.0.1:{}", out[p]));
        assert_eq!(send.source_addr.port().to_string(), out["local_port"]);
        assert_eq!(send.protocol, TransportProtocol::Udp);
        assert_eq!(send.send_count, Some(1));
        assert!(!send.count_update);
    }
    assert_eq!(sends[0].connection_id, sends[1].connection_id, "one socket");

    // With no interval every later send reports the running count.
    let mut net = Net::start(KernelConfig {
        udp_report_interval: Duration::ZERO,
        ..KernelConfig::default()
    });
    let out = run_actor(NET_ACTOR, &["udp"]);
    let pid: u32 = out["pid"].parse().unwrap();
    let events = net
        .collect(pid, Duration::from_millis(500), |e| {
            count(e, NetworkEventKind::UdpSend) >= 4
        })
        .await;
    net.stop().await;
    let sends = of(&events, NetworkEventKind::UdpSend);
    assert_eq!(
        sends.len(),
        4,
        "three new destinations and one update: {events:#?}"
    );
    let update = sends[3];
    assert!(update.count_update);
    assert_eq!(
        update.send_count,
        Some(2),
        "the second send to the first destination"
    );
    assert_eq!(
        update.dest_addr.to_string(),
        format!("127.0.0.1:{}", out["p1"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_connect_and_bind_show_their_paths() {
    if !kernel_or_skip("unix_socket_connect_and_bind_show_their_paths") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::start(KernelConfig::default());
    let out = run_actor(NET_ACTOR, &["unix", dir.path().to_str().unwrap()]);
    let pid: u32 = out["pid"].parse().unwrap();
    let events = net
        .collect(pid, Duration::from_millis(300), |e| {
            count(e, NetworkEventKind::Connect) >= 2 && count(e, NetworkEventKind::Bind) >= 2
        })
        .await;
    net.stop().await;
    let connects = of(&events, NetworkEventKind::Connect);
    let binds = of(&events, NetworkEventKind::Bind);
    assert_eq!(connects.len(), 2, "{events:#?}");
    assert_eq!(binds.len(), 2, "{events:#?}");
    for (e, path) in connects.iter().zip([&out["path"], &out["abstract"]]) {
        assert_eq!(e.family, AddressFamily::Unix);
        assert_eq!(e.protocol, TransportProtocol::Unix);
        assert_eq!(e.unix_path.as_deref(), Some(path.as_str()));
        assert_eq!(e.errno, None);
    }
    for (e, path) in binds.iter().zip([&out["path"], &out["abstract"]]) {
        assert_eq!(e.unix_path.as_deref(), Some(path.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_mapped_accept_on_a_dual_stack_listener_shows_ipv4() {
    if !kernel_or_skip("v4_mapped_accept_on_a_dual_stack_listener_shows_ipv4") {
        return;
    }
    let mut net = Net::start(KernelConfig::default());
    let out = run_actor(NET_ACTOR, &["dualstack"]);
    let pid: u32 = out["pid"].parse().unwrap();
    let events = net
        .collect(pid, Duration::from_millis(300), |e| {
            count(e, NetworkEventKind::Accept) >= 1 && count(e, NetworkEventKind::Close) >= 2
        })
        .await;
    net.stop().await;
    let accept = one(&events, NetworkEventKind::Accept);
    assert_eq!(accept.family, AddressFamily::Ipv4, "{accept:#?}");
    assert_eq!(
        accept.source_addr.to_string(),
        format!("127.0.0.1:{}", out["client_port"])
    );
    assert_eq!(
        accept.dest_addr.to_string(),
        format!("127.0.0.1:{}", out["port"])
    );
    let listen = one(&events, NetworkEventKind::Listen);
    assert_eq!(
        listen.dest_addr.to_string(),
        format!("[::]:{}", out["port"])
    );
    let close = of(&events, NetworkEventKind::Close)
        .into_iter()
        .find(|c| c.connection_id == accept.connection_id)
        .expect("the accepted connection's close");
    assert_eq!(close.family, AddressFamily::Ipv4);
    assert_eq!(close.source_addr, accept.dest_addr);
}

/// The 32-bit entry, as `nobody`: connects through `socketcall(SYS_CONNECT)` and the
/// direct i386 `connect` (362); bind, listen and accept through `socketcall`; a UDP
/// `sendto` through i386 `sendto` (369). Per-syscall tracepoints never see these.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_through_the_32bit_entry_is_seen() {
    if !kernel_or_skip("connect_through_the_32bit_entry_is_seen") {
        return;
    }
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipping: int $0x80 is x86 only");
        return;
    }
    let mut net = Net::start(KernelConfig::default());
    let out = run_actor(NET_ACTOR, &["int80"]);
    let pid: u32 = out["pid"].parse().unwrap();
    assert_eq!(out["rc1"], "0", "socketcall connect: {out:?}");
    assert_eq!(out["rc2"], "0", "i386 connect: {out:?}");
    for rc in ["rc_bind", "rc_listen"] {
        assert_eq!(out[rc], "0", "{rc}: {out:?}");
    }
    assert_eq!(out["rc_sendto"], "1", "{out:?}");
    let events = net
        .collect(pid, Duration::from_millis(300), |e| {
            count(e, NetworkEventKind::Connect) >= 3
                && count(e, NetworkEventKind::Accept) >= 1
                && count(e, NetworkEventKind::UdpSend) >= 1
        })
        .await;
    net.stop().await;
    let connects = of(&events, NetworkEventKind::Connect);
    assert_eq!(connects.len(), 3, "{events:#?}");
    for (c, (p, local)) in connects.iter().zip([("p1", "c1"), ("p2", "c2")]) {
        assert!(c.compat_syscall, "marked as a 32-bit call: {c:#?}");
        assert_eq!(c.uid, Some(65534));
        assert_eq!(c.errno, None);
        assert_eq!(c.dest_addr.to_string(), format!("127.0.0.1:{}", out[p]));
        assert_eq!(c.source_addr.port().to_string(), out[local]);
    }
    assert!(
        !connects[2].compat_syscall,
        "the native connect is not marked"
    );
    let server = format!("127.0.0.1:{}", out["p3"]);
    // The actor's native listeners are bound too; one bind and one listen are 32-bit.
    let compat = |kind| -> Vec<NetworkEvent> {
        of(&events, kind)
            .into_iter()
            .filter(|e| e.compat_syscall)
            .cloned()
            .collect()
    };
    let binds = compat(NetworkEventKind::Bind);
    assert_eq!(binds.len(), 1, "{events:#?}");
    assert_eq!(binds[0].dest_addr.to_string(), server);
    let listens = compat(NetworkEventKind::Listen);
    assert_eq!(listens.len(), 1, "{events:#?}");
    assert_eq!(listens[0].dest_addr.to_string(), server);
    let accept = one(&events, NetworkEventKind::Accept);
    assert!(accept.compat_syscall, "{accept:#?}");
    assert_eq!(accept.dest_addr.to_string(), server);
    assert_eq!(
        accept.source_addr.to_string(),
        format!("127.0.0.1:{}", out["c3"])
    );
    let send = one(&events, NetworkEventKind::UdpSend);
    assert!(send.compat_syscall);
    assert_eq!(
        send.dest_addr.to_string(),
        format!("127.0.0.1:{}", out["p4"])
    );
    assert_eq!(send.source_addr.port().to_string(), out["u_port"]);
    assert_eq!(send.uid, Some(65534));
}

/// io_uring connect (IORING_OP_CONNECT) and accept (IORING_OP_ACCEPT): no connect or
/// accept syscall runs, yet both are seen, with their ports, and marked as io_uring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_uring_connect_and_accept_are_seen_and_marked() {
    if !kernel_or_skip("io_uring_connect_and_accept_are_seen_and_marked") {
        return;
    }
    let mut net = Net::start(KernelConfig::default());
    let out = run_actor(NET_ACTOR, &["uring"]);
    let pid: u32 = out["pid"].parse().unwrap();
    let events = net
        .collect(pid, Duration::from_millis(300), |e| {
            count(e, NetworkEventKind::Connect) >= 1
                && count(e, NetworkEventKind::Accept) >= 1
                && count(e, NetworkEventKind::Close) >= 2
        })
        .await;
    net.stop().await;
    let server = format!("127.0.0.1:{}", out["port"]);
    let client = format!("127.0.0.1:{}", out["client_port"]);
    let connect = one(&events, NetworkEventKind::Connect);
    assert!(connect.io_uring, "connect marked as io_uring: {connect:#?}");
    assert_eq!(connect.source_addr.to_string(), client);
    assert_eq!(connect.dest_addr.to_string(), server);
    let accept = one(&events, NetworkEventKind::Accept);
    assert!(accept.io_uring, "accept marked as io_uring: {accept:#?}");
    assert_eq!(accept.source_addr.to_string(), client);
    assert_eq!(accept.dest_addr.to_string(), server);
    let closes = of(&events, NetworkEventKind::Close);
    assert!(closes
        .iter()
        .any(|c| c.connection_id == connect.connection_id && c.source_addr.to_string() == client));
    assert!(closes
        .iter()
        .any(|c| c.connection_id == accept.connection_id && c.source_addr.to_string() == server));
}

/// Another thread `dup2`s a different, bound socket onto the fd while a connect blocks:
/// the connect is still reported for the socket that really connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_attributed_to_the_socket_that_connected_despite_dup2() {
    if !kernel_or_skip("connect_is_attributed_to_the_socket_that_connected_despite_dup2") {
        return;
    }
    let mut net = Net::start(KernelConfig::default());
    let out = run_actor(NET_ACTOR, &["dup2-race"]);
    let pid: u32 = out["pid"].parse().unwrap();
    let server = format!("127.0.0.1:{}", out["port"]);
    let events = net
        .collect(pid, Duration::from_millis(300), |e| {
            count(e, NetworkEventKind::Connect) >= 2
        })
        .await;
    net.stop().await;
    let raced: Vec<_> = of(&events, NetworkEventKind::Connect)
        .into_iter()
        .filter(|c| c.source_addr.port().to_string() != out["other_port"])
        .collect();
    assert_eq!(
        of(&events, NetworkEventKind::Connect).len(),
        raced.len(),
        "no connect reported with the dup2'd socket's port {}: {events:#?}",
        out["other_port"]
    );
    assert!(
        raced.iter().any(
            |c| c.source_addr.port().to_string() == out["connected_port"]
                && c.dest_addr.to_string() == server
                && c.errno.is_none()
        ),
        "the raced connect, with the port that connected ({}): {events:#?}",
        out["connected_port"]
    );
}

/// Another thread `dup2`s a decoy socket (connected to another port) onto the descriptor
/// an accept has just returned, before the exit reads it: the accept would be reported
/// with the decoy's addresses. A just-accepted socket's file is held once; the decoy's
/// twice (its own descriptor too), and the descriptor is read again after: every
/// accept reported without the listener's port carries `fd_raced`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_whose_descriptor_was_swapped_is_flagged() {
    if !kernel_or_skip("an_accept_whose_descriptor_was_swapped_is_flagged") {
        return;
    }
    until_raced("the swap never landed between an accept and its exit", |round| async move {
        let mut net = Net::start(KernelConfig::default());
        let out = run_actor(NET_ACTOR, &["accept-swap", "3000"]);
        assert_eq!(out["uid"], "65534", "actor runs unprivileged: {out:?}");
        let pid: u32 = out["pid"].parse().unwrap();
        let accepted: usize = out["accepted"].parse().unwrap();
        let port: u16 = out["port"].parse().unwrap();
        let events = net
            .collect(pid, Duration::from_millis(500), |_| false)
            .await;
        let stats = net.source.stats();
        net.stop().await;
        let accepts = of(&events, NetworkEventKind::Accept);
        // Each accept is reported, or counted where the swapper closed its descriptor
        // before the exit read it (no socket left to describe).
        let gone = stats
            .kernel_lost
            .get("accept/fd_gone")
            .copied()
            .unwrap_or(0);
        assert_eq!(
            accepts.len() as u64 + gone,
            accepted as u64,
            "accepts reported ({}) and counted gone ({gone}): {accepted} accepted",
            accepts.len()
        );
        let wrong: Vec<_> = accepts
            .iter()
            .filter(|a| a.source_addr.port() != port && a.dest_addr.port() != port)
            .collect();
        let unflagged: Vec<_> = wrong.iter().filter(|a| !a.fd_raced).collect();
        assert!(
            unflagged.is_empty(),
            "an accept reported with a swapped-in socket, not flagged: {:#?}",
            &unflagged[..unflagged.len().min(3)]
        );
        let flagged = accepts.iter().filter(|a| a.fd_raced).count();
        eprintln!(
            "round {round}: {} accepts reported of {accepted} ({gone} counted fd_gone), {} with another socket's addresses, {flagged} flagged",
            accepts.len(),
            wrong.len()
        );
        wrong.len()
    })
    .await;
}

/// Datagrams past UDP: raw ICMP, GRE and ICMPv6 sockets and an ICMP ping socket, each
/// send reported with its protocol, destination and (for raw sockets) no source port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_and_ping_socket_sends_are_reported() {
    if !kernel_or_skip("raw_and_ping_socket_sends_are_reported") {
        return;
    }
    let mut net = Net::start(KernelConfig::default());
    // As root, as a container's root with CAP_NET_RAW.
    let out = run_actor(NET_ACTOR, &["raw"]);
    let pid: u32 = out["pid"].parse().unwrap();
    let events = net
        .collect(pid, Duration::from_millis(500), |e| {
            count(e, NetworkEventKind::UdpSend) >= 4
        })
        .await;
    net.stop().await;
    let sends: Vec<(String, String, TransportProtocol)> = of(&events, NetworkEventKind::UdpSend)
        .iter()
        .map(|e| {
            assert_eq!(e.errno, None, "{e:?}");
            (
                e.dest_addr.to_string(),
                e.source_addr.port().to_string(),
                e.protocol,
            )
        })
        .collect();
    assert_eq!(
        sends,
        [
            ("127.0.0.1:0".into(), "0".into(), TransportProtocol::Raw),
            ("127.0.0.2:0".into(), "0".into(), TransportProtocol::Raw),
            ("[::1]:0".into(), "0".into(), TransportProtocol::Raw),
            // A ping socket's local "port" is its echo identifier.
            (
                "127.0.0.3:0".into(),
                out["ping_ident"].clone(),
                TransportProtocol::Icmp
            ),
        ],
        "{out:?} {events:#?}"
    );
}

/// One `sendmmsg` to destinations 1, 2, 1, 3: three new destinations, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sendmmsg_destinations_are_reported_once_each() {
    if !kernel_or_skip("udp_sendmmsg_destinations_are_reported_once_each") {
        return;
    }
    let mut net = Net::start(KernelConfig::default());
    let out = run_actor(NET_ACTOR, &["udp-mmsg"]);
    let pid: u32 = out["pid"].parse().unwrap();
    let events = net
        .collect(pid, Duration::from_millis(500), |e| {
            count(e, NetworkEventKind::UdpSend) >= 3
        })
        .await;
    net.stop().await;
    let sends = of(&events, NetworkEventKind::UdpSend);
    assert_eq!(sends.len(), 3, "one event per new destination: {events:#?}");
    for (send, p) in sends.iter().zip(["p1", "p2", "p3"]) {
        assert_eq!(send.dest_addr.to_string(), format!("127.0.0.1:{}", out[p]));
        assert_eq!(send.source_addr.port().to_string(), out["local_port"]);
        assert_eq!(send.send_count, Some(1));
    }
}
