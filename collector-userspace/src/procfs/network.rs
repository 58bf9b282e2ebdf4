//! `procfs-network`: TCP and UDP sockets from diffs of `/proc/net/{tcp,tcp6,udp,udp6}`,
//! the fallback for the network domain alone when its kernel programs cannot run while
//! the other domains' can (or for the whole host under `--procfs`).
//!
//! What a poll can and cannot tell, compared with the kernel programs:
//! - a connection that opens and closes between two polls is never seen;
//! - the acting process is unknown (`pid` 0; the socket's `uid` is kept), since mapping
//!   socket inodes to processes means reading every `/proc/<pid>/fd`;
//! - direction is inferred: a connection whose local port is one this host listens on
//!   is an `accept`, any other a `connect`;
//! - `connection_id` is the socket's inode number (no kernel address involved).
//!
//! So the source claims `NETWORK | SYSTEM_WIDE` only: neither `REALTIME` nor
//! `KERNEL_LEVEL`. Sockets that exist when it starts are taken as the baseline, not
//! reported.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use collector_core::event::{
    AddressFamily, CompactString, NetworkEvent, NetworkEventKind, SourceName, TransportProtocol,
};
use collector_core::pressure::BackpressurePolicy;
use collector_core::{CollectionEvent, EventSource, SourceCaps, SourceStats};
use procfs::net::{TcpNetEntry, TcpState, UdpNetEntry};
use tokio::sync::mpsc;

use super::{backpressure_stats, send_polled, wait_or_stop};

/// Name of the polling network source.
pub const NETWORK_SOURCE_NAME: &str = "procfs-network";

/// How [`NetworkPollSource`] polls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkSourceConfig {
    /// Time between two reads of the socket tables.
    pub interval: Duration,
    /// Longest wait for room in the collector's queue before an event is dropped.
    pub max_send_wait: Duration,
}

impl Default for NetworkSourceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            max_send_wait: Duration::from_millis(500),
        }
    }
}

/// One socket as the tables show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Socket {
    protocol: Proto,
    local: SocketAddr,
    remote: SocketAddr,
    /// TCP state (kernel numbering); 0 for UDP.
    state: u8,
    uid: u32,
    inode: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Proto {
    Tcp,
    Udp,
}

impl Socket {
    fn tcp(e: &TcpNetEntry) -> Self {
        Self {
            protocol: Proto::Tcp,
            local: e.local_address,
            remote: e.remote_address,
            state: e.state.to_u8(),
            uid: e.uid,
            inode: e.inode,
        }
    }

    fn udp(e: &UdpNetEntry) -> Self {
        Self {
            protocol: Proto::Udp,
            local: e.local_address,
            remote: e.remote_address,
            state: 0,
            uid: e.uid,
            inode: e.inode,
        }
    }

    /// Identity across polls: the state may change, the socket stays.
    fn key(&self) -> (Proto, SocketAddr, SocketAddr, u64) {
        (self.protocol, self.local, self.remote, self.inode)
    }

    fn listening(&self) -> bool {
        self.protocol == Proto::Tcp && self.state == TcpState::Listen.to_u8()
    }
}

/// Every TCP and UDP socket of the host (both families). A table that cannot be read
/// (IPv6 disabled) is skipped.
fn read_sockets() -> Vec<Socket> {
    let mut out = Vec::new();
    for entries in [procfs::net::tcp(), procfs::net::tcp6()]
        .into_iter()
        .flatten()
    {
        out.extend(entries.iter().map(Socket::tcp));
    }
    for entries in [procfs::net::udp(), procfs::net::udp6()]
        .into_iter()
        .flatten()
    {
        out.extend(entries.iter().map(Socket::udp));
    }
    out
}

/// What changed between two polls.
#[derive(Debug, Default)]
struct SocketDiff {
    previous: HashMap<(Proto, SocketAddr, SocketAddr, u64), Socket>,
}

impl SocketDiff {
    /// Takes `now` as what exists already: nothing in it is reported.
    fn baseline(&mut self, now: Vec<Socket>) {
        self.previous = now.into_iter().map(|s| (s.key(), s)).collect();
    }

    /// Takes `now` as the new table; returns the events its changes mean.
    fn update(
        &mut self,
        now: Vec<Socket>,
        timestamp: DateTime<Utc>,
        source: &SourceName,
    ) -> Vec<NetworkEvent> {
        let listening_ports: HashSet<u16> = now
            .iter()
            .filter(|s| s.listening())
            .map(|s| s.local.port())
            .collect();
        let mut current = HashMap::with_capacity(now.len());
        let mut events = Vec::new();
        for s in now {
            if !self.previous.contains_key(&s.key()) {
                let kind = match s.protocol {
                    Proto::Tcp if s.listening() => Some(NetworkEventKind::Listen),
                    Proto::Tcp if s.remote.port() == 0 => None,
                    Proto::Tcp if listening_ports.contains(&s.local.port()) => {
                        Some(NetworkEventKind::Accept)
                    }
                    Proto::Tcp => Some(NetworkEventKind::Connect),
                    Proto::Udp => Some(NetworkEventKind::Bind),
                };
                if let Some(kind) = kind {
                    events.push(event(kind, &s, timestamp, source));
                }
            }
            current.insert(s.key(), s);
        }
        for (key, s) in &self.previous {
            if s.protocol == Proto::Tcp && !current.contains_key(key) {
                events.push(event(NetworkEventKind::Close, s, timestamp, source));
            }
        }
        self.previous = current;
        events
    }
}

fn event(
    kind: NetworkEventKind,
    s: &Socket,
    timestamp: DateTime<Utc>,
    source: &SourceName,
) -> NetworkEvent {
    // source = the end that initiated, dest = the end that accepted (as the kernel
    // source reports them).
    let (source_addr, dest_addr) = match kind {
        NetworkEventKind::Accept => (s.remote, s.local),
        NetworkEventKind::Listen | NetworkEventKind::Bind => (s.local, s.local),
        _ => (s.local, s.remote),
    };
    let family = if s.local.is_ipv4() {
        AddressFamily::Ipv4
    } else {
        AddressFamily::Ipv6
    };
    let state_name = |state: u8| {
        (s.protocol == Proto::Tcp)
            .then(|| crate::ebpf::decode::tcp_state_name(u32::from(state)))
            .flatten()
            .map(CompactString::const_new)
    };
    // A close is reported with the state last seen as the previous one.
    let (state, previous_state) = if kind == NetworkEventKind::Close {
        (Some(CompactString::const_new("CLOSE")), state_name(s.state))
    } else {
        (state_name(s.state), None)
    };
    NetworkEvent {
        kind,
        timestamp,
        pid: 0,
        source: source.clone(),
        protocol: match s.protocol {
            Proto::Tcp => TransportProtocol::Tcp,
            Proto::Udp => TransportProtocol::Udp,
        },
        family,
        source_addr,
        dest_addr,
        state,
        connection_id: s.inode,
        uid: Some(s.uid),
        name: None,
        errno: None,
        previous_state,
        socket_error: None,
        unix_path: None,
        send_count: None,
        count_update: false,
        io_uring: false,
        compat_syscall: false,
        fd_raced: false,
        process_key: None,
        process: None,
    }
}

/// TCP connects, accepts, listens and closes and UDP binds, from polls of the kernel's
/// socket tables (see the module docs for what polling misses).
pub struct NetworkPollSource {
    config: NetworkSourceConfig,
    backpressure_drops: AtomicU64,
    stop: Arc<super::StopSignal>,
}

impl NetworkPollSource {
    /// A source over this host's socket tables.
    pub fn new(config: NetworkSourceConfig) -> Self {
        Self {
            config,
            backpressure_drops: AtomicU64::new(0),
            stop: Arc::default(),
        }
    }
}

#[async_trait]
impl EventSource for NetworkPollSource {
    fn name(&self) -> &'static str {
        NETWORK_SOURCE_NAME
    }

    fn capabilities(&self) -> SourceCaps {
        SourceCaps::NETWORK | SourceCaps::SYSTEM_WIDE
    }

    async fn start(
        &self,
        tx: mpsc::Sender<CollectionEvent>,
        shutdown_signal: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        let policy = BackpressurePolicy {
            threshold: 1.0,
            max_wait: self.config.max_send_wait,
        };
        let source: SourceName = NETWORK_SOURCE_NAME.into();
        let mut diff = SocketDiff::default();
        let baseline = tokio::task::spawn_blocking(read_sockets).await?;
        diff.baseline(baseline);
        let mut next = tokio::time::Instant::now() + self.config.interval;
        while wait_or_stop(next, &shutdown_signal, &self.stop).await {
            next += self.config.interval;
            let sockets = tokio::task::spawn_blocking(read_sockets).await?;
            let events = diff
                .update(sockets, Utc::now(), &source)
                .into_iter()
                .map(CollectionEvent::from);
            if !send_polled(&policy, &tx, events, &self.backpressure_drops).await {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn stop(&self) -> anyhow::Result<()> {
        self.stop.stop();
        Ok(())
    }

    fn stats(&self) -> SourceStats {
        backpressure_stats(&self.backpressure_drops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(proto: Proto, local: &str, remote: &str, state: u8, inode: u64) -> Socket {
        Socket {
            protocol: proto,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state,
            uid: 1000,
            inode,
        }
    }

    #[test]
    fn new_sockets_become_listen_accept_connect_bind_and_gone_ones_close() {
        let src: SourceName = "t".into();
        let now = Utc::now();
        let listen = sock(Proto::Tcp, "127.0.0.1:8080", "0.0.0.0:0", 10, 1);
        let mut diff = SocketDiff::default();
        diff.baseline(vec![listen]);
        let accepted = sock(Proto::Tcp, "127.0.0.1:8080", "127.0.0.1:40000", 1, 2);
        let outgoing = sock(Proto::Tcp, "127.0.0.1:40000", "127.0.0.1:8080", 1, 3);
        let udp = sock(Proto::Udp, "0.0.0.0:5353", "0.0.0.0:0", 7, 4);
        let events = diff.update(vec![listen, accepted, outgoing, udp], now, &src);
        let got: Vec<(NetworkEventKind, String, String, u64)> = events
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.source_addr.to_string(),
                    e.dest_addr.to_string(),
                    e.connection_id,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    NetworkEventKind::Accept,
                    "127.0.0.1:40000".into(),
                    "127.0.0.1:8080".into(),
                    2
                ),
                (
                    NetworkEventKind::Connect,
                    "127.0.0.1:40000".into(),
                    "127.0.0.1:8080".into(),
                    3
                ),
                (
                    NetworkEventKind::Bind,
                    "0.0.0.0:5353".into(),
                    "0.0.0.0:5353".into(),
                    4
                ),
            ]
        );
        assert!(events.iter().all(|e| e.pid == 0 && e.uid == Some(1000)));
        // A state change is the same socket; its disappearance is a close.
        let closing = sock(Proto::Tcp, "127.0.0.1:40000", "127.0.0.1:8080", 6, 3);
        let events = diff.update(vec![listen, closing, udp], now, &src);
        let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.connection_id)).collect();
        assert_eq!(kinds, [(NetworkEventKind::Close, 2)]);
        assert_eq!(events[0].state.as_deref(), Some("CLOSE"));
        assert_eq!(events[0].previous_state.as_deref(), Some("ESTABLISHED"));
    }
}
