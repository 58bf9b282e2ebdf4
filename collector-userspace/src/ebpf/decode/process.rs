//! Process-domain records: exec, fork, exit.

use std::cell::RefCell;

use collector_common::{
    exec_flags, flags, CredChangeRecord, Credentials, ExecFailedRecord, ExecRecord, ExitRecord,
    ForkRecord, RecordHeader, RecordKind, EXEC_FAILED_PATH_LEN, PATH_FLAG_TRUNCATED,
    PATH_FLAG_UNREADABLE,
};
use collector_core::event::{
    CollectionEvent, CompactString, ProcessCredentials, ProcessEvent, ProcessEventKind, SourceName,
};

use super::{
    c_str, comm, exit_code_from_status, read, record_kind, reuse_last, split_args, DecodeError,
    Last,
};
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
    ev.name = Some(comm(&h.comm));
    ev.cgroup_id = Some(h.cgroup_id);
    ev.process_key = header_process_key(h);
    if h.process_start_ns != 0 {
        ev.start_time = Some(clock.to_utc(h.process_start_ns));
    }
    ev
}

/// A kernel-walked path, unless the walk could not read it.
fn usable_path(bytes: &[u8], path_flags: u32) -> Option<String> {
    (!bytes.is_empty() && path_flags & PATH_FLAG_UNREADABLE == 0).then(|| c_str(bytes))
}

/// `path` made absolute against `cwd` (kept as given when it already is, or when there
/// is no cwd).
fn absolute(path: &str, cwd: Option<&str>) -> String {
    match cwd {
        Some(cwd) if !path.starts_with('/') && !path.is_empty() => {
            let rel = path.strip_prefix("./").unwrap_or(path);
            if cwd.ends_with('/') {
                format!("{cwd}{rel}")
            } else {
                format!("{cwd}/{rel}")
            }
        }
        _ => path.to_string(),
    }
}

/// The key of the process a record's header names, when the kernel could read its
/// start time. Every domain's events carry it.
pub fn header_process_key(h: &RecordHeader) -> Option<CompactString> {
    (h.process_start_ns != 0).then(|| {
        let (pid, start) = (h.pid, h.process_start_ns);
        reuse_last(&LAST_KEY, (pid, start), || process_key(pid, start))
    })
}

thread_local! {
    /// The process key formatted last, with its pid and start.
    static LAST_KEY: Last<(u32, u64), CompactString> = const { RefCell::new(None) };
}

/// `<tgid>:<leader start, CLOCK_BOOTTIME ns>`: the kernel's own numbers, so events of
/// every domain and every collector on the host agree on it.
pub fn process_key(pid: u32, start_boottime_ns: u64) -> CompactString {
    // Every filesystem and network event carries one: `itoa` writes the digits two at a
    // time (`format!` goes through the formatting machinery), and the key is kept inline
    // when it fits 24 bytes: always for a pid under 10^6 and an uptime under 3 years.
    let (mut pid_digits, mut start_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (pid, start) = (
        pid_digits.format(pid),
        start_digits.format(start_boottime_ns),
    );
    let mut key = CompactString::with_capacity(pid.len() + 1 + start.len());
    key.push_str(pid);
    key.push(':');
    key.push_str(start);
    key
}

fn set_namespace(ev: &mut ProcessEvent, ns_pid: u32, pidns_inum: u32) {
    if pidns_inum != 0 {
        ev.namespace_pid = Some(ns_pid);
        ev.pid_namespace_inode = Some(pidns_inum);
    }
}

fn credentials(c: &Credentials) -> ProcessCredentials {
    // The kernel's "unset" audit values (-1) are left out rather than shown as ids.
    let set = |v: u32| (v != u32::MAX).then_some(v);
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
        loginuid: set(c.loginuid),
        sessionid: set(c.sessionid),
    }
}

/// The variable-length parts that follow an [`ExecRecord`], in the kernel's order.
struct ExecTail<'a> {
    filename: &'a [u8],
    interpreter: &'a [u8],
    exe_name: &'a [u8],
    exe_path: &'a [u8],
    cwd: &'a [u8],
    argv: &'a [u8],
}

impl<'a> ExecTail<'a> {
    /// Splits `tail` by the lengths in `r`; a record shorter than its lengths say is
    /// refused rather than read past.
    fn split(r: &ExecRecord, tail: &'a [u8]) -> Result<Self, DecodeError> {
        let lens = [
            r.filename_len,
            r.interp_len,
            r.exe_name_len,
            r.exe_path_len,
            r.cwd_len,
            r.argv_len,
        ]
        .map(|l| l as usize);
        let need = ExecRecord::TAIL_OFFSET + lens.iter().sum::<usize>();
        let short = DecodeError::Short {
            kind: RecordKind::Exec as u32,
            got: ExecRecord::TAIL_OFFSET + tail.len(),
            need,
        };
        let mut rest = tail;
        let mut take = |n: usize| -> Option<&'a [u8]> {
            let (part, after) = rest.split_at_checked(n)?;
            rest = after;
            Some(part)
        };
        let (
            Some(filename),
            Some(interpreter),
            Some(exe_name),
            Some(exe_path),
            Some(cwd),
            Some(argv),
        ) = (
            take(lens[0]),
            take(lens[1]),
            take(lens[2]),
            take(lens[3]),
            take(lens[4]),
            take(lens[5]),
        )
        else {
            return Err(short);
        };
        Ok(Self {
            filename,
            interpreter,
            exe_name,
            exe_path,
            cwd,
            argv,
        })
    }
}

/// The version of the file an exec record's process runs (its loaded image), as the
/// kernel read it at the exec; `None` for other records or where the kernel lacks the
/// fields (then the hash cache keys on a `statx`).
pub fn exec_file_version(bytes: &[u8]) -> Option<crate::hash::FileKey> {
    if record_kind(bytes).ok()? != RecordKind::Exec {
        return None;
    }
    let r: ExecRecord = read(bytes, RecordKind::Exec as u32).ok()?;
    (r.exe_ino != 0 && (r.exe_ctime_sec != 0 || r.exe_ctime_nsec != 0)).then(|| {
        crate::hash::FileKey::from_kernel(
            r.exe_dev,
            r.exe_ino,
            r.exe_size,
            (r.exe_mtime_sec, r.exe_mtime_nsec),
            (r.exe_ctime_sec, r.exe_ctime_nsec),
        )
    })
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
            let tail = ExecTail::split(&r, &bytes[ExecRecord::TAIL_OFFSET..])?;
            let script = r.exec_flags & exec_flags::SCRIPT != 0;
            let cwd = usable_path(tail.cwd, r.cwd_flags);
            let loaded = usable_path(tail.exe_path, r.exe_path_flags);
            ev.executable_path_truncated = r.header.flags & flags::FILENAME_TRUNCATED != 0;
            match (&loaded, script) {
                (Some(loaded), false) => {
                    // The file the kernel loaded, walked from its struct file: neither
                    // the string passed to execve nor a symlink leading to it.
                    ev.executable_path = Some(loaded.clone());
                    ev.executable_path_truncated = r.exe_path_flags & PATH_FLAG_TRUNCATED != 0;
                }
                _ => {
                    // A script (the kernel has let go of its file by now; `loaded` is the
                    // interpreter), or a path the walk could not read: the string the
                    // kernel was given, made absolute against the cwd read at the exec.
                    ev.executable_path = Some(absolute(&c_str(tail.filename), cwd.as_deref()));
                    ev.executable_path_user_supplied = true;
                }
            }
            ev.cwd = cwd;
            ev.command_line = split_args(tail.argv);
            ev.command_line_truncated = r.header.flags & flags::ARGV_TRUNCATED != 0;
            if r.start_boottime_ns != 0 {
                ev.start_time = Some(clock.to_utc(r.start_boottime_ns));
            }
            ev.credentials = Some(credentials(&r.creds));
            set_namespace(&mut ev, r.ns_pid, r.pidns_inum);
            ev.secure_exec = r.exec_flags & exec_flags::SECURE_EXEC != 0;
            if r.exe_ino != 0 {
                ev.executable_inode = Some(r.exe_ino);
                ev.executable_device = Some(r.exe_dev);
            }
            ev.executable_deleted = r.exec_flags & exec_flags::DELETED != 0;
            if r.exec_flags & exec_flags::MEMFD != 0 {
                let name = c_str(tail.exe_name);
                ev.memfd_name = Some(name.strip_prefix("memfd:").unwrap_or(&name).to_string());
            }
            if script {
                // The interpreter file the kernel loaded, resolved; the `#!` string
                // only when the walk failed.
                ev.interpreter = loaded.or_else(|| Some(c_str(tail.interpreter)));
            }
            ev
        }
        RecordKind::Fork => {
            let r: ForkRecord = read(bytes, kind as u32)?;
            let mut ev = process_base(&r.header, ProcessEventKind::Fork, clock, source);
            ev.child_pid = Some(r.child_pid);
            if r.child_start_boottime_ns != 0 {
                ev.child_start_time = Some(clock.to_utc(r.child_start_boottime_ns));
            }
            ev.credentials = Some(credentials(&r.creds));
            set_namespace(&mut ev, r.ns_pid, r.pidns_inum);
            ev
        }
        RecordKind::Exit => {
            let r: ExitRecord = read(bytes, kind as u32)?;
            let mut ev = process_base(&r.header, ProcessEventKind::Exit, clock, source);
            ev.ppid = Some(r.ppid);
            ev.exit_code = Some(exit_code_from_status(r.exit_code));
            ev.credentials = Some(credentials(&r.creds));
            set_namespace(&mut ev, r.ns_pid, r.pidns_inum);
            ev
        }
        RecordKind::CredChange => {
            let r: CredChangeRecord = read(bytes, kind as u32)?;
            let mut ev = process_base(&r.header, ProcessEventKind::CredChange, clock, source);
            ev.credentials = Some(credentials(&r.new));
            // Unknown is said as unknown, not as "unchanged".
            ev.old_credentials =
                (r.header.flags & flags::OLD_CREDS_UNKNOWN == 0).then(|| credentials(&r.old));
            ev.syscall_nr = Some(r.syscall_nr);
            ev.compat_syscall = r.compat != 0;
            ev
        }
        RecordKind::ExecFailed => {
            let r: ExecFailedRecord = read(bytes, kind as u32)?;
            let mut ev = process_base(&r.header, ProcessEventKind::ExecFailed, clock, source);
            ev.errno = Some(r.errno as i32);
            ev.syscall_nr = Some(r.syscall_nr);
            ev.compat_syscall = r.compat != 0;
            let len = (r.filename_len as usize).min(EXEC_FAILED_PATH_LEN);
            if len > 0 {
                // As the caller passed it (user memory, read at syscall exit).
                ev.executable_path = Some(c_str(&r.filename[..len]));
            }
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
    fn process_key_is_pid_colon_start() {
        for (pid, start) in [
            (0, 0),
            (1, 9),
            (42, 1_000),
            (u32::MAX, u64::MAX),
            (4_194_304, 987_654_321_000),
        ] {
            assert_eq!(process_key(pid, start), format!("{pid}:{start}"));
        }
    }

    #[test]
    fn exec_record_decodes_argv_and_path() {
        // SAFETY: all-zero is a valid ExecRecord.
        let mut r: ExecRecord = unsafe { std::mem::zeroed() };
        r.header = header(RecordKind::Exec);
        r.ppid = 1;
        let path = b"/bin/true";
        r.filename_len = path.len() as u32;
        let args = b"/bin/true\0marker\0two words\0";
        r.argv_len = args.len() as u32;
        let mut bytes = bytes_of(&r);
        bytes.extend_from_slice(path);
        bytes.extend_from_slice(args);
        let ev = decode_process(&bytes, &BootClock::new(), &"t".into()).unwrap();
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
    fn exec_record_with_lengths_past_its_end_is_refused() {
        // SAFETY: all-zero is a valid ExecRecord.
        let mut r: ExecRecord = unsafe { std::mem::zeroed() };
        r.header = header(RecordKind::Exec);
        r.filename_len = 4;
        r.argv_len = u32::MAX;
        let mut bytes = bytes_of(&r);
        bytes.extend_from_slice(b"/bin");
        assert!(matches!(
            decode_process(&bytes, &BootClock::new(), &"t".into()),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn exec_record_tail_parts_in_kernel_order() {
        // SAFETY: all-zero is a valid ExecRecord.
        let mut r: ExecRecord = unsafe { std::mem::zeroed() };
        r.header = header(RecordKind::Exec);
        r.exec_flags = exec_flags::SCRIPT | exec_flags::MEMFD;
        let parts: [&[u8]; 6] = [
            b"./s",
            b"/bin/sh",
            b"memfd:x",
            b"/usr/bin/dash",
            b"/home/u",
            b"a\0",
        ];
        r.filename_len = parts[0].len() as u32;
        r.interp_len = parts[1].len() as u32;
        r.exe_name_len = parts[2].len() as u32;
        r.exe_path_len = parts[3].len() as u32;
        r.cwd_len = parts[4].len() as u32;
        r.argv_len = parts[5].len() as u32;
        let mut bytes = bytes_of(&r);
        for part in parts {
            bytes.extend_from_slice(part);
        }
        let CollectionEvent::Process(p) =
            decode_process(&bytes, &BootClock::new(), &"t".into()).unwrap()
        else {
            panic!("not a process event")
        };
        // A script: its path as given, made absolute against the exec-time cwd; the
        // interpreter is the file the kernel loaded.
        assert_eq!(p.executable_path.as_deref(), Some("/home/u/s"));
        assert!(p.executable_path_user_supplied);
        assert_eq!(p.interpreter.as_deref(), Some("/usr/bin/dash"));
        assert_eq!(p.cwd.as_deref(), Some("/home/u"));
        assert_eq!(p.memfd_name.as_deref(), Some("x"));
        assert_eq!(p.command_line, ["a"]);
    }

    #[test]
    fn exec_of_a_binary_reports_the_kernel_resolved_file_not_the_string() {
        // SAFETY: all-zero is a valid ExecRecord.
        let mut r: ExecRecord = unsafe { std::mem::zeroed() };
        r.header = header(RecordKind::Exec);
        let (given, loaded) = (&b"../link-to-true"[..], &b"/usr/bin/true"[..]);
        r.filename_len = given.len() as u32;
        r.exe_path_len = loaded.len() as u32;
        let mut bytes = bytes_of(&r);
        bytes.extend_from_slice(given);
        bytes.extend_from_slice(loaded);
        let CollectionEvent::Process(p) =
            decode_process(&bytes, &BootClock::new(), &"t".into()).unwrap()
        else {
            panic!("not a process event")
        };
        assert_eq!(p.executable_path.as_deref(), Some("/usr/bin/true"));
        assert!(!p.executable_path_user_supplied);
        // Unreadable walk: the string, flagged as the caller's.
        r.exe_path_flags = PATH_FLAG_UNREADABLE;
        let mut bytes = bytes_of(&r);
        bytes.extend_from_slice(given);
        bytes.extend_from_slice(loaded);
        let CollectionEvent::Process(p) =
            decode_process(&bytes, &BootClock::new(), &"t".into()).unwrap()
        else {
            panic!("not a process event")
        };
        assert_eq!(p.executable_path.as_deref(), Some("../link-to-true"));
        assert!(p.executable_path_user_supplied);
    }

    #[test]
    fn cred_change_carries_old_and_new_ids() {
        // SAFETY: all-zero is a valid CredChangeRecord.
        let mut r: CredChangeRecord = unsafe { std::mem::zeroed() };
        r.header = header(RecordKind::CredChange);
        r.syscall_nr = 117;
        r.old = Credentials {
            cap_effective: u64::MAX,
            loginuid: u32::MAX,
            sessionid: 3,
            ..Credentials::default()
        };
        r.new = Credentials {
            uid: 65534,
            euid: 65534,
            suid: 65534,
            loginuid: u32::MAX,
            sessionid: 3,
            ..Credentials::default()
        };
        let ev = decode_process(&bytes_of(&r), &BootClock::new(), &"t".into()).unwrap();
        let CollectionEvent::Process(p) = ev else {
            panic!("not a process event")
        };
        assert_eq!(p.kind, ProcessEventKind::CredChange);
        let (old, new) = (p.old_credentials.unwrap(), p.credentials.unwrap());
        assert_eq!(
            (old.uid, old.cap_effective, old.loginuid),
            (0, u64::MAX, None)
        );
        assert_eq!(
            (new.uid, new.euid, new.suid, new.cap_effective),
            (65534, 65534, 65534, 0)
        );
        assert_eq!(new.sessionid, Some(3));
        assert_eq!(p.syscall_nr, Some(117));
        assert!(!p.compat_syscall);
        assert_eq!(p.process_key.as_deref(), Some("42:5000"));

        // A thread the kernel side knew nothing of: its old credentials are unknown,
        // not equal to the new ones.
        r.header.flags |= flags::OLD_CREDS_UNKNOWN;
        r.old = r.new;
        let ev = decode_process(&bytes_of(&r), &BootClock::new(), &"t".into()).unwrap();
        let CollectionEvent::Process(p) = ev else {
            panic!("not a process event")
        };
        assert_eq!(p.old_credentials, None);
        assert_eq!(p.credentials.map(|c| c.uid), Some(65534));
    }

    #[test]
    fn exec_failed_carries_errno_and_the_path_tried() {
        // SAFETY: all-zero is a valid ExecFailedRecord.
        let mut r: ExecFailedRecord = unsafe { std::mem::zeroed() };
        r.header = header(RecordKind::ExecFailed);
        r.errno = 13;
        r.compat = 1;
        r.syscall_nr = 11;
        let path = b"/tmp/not-executable";
        r.filename[..path.len()].copy_from_slice(path);
        r.filename_len = path.len() as u32;
        let ev = decode_process(&bytes_of(&r), &BootClock::new(), &"t".into()).unwrap();
        let CollectionEvent::Process(p) = ev else {
            panic!("not a process event")
        };
        assert_eq!(p.kind, ProcessEventKind::ExecFailed);
        assert_eq!(p.errno, Some(13));
        assert!(p.compat_syscall);
        assert_eq!(p.executable_path.as_deref(), Some("/tmp/not-executable"));
        // A short record is an error, not a panic.
        assert!(decode_process(&bytes_of(&r)[..100], &BootClock::new(), &"t".into()).is_err());
    }

    #[test]
    fn exit_status_decoding() {
        assert_eq!(exit_code_from_status(3 << 8), 3);
        assert_eq!(exit_code_from_status(9), 137);
        assert_eq!(exit_code_from_status(0), 0);
    }
}
