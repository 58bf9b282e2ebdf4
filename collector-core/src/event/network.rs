use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{rfc3339_nanos, SourceName};

/// What happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkEventKind {
    /// Outgoing connection started.
    Connect,
    /// Incoming connection accepted.
    Accept,
    /// Connection closed.
    Close,
    /// Socket started listening.
    Listen,
    /// Socket bound to a local address (or unix path).
    Bind,
    /// UDP datagram sent to a destination this socket had not sent to before, or a
    /// send-count update for one (`count_update`).
    #[serde(rename = "udp_send")]
    UdpSend,
}

impl NetworkEventKind {
    /// JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Accept => "accept",
            Self::Close => "close",
            Self::Listen => "listen",
            Self::Bind => "bind",
            Self::UdpSend => "udp_send",
        }
    }
}

/// Transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportProtocol {
    /// TCP.
    Tcp,
    /// UDP (and UDP-Lite).
    Udp,
    /// ICMP / ICMPv6 (ping sockets).
    Icmp,
    /// SCTP.
    Sctp,
    /// Multipath TCP.
    Mptcp,
    /// Raw IP socket (`SOCK_RAW`).
    Raw,
    /// Unix-domain socket.
    Unix,
    /// Any other protocol.
    Other,
}

impl TransportProtocol {
    /// JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
            Self::Sctp => "sctp",
            Self::Mptcp => "mptcp",
            Self::Raw => "raw",
            Self::Unix => "unix",
            Self::Other => "other",
        }
    }
}

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressFamily {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
    /// Unix domain (`AF_UNIX`): the address is in `unix_path`; `source_addr` and
    /// `dest_addr` are `0.0.0.0:0`.
    Unix,
}

impl AddressFamily {
    /// JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::Unix => "unix",
        }
    }
}

/// A network connection event.
///
/// `source_addr` is the end that initiated the connection and `dest_addr` the end that
/// accepted it, for connect and accept alike (an accept's `dest_addr` is the local
/// listening address). For `listen`, both are the listening address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkEvent {
    /// What happened.
    pub kind: NetworkEventKind,
    /// When it happened.
    #[serde(with = "rfc3339_nanos")]
    pub timestamp: DateTime<Utc>,
    /// Process the event is attributed to.
    pub pid: u32,
    /// Source name.
    pub source: SourceName,
    /// Transport protocol.
    pub protocol: TransportProtocol,
    /// Address family.
    pub family: AddressFamily,
    /// Initiating end, `ip:port` or `[v6]:port`.
    pub source_addr: SocketAddr,
    /// Accepting end.
    pub dest_addr: SocketAddr,
    /// Kernel TCP state name (`ESTABLISHED`, ...), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<super::CompactString>,
    /// Identifier stable for the connection's life, to pair its events: a keyed hash
    /// of the kernel socket and its birth under a random per-load key (never a kernel
    /// address).
    pub connection_id: u64,
    /// uid of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Process name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<super::CompactString>,
    /// errno of a failed or in-progress call (`ECONNREFUSED` 111, `EINPROGRESS` 115,
    /// ...); absent when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<u32>,
    /// TCP state before this event (a close's: the state it closed from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<super::CompactString>,
    /// The socket's pending error (`sk_err`, an errno), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_error: Option<u32>,
    /// Unix socket path; an abstract name is shown as `@name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_path: Option<String>,
    /// UDP sends to this destination on this socket so far (`udp_send`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_count: Option<u64>,
    /// A `udp_send` that updates the count of a destination already reported.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub count_update: bool,
    /// Issued through io_uring rather than a syscall of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub io_uring: bool,
    /// Issued through the 32-bit syscall entry (`int $0x80`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compat_syscall: bool,
    /// accept: when the call returned, the socket file behind its new descriptor was
    /// held more than once, or was no longer behind it once read. Another thread
    /// replaced the descriptor (`dup2`) or duplicated it in between, so the addresses
    /// may be another socket's (docs/kernel.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fd_raced: bool,
    /// Stable key of the acting process (`<pid>:<start time, CLOCK_BOOTTIME ns>`), the
    /// same as on its process events: joins this event to its exec without pid-reuse
    /// mistakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_key: Option<super::CompactString>,
    /// The process, from the collector's process table (absent when the table does not
    /// know the pid: a process that ended before its event was read, or a table off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Shared: every event of one process points at the same context.
    pub process: Option<std::sync::Arc<super::ProcessContext>>,
}
