//! The JSON lines of filesystem, process and network events written by hand: the bytes
//! serde writes, faster.
//!
//! `collector events` writes every event it receives as a JSON line: in a file storm
//! nearly every event is a filesystem event with its process context (about 30 keys and
//! 10 strings a line), in an exec storm a process event with its argv and credentials, in
//! a connection storm a network event with two addresses. Through serde each key and
//! string goes through serde_json's byte-at-a-time escaper and the `io::Write` calls of a
//! map serializer, and each address and timestamp through `fmt`; here the keys are
//! constants copied whole and strings are scanned eight bytes at a time.
//!
//! The output is byte for byte `serde_json::to_writer` of the event (the property test
//! `json_lines_are_serde_json` in `collector-core/tests/ipc_roundtrip.rs`, beside the
//! event strategies, checks it). The structs are taken apart without `..`, so a field
//! added to an event, [`ProcessContext`] or [`ProcessCredentials`] fails to compile here
//! until it is written here too.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{
    context_cache, rfc3339_nanos, FilesystemEvent, NetworkEvent, ProcessContext,
    ProcessCredentials, ProcessEvent,
};

/// Appends `e` as serde writes `CollectionEvent::Filesystem(e)` (no newline).
pub(super) fn filesystem(e: &FilesystemEvent, out: &mut Vec<u8>) {
    let FilesystemEvent {
        kind,
        timestamp,
        pid,
        source,
        path,
        new_path,
        path_relative,
        flags,
        mode,
        result,
        uid,
        name,
        path_truncated,
        path_unreadable,
        path_user_supplied,
        compat_syscall,
        owner_uid,
        owner_gid,
        process_key,
        path_changed,
        new_path_truncated,
        new_path_unreadable,
        new_path_user_supplied,
        new_path_changed,
        io_uring,
        device_major,
        device_minor,
        length,
        xattr_name,
        fd_raced,
        process,
    } = e;
    head(out, b"filesystem", kind.as_str(), timestamp, *pid, source);
    out.extend_from_slice(b"\",\"path\":\"");
    escaped(out, path);
    out.push(b'"');
    opt_str(out, b",\"new_path\":\"", new_path.as_deref());
    if *path_relative {
        out.extend_from_slice(b",\"path_relative\":true");
    }
    opt_u32(out, b",\"flags\":", *flags);
    opt_u32(out, b",\"mode\":", *mode);
    if let Some(result) = result {
        out.extend_from_slice(b",\"result\":");
        signed(out, *result);
    }
    opt_u32(out, b",\"uid\":", *uid);
    opt_str(out, b",\"name\":\"", name.as_deref());
    out.extend_from_slice(b",\"path_truncated\":");
    boolean(out, *path_truncated);
    out.extend_from_slice(b",\"path_unreadable\":");
    boolean(out, *path_unreadable);
    out.extend_from_slice(b",\"path_user_supplied\":");
    boolean(out, *path_user_supplied);
    if *compat_syscall {
        out.extend_from_slice(b",\"compat_syscall\":true");
    }
    opt_u32(out, b",\"owner_uid\":", *owner_uid);
    opt_u32(out, b",\"owner_gid\":", *owner_gid);
    opt_str(out, b",\"process_key\":\"", process_key.as_deref());
    for (set, text) in [
        (*path_changed, &b",\"path_changed\":true"[..]),
        (*new_path_truncated, b",\"new_path_truncated\":true"),
        (*new_path_unreadable, b",\"new_path_unreadable\":true"),
        (*new_path_user_supplied, b",\"new_path_user_supplied\":true"),
        (*new_path_changed, b",\"new_path_changed\":true"),
        (*io_uring, b",\"io_uring\":true"),
    ] {
        if set {
            out.extend_from_slice(text);
        }
    }
    opt_u32(out, b",\"device_major\":", *device_major);
    opt_u32(out, b",\"device_minor\":", *device_minor);
    opt_u64(out, b",\"length\":", *length);
    opt_str(out, b",\"xattr_name\":\"", xattr_name.as_deref());
    if *fd_raced {
        out.extend_from_slice(b",\"fd_raced\":true");
    }
    if let Some(process) = process {
        out.extend_from_slice(b",\"process\":");
        shared_context(process, out);
    }
    out.push(b'}');
}

/// Appends `e` as serde writes `CollectionEvent::Process(e)` (no newline).
pub(super) fn process(e: &ProcessEvent, out: &mut Vec<u8>) {
    let ProcessEvent {
        kind,
        timestamp,
        pid,
        source,
        ppid,
        uid,
        gid,
        name,
        executable_path,
        command_line,
        command_line_truncated,
        start_time,
        exit_code,
        cgroup_id,
        executable_hash,
        hash_algorithm,
        child_pid,
        credentials: creds,
        old_credentials,
        secure_exec,
        errno,
        syscall_nr,
        compat_syscall,
        process_key,
        child_start_time,
        executable_inode,
        executable_device,
        executable_deleted,
        memfd_name,
        interpreter,
        namespace_pid,
        pid_namespace_inode,
        cgroup_path,
        cwd,
        executable_path_user_supplied,
        executable_path_truncated,
    } = e;
    head(out, b"process", kind.as_str(), timestamp, *pid, source);
    out.push(b'"');
    opt_u32(out, b",\"ppid\":", *ppid);
    opt_u32(out, b",\"uid\":", *uid);
    opt_u32(out, b",\"gid\":", *gid);
    opt_str(out, b",\"name\":\"", name.as_deref());
    opt_str(out, b",\"executable_path\":\"", executable_path.as_deref());
    if !command_line.is_empty() {
        out.extend_from_slice(b",\"command_line\":[");
        for (i, arg) in command_line.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            escaped(out, arg);
            out.push(b'"');
        }
        out.push(b']');
    }
    if *command_line_truncated {
        out.extend_from_slice(b",\"command_line_truncated\":true");
    }
    opt_time(out, b",\"start_time\":\"", start_time.as_ref());
    opt_i64(out, b",\"exit_code\":", exit_code.map(i64::from));
    opt_u64(out, b",\"cgroup_id\":", *cgroup_id);
    opt_str(out, b",\"executable_hash\":\"", executable_hash.as_deref());
    opt_str(out, b",\"hash_algorithm\":\"", hash_algorithm.as_deref());
    opt_u32(out, b",\"child_pid\":", *child_pid);
    if let Some(c) = creds {
        out.extend_from_slice(b",\"credentials\":");
        credentials(c, out);
    }
    if let Some(c) = old_credentials {
        out.extend_from_slice(b",\"old_credentials\":");
        credentials(c, out);
    }
    if *secure_exec {
        out.extend_from_slice(b",\"secure_exec\":true");
    }
    opt_i64(out, b",\"errno\":", errno.map(i64::from));
    opt_u32(out, b",\"syscall_nr\":", *syscall_nr);
    if *compat_syscall {
        out.extend_from_slice(b",\"compat_syscall\":true");
    }
    opt_str(out, b",\"process_key\":\"", process_key.as_deref());
    opt_time(out, b",\"child_start_time\":\"", child_start_time.as_ref());
    opt_u64(out, b",\"executable_inode\":", *executable_inode);
    opt_u32(out, b",\"executable_device\":", *executable_device);
    if *executable_deleted {
        out.extend_from_slice(b",\"executable_deleted\":true");
    }
    opt_str(out, b",\"memfd_name\":\"", memfd_name.as_deref());
    opt_str(out, b",\"interpreter\":\"", interpreter.as_deref());
    opt_u32(out, b",\"namespace_pid\":", *namespace_pid);
    opt_u32(out, b",\"pid_namespace_inode\":", *pid_namespace_inode);
    opt_str(out, b",\"cgroup_path\":\"", cgroup_path.as_deref());
    opt_str(out, b",\"cwd\":\"", cwd.as_deref());
    if *executable_path_user_supplied {
        out.extend_from_slice(b",\"executable_path_user_supplied\":true");
    }
    if *executable_path_truncated {
        out.extend_from_slice(b",\"executable_path_truncated\":true");
    }
    out.push(b'}');
}

fn credentials(c: &ProcessCredentials, out: &mut Vec<u8>) {
    let ProcessCredentials {
        uid,
        euid,
        suid,
        fsuid,
        gid,
        egid,
        sgid,
        fsgid,
        cap_effective,
        cap_permitted,
        loginuid,
        sessionid,
    } = c;
    for (key, v) in [
        (&b"{\"uid\":"[..], u64::from(*uid)),
        (b",\"euid\":", u64::from(*euid)),
        (b",\"suid\":", u64::from(*suid)),
        (b",\"fsuid\":", u64::from(*fsuid)),
        (b",\"gid\":", u64::from(*gid)),
        (b",\"egid\":", u64::from(*egid)),
        (b",\"sgid\":", u64::from(*sgid)),
        (b",\"fsgid\":", u64::from(*fsgid)),
        (b",\"cap_effective\":", *cap_effective),
        (b",\"cap_permitted\":", *cap_permitted),
    ] {
        out.extend_from_slice(key);
        unsigned(out, v);
    }
    opt_u32(out, b",\"loginuid\":", *loginuid);
    opt_u32(out, b",\"sessionid\":", *sessionid);
    out.push(b'}');
}

/// Appends `e` as serde writes `CollectionEvent::Network(e)` (no newline).
pub(super) fn network(e: &NetworkEvent, out: &mut Vec<u8>) {
    let NetworkEvent {
        kind,
        timestamp,
        pid,
        source,
        protocol,
        family,
        source_addr,
        dest_addr,
        state,
        connection_id,
        uid,
        name,
        errno,
        previous_state,
        socket_error,
        unix_path,
        send_count,
        count_update,
        io_uring,
        compat_syscall,
        fd_raced,
        process_key,
        process,
    } = e;
    head(out, b"network", kind.as_str(), timestamp, *pid, source);
    out.extend_from_slice(b"\",\"protocol\":\"");
    out.extend_from_slice(protocol.as_str().as_bytes());
    out.extend_from_slice(b"\",\"family\":\"");
    out.extend_from_slice(family.as_str().as_bytes());
    out.extend_from_slice(b"\",\"source_addr\":\"");
    address(out, source_addr);
    out.extend_from_slice(b"\",\"dest_addr\":\"");
    address(out, dest_addr);
    out.push(b'"');
    opt_str(out, b",\"state\":\"", state.as_deref());
    out.extend_from_slice(b",\"connection_id\":");
    unsigned(out, *connection_id);
    opt_u32(out, b",\"uid\":", *uid);
    opt_str(out, b",\"name\":\"", name.as_deref());
    opt_u32(out, b",\"errno\":", *errno);
    opt_str(out, b",\"previous_state\":\"", previous_state.as_deref());
    opt_u32(out, b",\"socket_error\":", *socket_error);
    opt_str(out, b",\"unix_path\":\"", unix_path.as_deref());
    opt_u64(out, b",\"send_count\":", *send_count);
    for (set, text) in [
        (*count_update, &b",\"count_update\":true"[..]),
        (*io_uring, b",\"io_uring\":true"),
        (*compat_syscall, b",\"compat_syscall\":true"),
        (*fd_raced, b",\"fd_raced\":true"),
    ] {
        if set {
            out.extend_from_slice(text);
        }
    }
    opt_str(out, b",\"process_key\":\"", process_key.as_deref());
    if let Some(process) = process {
        out.extend_from_slice(b",\"process\":");
        shared_context(process, out);
    }
    out.push(b'}');
}

/// An address as serde writes it (its `Display`: digits, dots, colons, brackets and a
/// `%` scope, nothing to escape).
fn address(out: &mut Vec<u8>, a: &SocketAddr) {
    match a {
        // The common case, without `fmt`: "a.b.c.d:port".
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                unsigned(out, u64::from(octet));
            }
            out.push(b':');
            unsigned(out, u64::from(v4.port()));
        }
        // Writing into a Vec cannot fail.
        SocketAddr::V6(_) => {
            let _ = write!(out, "{a}");
        }
    }
}

/// The fields every event starts with, up to the open quote's contents of `source`
/// (written, not closed): `{"domain":..,"kind":..,"timestamp":..,"pid":..,"source":"..`.
fn head(
    out: &mut Vec<u8>,
    domain: &[u8],
    kind: &str,
    timestamp: &DateTime<Utc>,
    pid: u32,
    source: &str,
) {
    out.extend_from_slice(b"{\"domain\":\"");
    out.extend_from_slice(domain);
    out.extend_from_slice(b"\",\"kind\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"timestamp\":\"");
    time(out, timestamp);
    out.extend_from_slice(b"\",\"pid\":");
    unsigned(out, u64::from(pid));
    out.extend_from_slice(b",\"source\":\"");
    escaped(out, source);
}

/// A timestamp's RFC 3339 text, nine fractional digits (`rfc3339_nanos`).
fn time(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    let mut buf = [0u8; 30];
    match rfc3339_nanos::format(t, &mut buf) {
        Some(text) => out.extend_from_slice(text.as_bytes()),
        // Outside four-digit years: chrono's text, which needs no escaping either.
        None => escaped(out, &t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
    }
}

/// `key` (which opens the string), the time and the closing quote, when set.
fn opt_time(out: &mut Vec<u8>, key: &[u8], t: Option<&DateTime<Utc>>) {
    if let Some(t) = t {
        out.extend_from_slice(key);
        time(out, t);
        out.push(b'"');
    }
}

thread_local! {
    /// The JSON of the context written last (see `context_cache`).
    static LAST_CONTEXT: context_cache::Slot = const { RefCell::new(None) };
}

/// [`context`], copied from [`LAST_CONTEXT`] when `c` is the context written last.
fn shared_context(c: &Arc<ProcessContext>, out: &mut Vec<u8>) {
    context_cache::with_rendered(
        &LAST_CONTEXT,
        c,
        |json| context(c, json),
        |json| out.extend_from_slice(json),
    );
}

fn context(c: &ProcessContext, out: &mut Vec<u8>) {
    let ProcessContext {
        process_key,
        executable_path,
        exec_name,
        ppid,
        parent_process_key,
    } = c;
    out.extend_from_slice(b"{\"process_key\":\"");
    escaped(out, process_key);
    out.push(b'"');
    opt_str(out, b",\"executable_path\":\"", executable_path.as_deref());
    opt_str(out, b",\"exec_name\":\"", exec_name.as_deref());
    opt_u32(out, b",\"ppid\":", *ppid);
    opt_str(
        out,
        b",\"parent_process_key\":\"",
        parent_process_key.as_deref(),
    );
    out.push(b'}');
}

/// `key` (which opens the string) and the escaped value and closing quote, when set.
#[inline]
fn opt_str(out: &mut Vec<u8>, key: &[u8], v: Option<&str>) {
    if let Some(v) = v {
        out.extend_from_slice(key);
        escaped(out, v);
        out.push(b'"');
    }
}

#[inline]
fn opt_u32(out: &mut Vec<u8>, key: &[u8], v: Option<u32>) {
    if let Some(v) = v {
        out.extend_from_slice(key);
        unsigned(out, u64::from(v));
    }
}

#[inline]
fn opt_u64(out: &mut Vec<u8>, key: &[u8], v: Option<u64>) {
    if let Some(v) = v {
        out.extend_from_slice(key);
        unsigned(out, v);
    }
}

#[inline]
fn opt_i64(out: &mut Vec<u8>, key: &[u8], v: Option<i64>) {
    if let Some(v) = v {
        out.extend_from_slice(key);
        signed(out, v);
    }
}

#[inline]
fn boolean(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// Decimal, as serde_json (itoa) writes it.
fn unsigned(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    let at = super::unix_time::decimal_before(&mut buf, 20, v);
    out.extend_from_slice(&buf[at..]);
}

fn signed(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    unsigned(out, v.unsigned_abs());
}

/// The string's contents escaped as serde_json escapes them: `"` and `\` with a
/// backslash, control characters as `\b \t \n \f \r` or `\u00xx` (lower-case hex),
/// everything else (DEL and non-ASCII included) as is.
fn escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut at = 0;
    while at < bytes.len() {
        // Eight bytes at a time while none of them needs escaping.
        if let Some(chunk) = bytes.get(at..at + 8) {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            if !needs_escape(word) {
                at += 8;
                continue;
            }
        }
        let b = bytes[at];
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => &[],
            _ => {
                at += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..at]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        at += 1;
        start = at;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether any byte of `word` is a control character, `"` or `\`.
#[inline]
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte below n sets its high bit in `x - n` unless it had that bit set already
    // (bytes >= 0x80 are excluded with `!word`); the same on `x ^ c` finds bytes equal
    // to c (below 1). False positives cannot happen for bytes < 0x80 and bytes >= 0x80
    // are masked out, so the answer is exact.
    let below_space = word.wrapping_sub(ONES * 0x20);
    let quote = (word ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
    let backslash = (word ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
    (below_space | quote | backslash) & !word & HIGHS != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_serde_json_for_every_byte_and_position() {
        // Every ASCII byte, alone and at each position of a longer run, plus non-ASCII.
        let mut samples: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        for b in 0u8..0x80 {
            for pos in 0..17 {
                let mut s = "a".repeat(17);
                s.replace_range(pos..pos + 1, &char::from(b).to_string());
                samples.push(s);
            }
        }
        samples.push("caf\u{e9} \u{1f600}\u{7f}\u{80}\u{2028}\"\\/".into());
        samples.push("\u{ff}\u{ff}\u{ff}\u{ff}\u{ff}\u{ff}\u{ff}\u{ff}\"".into());
        for s in samples {
            let mut ours = vec![b'"'];
            escaped(&mut ours, &s);
            ours.push(b'"');
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&s).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn addresses_are_their_display() {
        for a in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.0.0.2:40000",
            "[::1]:22",
            "[fe80::1%3]:8080",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut out = Vec::new();
            address(&mut out, &a);
            assert_eq!(String::from_utf8(out).unwrap(), a.to_string());
        }
    }

    /// The cached context JSON is the written context's, whatever came before: the same
    /// `Arc` again, another `Arc` with the same contents, one with other contents, and a
    /// new context made after every holder of the cached one but the cache let go of it.
    #[test]
    fn a_cached_context_is_only_reused_for_that_context() {
        use crate::event::{FilesystemEvent, FilesystemEventKind};
        use crate::CollectionEvent;
        let context = |pid: u32, exe: &str| {
            Arc::new(ProcessContext {
                process_key: format!("{pid}:1000"),
                executable_path: Some(exe.into()),
                exec_name: Some("cat".into()),
                ppid: Some(1),
                parent_process_key: None,
            })
        };
        let open = |process: &Arc<ProcessContext>| {
            let ts = DateTime::from_timestamp(1_700_000_000, 5).unwrap();
            let path = "/etc/hostname";
            let mut open = FilesystemEvent::new(FilesystemEventKind::Open, ts, 7, "fs", path);
            (open.flags, open.result, open.uid) = (Some(0), Some(3), Some(0));
            open.name = Some("cat".into());
            open.process = Some(process.clone());
            CollectionEvent::from(open)
        };
        let check = |process: &Arc<ProcessContext>| {
            let event = open(process);
            let mut ours = Vec::new();
            event.write_json_line(&mut ours);
            let serde = serde_json::to_string(&event).unwrap() + "\n";
            assert_eq!(String::from_utf8(ours).unwrap(), serde);
        };
        let a = context(7, "/usr/bin/cat");
        check(&a);
        check(&a);
        check(&context(7, "/usr/bin/cat"));
        check(&context(8, "/usr/bin/\"quoted\""));
        check(&a);
        drop(a);
        for pid in 0..64 {
            check(&context(pid, &format!("/bin/{pid}")));
        }
    }

    #[test]
    fn numbers_are_itoa() {
        for v in [0u64, 9, 10, 4_294_967_295, u64::MAX] {
            let mut out = Vec::new();
            unsigned(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
        for v in [0i64, -1, -9_223_372_036_854_775_808, i64::MAX, -13] {
            let mut out = Vec::new();
            signed(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
    }
}
