//! Process-domain records: exec, fork, exit.

use collector_common::{
    flags, ExecRecord, ExitRecord, ForkRecord, RecordHeader, RecordKind, EXEC_ARGV_LEN,
    EXEC_FILENAME_LEN,
};
use collector_core::event::{CollectionEvent, ProcessEvent, ProcessEventKind, SourceName};

use super::{c_str, exit_code_from_status, read, record_kind, split_args, DecodeError};
use crate::ebpf::clock::BootClock;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::decode::test_util::{bytes_of, header};

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
    fn exit_status_decoding() {
        assert_eq!(exit_code_from_status(3 << 8), 3);
        assert_eq!(exit_code_from_status(9), 137);
        assert_eq!(exit_code_from_status(0), 0);
    }
}
