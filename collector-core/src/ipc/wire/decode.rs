//! `Envelope { event_batch }` payloads read straight into [`CollectionEvent`]s.
//!
//! [`decode_event_batch`] takes the input protobuf encoders write: every message's
//! fields in ascending number order, each once (`command_line` and `events` repeat in a
//! run), no unknown fields, valid values. On that input it gives exactly what prost's
//! `Envelope::decode` followed by `event_from_proto` gives, without the intermediate
//! messages. On any other input it returns `None` and the caller falls back to prost,
//! which then settles merges, unknown fields and errors the standard way.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::field::{
    common, credentials, envelope, event, event_batch, filesystem, network, performance, process,
    process_context, socket_address, timestamp,
};
use super::wire_type::{FIXED64, LEN, VARINT};
use crate::event::{
    CollectionEvent, CompactString, FilesystemEvent, NetworkEvent, PerformanceEvent,
    ProcessContext, ProcessCredentials, ProcessEvent, SourceName,
};
use crate::ipc::convert::{
    family_from_proto, filesystem_kind_from_proto, network_kind_from_proto,
    performance_kind_from_proto, process_kind_from_proto, protocol_from_proto,
};

/// Decodes an `Envelope` payload that holds an `EventBatch`: appends its events to
/// `events` and returns its `request_id`.
///
/// `None` when the payload is anything else or not in the canonical layout (see the
/// module docs), with `events` as it was; decode it with prost then.
pub fn decode_event_batch(
    payload: &[u8],
    names: &mut SourceNames,
    events: &mut Vec<CollectionEvent>,
) -> Option<u64> {
    let before = events.len();
    let decoded = envelope(payload, names, events);
    if decoded.is_none() {
        events.truncate(before);
    }
    decoded
}

fn envelope(
    payload: &[u8],
    names: &mut SourceNames,
    events: &mut Vec<CollectionEvent>,
) -> Option<u64> {
    let mut fields = Fields::new(payload);
    let mut request_id = 0;
    let mut batches = 0;
    while let Some((field, wire_type)) = fields.next(0)? {
        match (field, wire_type) {
            (envelope::REQUEST_ID, VARINT) => request_id = fields.r.varint()?,
            (envelope::EVENT_BATCH, LEN) => {
                batch(fields.r.len_delimited()?, names, events)?;
                batches += 1;
            }
            _ => return None,
        }
    }
    (batches == 1).then_some(request_id)
}

fn batch(body: &[u8], names: &mut SourceNames, events: &mut Vec<CollectionEvent>) -> Option<()> {
    // Count first: growing the vector would move every (large) event several times.
    let mut count = 0;
    let mut fields = Fields::new(body);
    while let Some((field, wire_type)) = fields.next(event_batch::EVENTS)? {
        if (field, wire_type) != (event_batch::EVENTS, LEN) {
            return None;
        }
        fields.r.len_delimited()?;
        count += 1;
    }
    events.reserve(count);
    let mut r = Reader { buf: body };
    while !r.buf.is_empty() {
        r.key()?;
        events.push(one_event(r.len_delimited()?, names)?);
    }
    Some(())
}

fn one_event(body: &[u8], names: &mut SourceNames) -> Option<CollectionEvent> {
    let mut r = Reader { buf: body };
    let (field, wire_type) = r.key()?;
    if wire_type != LEN {
        return None;
    }
    let inner = r.len_delimited()?;
    if !r.buf.is_empty() {
        // A second oneof field would replace (or merge into) the first: prost's call.
        return None;
    }
    match field {
        event::PROCESS => process_event(inner, names).map(|e| CollectionEvent::Process(e.into())),
        event::NETWORK => network_event(inner, names).map(|e| CollectionEvent::Network(e.into())),
        event::FILESYSTEM => filesystem_event(inner, names).map(CollectionEvent::from),
        event::PERFORMANCE => performance_event(inner, names).map(CollectionEvent::Performance),
        _ => None,
    }
}

/// Fields 1-4, common to every event message.
#[derive(Default)]
struct Common<'a> {
    kind: i32,
    timestamp: Option<DateTime<Utc>>,
    pid: u32,
    source: &'a str,
}

impl<'a> Common<'a> {
    /// Reads the field if it is one of the common ones; `Some(false)` if it is not.
    /// Inlined: every field of every event passes through here.
    #[inline(always)]
    fn read(&mut self, field: u32, wire_type: u8, r: &mut Reader<'a>) -> Option<bool> {
        match (field, wire_type) {
            // Enums and uint32 are truncated from the varint as prost does.
            (common::KIND, VARINT) => self.kind = r.varint()? as i32,
            (common::TIMESTAMP, LEN) => self.timestamp = Some(timestamp(r.len_delimited()?)?),
            (common::PID, VARINT) => self.pid = r.varint()? as u32,
            (common::SOURCE, LEN) => self.source = r.str()?,
            _ => return Some(false),
        }
        Some(true)
    }
}

fn process_event(body: &[u8], names: &mut SourceNames) -> Option<ProcessEvent> {
    let mut c = Common::default();
    let (mut ppid, mut uid, mut gid, mut exit_code, mut cgroup_id, mut child_pid) =
        (None, None, None, None, None, None);
    let (mut name, mut executable_path, mut executable_hash, mut hash_algorithm) =
        (None, None, None, None);
    let mut command_line = Vec::new();
    let mut command_line_truncated = false;
    let mut start_time = None;
    let (mut creds, mut old_creds, mut secure_exec, mut errno, mut syscall_nr) =
        (None, None, false, None, None);
    let (mut compat_syscall, mut process_key, mut child_start_time) = (false, None, None);
    let (mut executable_inode, mut executable_device, mut executable_deleted) = (None, None, false);
    let (mut memfd_name, mut interpreter) = (None, None);
    let (mut namespace_pid, mut pid_namespace_inode, mut cgroup_path) = (None, None, None);
    let (mut cwd, mut exe_user_supplied, mut exe_truncated) = (None, false, false);
    let mut fields = Fields::new(body);
    while let Some((field, wire_type)) = fields.next(process::COMMAND_LINE)? {
        let r = &mut fields.r;
        if c.read(field, wire_type, r)? {
            continue;
        }
        match (field, wire_type) {
            (process::PPID, VARINT) => ppid = Some(r.varint()? as u32),
            (process::UID, VARINT) => uid = Some(r.varint()? as u32),
            (process::GID, VARINT) => gid = Some(r.varint()? as u32),
            (process::NAME, LEN) => name = Some(r.str()?),
            (process::EXECUTABLE_PATH, LEN) => executable_path = Some(r.str()?),
            (process::COMMAND_LINE, LEN) => command_line.push(r.str()?.to_owned()),
            (process::COMMAND_LINE_TRUNCATED, VARINT) => command_line_truncated = r.varint()? != 0,
            (process::START_TIME, LEN) => start_time = Some(timestamp(r.len_delimited()?)?),
            (process::EXIT_CODE, VARINT) => exit_code = Some(r.varint()? as i32),
            (process::CGROUP_ID, VARINT) => cgroup_id = Some(r.varint()?),
            (process::EXECUTABLE_HASH, LEN) => executable_hash = Some(r.str()?),
            (process::HASH_ALGORITHM, LEN) => hash_algorithm = Some(r.str()?),
            (process::CHILD_PID, VARINT) => child_pid = Some(r.varint()? as u32),
            (process::CREDENTIALS, LEN) => creds = Some(credentials_msg(r.len_delimited()?)?),
            (process::OLD_CREDENTIALS, LEN) => {
                old_creds = Some(credentials_msg(r.len_delimited()?)?)
            }
            (process::SECURE_EXEC, VARINT) => secure_exec = r.varint()? != 0,
            (process::ERRNO, VARINT) => errno = Some(r.varint()? as i32),
            (process::SYSCALL_NR, VARINT) => syscall_nr = Some(r.varint()? as u32),
            (process::COMPAT_SYSCALL, VARINT) => compat_syscall = r.varint()? != 0,
            (process::PROCESS_KEY, LEN) => process_key = Some(r.str()?),
            (process::CHILD_START_TIME, LEN) => {
                child_start_time = Some(timestamp(r.len_delimited()?)?)
            }
            (process::EXECUTABLE_INODE, VARINT) => executable_inode = Some(r.varint()?),
            (process::EXECUTABLE_DEVICE, VARINT) => executable_device = Some(r.varint()? as u32),
            (process::EXECUTABLE_DELETED, VARINT) => executable_deleted = r.varint()? != 0,
            (process::MEMFD_NAME, LEN) => memfd_name = Some(r.str()?),
            (process::INTERPRETER, LEN) => interpreter = Some(r.str()?),
            (process::NAMESPACE_PID, VARINT) => namespace_pid = Some(r.varint()? as u32),
            (process::PID_NAMESPACE_INODE, VARINT) => {
                pid_namespace_inode = Some(r.varint()? as u32)
            }
            (process::CGROUP_PATH, LEN) => cgroup_path = Some(r.str()?),
            (process::CWD, LEN) => cwd = Some(r.str()?),
            (process::EXECUTABLE_PATH_USER_SUPPLIED, VARINT) => {
                exe_user_supplied = r.varint()? != 0
            }
            (process::EXECUTABLE_PATH_TRUNCATED, VARINT) => exe_truncated = r.varint()? != 0,
            _ => return None,
        }
    }
    Some(ProcessEvent {
        kind: process_kind_from_proto(c.kind)?,
        timestamp: c.timestamp?,
        pid: c.pid,
        source: names.get(c.source),
        ppid,
        uid,
        gid,
        name: name.map(CompactString::from),
        executable_path: executable_path.map(str::to_owned),
        command_line,
        command_line_truncated,
        start_time,
        exit_code,
        cgroup_id,
        executable_hash: executable_hash.map(str::to_owned),
        hash_algorithm: hash_algorithm.map(str::to_owned),
        child_pid,
        credentials: creds,
        old_credentials: old_creds,
        secure_exec,
        errno,
        syscall_nr,
        compat_syscall,
        process_key: process_key.map(CompactString::from),
        child_start_time,
        executable_inode,
        executable_device,
        executable_deleted,
        memfd_name: memfd_name.map(str::to_owned),
        interpreter: interpreter.map(str::to_owned),
        namespace_pid,
        pid_namespace_inode,
        cgroup_path: cgroup_path.map(str::to_owned),
        cwd: cwd.map(str::to_owned),
        executable_path_user_supplied: exe_user_supplied,
        executable_path_truncated: exe_truncated,
    })
}

fn credentials_msg(body: &[u8]) -> Option<ProcessCredentials> {
    let mut c = ProcessCredentials::default();
    let mut fields = Fields::new(body);
    while let Some((field, wire_type)) = fields.next(0)? {
        if wire_type != VARINT {
            return None;
        }
        let v = fields.r.varint()?;
        match field {
            credentials::UID => c.uid = v as u32,
            credentials::EUID => c.euid = v as u32,
            credentials::SUID => c.suid = v as u32,
            credentials::FSUID => c.fsuid = v as u32,
            credentials::GID => c.gid = v as u32,
            credentials::EGID => c.egid = v as u32,
            credentials::SGID => c.sgid = v as u32,
            credentials::FSGID => c.fsgid = v as u32,
            credentials::CAP_EFFECTIVE => c.cap_effective = v,
            credentials::CAP_PERMITTED => c.cap_permitted = v,
            credentials::LOGINUID => c.loginuid = Some(v as u32),
            credentials::SESSIONID => c.sessionid = Some(v as u32),
            _ => return None,
        }
    }
    Some(c)
}

fn context_msg(body: &[u8]) -> Option<ProcessContext> {
    let mut c = ProcessContext::default();
    let mut fields = Fields::new(body);
    while let Some((field, wire_type)) = fields.next(0)? {
        let r = &mut fields.r;
        match (field, wire_type) {
            (process_context::PROCESS_KEY, LEN) => c.process_key = r.str()?.to_owned(),
            (process_context::EXECUTABLE_PATH, LEN) => {
                c.executable_path = Some(r.str()?.to_owned())
            }
            (process_context::EXEC_NAME, LEN) => c.exec_name = Some(r.str()?.to_owned()),
            (process_context::PPID, VARINT) => c.ppid = Some(r.varint()? as u32),
            (process_context::PARENT_PROCESS_KEY, LEN) => {
                c.parent_process_key = Some(r.str()?.to_owned())
            }
            _ => return None,
        }
    }
    Some(c)
}

fn network_event(body: &[u8], names: &mut SourceNames) -> Option<NetworkEvent> {
    let mut c = Common::default();
    let (mut protocol, mut family, mut connection_id) = (0i32, 0i32, 0u64);
    let (mut source_addr, mut dest_addr, mut state, mut uid, mut name) =
        (None, None, None, None, None);
    let (mut errno, mut previous_state, mut socket_error, mut unix_path, mut send_count) =
        (None, None, None, None, None);
    let (mut count_update, mut io_uring, mut compat_syscall) = (false, false, false);
    let mut fd_raced = false;
    let mut process_key = None;
    let mut process = None;
    let mut fields = Fields::new(body);
    while let Some((field, wire_type)) = fields.next(0)? {
        let r = &mut fields.r;
        if c.read(field, wire_type, r)? {
            continue;
        }
        match (field, wire_type) {
            (network::PROTOCOL, VARINT) => protocol = r.varint()? as i32,
            (network::FAMILY, VARINT) => family = r.varint()? as i32,
            (network::SOURCE_ADDR, LEN) => source_addr = Some(address(r.len_delimited()?)?),
            (network::DEST_ADDR, LEN) => dest_addr = Some(address(r.len_delimited()?)?),
            (network::STATE, LEN) => state = Some(r.str()?),
            (network::CONNECTION_ID, VARINT) => connection_id = r.varint()?,
            (network::UID, VARINT) => uid = Some(r.varint()? as u32),
            (network::NAME, LEN) => name = Some(r.str()?),
            (network::ERRNO, VARINT) => errno = Some(r.varint()? as u32),
            (network::PREVIOUS_STATE, LEN) => previous_state = Some(r.str()?),
            (network::SOCKET_ERROR, VARINT) => socket_error = Some(r.varint()? as u32),
            (network::UNIX_PATH, LEN) => unix_path = Some(r.str()?),
            (network::SEND_COUNT, VARINT) => send_count = Some(r.varint()?),
            (network::COUNT_UPDATE, VARINT) => count_update = r.varint()? != 0,
            (network::IO_URING, VARINT) => io_uring = r.varint()? != 0,
            (network::COMPAT_SYSCALL, VARINT) => compat_syscall = r.varint()? != 0,
            (network::FD_RACED, VARINT) => fd_raced = r.varint()? != 0,
            (network::PROCESS_KEY, LEN) => process_key = Some(r.str()?),
            (network::PROCESS, LEN) => process = Some(names.context(r.len_delimited()?)?),
            _ => return None,
        }
    }
    Some(NetworkEvent {
        kind: network_kind_from_proto(c.kind)?,
        timestamp: c.timestamp?,
        pid: c.pid,
        source: names.get(c.source),
        protocol: protocol_from_proto(protocol).ok()?,
        family: family_from_proto(family).ok()?,
        source_addr: source_addr?,
        dest_addr: dest_addr?,
        state: state.map(CompactString::from),
        connection_id,
        uid,
        name: name.map(CompactString::from),
        errno,
        previous_state: previous_state.map(CompactString::from),
        socket_error,
        unix_path: unix_path.map(str::to_owned),
        send_count,
        count_update,
        io_uring,
        compat_syscall,
        fd_raced,
        process_key: process_key.map(CompactString::from),
        process,
    })
}

fn filesystem_event(body: &[u8], names: &mut SourceNames) -> Option<FilesystemEvent> {
    let mut c = Common::default();
    let (mut path, mut new_path, mut name) = ("", None, None);
    let mut path_relative = false;
    let (mut path_truncated, mut path_unreadable, mut path_user_supplied) = (false, false, false);
    let mut compat_syscall = false;
    let (mut owner_uid, mut owner_gid) = (None, None);
    let mut process_key = None;
    let mut path_changed = false;
    let mut new_path_truncated = false;
    let mut new_path_unreadable = false;
    let mut new_path_user_supplied = false;
    let mut new_path_changed = false;
    let mut io_uring = false;
    let (mut device_major, mut device_minor) = (None, None);
    let mut length = None;
    let mut xattr_name = None;
    let mut fd_raced = false;
    let mut process = None;
    let (mut flags, mut mode, mut result, mut uid) = (None, None, None, None);
    let mut fields = Fields::new(body);
    while let Some((field, wire_type)) = fields.next(0)? {
        let r = &mut fields.r;
        if c.read(field, wire_type, r)? {
            continue;
        }
        match (field, wire_type) {
            (filesystem::PATH, LEN) => path = r.str()?,
            (filesystem::NEW_PATH, LEN) => new_path = Some(r.str()?),
            (filesystem::PATH_RELATIVE, VARINT) => path_relative = r.varint()? != 0,
            (filesystem::FLAGS, VARINT) => flags = Some(r.varint()? as u32),
            (filesystem::MODE, VARINT) => mode = Some(r.varint()? as u32),
            (filesystem::RESULT, VARINT) => result = Some(r.varint()? as i64),
            (filesystem::UID, VARINT) => uid = Some(r.varint()? as u32),
            (filesystem::NAME, LEN) => name = Some(r.str()?),
            (filesystem::PATH_TRUNCATED, VARINT) => path_truncated = r.varint()? != 0,
            (filesystem::PATH_UNREADABLE, VARINT) => path_unreadable = r.varint()? != 0,
            (filesystem::PATH_USER_SUPPLIED, VARINT) => path_user_supplied = r.varint()? != 0,
            (filesystem::COMPAT_SYSCALL, VARINT) => compat_syscall = r.varint()? != 0,
            (filesystem::OWNER_UID, VARINT) => owner_uid = Some(r.varint()? as u32),
            (filesystem::OWNER_GID, VARINT) => owner_gid = Some(r.varint()? as u32),
            (filesystem::PROCESS_KEY, LEN) => process_key = Some(r.str()?),
            (filesystem::PATH_CHANGED, VARINT) => path_changed = r.varint()? != 0,
            (filesystem::NEW_PATH_TRUNCATED, VARINT) => new_path_truncated = r.varint()? != 0,
            (filesystem::NEW_PATH_UNREADABLE, VARINT) => new_path_unreadable = r.varint()? != 0,
            (filesystem::NEW_PATH_USER_SUPPLIED, VARINT) => {
                new_path_user_supplied = r.varint()? != 0
            }
            (filesystem::NEW_PATH_CHANGED, VARINT) => new_path_changed = r.varint()? != 0,
            (filesystem::IO_URING, VARINT) => io_uring = r.varint()? != 0,
            (filesystem::DEVICE_MAJOR, VARINT) => device_major = Some(r.varint()? as u32),
            (filesystem::DEVICE_MINOR, VARINT) => device_minor = Some(r.varint()? as u32),
            (filesystem::LENGTH, VARINT) => length = Some(r.varint()?),
            (filesystem::XATTR_NAME, LEN) => xattr_name = Some(r.str()?),
            (filesystem::PROCESS, LEN) => process = Some(names.context(r.len_delimited()?)?),
            (filesystem::FD_RACED, VARINT) => fd_raced = r.varint()? != 0,
            _ => return None,
        }
    }
    Some(FilesystemEvent {
        kind: filesystem_kind_from_proto(c.kind)?,
        timestamp: c.timestamp?,
        pid: c.pid,
        source: names.get(c.source),
        path: path.to_owned(),
        new_path: new_path.map(str::to_owned),
        path_relative,
        flags,
        mode,
        result,
        uid,
        name: name.map(CompactString::from),
        path_truncated,
        path_unreadable,
        path_user_supplied,
        compat_syscall,
        owner_uid,
        owner_gid,
        process_key: process_key.map(CompactString::from),
        path_changed,
        new_path_truncated,
        new_path_unreadable,
        new_path_user_supplied,
        new_path_changed,
        io_uring,
        device_major,
        device_minor,
        length,
        xattr_name: xattr_name.map(str::to_owned),
        fd_raced,
        process,
    })
}

fn performance_event(body: &[u8], names: &mut SourceNames) -> Option<PerformanceEvent> {
    let mut c = Common::default();
    let (mut metric_name, mut unit, mut component) = ("", "", "");
    let mut value = 0.0;
    let mut fields = Fields::new(body);
    while let Some((field, wire_type)) = fields.next(0)? {
        let r = &mut fields.r;
        if c.read(field, wire_type, r)? {
            continue;
        }
        match (field, wire_type) {
            (performance::METRIC_NAME, LEN) => metric_name = r.str()?,
            (performance::VALUE, FIXED64) => value = f64::from_le_bytes(r.fixed64()?),
            (performance::UNIT, LEN) => unit = r.str()?,
            (performance::COMPONENT, LEN) => component = r.str()?,
            _ => return None,
        }
    }
    Some(PerformanceEvent {
        kind: performance_kind_from_proto(c.kind)?,
        timestamp: c.timestamp?,
        pid: c.pid,
        source: names.get(c.source),
        metric_name: metric_name.to_owned(),
        value,
        unit: unit.to_owned(),
        component: component.to_owned(),
    })
}

fn timestamp(body: &[u8]) -> Option<DateTime<Utc>> {
    let (mut seconds, mut nanos) = (0i64, 0u32);
    let mut fields = Fields::new(body);
    while let Some((field, wire_type)) = fields.next(0)? {
        match (field, wire_type) {
            (timestamp::SECONDS, VARINT) => seconds = fields.r.varint()? as i64,
            (timestamp::NANOS, VARINT) => nanos = fields.r.varint()? as u32,
            _ => return None,
        }
    }
    crate::event::utc_from_unix(seconds, nanos)
}

/// Mirrors `convert::addr_from_proto`: 4 bytes are IPv4 (flow info and scope ignored),
/// 16 bytes IPv6, the port must fit in 16 bits.
fn address(body: &[u8]) -> Option<SocketAddr> {
    let (mut ip, mut port, mut flow_info, mut scope_id) = (&[][..], 0u32, 0u32, 0u32);
    let mut fields = Fields::new(body);
    while let Some((field, wire_type)) = fields.next(0)? {
        let r = &mut fields.r;
        match (field, wire_type) {
            (socket_address::IP, LEN) => ip = r.len_delimited()?,
            (socket_address::PORT, VARINT) => port = r.varint()? as u32,
            (socket_address::FLOW_INFO, VARINT) => flow_info = r.varint()? as u32,
            (socket_address::SCOPE_ID, VARINT) => scope_id = r.varint()? as u32,
            _ => return None,
        }
    }
    let port = u16::try_from(port).ok()?;
    if let Ok(octets) = <[u8; 4]>::try_from(ip) {
        Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(octets),
            port,
        )))
    } else if let Ok(octets) = <[u8; 16]>::try_from(ip) {
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(octets),
            port,
            flow_info,
            scope_id,
        )))
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// Reading primitives: `None` means "not for the fast path", never a verdict on the input.

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A varint exactly as prost reads it: at most ten bytes, the tenth at most 1.
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        // Keys, kinds, lengths of short strings: nearly every varint is one byte.
        match self.buf.split_first() {
            Some((&b, rest)) if b < 0x80 => {
                self.buf = rest;
                Some(u64::from(b))
            }
            _ => self.varint_long(),
        }
    }

    #[inline(never)]
    fn varint_long(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().take(10).enumerate() {
            if i == 9 && b > 1 {
                return None;
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Some(value);
            }
        }
        None
    }

    /// A field key: (field number, wire type).
    #[inline]
    fn key(&mut self) -> Option<(u32, u8)> {
        let key = u32::try_from(self.varint()?).ok()?;
        Some((key >> 3, (key & 7) as u8))
    }

    #[inline]
    fn len_delimited(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.buf.len() {
            return None;
        }
        let (body, rest) = self.buf.split_at(len);
        self.buf = rest;
        Some(body)
    }

    #[inline]
    fn str(&mut self) -> Option<&'a str> {
        let bytes = self.len_delimited()?;
        // Nearly every string here (paths, names, argv) is ASCII: checked inline a word
        // at a time, it skips the call into the general UTF-8 validator, which was 5-8%
        // of a subscriber's time on short strings.
        if bytes.is_ascii() {
            // SAFETY: ASCII is valid UTF-8.
            return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).ok()
    }

    #[inline]
    fn fixed64(&mut self) -> Option<[u8; 8]> {
        let (bytes, rest) = self.buf.split_first_chunk::<8>()?;
        self.buf = rest;
        Some(*bytes)
    }
}

/// The fields of one message, which must come in ascending order.
struct Fields<'a> {
    r: Reader<'a>,
    last: u32,
}

impl<'a> Fields<'a> {
    fn new(body: &'a [u8]) -> Self {
        Self {
            r: Reader { buf: body },
            last: 0,
        }
    }

    /// The next field's key; `Some(None)` at the end of the message, `None` when the
    /// order is broken (only `repeated_field` may follow itself).
    #[inline]
    fn next(&mut self, repeated_field: u32) -> Option<Option<(u32, u8)>> {
        if self.r.buf.is_empty() {
            return Some(None);
        }
        let (field, wire_type) = self.r.key()?;
        if field < self.last || (field == self.last && field != repeated_field) {
            return None;
        }
        self.last = field;
        Some(Some((field, wire_type)))
    }
}

// ---------------------------------------------------------------------------------------
// Source names

/// Names kept for the life of the process, so events from the same source share one.
///
/// Bounded so that a peer sending made-up names cannot grow a client: past the bounds,
/// names are simply allocated per event.
static INTERNED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
const MAX_INTERNED_NAMES: usize = 256;
const MAX_INTERNED_NAME_BYTES: usize = 64;
/// Names a decoder checks before taking the process-wide lock.
const RECENT_NAMES: usize = 8;

/// A decoder's cache of source names and process contexts, kept for a connection.
///
/// A collector has a handful of sources, so nearly every event's `source` is one already
/// seen and costs no allocation. Network and filesystem events carry their process's
/// context, and a busy process sends many events in a row: a context whose encoded bytes
/// equal those of one decoded lately is that same context, so it is shared (one `Arc`)
/// instead of decoded again into five new allocations.
#[derive(Debug, Default)]
pub struct SourceNames {
    recent: Vec<&'static str>,
    contexts: Vec<(Box<[u8]>, Arc<ProcessContext>)>,
    /// Where the next context not in `contexts` goes, once it is full.
    next_context: usize,
}

/// Contexts a decoder remembers: a few processes interleave their events.
const RECENT_CONTEXTS: usize = 8;
/// Larger contexts (long executable paths) are decoded each time rather than kept.
const MAX_CACHED_CONTEXT_BYTES: usize = 1024;

impl SourceNames {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The name as a [`SourceName`], shared when it can be.
    pub fn get(&mut self, name: &str) -> SourceName {
        if name.is_empty() {
            return Cow::Borrowed("");
        }
        if let Some(hit) = self.recent.iter().find(|n| **n == name) {
            return Cow::Borrowed(hit);
        }
        match intern(name) {
            Some(shared) => {
                if self.recent.len() == RECENT_NAMES {
                    self.recent.remove(0);
                }
                self.recent.push(shared);
                Cow::Borrowed(shared)
            }
            None => Cow::Owned(name.to_owned()),
        }
    }
}

impl SourceNames {
    /// The context encoded as `body`: the one decoded from the same bytes lately, or a
    /// new one.
    fn context(&mut self, body: &[u8]) -> Option<Arc<ProcessContext>> {
        if let Some((_, hit)) = self.contexts.iter().find(|(bytes, _)| **bytes == *body) {
            return Some(hit.clone());
        }
        let context = Arc::new(context_msg(body)?);
        if body.len() <= MAX_CACHED_CONTEXT_BYTES {
            let entry = (Box::from(body), context.clone());
            if self.contexts.len() < RECENT_CONTEXTS {
                self.contexts.push(entry);
            } else {
                self.contexts[self.next_context] = entry;
                self.next_context = (self.next_context + 1) % RECENT_CONTEXTS;
            }
        }
        Some(context)
    }
}

fn intern(name: &str) -> Option<&'static str> {
    if name.len() > MAX_INTERNED_NAME_BYTES {
        return None;
    }
    // Only pushes happen under the lock, so a poisoned list is still consistent.
    let mut interned = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hit) = interned.iter().find(|n| **n == name) {
        return Some(hit);
    }
    if interned.len() >= MAX_INTERNED_NAMES {
        return None;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    interned.push(leaked);
    Some(leaked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_edges_follow_prost() {
        let cases: &[&[u8]] = &[
            &[0x00],
            &[0x80, 0x00], // overlong zero
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // u64::MAX
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], // overflow
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ], // 11 bytes
            &[0x80],       // truncated
        ];
        for bytes in cases {
            let ours = Reader { buf: bytes }.varint();
            let prost = prost::encoding::decode_varint(&mut &bytes[..]).ok();
            assert_eq!(ours, prost, "{bytes:02x?}");
        }
    }

    /// Every length, canonical and overlong, alone and followed by other bytes, read as
    /// prost reads it and leaving exactly the rest.
    #[test]
    fn varints_of_every_length_on_both_paths_follow_prost() {
        let mut values: Vec<u64> = (0..64).flat_map(|b| [1u64 << b, (1u64 << b) - 1]).collect();
        values.extend([
            u64::MAX,
            0x0123_4567_89ab_cdef,
            300,
            1_700_000_000,
            999_999_999,
        ]);
        let mut encodings: Vec<Vec<u8>> = Vec::new();
        for v in values {
            let mut canonical = Vec::new();
            prost::encoding::encode_varint(v, &mut canonical);
            // The same value padded with continuation bytes up to ten bytes long.
            for extra in 0..=10usize.saturating_sub(canonical.len()) {
                let mut padded = canonical.clone();
                if extra > 0 {
                    *padded.last_mut().unwrap() |= 0x80;
                    padded.extend(std::iter::repeat_n(0x80, extra - 1));
                    padded.push(0x00);
                }
                encodings.push(padded);
            }
        }
        for encoding in encodings {
            for tail in [&[][..], &[0xaa], &[0x01; 9]] {
                let bytes: Vec<u8> = encoding.iter().chain(tail).copied().collect();
                let mut reader = Reader { buf: &bytes };
                let ours = reader.varint();
                let mut rest = &bytes[..];
                let prost = prost::encoding::decode_varint(&mut rest).ok();
                assert_eq!(ours, prost, "{bytes:02x?}");
                if prost.is_some() {
                    assert_eq!(reader.buf, rest, "{bytes:02x?}");
                }
            }
        }
    }

    #[test]
    fn a_context_seen_lately_is_shared_and_still_decoded_exactly() {
        use crate::event::{FilesystemEvent, FilesystemEventKind};
        let context = |pid: u32, exe: &str| {
            Arc::new(ProcessContext {
                process_key: format!("{pid}:1000"),
                executable_path: Some(exe.into()),
                exec_name: Some("cat".into()),
                ppid: Some(1),
                parent_process_key: Some("1:5".into()),
            })
        };
        let long_exe = format!("/{}", "x".repeat(2 * MAX_CACHED_CONTEXT_BYTES));
        let contexts = [
            context(7, "/usr/bin/cat"),
            context(8, "/usr/bin/cat"),
            context(7, &long_exe),
        ];
        // Runs of one process, interleavings, more processes than the cache holds.
        let order: Vec<usize> = [0, 0, 0, 1, 0, 1, 2, 2, 0]
            .into_iter()
            .chain((0..40).map(|i| i % 3))
            .collect();
        let more: Vec<Arc<ProcessContext>> =
            (100..120).map(|pid| context(pid, "/bin/sh")).collect();
        let originals: Vec<CollectionEvent> = order
            .iter()
            .map(|&i| contexts[i].clone())
            .chain(more.iter().cloned().cycle().take(60))
            .enumerate()
            .map(|(n, process)| {
                CollectionEvent::from(FilesystemEvent {
                    kind: FilesystemEventKind::Open,
                    timestamp: DateTime::from_timestamp(1_700_000_000, n as u32).unwrap(),
                    pid: process
                        .process_key
                        .split(':')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap(),
                    source: "ebpf-filesystem".into(),
                    path: "/etc/hostname".into(),
                    new_path: None,
                    path_relative: false,
                    flags: Some(0),
                    mode: Some(0),
                    result: Some(3),
                    uid: Some(0),
                    name: Some("cat".into()),
                    path_truncated: false,
                    path_unreadable: false,
                    path_user_supplied: true,
                    compat_syscall: false,
                    owner_uid: None,
                    owner_gid: None,
                    process_key: Some(process.process_key.as_str().into()),
                    path_changed: false,
                    new_path_truncated: false,
                    new_path_unreadable: false,
                    new_path_user_supplied: false,
                    new_path_changed: false,
                    io_uring: false,
                    device_major: None,
                    device_minor: None,
                    length: None,
                    xattr_name: None,
                    fd_raced: false,
                    process: Some(process),
                })
            })
            .collect();
        let mut payload = Vec::new();
        crate::ipc::wire::encode_event_batch(&originals, &mut payload);
        let mut names = SourceNames::new();
        let mut decoded = Vec::new();
        decode_event_batch(&payload, &mut names, &mut decoded).expect("canonical layout");
        assert_eq!(decoded, originals);
        let process = |ev: &CollectionEvent| match ev {
            CollectionEvent::Filesystem(f) => f.process.clone().unwrap(),
            _ => unreachable!(),
        };
        // The first run of one process shares one context; the long one is never kept.
        assert!(Arc::ptr_eq(&process(&decoded[0]), &process(&decoded[2])));
        assert!(!Arc::ptr_eq(&process(&decoded[0]), &process(&decoded[3])));
        assert!(!Arc::ptr_eq(&process(&decoded[6]), &process(&decoded[7])));
        assert!(names.contexts.len() <= RECENT_CONTEXTS);
        assert!(names
            .contexts
            .iter()
            .all(|(bytes, _)| bytes.len() <= MAX_CACHED_CONTEXT_BYTES));
        // A second batch from the same decoder still decodes to the same events.
        let mut again = Vec::new();
        decode_event_batch(&payload, &mut names, &mut again).expect("canonical layout");
        assert_eq!(again, originals);
    }

    #[test]
    fn timestamps_match_chrono_across_days_and_edges() {
        let day = 86_400i64;
        let mut cases = vec![
            (0, 0),
            (-1, 999_999_999),
            (day - 1, 1_500_000_000), // a leap second
            (day - 2, 1_500_000_000), // not a leap second position
            (1_700_000_000, 2_000_000_000),
            (i64::MAX, 0),
            (i64::MIN, 0),
            (8_210_298_412_799, 0), // chrono's last representable second
            (8_210_298_412_800, 0),
            (-62_167_219_200 - 262_144 * 365 * day, 0),
        ];
        // The same day twice, then others: the cache must not leak a date across days.
        for s in [
            1_700_000_000,
            1_700_000_001,
            1_700_086_400,
            1_699_999_999,
            -86_401,
        ] {
            cases.push((s, 7));
        }
        for (s, n) in cases {
            assert_eq!(
                crate::event::utc_from_unix(s, n),
                DateTime::from_timestamp(s, n),
                "{s} {n}"
            );
        }
    }

    #[test]
    fn keys_above_u32_are_not_truncated_into_valid_fields() {
        // Field 1 with bit 35 set: prost rejects the key; it must not read as field 1.
        let mut buf = Vec::new();
        prost::encoding::encode_varint((1u64 << 35) | (1 << 3), &mut buf);
        assert_eq!(Reader { buf: &buf }.key(), None);
    }

    #[test]
    fn source_names_are_shared_and_bounded() {
        let mut names = SourceNames::new();
        let a = names.get("ebpf-process");
        let b = SourceNames::new().get("ebpf-process");
        match (&a, &b) {
            (Cow::Borrowed(a), Cow::Borrowed(b)) => assert!(std::ptr::eq(*a, *b)),
            other => panic!("expected shared names, got {other:?}"),
        }
        let long = "x".repeat(MAX_INTERNED_NAME_BYTES + 1);
        assert!(matches!(names.get(&long), Cow::Owned(s) if s == long));
    }

    #[test]
    fn fields_out_of_order_or_repeated_leave_the_fast_path() {
        let decode = |payload: &[u8]| {
            let mut events = Vec::new();
            decode_event_batch(payload, &mut SourceNames::new(), &mut events)
        };
        // Envelope { event_batch = 9 } then request_id = 1: valid protobuf, not canonical.
        assert_eq!(decode(&[0x4a, 0x00, 0x08, 0x01]), None);
        // Twice the same singular field.
        assert_eq!(decode(&[0x08, 0x01, 0x08, 0x02, 0x4a, 0x00]), None);
        // No batch at all: some other envelope.
        assert_eq!(decode(&[0x08, 0x01]), None);
        // The canonical form: request_id 1, empty batch.
        assert_eq!(decode(&[0x08, 0x01, 0x4a, 0x00]), Some(1));
    }
}
