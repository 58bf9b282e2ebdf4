//! Turns raw ring-buffer records into [`CollectionEvent`]s. Pure: tested without a kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use collector_common::{
    flags, ExecRecord, ExitRecord, FileRecord, ForkRecord, NetRecord, RecordHeader, RecordKind,
    RenameRecord, EXEC_ARGV_LEN, EXEC_FILENAME_LEN, FILE_PATH_LEN,
};
use collector_core::event::{
    AddressFamily, CollectionEvent, FilesystemEvent, FilesystemEventKind, NetworkEvent,
    NetworkEventKind, ProcessEvent, ProcessEventKind, SourceName, TransportProtocol,
};

use super::clock::BootClock;

/// Why a record could not be decoded (counted as `decode_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than its kind's record.
    #[error("record of {got} bytes is shorter than {kind:?} ({need} bytes)")]
    Short {
        /// Kind from the header.
        kind: u32,
        /// Bytes received.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Unknown kind value.
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            kind,
            got: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked; T is a repr(C) record of integers and byte arrays (every bit
    // pattern valid); read_unaligned copes with any alignment of the ring buffer slot.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The record kind of a raw record.
pub fn record_kind(bytes: &[u8]) -> Result<RecordKind, DecodeError> {
    let kind = bytes
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DecodeError::Short {
            kind: 0,
            got: bytes.len(),
            need: 4,
        })?;
    RecordKind::from_u32(kind).ok_or(DecodeError::UnknownKind(kind))
}

/// NUL-terminated (or full) byte string -> String.
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// NUL-separated argument block -> arguments.
pub fn split_args(block: &[u8]) -> Vec<String> {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return Vec::new();
    }
    block
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Wait status -> exit code: `code` for a normal exit, `128 + signal` when killed.
pub fn exit_code_from_status(status: u32) -> i32 {
    let signal = status & 0x7f;
    if signal == 0 {
        ((status >> 8) & 0xff) as i32
    } else {
        128 + signal as i32
    }
}

fn process_base(
    h: &RecordHeader,
    kind: ProcessEventKind,
    clock: &BootClock,
    source: &SourceName,
) -> ProcessEvent {
    let mut ev = ProcessEvent::new(kind, clock.to_utc(h.ktime_ns), h.pid, source.clone());
    ev.uid = Some(h.uid);
    ev.gid = Some(h.gid);
    ev.name = Some(c_str(&h.comm));
    ev.cgroup_id = Some(h.cgroup_id);
    ev
}

/// Decodes one process-domain record.
pub fn decode_process(
    bytes: &[u8],
    clock: &BootClock,
    source: &SourceName,
) -> Result<CollectionEvent, DecodeError> {
    let kind = record_kind(bytes)?;
    let ev = match kind {
        RecordKind::Exec => {
            let r: ExecRecord = read(bytes, kind as u32)?;
            let mut ev = process_base(&r.header, ProcessEventKind::Exec, clock, source);
            ev.ppid = Some(r.ppid);
            let filename_len = (r.filename_len as usize).min(EXEC_FILENAME_LEN);
            let mut path = c_str(&r.filename[..filename_len]);
            if !path.starts_with('/') {
                // execve took a relative path: the kernel's view of the image is
                // /proc/<pid>/exe while the process lives; otherwise keep it as given.
                if let Ok(exe) = std::fs::read_link(format!("/proc/{}/exe", r.header.pid)) {
                    path = exe.display().to_string();
                }
            }
            ev.executable_path = Some(path);
            let argv_len = (r.argv_len as usize).min(EXEC_ARGV_LEN);
            ev.command_line = split_args(&r.argv[..argv_len]);
            ev.command_line_truncated = r.header.flags & flags::ARGV_TRUNCATED != 0;
            if r.start_boottime_ns != 0 {
                ev.start_time = Some(clock.to_utc(r.start_boottime_ns));
            }
            ev
        }
        RecordKind::Fork => {
            let r: ForkRecord = read(bytes, kind as u32)?;
            let mut ev = process_base(&r.header, ProcessEventKind::Fork, clock, source);
            ev.child_pid = Some(r.child_pid);
            ev
        }
        RecordKind::Exit => {
            let r: ExitRecord = read(bytes, kind as u32)?;
            let mut ev = process_base(&r.header, ProcessEventKind::Exit, clock, source);
            ev.ppid = Some(r.ppid);
            ev.exit_code = Some(exit_code_from_status(r.exit_code));
            ev
        }
        other => return Err(DecodeError::UnknownKind(other as u32)),
    };
    Ok(CollectionEvent::from(ev))
}

const AF_INET6: u16 = 10;
const IPPROTO_UDP: u16 = 17;
const AT_FDCWD: i32 = -100;

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

/// Makes `path` absolute against the directory the kernel resolved it from: the
/// process's cwd (`AT_FDCWD`) or its directory fd. Returns (path, still_relative).
pub fn resolve_path(pid: u32, dirfd: i32, path: String) -> (String, bool) {
    if path.starts_with('/') || path.is_empty() {
        return (path, false);
    }
    let base = if dirfd == AT_FDCWD {
        format!("/proc/{pid}/cwd")
    } else {
        format!("/proc/{pid}/fd/{dirfd}")
    };
    match std::fs::read_link(&base) {
        Ok(dir) if dir.is_absolute() => (Path::new(&dir).join(&path).display().to_string(), false),
        _ => (path, true),
    }
}

fn file_base(
    h: &RecordHeader,
    kind: FilesystemEventKind,
    path: String,
    result: i64,
    clock: &BootClock,
    source: &SourceName,
) -> FilesystemEvent {
    FilesystemEvent {
        kind,
        timestamp: clock.to_utc(h.ktime_ns),
        pid: h.pid,
        source: source.clone(),
        path,
        new_path: None,
        path_relative: false,
        flags: None,
        mode: None,
        result: Some(result),
        uid: Some(h.uid),
        name: Some(c_str(&h.comm)),
    }
}

/// Decodes one filesystem-domain record, resolving relative paths where it can.
pub fn decode_filesystem(
    bytes: &[u8],
    clock: &BootClock,
    source: &SourceName,
) -> Result<CollectionEvent, DecodeError> {
    let kind = record_kind(bytes)?;
    let ev = match kind {
        RecordKind::Open | RecordKind::Create | RecordKind::Unlink => {
            let r: FileRecord = read(bytes, kind as u32)?;
            let len = (r.path_len as usize).min(FILE_PATH_LEN);
            let (path, relative) = resolve_path(r.header.pid, r.dirfd, c_str(&r.path[..len]));
            let is_open = kind != RecordKind::Unlink;
            let event_kind = match kind {
                RecordKind::Open => FilesystemEventKind::Open,
                RecordKind::Create => FilesystemEventKind::Create,
                _ => FilesystemEventKind::Unlink,
            };
            let mut ev = file_base(&r.header, event_kind, path, r.result, clock, source);
            ev.path_relative = relative;
            ev.flags = is_open.then_some(r.open_flags);
            ev.mode = is_open.then_some(r.mode);
            ev
        }
        RecordKind::Rename => {
            let r: RenameRecord = read(bytes, kind as u32)?;
            let old_len = (r.old_path_len as usize).min(FILE_PATH_LEN);
            let new_len = (r.new_path_len as usize).min(FILE_PATH_LEN);
            let (path, rel_old) =
                resolve_path(r.header.pid, r.old_dirfd, c_str(&r.old_path[..old_len]));
            let (new_path, rel_new) =
                resolve_path(r.header.pid, r.new_dirfd, c_str(&r.new_path[..new_len]));
            let mut ev = file_base(
                &r.header,
                FilesystemEventKind::Rename,
                path,
                r.result,
                clock,
                source,
            );
            ev.new_path = Some(new_path);
            ev.path_relative = rel_old || rel_new;
            ev
        }
        other => return Err(DecodeError::UnknownKind(other as u32)),
    };
    Ok(CollectionEvent::Filesystem(ev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: records are plain old data.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    fn header(kind: RecordKind) -> RecordHeader {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"true");
        RecordHeader {
            kind: kind as u32,
            flags: 0,
            ktime_ns: 1_000,
            pid: 42,
            tid: 42,
            uid: 1000,
            gid: 100,
            cgroup_id: 7,
            comm,
        }
    }

    #[test]
    fn exec_record_decodes_argv_and_path() {
        // SAFETY: all-zero is a valid ExecRecord.
        let mut r: ExecRecord = unsafe { std::mem::zeroed() };
        r.header = header(RecordKind::Exec);
        r.ppid = 1;
        let path = b"/bin/true";
        r.filename[..path.len()].copy_from_slice(path);
        r.filename_len = path.len() as u32;
        let args = b"/bin/true\0marker\0two words\0";
        r.argv[..args.len()].copy_from_slice(args);
        r.argv_len = args.len() as u32;
        let ev = decode_process(&bytes_of(&r), &BootClock::new(), &"t".into()).unwrap();
        let CollectionEvent::Process(p) = ev else {
            panic!("not a process event")
        };
        assert_eq!(p.kind, ProcessEventKind::Exec);
        assert_eq!(p.pid, 42);
        assert_eq!(p.ppid, Some(1));
        assert_eq!(p.uid, Some(1000));
        assert_eq!(p.name.as_deref(), Some("true"));
        assert_eq!(p.executable_path.as_deref(), Some("/bin/true"));
        assert_eq!(p.command_line, ["/bin/true", "marker", "two words"]);
        assert!(!p.command_line_truncated);
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let r = header(RecordKind::Exec);
        assert!(matches!(
            decode_process(&bytes_of(&r), &BootClock::new(), &"t".into()),
            Err(DecodeError::Short { .. })
        ));
        assert_eq!(
            record_kind(&99u32.to_ne_bytes()),
            Err(DecodeError::UnknownKind(99))
        );
        assert!(record_kind(&[1, 0]).is_err());
    }

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

    #[test]
    fn relative_paths_resolve_against_cwd_or_are_marked() {
        let me = std::process::id();
        let cwd = std::env::current_dir().unwrap();
        let (p, rel) = resolve_path(me, AT_FDCWD, "x/y".into());
        assert_eq!(p, cwd.join("x/y").display().to_string());
        assert!(!rel);
        let (p, rel) = resolve_path(me, 987_654, "x".into());
        assert_eq!(p, "x");
        assert!(rel);
        assert_eq!(
            resolve_path(me, AT_FDCWD, "/abs".into()),
            ("/abs".into(), false)
        );
    }

    #[test]
    fn exit_status_decoding() {
        assert_eq!(exit_code_from_status(3 << 8), 3);
        assert_eq!(exit_code_from_status(9), 137);
        assert_eq!(exit_code_from_status(0), 0);
    }

    #[test]
    fn split_args_handles_edges() {
        assert!(split_args(b"").is_empty());
        assert_eq!(split_args(b"a\0\0b\0"), ["a", "", "b"]);
        assert_eq!(split_args(b"cut-off"), ["cut-off"]);
    }
}
