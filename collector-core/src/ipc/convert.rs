//! Conversions between the collector's types and the protobuf schema.
//!
//! Encoding borrows (the pipeline shares batches); decoding consumes the message so its
//! strings move into the event instead of being copied.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use chrono::{DateTime, Utc};
use collector_proto::v1 as pb;

use crate::caps::SourceCaps;
use crate::event::{
    AddressFamily, CollectionEvent, CompactString, Domain, FilesystemEvent, FilesystemEventKind,
    NetworkEvent, NetworkEventKind, PerformanceEvent, PerformanceEventKind, ProcessContext,
    ProcessCredentials, ProcessEvent, ProcessEventKind, TransportProtocol,
};
use crate::source::SourceStats;
use crate::status::{HealthState, StatusSnapshot};

/// An event's short string as the protobuf message's `String`.
fn owned(s: &Option<CompactString>) -> Option<String> {
    s.as_deref().map(str::to_owned)
}

/// A protobuf message that does not describe a valid collector value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A required field was absent.
    #[error("`{0}` is missing")]
    Missing(&'static str),
    /// An enum field held a value this build does not know (a newer peer?).
    #[error("`{field}` has unknown value {value}")]
    UnknownEnum {
        /// Field name.
        field: &'static str,
        /// Raw value.
        value: i32,
    },
    /// A timestamp outside chrono's range or with nanos >= 2e9.
    #[error("`{0}` is not a valid timestamp")]
    Timestamp(&'static str),
    /// An IP address that is neither 4 nor 16 bytes, or a port above 65535.
    #[error("`{0}` is not a valid socket address")]
    Address(&'static str),
}

// ---------------------------------------------------------------------------------------
// Small pieces

/// The protobuf domain for a collector domain.
pub fn domain_to_proto(d: Domain) -> pb::Domain {
    match d {
        Domain::Process => pb::Domain::Process,
        Domain::Network => pb::Domain::Network,
        Domain::Filesystem => pb::Domain::Filesystem,
        Domain::Performance => pb::Domain::Performance,
    }
}

/// The collector domain for a raw protobuf domain value.
pub fn domain_from_proto(raw: i32) -> Result<Domain, ConvertError> {
    match pb::Domain::try_from(raw) {
        Ok(pb::Domain::Process) => Ok(Domain::Process),
        Ok(pb::Domain::Network) => Ok(Domain::Network),
        Ok(pb::Domain::Filesystem) => Ok(Domain::Filesystem),
        Ok(pb::Domain::Performance) => Ok(Domain::Performance),
        _ => Err(ConvertError::UnknownEnum {
            field: "domain",
            value: raw,
        }),
    }
}

/// Capabilities as sent on the wire.
pub fn caps_to_proto(caps: SourceCaps) -> pb::Capabilities {
    pb::Capabilities {
        domains: Domain::ALL
            .into_iter()
            .filter(|d| caps.contains(d.capability()))
            .map(|d| domain_to_proto(d) as i32)
            .collect(),
        kernel_level: caps.contains(SourceCaps::KERNEL_LEVEL),
        realtime: caps.contains(SourceCaps::REALTIME),
        system_wide: caps.contains(SourceCaps::SYSTEM_WIDE),
    }
}

/// Capabilities from the wire; unknown domains (from a newer server) are ignored.
pub fn caps_from_proto(caps: &pb::Capabilities) -> SourceCaps {
    let mut out = caps
        .domains
        .iter()
        .filter_map(|&d| domain_from_proto(d).ok())
        .fold(SourceCaps::empty(), |acc, d| acc | d.capability());
    out.set(SourceCaps::KERNEL_LEVEL, caps.kernel_level);
    out.set(SourceCaps::REALTIME, caps.realtime);
    out.set(SourceCaps::SYSTEM_WIDE, caps.system_wide);
    out
}

/// A timestamp as sent on the wire.
pub fn timestamp_to_proto(ts: DateTime<Utc>) -> pb::Timestamp {
    pb::Timestamp {
        seconds: ts.timestamp(),
        nanos: ts.timestamp_subsec_nanos(),
    }
}

/// A timestamp from the wire.
pub fn timestamp_from_proto(
    ts: Option<pb::Timestamp>,
    field: &'static str,
) -> Result<DateTime<Utc>, ConvertError> {
    let ts = ts.ok_or(ConvertError::Missing(field))?;
    DateTime::from_timestamp(ts.seconds, ts.nanos).ok_or(ConvertError::Timestamp(field))
}

/// A socket address as sent on the wire.
pub fn addr_to_proto(addr: &SocketAddr) -> pb::SocketAddress {
    match addr {
        SocketAddr::V4(a) => pb::SocketAddress {
            ip: a.ip().octets().to_vec(),
            port: a.port().into(),
            flow_info: 0,
            scope_id: 0,
        },
        SocketAddr::V6(a) => pb::SocketAddress {
            ip: a.ip().octets().to_vec(),
            port: a.port().into(),
            flow_info: a.flowinfo(),
            scope_id: a.scope_id(),
        },
    }
}

/// A socket address from the wire.
pub fn addr_from_proto(
    addr: Option<pb::SocketAddress>,
    field: &'static str,
) -> Result<SocketAddr, ConvertError> {
    let addr = addr.ok_or(ConvertError::Missing(field))?;
    let port = u16::try_from(addr.port).map_err(|_| ConvertError::Address(field))?;
    if let Ok(octets) = <[u8; 4]>::try_from(addr.ip.as_slice()) {
        Ok(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(octets),
            port,
        )))
    } else if let Ok(octets) = <[u8; 16]>::try_from(addr.ip.as_slice()) {
        Ok(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(octets),
            port,
            addr.flow_info,
            addr.scope_id,
        )))
    } else {
        Err(ConvertError::Address(field))
    }
}

/// An IP address as it appears in a `SocketAddress`.
pub fn ip_to_proto(ip: IpAddr, port: u16) -> pb::SocketAddress {
    addr_to_proto(&SocketAddr::new(ip, port))
}

fn unknown(field: &'static str, value: i32) -> ConvertError {
    ConvertError::UnknownEnum { field, value }
}

fn source_name(s: String) -> crate::event::SourceName {
    Cow::Owned(s)
}

// ---------------------------------------------------------------------------------------
// Events

/// An event as sent on the wire.
pub fn event_to_proto(ev: &CollectionEvent) -> pb::Event {
    use pb::event::Event as E;
    let inner = match ev {
        CollectionEvent::Process(e) => E::Process(process_to_proto(e)),
        CollectionEvent::Network(e) => E::Network(network_to_proto(e)),
        CollectionEvent::Filesystem(e) => E::Filesystem(filesystem_to_proto(e)),
        CollectionEvent::Performance(e) => E::Performance(performance_to_proto(e)),
    };
    pb::Event { event: Some(inner) }
}

/// An event from the wire.
pub fn event_from_proto(ev: pb::Event) -> Result<CollectionEvent, ConvertError> {
    use pb::event::Event as E;
    match ev.event.ok_or(ConvertError::Missing("event"))? {
        E::Process(e) => process_from_proto(e).map(|e| CollectionEvent::Process(e.into())),
        E::Network(e) => network_from_proto(e).map(|e| CollectionEvent::Network(e.into())),
        E::Filesystem(e) => filesystem_from_proto(e).map(CollectionEvent::from),
        E::Performance(e) => performance_from_proto(e).map(CollectionEvent::Performance),
    }
}

/// The wire value of a process event kind.
pub fn process_kind_to_proto(kind: ProcessEventKind) -> pb::ProcessEventKind {
    match kind {
        ProcessEventKind::Exec => pb::ProcessEventKind::Exec,
        ProcessEventKind::Fork => pb::ProcessEventKind::Fork,
        ProcessEventKind::Exit => pb::ProcessEventKind::Exit,
        ProcessEventKind::Snapshot => pb::ProcessEventKind::Snapshot,
        ProcessEventKind::CredChange => pb::ProcessEventKind::CredChange,
        ProcessEventKind::ExecFailed => pb::ProcessEventKind::ExecFailed,
    }
}

/// A process event kind from its raw wire value; `None` for unknown values.
pub fn process_kind_from_proto(raw: i32) -> Option<ProcessEventKind> {
    match pb::ProcessEventKind::try_from(raw) {
        Ok(pb::ProcessEventKind::Exec) => Some(ProcessEventKind::Exec),
        Ok(pb::ProcessEventKind::Fork) => Some(ProcessEventKind::Fork),
        Ok(pb::ProcessEventKind::Exit) => Some(ProcessEventKind::Exit),
        Ok(pb::ProcessEventKind::Snapshot) => Some(ProcessEventKind::Snapshot),
        Ok(pb::ProcessEventKind::CredChange) => Some(ProcessEventKind::CredChange),
        Ok(pb::ProcessEventKind::ExecFailed) => Some(ProcessEventKind::ExecFailed),
        _ => None,
    }
}

fn process_to_proto(e: &ProcessEvent) -> pb::ProcessEvent {
    pb::ProcessEvent {
        kind: process_kind_to_proto(e.kind) as i32,
        timestamp: Some(timestamp_to_proto(e.timestamp)),
        pid: e.pid,
        source: e.source.to_string(),
        ppid: e.ppid,
        uid: e.uid,
        gid: e.gid,
        name: owned(&e.name),
        executable_path: e.executable_path.clone(),
        command_line: e.command_line.clone(),
        command_line_truncated: e.command_line_truncated,
        start_time: e.start_time.map(timestamp_to_proto),
        exit_code: e.exit_code,
        cgroup_id: e.cgroup_id,
        executable_hash: e.executable_hash.clone(),
        hash_algorithm: e.hash_algorithm.clone(),
        child_pid: e.child_pid,
        credentials: e.credentials.as_ref().map(credentials_to_proto),
        old_credentials: e.old_credentials.as_ref().map(credentials_to_proto),
        secure_exec: e.secure_exec,
        errno: e.errno,
        syscall_nr: e.syscall_nr,
        compat_syscall: e.compat_syscall,
        process_key: owned(&e.process_key),
        child_start_time: e.child_start_time.map(timestamp_to_proto),
        executable_inode: e.executable_inode,
        executable_device: e.executable_device,
        executable_deleted: e.executable_deleted,
        memfd_name: e.memfd_name.clone(),
        interpreter: e.interpreter.clone(),
        namespace_pid: e.namespace_pid,
        pid_namespace_inode: e.pid_namespace_inode,
        cgroup_path: e.cgroup_path.clone(),
        cwd: e.cwd.clone(),
        executable_path_user_supplied: e.executable_path_user_supplied,
        executable_path_truncated: e.executable_path_truncated,
    }
}

fn credentials_to_proto(c: &ProcessCredentials) -> pb::ProcessCredentials {
    pb::ProcessCredentials {
        uid: c.uid,
        euid: c.euid,
        suid: c.suid,
        fsuid: c.fsuid,
        gid: c.gid,
        egid: c.egid,
        sgid: c.sgid,
        fsgid: c.fsgid,
        cap_effective: c.cap_effective,
        cap_permitted: c.cap_permitted,
        loginuid: c.loginuid,
        sessionid: c.sessionid,
    }
}

fn credentials_from_proto(c: pb::ProcessCredentials) -> ProcessCredentials {
    ProcessCredentials {
        uid: c.uid,
        euid: c.euid,
        suid: c.suid,
        fsuid: c.fsuid,
        gid: c.gid,
        egid: c.egid,
        sgid: c.sgid,
        fsgid: c.fsgid,
        cap_effective: c.cap_effective,
        cap_permitted: c.cap_permitted,
        loginuid: c.loginuid,
        sessionid: c.sessionid,
    }
}

fn process_from_proto(e: pb::ProcessEvent) -> Result<ProcessEvent, ConvertError> {
    let kind = process_kind_from_proto(e.kind).ok_or_else(|| unknown("process.kind", e.kind))?;
    Ok(ProcessEvent {
        kind,
        timestamp: timestamp_from_proto(e.timestamp, "process.timestamp")?,
        pid: e.pid,
        source: source_name(e.source),
        ppid: e.ppid,
        uid: e.uid,
        gid: e.gid,
        name: e.name.map(CompactString::from),
        executable_path: e.executable_path,
        command_line: e.command_line,
        command_line_truncated: e.command_line_truncated,
        start_time: e
            .start_time
            .map(|t| timestamp_from_proto(Some(t), "process.start_time"))
            .transpose()?,
        exit_code: e.exit_code,
        cgroup_id: e.cgroup_id,
        executable_hash: e.executable_hash,
        hash_algorithm: e.hash_algorithm,
        child_pid: e.child_pid,
        credentials: e.credentials.map(credentials_from_proto),
        old_credentials: e.old_credentials.map(credentials_from_proto),
        secure_exec: e.secure_exec,
        errno: e.errno,
        syscall_nr: e.syscall_nr,
        compat_syscall: e.compat_syscall,
        process_key: e.process_key.map(CompactString::from),
        child_start_time: e
            .child_start_time
            .map(|t| timestamp_from_proto(Some(t), "process.child_start_time"))
            .transpose()?,
        executable_inode: e.executable_inode,
        executable_device: e.executable_device,
        executable_deleted: e.executable_deleted,
        memfd_name: e.memfd_name,
        interpreter: e.interpreter,
        namespace_pid: e.namespace_pid,
        pid_namespace_inode: e.pid_namespace_inode,
        cgroup_path: e.cgroup_path,
        cwd: e.cwd,
        executable_path_user_supplied: e.executable_path_user_supplied,
        executable_path_truncated: e.executable_path_truncated,
    })
}

/// The wire value of a network event kind.
pub fn network_kind_to_proto(kind: NetworkEventKind) -> pb::NetworkEventKind {
    match kind {
        NetworkEventKind::Connect => pb::NetworkEventKind::Connect,
        NetworkEventKind::Accept => pb::NetworkEventKind::Accept,
        NetworkEventKind::Close => pb::NetworkEventKind::Close,
        NetworkEventKind::Listen => pb::NetworkEventKind::Listen,
        NetworkEventKind::Bind => pb::NetworkEventKind::Bind,
        NetworkEventKind::UdpSend => pb::NetworkEventKind::UdpSend,
    }
}

/// A network event kind from its raw wire value; `None` for unknown values.
pub fn network_kind_from_proto(raw: i32) -> Option<NetworkEventKind> {
    match pb::NetworkEventKind::try_from(raw) {
        Ok(pb::NetworkEventKind::Connect) => Some(NetworkEventKind::Connect),
        Ok(pb::NetworkEventKind::Accept) => Some(NetworkEventKind::Accept),
        Ok(pb::NetworkEventKind::Close) => Some(NetworkEventKind::Close),
        Ok(pb::NetworkEventKind::Listen) => Some(NetworkEventKind::Listen),
        Ok(pb::NetworkEventKind::Bind) => Some(NetworkEventKind::Bind),
        Ok(pb::NetworkEventKind::UdpSend) => Some(NetworkEventKind::UdpSend),
        _ => None,
    }
}

fn network_to_proto(e: &NetworkEvent) -> pb::NetworkEvent {
    pb::NetworkEvent {
        kind: network_kind_to_proto(e.kind) as i32,
        timestamp: Some(timestamp_to_proto(e.timestamp)),
        pid: e.pid,
        source: e.source.to_string(),
        protocol: protocol_to_proto(e.protocol) as i32,
        family: family_to_proto(e.family) as i32,
        source_addr: Some(addr_to_proto(&e.source_addr)),
        dest_addr: Some(addr_to_proto(&e.dest_addr)),
        state: owned(&e.state),
        connection_id: e.connection_id,
        uid: e.uid,
        name: owned(&e.name),
        errno: e.errno,
        previous_state: owned(&e.previous_state),
        socket_error: e.socket_error,
        unix_path: e.unix_path.clone(),
        send_count: e.send_count,
        count_update: e.count_update,
        io_uring: e.io_uring,
        compat_syscall: e.compat_syscall,
        fd_raced: e.fd_raced,
        process_key: owned(&e.process_key),
        process: e.process.as_deref().map(context_to_proto),
    }
}

fn context_to_proto(c: &ProcessContext) -> pb::ProcessContext {
    pb::ProcessContext {
        process_key: c.process_key.clone(),
        executable_path: c.executable_path.clone(),
        exec_name: c.exec_name.clone(),
        ppid: c.ppid,
        parent_process_key: c.parent_process_key.clone(),
    }
}

fn context_from_proto(c: pb::ProcessContext) -> ProcessContext {
    ProcessContext {
        process_key: c.process_key,
        executable_path: c.executable_path,
        exec_name: c.exec_name,
        ppid: c.ppid,
        parent_process_key: c.parent_process_key,
    }
}

fn network_from_proto(e: pb::NetworkEvent) -> Result<NetworkEvent, ConvertError> {
    let kind = network_kind_from_proto(e.kind).ok_or_else(|| unknown("network.kind", e.kind))?;
    Ok(NetworkEvent {
        kind,
        timestamp: timestamp_from_proto(e.timestamp, "network.timestamp")?,
        pid: e.pid,
        source: source_name(e.source),
        protocol: protocol_from_proto(e.protocol)?,
        family: family_from_proto(e.family)?,
        source_addr: addr_from_proto(e.source_addr, "network.source_addr")?,
        dest_addr: addr_from_proto(e.dest_addr, "network.dest_addr")?,
        state: e.state.map(CompactString::from),
        connection_id: e.connection_id,
        uid: e.uid,
        name: e.name.map(CompactString::from),
        errno: e.errno,
        previous_state: e.previous_state.map(CompactString::from),
        socket_error: e.socket_error,
        unix_path: e.unix_path,
        send_count: e.send_count,
        count_update: e.count_update,
        io_uring: e.io_uring,
        compat_syscall: e.compat_syscall,
        fd_raced: e.fd_raced,
        process_key: e.process_key.map(CompactString::from),
        process: e
            .process
            .map(|c| std::sync::Arc::new(context_from_proto(c))),
    })
}

/// The wire protocol value.
pub fn protocol_to_proto(p: TransportProtocol) -> pb::TransportProtocol {
    match p {
        TransportProtocol::Tcp => pb::TransportProtocol::Tcp,
        TransportProtocol::Udp => pb::TransportProtocol::Udp,
        TransportProtocol::Icmp => pb::TransportProtocol::Icmp,
        TransportProtocol::Sctp => pb::TransportProtocol::Sctp,
        TransportProtocol::Mptcp => pb::TransportProtocol::Mptcp,
        TransportProtocol::Raw => pb::TransportProtocol::Raw,
        TransportProtocol::Unix => pb::TransportProtocol::Unix,
        TransportProtocol::Other => pb::TransportProtocol::Other,
    }
}

/// A transport protocol from its raw wire value.
pub fn protocol_from_proto(raw: i32) -> Result<TransportProtocol, ConvertError> {
    match pb::TransportProtocol::try_from(raw) {
        Ok(pb::TransportProtocol::Tcp) => Ok(TransportProtocol::Tcp),
        Ok(pb::TransportProtocol::Udp) => Ok(TransportProtocol::Udp),
        Ok(pb::TransportProtocol::Icmp) => Ok(TransportProtocol::Icmp),
        Ok(pb::TransportProtocol::Sctp) => Ok(TransportProtocol::Sctp),
        Ok(pb::TransportProtocol::Mptcp) => Ok(TransportProtocol::Mptcp),
        Ok(pb::TransportProtocol::Raw) => Ok(TransportProtocol::Raw),
        Ok(pb::TransportProtocol::Unix) => Ok(TransportProtocol::Unix),
        Ok(pb::TransportProtocol::Other) => Ok(TransportProtocol::Other),
        _ => Err(unknown("protocol", raw)),
    }
}

/// The wire address-family value.
pub fn family_to_proto(f: AddressFamily) -> pb::AddressFamily {
    match f {
        AddressFamily::Ipv4 => pb::AddressFamily::Ipv4,
        AddressFamily::Ipv6 => pb::AddressFamily::Ipv6,
        AddressFamily::Unix => pb::AddressFamily::Unix,
    }
}

/// An address family from its raw wire value.
pub fn family_from_proto(raw: i32) -> Result<AddressFamily, ConvertError> {
    match pb::AddressFamily::try_from(raw) {
        Ok(pb::AddressFamily::Ipv4) => Ok(AddressFamily::Ipv4),
        Ok(pb::AddressFamily::Ipv6) => Ok(AddressFamily::Ipv6),
        Ok(pb::AddressFamily::Unix) => Ok(AddressFamily::Unix),
        _ => Err(unknown("family", raw)),
    }
}

/// The wire value of a filesystem event kind.
pub fn filesystem_kind_to_proto(kind: FilesystemEventKind) -> pb::FilesystemEventKind {
    match kind {
        FilesystemEventKind::Create => pb::FilesystemEventKind::Create,
        FilesystemEventKind::Open => pb::FilesystemEventKind::Open,
        FilesystemEventKind::Unlink => pb::FilesystemEventKind::Unlink,
        FilesystemEventKind::Rename => pb::FilesystemEventKind::Rename,
        FilesystemEventKind::Mkdir => pb::FilesystemEventKind::Mkdir,
        FilesystemEventKind::Rmdir => pb::FilesystemEventKind::Rmdir,
        FilesystemEventKind::Chmod => pb::FilesystemEventKind::Chmod,
        FilesystemEventKind::Chown => pb::FilesystemEventKind::Chown,
        FilesystemEventKind::Link => pb::FilesystemEventKind::Link,
        FilesystemEventKind::Symlink => pb::FilesystemEventKind::Symlink,
        FilesystemEventKind::MemfdCreate => pb::FilesystemEventKind::MemfdCreate,
        FilesystemEventKind::Tmpfile => pb::FilesystemEventKind::Tmpfile,
        FilesystemEventKind::OpenByHandleAt => pb::FilesystemEventKind::OpenByHandleAt,
        FilesystemEventKind::Mknod => pb::FilesystemEventKind::Mknod,
        FilesystemEventKind::Truncate => pb::FilesystemEventKind::Truncate,
        FilesystemEventKind::Setxattr => pb::FilesystemEventKind::Setxattr,
    }
}

/// A filesystem event kind from its raw wire value; `None` for unknown values.
pub fn filesystem_kind_from_proto(raw: i32) -> Option<FilesystemEventKind> {
    match pb::FilesystemEventKind::try_from(raw) {
        Ok(pb::FilesystemEventKind::Create) => Some(FilesystemEventKind::Create),
        Ok(pb::FilesystemEventKind::Open) => Some(FilesystemEventKind::Open),
        Ok(pb::FilesystemEventKind::Unlink) => Some(FilesystemEventKind::Unlink),
        Ok(pb::FilesystemEventKind::Rename) => Some(FilesystemEventKind::Rename),
        Ok(pb::FilesystemEventKind::Mkdir) => Some(FilesystemEventKind::Mkdir),
        Ok(pb::FilesystemEventKind::Rmdir) => Some(FilesystemEventKind::Rmdir),
        Ok(pb::FilesystemEventKind::Chmod) => Some(FilesystemEventKind::Chmod),
        Ok(pb::FilesystemEventKind::Chown) => Some(FilesystemEventKind::Chown),
        Ok(pb::FilesystemEventKind::Link) => Some(FilesystemEventKind::Link),
        Ok(pb::FilesystemEventKind::Symlink) => Some(FilesystemEventKind::Symlink),
        Ok(pb::FilesystemEventKind::MemfdCreate) => Some(FilesystemEventKind::MemfdCreate),
        Ok(pb::FilesystemEventKind::Tmpfile) => Some(FilesystemEventKind::Tmpfile),
        Ok(pb::FilesystemEventKind::OpenByHandleAt) => Some(FilesystemEventKind::OpenByHandleAt),
        Ok(pb::FilesystemEventKind::Mknod) => Some(FilesystemEventKind::Mknod),
        Ok(pb::FilesystemEventKind::Truncate) => Some(FilesystemEventKind::Truncate),
        Ok(pb::FilesystemEventKind::Setxattr) => Some(FilesystemEventKind::Setxattr),
        _ => None,
    }
}

fn filesystem_to_proto(e: &FilesystemEvent) -> pb::FilesystemEvent {
    pb::FilesystemEvent {
        kind: filesystem_kind_to_proto(e.kind) as i32,
        timestamp: Some(timestamp_to_proto(e.timestamp)),
        pid: e.pid,
        source: e.source.to_string(),
        path: e.path.clone(),
        new_path: e.new_path.clone(),
        path_relative: e.path_relative,
        flags: e.flags,
        mode: e.mode,
        result: e.result,
        uid: e.uid,
        name: owned(&e.name),
        path_truncated: e.path_truncated,
        path_unreadable: e.path_unreadable,
        path_user_supplied: e.path_user_supplied,
        compat_syscall: e.compat_syscall,
        owner_uid: e.owner_uid,
        owner_gid: e.owner_gid,
        process_key: owned(&e.process_key),
        path_changed: e.path_changed,
        new_path_truncated: e.new_path_truncated,
        new_path_unreadable: e.new_path_unreadable,
        new_path_user_supplied: e.new_path_user_supplied,
        new_path_changed: e.new_path_changed,
        io_uring: e.io_uring,
        device_major: e.device_major,
        device_minor: e.device_minor,
        length: e.length,
        xattr_name: e.xattr_name.clone(),
        fd_raced: e.fd_raced,
        process: e.process.as_deref().map(context_to_proto),
    }
}

fn filesystem_from_proto(e: pb::FilesystemEvent) -> Result<FilesystemEvent, ConvertError> {
    let kind =
        filesystem_kind_from_proto(e.kind).ok_or_else(|| unknown("filesystem.kind", e.kind))?;
    Ok(FilesystemEvent {
        kind,
        timestamp: timestamp_from_proto(e.timestamp, "filesystem.timestamp")?,
        pid: e.pid,
        source: source_name(e.source),
        path: e.path,
        new_path: e.new_path,
        path_relative: e.path_relative,
        flags: e.flags,
        mode: e.mode,
        result: e.result,
        uid: e.uid,
        name: e.name.map(CompactString::from),
        path_truncated: e.path_truncated,
        path_unreadable: e.path_unreadable,
        path_user_supplied: e.path_user_supplied,
        compat_syscall: e.compat_syscall,
        owner_uid: e.owner_uid,
        owner_gid: e.owner_gid,
        process_key: e.process_key.map(CompactString::from),
        path_changed: e.path_changed,
        new_path_truncated: e.new_path_truncated,
        new_path_unreadable: e.new_path_unreadable,
        new_path_user_supplied: e.new_path_user_supplied,
        new_path_changed: e.new_path_changed,
        io_uring: e.io_uring,
        device_major: e.device_major,
        device_minor: e.device_minor,
        length: e.length,
        xattr_name: e.xattr_name,
        fd_raced: e.fd_raced,
        process: e
            .process
            .map(|c| std::sync::Arc::new(context_from_proto(c))),
    })
}

/// The wire value of a performance event kind.
pub fn performance_kind_to_proto(kind: PerformanceEventKind) -> pb::PerformanceEventKind {
    match kind {
        PerformanceEventKind::Metric => pb::PerformanceEventKind::Metric,
    }
}

/// A performance event kind from its raw wire value; `None` for unknown values.
pub fn performance_kind_from_proto(raw: i32) -> Option<PerformanceEventKind> {
    match pb::PerformanceEventKind::try_from(raw) {
        Ok(pb::PerformanceEventKind::Metric) => Some(PerformanceEventKind::Metric),
        _ => None,
    }
}

fn performance_to_proto(e: &PerformanceEvent) -> pb::PerformanceEvent {
    pb::PerformanceEvent {
        kind: performance_kind_to_proto(e.kind) as i32,
        timestamp: Some(timestamp_to_proto(e.timestamp)),
        pid: e.pid,
        source: e.source.to_string(),
        metric_name: e.metric_name.clone(),
        value: e.value,
        unit: e.unit.clone(),
        component: e.component.clone(),
    }
}

fn performance_from_proto(e: pb::PerformanceEvent) -> Result<PerformanceEvent, ConvertError> {
    let kind =
        performance_kind_from_proto(e.kind).ok_or_else(|| unknown("performance.kind", e.kind))?;
    Ok(PerformanceEvent {
        kind,
        timestamp: timestamp_from_proto(e.timestamp, "performance.timestamp")?,
        pid: e.pid,
        source: source_name(e.source),
        metric_name: e.metric_name,
        value: e.value,
        unit: e.unit,
        component: e.component,
    })
}

// ---------------------------------------------------------------------------------------
// Status

fn health_to_proto(h: HealthState) -> pb::HealthState {
    match h {
        HealthState::Starting => pb::HealthState::Starting,
        HealthState::Healthy => pb::HealthState::Healthy,
        HealthState::Degraded => pb::HealthState::Degraded,
        HealthState::Failed => pb::HealthState::Failed,
        HealthState::Stopped => pb::HealthState::Stopped,
    }
}

fn health_from_proto(raw: i32) -> Result<HealthState, ConvertError> {
    match pb::HealthState::try_from(raw) {
        Ok(pb::HealthState::Starting) => Ok(HealthState::Starting),
        Ok(pb::HealthState::Healthy) => Ok(HealthState::Healthy),
        Ok(pb::HealthState::Degraded) => Ok(HealthState::Degraded),
        Ok(pb::HealthState::Failed) => Ok(HealthState::Failed),
        Ok(pb::HealthState::Stopped) => Ok(HealthState::Stopped),
        _ => Err(unknown("source.health", raw)),
    }
}

/// The status as sent on the wire: typed fields plus the whole snapshot as JSON.
pub fn status_to_proto(s: &StatusSnapshot) -> pb::StatusResponse {
    pb::StatusResponse {
        version: s.version.clone(),
        component_name: s.component_name.clone(),
        uptime_seconds: s.uptime_seconds,
        capabilities: Some(caps_to_proto(s.capabilities)),
        sources: s
            .sources
            .iter()
            .map(|src| pb::SourceStatus {
                name: src.name.clone(),
                capabilities: Some(caps_to_proto(src.capabilities)),
                health: health_to_proto(src.health) as i32,
                last_error: src.last_error.clone(),
                events_received: src.events_received,
                dropped: src.dropped.clone(),
                stats: Some(pb::SourceStats {
                    kernel_lost: src.stats.kernel_lost.clone(),
                    kernel_emitted: src.stats.kernel_emitted.clone(),
                    dropped: src.stats.dropped.clone(),
                    hooks: src.stats.hooks.clone(),
                    reattached: src.stats.reattached.clone(),
                }),
                queue_depth: src.queue_depth,
                queue_high_water: src.queue_high_water,
            })
            .collect(),
        counters: Some(pb::PipelineCounters {
            events_received: s.counters.events_received,
            dropped: s.counters.dropped.clone(),
            batches: s.counters.batches,
            queue_depth: s.counters.queue_depth,
            queue_high_water: s.counters.queue_high_water,
            sink_dropped: s.counters.sink_dropped.clone(),
            subscribers: s.counters.subscribers,
            events_delivered: s.counters.events_delivered,
            batch_size_mean: s.counters.batch_size_mean,
            batch_size_max: s.counters.batch_size_max,
            latency_mean_us: s.counters.latency_mean_us,
            latency_max_us: s.counters.latency_max_us,
        }),
        export: s.export.as_ref().map(|e| pb::ExportStatus {
            connected: e.connected,
            servers: e.servers.clone(),
            stream: e.stream.clone(),
            spool_bytes: e.spool_bytes,
            spool_events: e.spool_events,
            oldest_unacked_age_seconds: e.oldest_unacked_age_seconds,
            spooled: e.spooled,
            published: e.published,
            acked: e.acked,
            published_events: e.published_events,
            acked_events: e.acked_events,
            duplicates: e.duplicates,
            dropped: e.dropped.clone(),
            last_error: e.last_error.clone(),
        }),
        // Serializing a snapshot cannot fail (string-keyed maps only); an empty string
        // would only mean "no extra fields" to a reader anyway.
        snapshot_json: serde_json::to_string(s).unwrap_or_default(),
    }
}

/// The status from the wire: the typed fields (exact), laid over the JSON copy (which
/// carries fields newer than the typed schema).
pub fn status_from_proto(s: pb::StatusResponse) -> Result<StatusSnapshot, ConvertError> {
    let mut value = serde_json::from_str::<serde_json::Value>(&s.snapshot_json)
        .unwrap_or_else(|_| serde_json::json!({}));
    let counters = s.counters.unwrap_or_default();
    let export = s.export.map(|e| {
        serde_json::json!({
            "connected": e.connected,
            "servers": e.servers,
            "stream": e.stream,
            "spool_bytes": e.spool_bytes,
            "spool_events": e.spool_events,
            "oldest_unacked_age_seconds": e.oldest_unacked_age_seconds,
            "spooled": e.spooled,
            "published": e.published,
            "acked": e.acked,
            "published_events": e.published_events,
            "acked_events": e.acked_events,
            "duplicates": e.duplicates,
            "dropped": e.dropped,
            "last_error": e.last_error,
        })
    });
    let sources = s
        .sources
        .into_iter()
        .map(|src| {
            let stats = src.stats.unwrap_or_default();
            let health = health_from_proto(src.health)?;
            Ok(serde_json::json!({
                "name": src.name,
                "capabilities": caps_from_proto(&src.capabilities.unwrap_or_default()),
                "health": health,
                "last_error": src.last_error,
                "events_received": src.events_received,
                "dropped": src.dropped,
                "stats": SourceStats {
                    kernel_lost: stats.kernel_lost,
                    kernel_emitted: stats.kernel_emitted,
                    dropped: stats.dropped,
                    hooks: stats.hooks,
                    reattached: stats.reattached,
                },
                "queue_depth": src.queue_depth,
                "queue_high_water": src.queue_high_water,
            }))
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    // Built through JSON so that fields the runtime adds later (all `#[serde(default)]`)
    // need no change here.
    let typed = serde_json::json!({
        "version": s.version,
        "component_name": s.component_name,
        "uptime_seconds": s.uptime_seconds,
        "capabilities": caps_from_proto(&s.capabilities.unwrap_or_default()),
        "sources": sources,
        "counters": {
            "events_received": counters.events_received,
            "dropped": counters.dropped,
            "batches": counters.batches,
            "queue_depth": counters.queue_depth,
            "queue_high_water": counters.queue_high_water,
            "sink_dropped": counters.sink_dropped,
            "subscribers": counters.subscribers,
            "events_delivered": counters.events_delivered,
            "batch_size_mean": counters.batch_size_mean,
            "batch_size_max": counters.batch_size_max,
            "latency_mean_us": counters.latency_mean_us,
            "latency_max_us": counters.latency_max_us,
        },
    });
    merge_json(&mut value, typed);
    if let (Some(export), Some(obj)) = (export, value.as_object_mut()) {
        obj.insert("export".into(), export);
    }
    serde_json::from_value(value).map_err(|_| ConvertError::Missing("status fields"))
}

/// Lays `over` onto `base`: objects merge key by key, equal-length arrays element by
/// element, anything else is replaced.
fn merge_json(base: &mut serde_json::Value, over: serde_json::Value) {
    use serde_json::Value;
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if b.len() == o.len() => {
            for (slot, v) in b.iter_mut().zip(o) {
                merge_json(slot, v);
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;
    use crate::status::ExportStatus;

    fn snapshot() -> StatusSnapshot {
        let mut dropped = std::collections::BTreeMap::new();
        dropped.insert("export_spool_full".to_owned(), 3);
        let mut reattached = std::collections::BTreeMap::new();
        reattached.insert("sys_exit_openat".to_owned(), 2);
        StatusSnapshot {
            version: "1".into(),
            component_name: "collector".into(),
            uptime_seconds: 1.5,
            capabilities: crate::SourceCaps::PROCESS,
            sources: vec![crate::status::SourceStatus {
                name: "ebpf-filesystem".into(),
                capabilities: crate::SourceCaps::FILESYSTEM,
                health: HealthState::Degraded,
                last_error: Some("detached".into()),
                restarts: 0,
                events_received: 7,
                events_by_kind: Default::default(),
                dropped: Default::default(),
                stats: SourceStats {
                    reattached,
                    ..SourceStats::default()
                },
                queue_depth: 0,
                queue_high_water: 0,
            }],
            counters: Default::default(),
            export: Some(ExportStatus {
                connected: true,
                servers: vec!["nats://127.0.0.1:4222".into()],
                stream: "COLLECTOR".into(),
                spool_bytes: 4096,
                spool_events: 12,
                oldest_unacked_age_seconds: 0.25,
                spooled: 100,
                published: 90,
                acked: 88,
                published_events: 90,
                acked_events: 88,
                duplicates: 1,
                dropped,
                last_error: Some("timeout".into()),
            }),
            domains: Vec::new(),
            processes: None,
        }
    }

    /// The export status and the reattach counts travel as typed fields: a reader that
    /// ignores `snapshot_json` still gets them.
    #[test]
    fn export_status_and_reattaches_are_typed_on_the_wire() {
        let s = snapshot();
        let mut wire = status_to_proto(&s);
        let export = wire.export.clone().expect("typed export status");
        assert_eq!(
            (export.spool_events, export.spool_bytes, export.duplicates),
            (12, 4096, 1)
        );
        assert_eq!(export.oldest_unacked_age_seconds, 0.25);
        assert_eq!(
            wire.sources[0].stats.as_ref().unwrap().reattached["sys_exit_openat"],
            2
        );
        wire.snapshot_json.clear();
        let back = status_from_proto(wire).unwrap();
        assert_eq!(back.export, s.export);
        assert_eq!(
            back.sources[0].stats.reattached,
            s.sources[0].stats.reattached
        );

        let mut off = s.clone();
        off.export = None;
        let wire = status_to_proto(&off);
        assert!(wire.export.is_none());
        assert_eq!(status_from_proto(wire).unwrap().export, None);
    }
}
