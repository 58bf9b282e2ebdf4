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
}

impl NetworkEventKind {
    /// JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Accept => "accept",
            Self::Close => "close",
            Self::Listen => "listen",
        }
    }
}

/// Transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressFamily {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
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
    pub state: Option<String>,
    /// Identifier stable for the connection's life (the kernel socket), to pair events.
    pub connection_id: u64,
    /// uid of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Process name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
