//! Network-domain records: connect, accept, listen, close.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use collector_common::{NetRecord, RecordKind};
use collector_core::event::{
    AddressFamily, CollectionEvent, NetworkEvent, NetworkEventKind, SourceName, TransportProtocol,
};

use super::{c_str, read, record_kind, DecodeError};
use crate::ebpf::clock::BootClock;

const AF_INET6: u16 = 10;
const IPPROTO_UDP: u16 = 17;

fn ip(family: u16, bytes: [u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

/// Kernel TCP state name.
pub fn tcp_state_name(state: u32) -> Option<&'static str> {
    Some(match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => return None,
    })
}

/// Decodes one network-domain record.
pub fn decode_network(
    bytes: &[u8],
    clock: &BootClock,
    source: &SourceName,
) -> Result<CollectionEvent, DecodeError> {
    let kind = record_kind(bytes)?;
    let event_kind = match kind {
        RecordKind::Connect => NetworkEventKind::Connect,
        RecordKind::Accept => NetworkEventKind::Accept,
        RecordKind::Close => NetworkEventKind::Close,
        RecordKind::Listen => NetworkEventKind::Listen,
        other => return Err(DecodeError::UnknownKind(other as u32)),
    };
    let r: NetRecord = read(bytes, kind as u32)?;
    let local = SocketAddr::new(ip(r.family, r.local_addr), r.local_port);
    let remote = SocketAddr::new(ip(r.family, r.remote_addr), r.remote_port);
    // source = the end that initiated, dest = the end that accepted.
    let (source_addr, dest_addr) = match event_kind {
        NetworkEventKind::Accept => (remote, local),
        NetworkEventKind::Listen => (local, local),
        _ => (local, remote),
    };
    Ok(CollectionEvent::Network(NetworkEvent {
        kind: event_kind,
        timestamp: clock.to_utc(r.header.ktime_ns),
        pid: r.header.pid,
        source: source.clone(),
        protocol: if r.protocol == IPPROTO_UDP {
            TransportProtocol::Udp
        } else {
            TransportProtocol::Tcp
        },
        family: if r.family == AF_INET6 {
            AddressFamily::Ipv6
        } else {
            AddressFamily::Ipv4
        },
        source_addr,
        dest_addr,
        state: tcp_state_name(r.state).map(str::to_string),
        connection_id: r.sock_id,
        uid: Some(r.header.uid),
        name: Some(c_str(&r.header.comm)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::decode::test_util::{bytes_of, header};

    #[test]
    fn accept_puts_the_initiator_in_source_addr() {
        // SAFETY: all-zero is a valid NetRecord.
        let mut r: NetRecord = unsafe { std::mem::zeroed() };
        r.header = header(RecordKind::Accept);
        r.family = 2;
        r.protocol = 6;
        r.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        r.remote_addr[..4].copy_from_slice(&[127, 0, 0, 2]);
        r.local_port = 8080;
        r.remote_port = 40000;
        r.state = 1;
        let CollectionEvent::Network(n) =
            decode_network(&bytes_of(&r), &BootClock::new(), &"t".into()).unwrap()
        else {
            panic!("not network")
        };
        assert_eq!(n.source_addr.to_string(), "127.0.0.2:40000");
        assert_eq!(n.dest_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(n.state.as_deref(), Some("ESTABLISHED"));
        r.header.kind = RecordKind::Connect as u32;
        r.family = 10;
        r.local_addr = std::net::Ipv6Addr::LOCALHOST.octets();
        r.remote_addr = std::net::Ipv6Addr::LOCALHOST.octets();
        let CollectionEvent::Network(n) =
            decode_network(&bytes_of(&r), &BootClock::new(), &"t".into()).unwrap()
        else {
            panic!("not network")
        };
        assert_eq!(n.source_addr.to_string(), "[::1]:8080");
        assert_eq!(n.dest_addr.to_string(), "[::1]:40000");
        assert_eq!(n.family, AddressFamily::Ipv6);
    }
}
