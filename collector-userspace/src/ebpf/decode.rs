//! Turns raw ring-buffer records into [`CollectionEvent`]s. Pure: tested without a kernel.

use collector_common::{
    flags, ExecRecord, ExitRecord, ForkRecord, RecordHeader, RecordKind, EXEC_ARGV_LEN,
    EXEC_FILENAME_LEN,
};
use collector_core::event::{CollectionEvent, ProcessEvent, ProcessEventKind, SourceName};

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
            ev.executable_path = Some(c_str(&r.filename[..filename_len]));
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
    Ok(CollectionEvent::Process(ev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: records are plain old data.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
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
        assert_eq!(record_kind(&99u32.to_ne_bytes()), Err(DecodeError::UnknownKind(99)));
        assert!(record_kind(&[1, 0]).is_err());
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
