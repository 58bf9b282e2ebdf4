//! Network-domain records: connect, accept, listen, close.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use collector_common::{net_flags, NetRecord, RecordKind, UnixRecord, UNIX_PATH_LEN};
use collector_core::event::{
    AddressFamily, CollectionEvent, CompactString, NetworkEvent, NetworkEventKind, SourceName,
    TransportProtocol,
};

use super::{c_str, comm, process::header_process_key, read, record_kind, DecodeError};
use crate::ebpf::clock::BootClock;

use collector_common::abi::AF_INET6;
const SOCK_RAW: u16 = 3;

/// An address from the kernel's 16 bytes; IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is
/// normalised to IPv4, as is the unspecified address of a v4-mapped socket's peer.
fn ip(family: u16, bytes: [u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        let v6 = Ipv6Addr::from(bytes);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

/// The protocol from `sk_protocol` and `sk_type`.
pub fn protocol(sk_protocol: u16, sk_type: u16) -> TransportProtocol {
    if sk_type == SOCK_RAW {
        return TransportProtocol::Raw;
    }
    match sk_protocol {
        6 => TransportProtocol::Tcp,
        17 | 136 => TransportProtocol::Udp,
        1 | 58 => TransportProtocol::Icmp,
        132 => TransportProtocol::Sctp,
        262 => TransportProtocol::Mptcp,
        _ => TransportProtocol::Other,
    }
}

/// Kernel TCP state name.
pub fn tcp_state_name(state: u32) -> Option<&'static str> {
    collector_common::abi::tcp_state::name(state)
}

/// errno of a syscall result: `None` for success (0 or a new fd).
fn errno(result: i32) -> Option<u32> {
    (result < 0).then(|| result.unsigned_abs())
}

/// A unix socket path as passed: abstract names (leading NUL) as `@name`.
fn unix_path(path: &[u8; UNIX_PATH_LEN], len: u16) -> String {
    let len = usize::from(len).min(UNIX_PATH_LEN);
    let bytes = &path[..len];
    match bytes.split_first() {
        // Abstract: every byte of the given length counts, NULs included.
        Some((0, name)) => format!("@{}", String::from_utf8_lossy(name)),
        _ => c_str(bytes),
    }
}

/// Decodes one network-domain record.
pub fn decode_network(
    bytes: &[u8],
    clock: &BootClock,
    source: &SourceName,
) -> Result<CollectionEvent, DecodeError> {
    let kind = record_kind(bytes)?;
    let event_kind = match kind {
        RecordKind::Connect | RecordKind::UnixConnect => NetworkEventKind::Connect,
        RecordKind::Accept => NetworkEventKind::Accept,
        RecordKind::Close => NetworkEventKind::Close,
        RecordKind::Listen => NetworkEventKind::Listen,
        RecordKind::Bind | RecordKind::UnixBind => NetworkEventKind::Bind,
        RecordKind::UdpSend => NetworkEventKind::UdpSend,
        other => return Err(DecodeError::UnknownKind(other as u32)),
    };
    if matches!(kind, RecordKind::UnixConnect | RecordKind::UnixBind) {
        let r: UnixRecord = read(bytes, kind as u32)?;
        let none = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        return Ok(CollectionEvent::Network(Box::new(NetworkEvent {
            kind: event_kind,
            timestamp: clock.to_utc(r.header.ktime_ns),
            pid: r.header.pid,
            source: source.clone(),
            protocol: TransportProtocol::Unix,
            family: AddressFamily::Unix,
            source_addr: none,
            dest_addr: none,
            state: None,
            connection_id: r.conn_id,
            uid: Some(r.header.uid),
            name: Some(comm(&r.header.comm)),
            errno: errno(r.result),
            previous_state: None,
            socket_error: None,
            unix_path: Some(unix_path(&r.path, r.path_len)),
            send_count: None,
            count_update: false,
            io_uring: r.net_flags & net_flags::IO_URING != 0,
            compat_syscall: r.net_flags & net_flags::COMPAT != 0,
            fd_raced: false,
            process_key: header_process_key(&r.header),
            process: None,
        })));
    }
    let r: NetRecord = read(bytes, kind as u32)?;
    let (mut local_ip, mut remote_ip) = (ip(r.family, r.local_addr), ip(r.family, r.remote_addr));
    // A v4-mapped socket's unset end is `::`; shown as 0.0.0.0 next to an IPv4 peer.
    match (local_ip, remote_ip) {
        (IpAddr::V6(l), IpAddr::V4(_)) if l.is_unspecified() => {
            local_ip = IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
        (IpAddr::V4(_), IpAddr::V6(r)) if r.is_unspecified() => {
            remote_ip = IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
        _ => {}
    }
    let family = if local_ip.is_ipv4() && remote_ip.is_ipv4() {
        AddressFamily::Ipv4
    } else {
        AddressFamily::Ipv6
    };
    // A raw socket's `inet_num` is its protocol, not a port.
    let local_port = if r.sock_type == SOCK_RAW {
        0
    } else {
        r.local_port
    };
    let local = SocketAddr::new(local_ip, local_port);
    let remote = SocketAddr::new(remote_ip, r.remote_port);
    // source = the end that initiated, dest = the end that accepted.
    let (source_addr, dest_addr) = match event_kind {
        NetworkEventKind::Accept => (remote, local),
        NetworkEventKind::Listen | NetworkEventKind::Bind => (local, local),
        _ => (local, remote),
    };
    Ok(CollectionEvent::Network(Box::new(NetworkEvent {
        kind: event_kind,
        timestamp: clock.to_utc(r.header.ktime_ns),
        pid: r.header.pid,
        source: source.clone(),
        protocol: protocol(r.protocol, r.sock_type),
        family,
        source_addr,
        dest_addr,
        state: tcp_state_name(r.state).map(CompactString::const_new),
        connection_id: r.conn_id,
        uid: Some(r.header.uid),
        name: Some(comm(&r.header.comm)),
        errno: errno(r.result),
        previous_state: tcp_state_name(r.prev_state).map(CompactString::const_new),
        socket_error: u32::try_from(r.sk_err).ok().filter(|&e| e != 0),
        unix_path: None,
        send_count: (kind == RecordKind::UdpSend).then_some(r.send_count),
        count_update: r.net_flags & net_flags::UPDATE != 0,
        io_uring: r.net_flags & net_flags::IO_URING != 0,
        compat_syscall: r.net_flags & net_flags::COMPAT != 0,
        fd_raced: r.net_flags & net_flags::FD_RACED != 0,
        process_key: header_process_key(&r.header),
        process: None,
    })))
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

    fn decode(bytes: &[u8]) -> NetworkEvent {
        match decode_network(bytes, &BootClock::new(), &"t".into()).unwrap() {
            CollectionEvent::Network(n) => *n,
            other => panic!("not network: {other:?}"),
        }
    }

    #[test]
    fn v4_mapped_addresses_are_ipv4() {
        // SAFETY: all-zero is a valid NetRecord.
        let mut r: NetRecord = unsafe { std::mem::zeroed() };
        r.header = header(RecordKind::Accept);
        r.family = AF_INET6;
        r.protocol = 6;
        r.sock_type = 1;
        r.local_addr = Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets();
        r.remote_addr = Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped().octets();
        r.local_port = 80;
        r.remote_port = 5000;
        let n = decode(&bytes_of(&r));
        assert_eq!(n.family, AddressFamily::Ipv4);
        assert_eq!(n.source_addr.to_string(), "10.0.0.7:5000");
        assert_eq!(n.dest_addr.to_string(), "127.0.0.1:80");
        // A v6 socket whose local end is unset, talking to a v4-mapped peer.
        r.header.kind = RecordKind::Connect as u32;
        r.local_addr = [0; 16];
        let n = decode(&bytes_of(&r));
        assert_eq!(n.family, AddressFamily::Ipv4);
        assert_eq!(n.source_addr.to_string(), "0.0.0.0:80");
        // Real IPv6 stays IPv6.
        r.remote_addr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(decode(&bytes_of(&r)).family, AddressFamily::Ipv6);
    }

    #[test]
    fn protocol_names_come_from_protocol_and_type() {
        assert_eq!(protocol(6, 1), TransportProtocol::Tcp);
        assert_eq!(protocol(17, 2), TransportProtocol::Udp);
        assert_eq!(protocol(136, 2), TransportProtocol::Udp);
        assert_eq!(protocol(1, 2), TransportProtocol::Icmp);
        assert_eq!(protocol(58, 2), TransportProtocol::Icmp);
        assert_eq!(protocol(132, 5), TransportProtocol::Sctp);
        assert_eq!(protocol(262, 1), TransportProtocol::Mptcp);
        assert_eq!(protocol(6, 3), TransportProtocol::Raw, "SOCK_RAW wins");
        assert_eq!(protocol(255, 3), TransportProtocol::Raw);
        assert_eq!(protocol(33, 6), TransportProtocol::Other);
    }

    #[test]
    fn errors_flags_and_states_are_decoded() {
        // SAFETY: all-zero is a valid NetRecord.
        let mut r: NetRecord = unsafe { std::mem::zeroed() };
        r.header = header(RecordKind::Close);
        r.family = 2;
        r.protocol = 6;
        r.state = 7;
        r.prev_state = 2;
        r.sk_err = 111;
        r.net_flags = net_flags::IO_URING | net_flags::COMPAT;
        let n = decode(&bytes_of(&r));
        assert_eq!(n.previous_state.as_deref(), Some("SYN_SENT"));
        assert_eq!(n.socket_error, Some(111));
        assert_eq!(n.errno, None);
        assert!(n.io_uring && n.compat_syscall && !n.fd_raced);
        r.net_flags = net_flags::FD_RACED;
        assert!(
            decode(&bytes_of(&r)).fd_raced,
            "an accept's swapped descriptor"
        );
        r.net_flags = net_flags::IO_URING | net_flags::COMPAT;
        r.header.kind = RecordKind::Connect as u32;
        r.result = -115;
        r.sk_err = 0;
        let n = decode(&bytes_of(&r));
        assert_eq!(n.errno, Some(115));
        assert_eq!(n.socket_error, None);
        r.header.kind = RecordKind::UdpSend as u32;
        r.result = 1;
        r.send_count = 9;
        r.net_flags = net_flags::UPDATE;
        let n = decode(&bytes_of(&r));
        assert_eq!(n.kind, NetworkEventKind::UdpSend);
        assert_eq!(n.errno, None, "a byte count is not an error");
        assert_eq!(n.send_count, Some(9));
        assert!(n.count_update);
    }

    #[test]
    fn unix_paths_and_abstract_names() {
        // SAFETY: all-zero is a valid UnixRecord.
        let mut r: UnixRecord = unsafe { std::mem::zeroed() };
        r.header = header(RecordKind::UnixConnect);
        let path = b"/run/docker.sock\0";
        r.path[..path.len()].copy_from_slice(path);
        r.path_len = path.len() as u16;
        let n = decode(&bytes_of(&r));
        assert_eq!(n.kind, NetworkEventKind::Connect);
        assert_eq!(n.family, AddressFamily::Unix);
        assert_eq!(n.unix_path.as_deref(), Some("/run/docker.sock"));
        r.path = [0; UNIX_PATH_LEN];
        r.path[1..4].copy_from_slice(b"abc");
        r.path_len = 4;
        r.header.kind = RecordKind::UnixBind as u32;
        r.result = -98;
        let n = decode(&bytes_of(&r));
        assert_eq!(n.kind, NetworkEventKind::Bind);
        assert_eq!(n.unix_path.as_deref(), Some("@abc"));
        assert_eq!(n.errno, Some(98));
        // A length the kernel never writes is clamped, not trusted.
        r.path_len = u16::MAX;
        assert!(decode(&bytes_of(&r)).unix_path.unwrap().starts_with("@abc"));
        // Truncated records are errors, not panics.
        let bytes = bytes_of(&r);
        assert!(decode_network(&bytes[..bytes.len() - 1], &BootClock::new(), &"t".into()).is_err());
    }
}
