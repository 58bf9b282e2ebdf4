//! `Envelope { event_batch }` payloads written straight from borrowed events.
//!
//! The output is byte for byte what prost writes for
//! `Envelope { request_id: 0, body: EventBatch { events: events.map(event_to_proto) } }`:
//! fields in number order, proto3 defaults left out, `optional` fields written whenever
//! they are set. An event is written in one pass (see `push_event`); the small messages
//! inside it take their lengths from the same generic routine run with a byte counter,
//! so length and bytes cannot disagree.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::BufMut;
use chrono::{DateTime, Utc};
use prost::encoding::{encode_key, encode_varint, WireType};
use std::net::SocketAddr;

use super::field::{
    common, credentials, envelope, event, event_batch, filesystem, network, performance, process,
    process_context, socket_address, timestamp,
};
use super::varint_len;
use super::wire_type::{FIXED64, LEN, VARINT};
use crate::event::{
    context_cache, CollectionEvent, FilesystemEvent, NetworkEvent, PerformanceEvent,
    ProcessContext, ProcessCredentials, ProcessEvent,
};
use crate::ipc::convert::{
    family_to_proto, filesystem_kind_to_proto, network_kind_to_proto, performance_kind_to_proto,
    process_kind_to_proto, protocol_to_proto,
};

/// Where encoded bytes go: a counter (for lengths) or a buffer.
trait Out {
    fn put(&mut self, bytes: &[u8]);
    fn varint(&mut self, v: u64);
}

/// Counts the bytes an encoding takes.
struct Count(usize);

impl Out for Count {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }

    #[inline]
    fn varint(&mut self, v: u64) {
        self.0 += varint_len(v);
    }
}

/// Writes the encoding at the end of a `Vec` (an event's body, a context's cache).
///
/// Varints go in byte by byte after one capacity check: through `BufMut::put_slice`
/// each became a `memcpy` call of 1-10 bytes, which perf showed as a tenth of the
/// daemon's CPU in the open storm.
struct VecOut<'a>(&'a mut Vec<u8>);

impl Out for VecOut<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    #[inline]
    fn varint(&mut self, mut v: u64) {
        let len = self.0.len();
        // A u64 takes at most ten bytes.
        self.0.reserve(10);
        let spare = &mut self.0.spare_capacity_mut()[..10];
        let mut n = 0;
        while v >= 0x80 {
            spare[n].write((v as u8) | 0x80);
            v >>= 7;
            n += 1;
        }
        spare[n].write(v as u8);
        // SAFETY: the `n + 1` bytes after `len` were written just above.
        unsafe { self.0.set_len(len + n + 1) };
    }
}

/// Writes the encoding into a slice that has room for it (an event's prefix).
struct SliceOut<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Out for SliceOut<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        self.buf[self.pos..end].copy_from_slice(bytes);
        self.pos = end;
    }

    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf[self.pos] = (v as u8) | 0x80;
            v >>= 7;
            self.pos += 1;
        }
        self.buf[self.pos] = v as u8;
        self.pos += 1;
    }
}

fn len_of(body: impl FnOnce(&mut Count)) -> usize {
    let mut count = Count(0);
    body(&mut count);
    count.0
}

// ---------------------------------------------------------------------------------------
// Scalar fields, with prost's rules for what is left out

#[inline]
fn key(o: &mut impl Out, field: u32, wire_type: u8) {
    o.varint(u64::from((field << 3) | u32::from(wire_type)));
}

/// A proto3 varint field (uint32, uint64, enums, int64): left out when zero.
#[inline]
fn varint(o: &mut impl Out, field: u32, v: u64) {
    if v != 0 {
        key(o, field, VARINT);
        o.varint(v);
    }
}

/// An `optional` varint field: written whenever set, zero included.
#[inline]
fn opt_varint(o: &mut impl Out, field: u32, v: Option<u64>) {
    if let Some(v) = v {
        key(o, field, VARINT);
        o.varint(v);
    }
}

/// int32 goes on the wire sign-extended to 64 bits (so -1 takes ten bytes).
#[inline]
fn int32(v: i32) -> u64 {
    i64::from(v) as u64
}

#[inline]
fn boolean(o: &mut impl Out, field: u32, v: bool) {
    varint(o, field, u64::from(v));
}

/// A proto3 double: left out when it compares equal to zero (so `-0.0` is left out too).
#[inline]
fn double(o: &mut impl Out, field: u32, v: f64) {
    if v != 0.0 {
        key(o, field, FIXED64);
        o.put(&v.to_le_bytes());
    }
}

#[inline]
fn bytes_always(o: &mut impl Out, field: u32, v: &[u8]) {
    key(o, field, LEN);
    o.varint(v.len() as u64);
    o.put(v);
}

/// A proto3 string or bytes field: left out when empty.
#[inline]
fn bytes(o: &mut impl Out, field: u32, v: &[u8]) {
    if !v.is_empty() {
        bytes_always(o, field, v);
    }
}

#[inline]
fn string(o: &mut impl Out, field: u32, v: &str) {
    bytes(o, field, v.as_bytes());
}

#[inline]
fn opt_string(o: &mut impl Out, field: u32, v: Option<&str>) {
    if let Some(v) = v {
        bytes_always(o, field, v.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// Nested messages

/// A set message field: written even when its own fields are all defaults.
///
/// The seconds are worked out once (chrono's date-to-days math, remembered per day by
/// `unix_seconds`) and the message's length from them, instead of encoding the body
/// twice.
fn timestamp_field(o: &mut impl Out, field: u32, ts: &DateTime<Utc>) {
    let (seconds, nanos) = (
        crate::event::unix_seconds(ts) as u64,
        u64::from(ts.timestamp_subsec_nanos()),
    );
    // Fields 1 and 2 have one-byte keys; zero values are left out.
    let field_len = |v: u64| if v == 0 { 0 } else { 1 + varint_len(v) };
    key(o, field, LEN);
    o.varint((field_len(seconds) + field_len(nanos)) as u64);
    varint(o, timestamp::SECONDS, seconds);
    varint(o, timestamp::NANOS, nanos);
}

fn address_body(o: &mut impl Out, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            bytes(o, socket_address::IP, &a.ip().octets());
            varint(o, socket_address::PORT, u64::from(a.port()));
        }
        SocketAddr::V6(a) => {
            bytes(o, socket_address::IP, &a.ip().octets());
            varint(o, socket_address::PORT, u64::from(a.port()));
            varint(o, socket_address::FLOW_INFO, u64::from(a.flowinfo()));
            varint(o, socket_address::SCOPE_ID, u64::from(a.scope_id()));
        }
    }
}

fn credentials_body(o: &mut impl Out, c: &ProcessCredentials) {
    varint(o, credentials::UID, u64::from(c.uid));
    varint(o, credentials::EUID, u64::from(c.euid));
    varint(o, credentials::SUID, u64::from(c.suid));
    varint(o, credentials::FSUID, u64::from(c.fsuid));
    varint(o, credentials::GID, u64::from(c.gid));
    varint(o, credentials::EGID, u64::from(c.egid));
    varint(o, credentials::SGID, u64::from(c.sgid));
    varint(o, credentials::FSGID, u64::from(c.fsgid));
    varint(o, credentials::CAP_EFFECTIVE, c.cap_effective);
    varint(o, credentials::CAP_PERMITTED, c.cap_permitted);
    opt_varint(o, credentials::LOGINUID, c.loginuid.map(u64::from));
    opt_varint(o, credentials::SESSIONID, c.sessionid.map(u64::from));
}

fn credentials_field(o: &mut impl Out, field: u32, c: &ProcessCredentials) {
    key(o, field, LEN);
    o.varint(len_of(|n| credentials_body(n, c)) as u64);
    credentials_body(o, c);
}

fn context_body(o: &mut impl Out, c: &ProcessContext) {
    string(o, process_context::PROCESS_KEY, &c.process_key);
    opt_string(
        o,
        process_context::EXECUTABLE_PATH,
        c.executable_path.as_deref(),
    );
    opt_string(o, process_context::EXEC_NAME, c.exec_name.as_deref());
    opt_varint(o, process_context::PPID, c.ppid.map(u64::from));
    opt_string(
        o,
        process_context::PARENT_PROCESS_KEY,
        c.parent_process_key.as_deref(),
    );
}

thread_local! {
    /// The body of the process context encoded last (see `event::context_cache`): its
    /// strings are then encoded once, not twice per event (sizing and writing).
    static LAST_CONTEXT: context_cache::Slot = const { RefCell::new(None) };
}

/// Runs `f` on the encoded body of `c`, from [`LAST_CONTEXT`] when `c` is the context
/// encoded last on this thread.
fn with_context_body<R>(c: &Arc<ProcessContext>, f: impl FnMut(&[u8]) -> R) -> R {
    context_cache::with_rendered(
        &LAST_CONTEXT,
        c,
        |body| context_body(&mut VecOut(body), c),
        f,
    )
}

/// A `ProcessContext` field (absent when `None`; present, possibly empty, when set, as
/// prost writes a set message field).
fn context_field(o: &mut impl Out, field: u32, c: Option<&Arc<ProcessContext>>) {
    if let Some(c) = c {
        key(o, field, LEN);
        with_context_body(c, |body| {
            o.varint(body.len() as u64);
            o.put(body);
        });
    }
}

fn address_field(o: &mut impl Out, field: u32, addr: &SocketAddr) {
    key(o, field, LEN);
    o.varint(len_of(|c| address_body(c, addr)) as u64);
    address_body(o, addr);
}

// ---------------------------------------------------------------------------------------
// Events

fn process_body(o: &mut impl Out, e: &ProcessEvent) {
    varint(o, common::KIND, process_kind_to_proto(e.kind) as u64);
    timestamp_field(o, common::TIMESTAMP, &e.timestamp);
    varint(o, common::PID, u64::from(e.pid));
    string(o, common::SOURCE, &e.source);
    opt_varint(o, process::PPID, e.ppid.map(u64::from));
    opt_varint(o, process::UID, e.uid.map(u64::from));
    opt_varint(o, process::GID, e.gid.map(u64::from));
    opt_string(o, process::NAME, e.name.as_deref());
    opt_string(o, process::EXECUTABLE_PATH, e.executable_path.as_deref());
    for arg in &e.command_line {
        // Repeated strings keep empty elements.
        bytes_always(o, process::COMMAND_LINE, arg.as_bytes());
    }
    boolean(o, process::COMMAND_LINE_TRUNCATED, e.command_line_truncated);
    if let Some(start) = &e.start_time {
        timestamp_field(o, process::START_TIME, start);
    }
    opt_varint(o, process::EXIT_CODE, e.exit_code.map(int32));
    opt_varint(o, process::CGROUP_ID, e.cgroup_id);
    opt_string(o, process::EXECUTABLE_HASH, e.executable_hash.as_deref());
    opt_string(o, process::HASH_ALGORITHM, e.hash_algorithm.as_deref());
    opt_varint(o, process::CHILD_PID, e.child_pid.map(u64::from));
    if let Some(c) = &e.credentials {
        credentials_field(o, process::CREDENTIALS, c);
    }
    if let Some(c) = &e.old_credentials {
        credentials_field(o, process::OLD_CREDENTIALS, c);
    }
    boolean(o, process::SECURE_EXEC, e.secure_exec);
    opt_varint(o, process::ERRNO, e.errno.map(int32));
    opt_varint(o, process::SYSCALL_NR, e.syscall_nr.map(u64::from));
    boolean(o, process::COMPAT_SYSCALL, e.compat_syscall);
    opt_string(o, process::PROCESS_KEY, e.process_key.as_deref());
    if let Some(t) = &e.child_start_time {
        timestamp_field(o, process::CHILD_START_TIME, t);
    }
    opt_varint(o, process::EXECUTABLE_INODE, e.executable_inode);
    opt_varint(
        o,
        process::EXECUTABLE_DEVICE,
        e.executable_device.map(u64::from),
    );
    boolean(o, process::EXECUTABLE_DELETED, e.executable_deleted);
    opt_string(o, process::MEMFD_NAME, e.memfd_name.as_deref());
    opt_string(o, process::INTERPRETER, e.interpreter.as_deref());
    opt_varint(o, process::NAMESPACE_PID, e.namespace_pid.map(u64::from));
    opt_varint(
        o,
        process::PID_NAMESPACE_INODE,
        e.pid_namespace_inode.map(u64::from),
    );
    opt_string(o, process::CGROUP_PATH, e.cgroup_path.as_deref());
    opt_string(o, process::CWD, e.cwd.as_deref());
    boolean(
        o,
        process::EXECUTABLE_PATH_USER_SUPPLIED,
        e.executable_path_user_supplied,
    );
    boolean(
        o,
        process::EXECUTABLE_PATH_TRUNCATED,
        e.executable_path_truncated,
    );
}

fn network_body(o: &mut impl Out, e: &NetworkEvent) {
    varint(o, common::KIND, network_kind_to_proto(e.kind) as u64);
    timestamp_field(o, common::TIMESTAMP, &e.timestamp);
    varint(o, common::PID, u64::from(e.pid));
    string(o, common::SOURCE, &e.source);
    varint(o, network::PROTOCOL, protocol_to_proto(e.protocol) as u64);
    varint(o, network::FAMILY, family_to_proto(e.family) as u64);
    address_field(o, network::SOURCE_ADDR, &e.source_addr);
    address_field(o, network::DEST_ADDR, &e.dest_addr);
    opt_string(o, network::STATE, e.state.as_deref());
    varint(o, network::CONNECTION_ID, e.connection_id);
    opt_varint(o, network::UID, e.uid.map(u64::from));
    opt_string(o, network::NAME, e.name.as_deref());
    opt_varint(o, network::ERRNO, e.errno.map(u64::from));
    opt_string(o, network::PREVIOUS_STATE, e.previous_state.as_deref());
    opt_varint(o, network::SOCKET_ERROR, e.socket_error.map(u64::from));
    opt_string(o, network::UNIX_PATH, e.unix_path.as_deref());
    opt_varint(o, network::SEND_COUNT, e.send_count);
    boolean(o, network::COUNT_UPDATE, e.count_update);
    boolean(o, network::IO_URING, e.io_uring);
    boolean(o, network::COMPAT_SYSCALL, e.compat_syscall);
    boolean(o, network::FD_RACED, e.fd_raced);
    opt_string(o, network::PROCESS_KEY, e.process_key.as_deref());
    context_field(o, network::PROCESS, e.process.as_ref());
}

fn filesystem_body(o: &mut impl Out, e: &FilesystemEvent) {
    varint(o, common::KIND, filesystem_kind_to_proto(e.kind) as u64);
    timestamp_field(o, common::TIMESTAMP, &e.timestamp);
    varint(o, common::PID, u64::from(e.pid));
    string(o, common::SOURCE, &e.source);
    string(o, filesystem::PATH, &e.path);
    opt_string(o, filesystem::NEW_PATH, e.new_path.as_deref());
    boolean(o, filesystem::PATH_RELATIVE, e.path_relative);
    opt_varint(o, filesystem::FLAGS, e.flags.map(u64::from));
    opt_varint(o, filesystem::MODE, e.mode.map(u64::from));
    opt_varint(o, filesystem::RESULT, e.result.map(|r| r as u64));
    opt_varint(o, filesystem::UID, e.uid.map(u64::from));
    opt_string(o, filesystem::NAME, e.name.as_deref());
    boolean(o, filesystem::PATH_TRUNCATED, e.path_truncated);
    boolean(o, filesystem::PATH_UNREADABLE, e.path_unreadable);
    boolean(o, filesystem::PATH_USER_SUPPLIED, e.path_user_supplied);
    boolean(o, filesystem::COMPAT_SYSCALL, e.compat_syscall);
    opt_varint(o, filesystem::OWNER_UID, e.owner_uid.map(u64::from));
    opt_varint(o, filesystem::OWNER_GID, e.owner_gid.map(u64::from));
    opt_string(o, filesystem::PROCESS_KEY, e.process_key.as_deref());
    boolean(o, filesystem::PATH_CHANGED, e.path_changed);
    boolean(o, filesystem::NEW_PATH_TRUNCATED, e.new_path_truncated);
    boolean(o, filesystem::NEW_PATH_UNREADABLE, e.new_path_unreadable);
    boolean(
        o,
        filesystem::NEW_PATH_USER_SUPPLIED,
        e.new_path_user_supplied,
    );
    boolean(o, filesystem::NEW_PATH_CHANGED, e.new_path_changed);
    boolean(o, filesystem::IO_URING, e.io_uring);
    opt_varint(o, filesystem::DEVICE_MAJOR, e.device_major.map(u64::from));
    opt_varint(o, filesystem::DEVICE_MINOR, e.device_minor.map(u64::from));
    opt_varint(o, filesystem::LENGTH, e.length);
    opt_string(o, filesystem::XATTR_NAME, e.xattr_name.as_deref());
    context_field(o, filesystem::PROCESS, e.process.as_ref());
    boolean(o, filesystem::FD_RACED, e.fd_raced);
}

fn performance_body(o: &mut impl Out, e: &PerformanceEvent) {
    varint(o, common::KIND, performance_kind_to_proto(e.kind) as u64);
    timestamp_field(o, common::TIMESTAMP, &e.timestamp);
    varint(o, common::PID, u64::from(e.pid));
    string(o, common::SOURCE, &e.source);
    string(o, performance::METRIC_NAME, &e.metric_name);
    double(o, performance::VALUE, e.value);
    string(o, performance::UNIT, &e.unit);
    string(o, performance::COMPONENT, &e.component);
}

/// The body of the message `ev`'s `Event.event` oneof holds; returns that field's number.
fn variant_body(o: &mut impl Out, ev: &CollectionEvent) -> u32 {
    match ev {
        CollectionEvent::Process(e) => {
            process_body(o, e);
            event::PROCESS
        }
        CollectionEvent::Network(e) => {
            network_body(o, e);
            event::NETWORK
        }
        CollectionEvent::Filesystem(e) => {
            filesystem_body(o, e);
            event::FILESYSTEM
        }
        CollectionEvent::Performance(e) => {
            performance_body(o, e);
            event::PERFORMANCE
        }
    }
}

/// Appends `ev` to `buf` as one `Event` message (the oneof key, its length, the domain
/// message), preceded by the `EventBatch.events` key and length when `entry`; returns
/// the bytes appended.
///
/// One pass: the domain message is written after room for the longest possible prefix,
/// then moved back behind the prefix its length needs (a copy of a few hundred cache-hot
/// bytes costs less than sizing every field first).
fn push_event(buf: &mut Vec<u8>, ev: &CollectionEvent, entry: bool) -> usize {
    // Keys of fields 1-4 take one byte; a length of up to 2^35 takes five.
    const ROOM: usize = 2 * (1 + 5);
    let start = buf.len();
    buf.resize(start + ROOM, 0);
    let variant = variant_body(&mut VecOut(buf), ev);
    let body_len = buf.len() - start - ROOM;
    let event_len = 1 + varint_len(body_len as u64) + body_len;
    let mut prefix = [0u8; ROOM];
    let mut o = SliceOut {
        buf: &mut prefix,
        pos: 0,
    };
    if entry {
        key(&mut o, event_batch::EVENTS, LEN);
        o.varint(event_len as u64);
    }
    key(&mut o, variant, LEN);
    o.varint(body_len as u64);
    let prefix_len = o.pos;
    buf.copy_within(start + ROOM.., start + prefix_len);
    buf[start..start + prefix_len].copy_from_slice(&prefix[..prefix_len]);
    buf.truncate(start + prefix_len + body_len);
    prefix_len + body_len
}

/// The `events` entries of an `EventBatch`, encoded back to back as events are pushed:
/// each event is encoded once, whatever frame it ends up in.
#[derive(Debug, Default)]
pub struct BatchEntries {
    bytes: Vec<u8>,
}

impl BatchEntries {
    /// No entries.
    pub const fn new() -> Self {
        Self { bytes: Vec::new() }
    }

    /// Appends `ev`; returns the bytes its entry takes.
    pub fn push(&mut self, ev: &CollectionEvent) -> usize {
        push_event(&mut self.bytes, ev, true)
    }

    /// The entries, encoded.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes of the entries.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Keeps the first `len` bytes (a whole number of entries: a length returned by
    /// [`len`](Self::len) before a push).
    pub fn truncate(&mut self, len: usize) {
        self.bytes.truncate(len);
    }

    /// Drops the first `len` bytes (entries already sent), keeping the rest.
    pub fn consume(&mut self, len: usize) {
        self.bytes.drain(..len);
    }

    /// Removes every entry, keeping the allocation.
    pub fn clear(&mut self) {
        self.bytes.clear();
    }
}

impl<'a> Extend<&'a CollectionEvent> for BatchEntries {
    fn extend<I: IntoIterator<Item = &'a CollectionEvent>>(&mut self, events: I) {
        for ev in events {
            self.push(ev);
        }
    }
}

/// An `EventBatch` envelope around entries already encoded ([`BatchEntries`]).
#[derive(Debug, Clone, Copy)]
pub struct EventBatchFrame<'a> {
    entries: &'a [u8],
}

impl<'a> EventBatchFrame<'a> {
    /// A frame carrying `entries` (whole entries from [`BatchEntries::as_bytes`]).
    pub fn new(entries: &'a [u8]) -> Self {
        Self { entries }
    }

    /// Bytes of the payload (the encoded envelope).
    pub fn payload_len(&self) -> usize {
        let batch = self.entries.len();
        1 + varint_len(batch as u64) + batch
    }

    /// Appends the payload to `buf`; writes exactly [`payload_len`](Self::payload_len) bytes.
    pub fn write_payload(&self, buf: &mut impl BufMut) {
        // request_id is 0 on pushes, which proto3 leaves out.
        encode_key(envelope::EVENT_BATCH, WireType::LengthDelimited, buf);
        encode_varint(self.entries.len() as u64, buf);
        buf.put_slice(self.entries);
    }
}

/// Appends the payload of an `EventBatch` envelope holding `events` to `buf` (the frame
/// header is the codec's business); returns its length.
pub fn encode_event_batch<'a>(
    events: impl IntoIterator<Item = &'a CollectionEvent>,
    buf: &mut impl BufMut,
) -> usize {
    let mut entries = BatchEntries::new();
    entries.extend(events);
    let frame = EventBatchFrame::new(entries.as_bytes());
    frame.write_payload(buf);
    frame.payload_len()
}

/// Appends `event` as one bare `collector.v1.Event` message (no envelope), byte for byte
/// what prost writes for `event_to_proto(event)`; returns its length. The fleet exporter
/// publishes each event this way, one NATS message per event.
pub fn encode_event(event: &CollectionEvent, buf: &mut Vec<u8>) -> usize {
    push_event(buf, event, false)
}
