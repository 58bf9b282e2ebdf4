//! Filesystem-domain records: open, create, unlink, rename.

use collector_common::{
    FileRecord, RecordHeader, RecordKind, RenameRecord, FILE_FLAG_BY_HANDLE, FILE_FLAG_COMPAT,
    FILE_FLAG_IO_URING, FILE_FLAG_NO_RESULT, FILE_PATH_MAX, PATH_FLAG_CHANGED, PATH_FLAG_FD_RACED,
    PATH_FLAG_TRUNCATED, PATH_FLAG_UNREADABLE, PATH_FLAG_USER,
};
use collector_core::event::{CollectionEvent, FilesystemEvent, FilesystemEventKind, SourceName};

use super::{comm, process::header_process_key, read, record_kind, DecodeError};
use crate::ebpf::clock::BootClock;

/// The event with the header's fields, already boxed: the decoder fills the rest in
/// place, instead of building it on the stack and copying it into the box at the end
/// (a `memcpy` call per event that perf showed in the open storm).
fn file_base(
    h: &RecordHeader,
    kind: FilesystemEventKind,
    path: String,
    result: i64,
    clock: &BootClock,
    source: &SourceName,
) -> Box<FilesystemEvent> {
    let mut ev = Box::new(FilesystemEvent::new(
        kind,
        clock.to_utc(h.ktime_ns),
        h.pid,
        source.clone(),
        path,
    ));
    ev.result = Some(result);
    ev.uid = Some(h.uid);
    ev.name = Some(comm(&h.comm));
    ev.process_key = header_process_key(h);
    ev
}

/// `len` bytes of path at `start` (lossy UTF-8: a name is bytes, not text).
fn path_at(bytes: &[u8], kind: RecordKind, start: usize, len: u32) -> Result<String, DecodeError> {
    let len = (len as usize).min(FILE_PATH_MAX);
    let raw = bytes.get(start..start + len).ok_or(DecodeError::Short {
        kind: kind as u32,
        got: bytes.len(),
        need: start + len,
    })?;
    Ok(super::lossy_string(raw))
}

/// The two strings that follow a two-path record's fixed part (old path, then the new
/// one or a setxattr's attribute name).
fn two_strings(
    bytes: &[u8],
    kind: RecordKind,
    r: &RenameRecord,
) -> Result<(String, String), DecodeError> {
    let start = std::mem::size_of::<RenameRecord>();
    let old_len = r.old_path_len.min(FILE_PATH_MAX as u32);
    let old = path_at(bytes, kind, start, old_len)?;
    let new = path_at(bytes, kind, start + old_len as usize, r.new_path_len)?;
    Ok((old, new))
}

/// `path_*` from a path's `PATH_FLAG_*`.
fn set_path_flags(ev: &mut FilesystemEvent, flags: u32) {
    ev.path_truncated = flags & PATH_FLAG_TRUNCATED != 0;
    ev.path_unreadable = flags & PATH_FLAG_UNREADABLE != 0;
    ev.path_user_supplied = flags & PATH_FLAG_USER != 0;
    ev.path_changed = flags & PATH_FLAG_CHANGED != 0;
    ev.fd_raced = flags & PATH_FLAG_FD_RACED != 0;
}

/// What a record's `FILE_FLAG_*` say of the call: its entry, io_uring, and no result
/// for one reported at submission (io_uring, no completion on success).
fn set_call_flags(ev: &mut FilesystemEvent, file_flags: u32) {
    ev.compat_syscall = file_flags & FILE_FLAG_COMPAT != 0;
    ev.io_uring = file_flags & FILE_FLAG_IO_URING != 0;
    if file_flags & FILE_FLAG_NO_RESULT != 0 {
        ev.result = None;
    }
}

/// A path that names something relative to a directory the kernel did not resolve. No
/// path at all (nothing could be read: `path_unreadable`) is not a relative one.
fn is_relative(path: &str) -> bool {
    !path.is_empty() && !path.starts_with('/')
}

/// `__O_TMPFILE` (x86 and arm64 value), the bit of `O_TMPFILE` beyond `O_DIRECTORY`.
const O_TMPFILE_BIT: u32 = 0o20_000_000;

/// Decodes one filesystem-domain record. Paths come complete from the kernel (the
/// directory walked there + the string the process gave): nothing is looked up in /proc.
pub fn decode_filesystem(
    bytes: &[u8],
    clock: &BootClock,
    source: &SourceName,
) -> Result<CollectionEvent, DecodeError> {
    let kind = record_kind(bytes)?;
    let ev = match kind {
        RecordKind::Open
        | RecordKind::Create
        | RecordKind::Unlink
        | RecordKind::Mkdir
        | RecordKind::Rmdir
        | RecordKind::Chmod
        | RecordKind::Chown
        | RecordKind::MemfdCreate
        | RecordKind::Mknod
        | RecordKind::Truncate => {
            let r: FileRecord = read(bytes, kind as u32)?;
            // Variable length: the path bytes follow the fixed part. The kernel already
            // made the path absolute (resolved object, or cwd/dirfd walked + the user
            // string), so nothing is looked up in /proc here.
            let path = path_at(bytes, kind, std::mem::size_of::<FileRecord>(), r.path_len)?;
            // A memfd name is not a path: never "relative".
            let relative = kind != RecordKind::MemfdCreate && is_relative(&path);
            let is_open = matches!(kind, RecordKind::Open | RecordKind::Create);
            let has_flags = is_open || kind == RecordKind::MemfdCreate;
            let has_mode = is_open
                || matches!(
                    kind,
                    RecordKind::Mkdir | RecordKind::Chmod | RecordKind::Mknod
                );
            let event_kind = match kind {
                // An open by file handle: its own kind, whatever the flags say.
                RecordKind::Open | RecordKind::Create
                    if r.file_flags & FILE_FLAG_BY_HANDLE != 0 =>
                {
                    FilesystemEventKind::OpenByHandleAt
                }
                // `O_TMPFILE` (the kernel's `__O_TMPFILE` bit; the flag includes
                // `O_DIRECTORY`): an unnamed file, whatever the kernel called the open.
                RecordKind::Open | RecordKind::Create if r.open_flags & O_TMPFILE_BIT != 0 => {
                    FilesystemEventKind::Tmpfile
                }
                RecordKind::Open => FilesystemEventKind::Open,
                RecordKind::Create => FilesystemEventKind::Create,
                RecordKind::Mkdir => FilesystemEventKind::Mkdir,
                RecordKind::Rmdir => FilesystemEventKind::Rmdir,
                RecordKind::Chmod => FilesystemEventKind::Chmod,
                RecordKind::Chown => FilesystemEventKind::Chown,
                RecordKind::MemfdCreate => FilesystemEventKind::MemfdCreate,
                RecordKind::Mknod => FilesystemEventKind::Mknod,
                RecordKind::Truncate => FilesystemEventKind::Truncate,
                _ => FilesystemEventKind::Unlink,
            };
            let mut ev = file_base(&r.header, event_kind, path, r.result, clock, source);
            ev.path_relative = relative;
            set_path_flags(&mut ev, r.path_flags);
            set_call_flags(&mut ev, r.file_flags);
            ev.flags = has_flags.then_some(r.open_flags);
            if kind == RecordKind::Chown {
                // -1 (u32::MAX) leaves that id unchanged: absent.
                ev.owner_uid = (r.owner_uid != u32::MAX).then_some(r.owner_uid);
                ev.owner_gid = (r.owner_gid != u32::MAX).then_some(r.owner_gid);
            }
            ev.mode = has_mode.then_some(r.mode);
            if kind == RecordKind::Truncate {
                // The new length, split by the kernel over two 32-bit slots.
                ev.length = Some(u64::from(r.open_flags) | (u64::from(r.mode) << 32));
            }
            if kind == RecordKind::Mknod {
                // The kernel's `new_encode_dev` (the syscall's `unsigned int dev`).
                let dev = r.open_flags;
                ev.device_major = Some((dev & 0xfff00) >> 8);
                ev.device_minor = Some((dev & 0xff) | ((dev >> 12) & 0xfff00));
            }
            ev
        }
        RecordKind::Setxattr => {
            let r: RenameRecord = read(bytes, kind as u32)?;
            // The file's path, then the attribute's name (a string, never a path).
            let (path, name) = two_strings(bytes, kind, &r)?;
            let relative = is_relative(&path);
            let mut ev = file_base(
                &r.header,
                FilesystemEventKind::Setxattr,
                path,
                r.result,
                clock,
                source,
            );
            ev.path_relative = relative;
            // Either string rewritten between the kernel's read and ours.
            set_path_flags(
                &mut ev,
                r.old_path_flags | (r.new_path_flags & PATH_FLAG_CHANGED),
            );
            set_call_flags(&mut ev, r.file_flags);
            ev.flags = Some(r.call_flags);
            // The value's size rides in the name's (unused) directory slot.
            ev.length = Some(u64::from(r.new_dirfd as u32));
            ev.xattr_name = Some(name);
            ev
        }
        RecordKind::Rename | RecordKind::Link | RecordKind::Symlink => {
            let r: RenameRecord = read(bytes, kind as u32)?;
            let (path, new_path) = two_strings(bytes, kind, &r)?;
            let event_kind = match kind {
                RecordKind::Link => FilesystemEventKind::Link,
                RecordKind::Symlink => FilesystemEventKind::Symlink,
                _ => FilesystemEventKind::Rename,
            };
            // A symlink's target is content (never resolved): not "relative".
            let relative =
                (kind != RecordKind::Symlink && is_relative(&path)) || is_relative(&new_path);
            let mut ev = file_base(&r.header, event_kind, path, r.result, clock, source);
            ev.new_path = Some(new_path);
            ev.path_relative = relative;
            set_path_flags(&mut ev, r.old_path_flags);
            let n = r.new_path_flags;
            ev.new_path_truncated = n & PATH_FLAG_TRUNCATED != 0;
            ev.new_path_unreadable = n & PATH_FLAG_UNREADABLE != 0;
            ev.new_path_user_supplied = n & PATH_FLAG_USER != 0;
            ev.new_path_changed = n & PATH_FLAG_CHANGED != 0;
            set_call_flags(&mut ev, r.file_flags);
            // renameat2's RENAME_* (RENAME_EXCHANGE swaps the two files), linkat's AT_*.
            ev.flags = (kind != RecordKind::Symlink).then_some(r.call_flags);
            ev
        }
        other => return Err(DecodeError::UnknownKind(other as u32)),
    };
    Ok(CollectionEvent::Filesystem(ev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: RecordKind) -> RecordHeader {
        RecordHeader {
            kind: kind as u32,
            flags: 0,
            ktime_ns: 1,
            pid: 7,
            tid: 7,
            uid: 65534,
            gid: 65534,
            cgroup_id: 0,
            process_start_ns: 0,
            comm: *b"mv\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    fn rename_bytes(old: &[u8], new: &[u8], old_flags: u32, new_flags: u32) -> Vec<u8> {
        let r = RenameRecord {
            header: header(RecordKind::Rename),
            result: 0,
            old_dirfd: 3,
            new_dirfd: -100,
            old_path_len: old.len() as u32,
            new_path_len: new.len() as u32,
            old_path_flags: old_flags,
            new_path_flags: new_flags,
            file_flags: FILE_FLAG_IO_URING,
            call_flags: 0,
        };
        record_bytes(&r, &[old, new])
    }

    /// A fixed record part as the kernel writes it, followed by `tails`.
    fn record_bytes<T: Copy>(r: &T, tails: &[&[u8]]) -> Vec<u8> {
        // SAFETY: the records are repr(C) plain data.
        let fixed = unsafe {
            std::slice::from_raw_parts((r as *const T).cast::<u8>(), std::mem::size_of::<T>())
        };
        [&[fixed][..], tails].concat().concat()
    }

    #[test]
    fn two_paths_decode_with_their_own_flags() {
        let long = vec![b'a'; 3000];
        let mut old = b"/d/".to_vec();
        old.extend_from_slice(&long);
        let bytes = rename_bytes(
            &old,
            b"/e/b",
            PATH_FLAG_USER | PATH_FLAG_CHANGED,
            PATH_FLAG_USER | PATH_FLAG_TRUNCATED,
        );
        let CollectionEvent::Filesystem(ev) =
            decode_filesystem(&bytes, &BootClock::default(), &SourceName::from("t")).unwrap()
        else {
            panic!("not a filesystem event");
        };
        assert_eq!(ev.kind, FilesystemEventKind::Rename);
        assert_eq!(ev.path.len(), 3003);
        assert_eq!(ev.new_path.as_deref(), Some("/e/b"));
        assert!(ev.path_user_supplied && ev.path_changed && !ev.path_truncated);
        assert!(ev.new_path_user_supplied && ev.new_path_truncated && !ev.new_path_changed);
        assert!(ev.io_uring && !ev.path_relative);
    }

    fn file_bytes(kind: RecordKind, path: &[u8], open_flags: u32, file_flags: u32) -> Vec<u8> {
        let r = FileRecord {
            header: header(kind),
            result: 4,
            open_flags,
            mode: 0,
            dirfd: 3,
            path_len: path.len() as u32,
            path_flags: 0,
            file_flags,
            owner_uid: 0,
            owner_gid: 0,
        };
        record_bytes(&r, &[path])
    }

    /// The event `bytes` decode to (a well-formed filesystem record).
    fn fs_event(bytes: &[u8]) -> Box<FilesystemEvent> {
        match decode_filesystem(bytes, &BootClock::default(), &SourceName::from("t")) {
            Ok(CollectionEvent::Filesystem(ev)) => ev,
            other => panic!("not a filesystem event: {other:?}"),
        }
    }

    #[test]
    fn a_truncate_joins_its_length_halves_and_has_no_flags_or_mode() {
        let mut bytes = file_bytes(RecordKind::Truncate, b"/var/log/wtmp", 7, 0);
        // The high half rides in the mode slot.
        let mode_at = std::mem::offset_of!(FileRecord, mode);
        bytes[mode_at..mode_at + 4].copy_from_slice(&1u32.to_ne_bytes());
        let ev = fs_event(&bytes);
        assert_eq!(ev.kind, FilesystemEventKind::Truncate);
        assert_eq!(ev.length, Some((1 << 32) + 7));
        assert_eq!((ev.flags, ev.mode), (None, None));
        assert_eq!(ev.path, "/var/log/wtmp");
    }

    #[test]
    fn only_a_path_that_does_not_start_at_the_root_is_relative() {
        let relative = |kind, path: &[u8]| fs_event(&file_bytes(kind, path, 0, 0)).path_relative;
        assert!(relative(RecordKind::Unlink, b"a/b"));
        assert!(!relative(RecordKind::Unlink, b"/a/b"));
        // Nothing could be read (a bad descriptor): no path, not a relative one.
        assert!(!relative(RecordKind::Truncate, b""));
        assert!(!relative(RecordKind::MemfdCreate, b"name"));
        for (old, new, want) in [
            (&b"/a"[..], &b"/b"[..], false),
            (b"a", b"/b", true),
            (b"/a", b"b", true),
            (b"", b"", false),
        ] {
            let ev = fs_event(&rename_bytes(old, new, 0, 0));
            assert_eq!(ev.path_relative, want, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn a_setxattr_carries_its_attribute_flags_and_size() {
        let r = RenameRecord {
            header: header(RecordKind::Setxattr),
            result: -1,
            old_dirfd: -100,
            // The value's size, in the name's directory slot.
            new_dirfd: 20,
            old_path_len: 6,
            new_path_len: 19,
            old_path_flags: PATH_FLAG_USER,
            new_path_flags: PATH_FLAG_USER | PATH_FLAG_CHANGED,
            file_flags: FILE_FLAG_COMPAT,
            call_flags: 2,
        };
        let ev = fs_event(&record_bytes(&r, &[b"/tmp/f", b"security.capability"]));
        assert_eq!(ev.kind, FilesystemEventKind::Setxattr);
        assert_eq!(ev.path, "/tmp/f");
        assert_eq!(ev.xattr_name.as_deref(), Some("security.capability"));
        assert_eq!(
            (ev.flags, ev.length, ev.result),
            (Some(2), Some(20), Some(-1))
        );
        assert!(ev.path_user_supplied && ev.compat_syscall && !ev.path_relative);
        // The name rewritten between the kernel's read and ours.
        assert!(ev.path_changed);
        assert_eq!((ev.new_path.as_deref(), ev.mode), (None, None));
    }

    #[test]
    fn an_open_by_handle_is_its_own_kind() {
        let decode = |bytes: &[u8]| {
            let CollectionEvent::Filesystem(ev) =
                decode_filesystem(bytes, &BootClock::default(), &SourceName::from("t")).unwrap()
            else {
                panic!("not a filesystem event");
            };
            ev
        };
        let by_handle = FILE_FLAG_BY_HANDLE | collector_common::FILE_FLAG_BY_FD;
        for kind in [RecordKind::Open, RecordKind::Create] {
            let ev = decode(&file_bytes(kind, b"/etc/shadow", 0, by_handle));
            assert_eq!(ev.kind, FilesystemEventKind::OpenByHandleAt);
            assert_eq!((ev.path.as_str(), ev.result), ("/etc/shadow", Some(4)));
            assert!(!ev.path_user_supplied && !ev.compat_syscall);
        }
        // Whatever its flags say (`O_TMPFILE` would make a plain open a `tmpfile`).
        let ev = decode(&file_bytes(
            RecordKind::Open,
            b"/x",
            O_TMPFILE_BIT,
            by_handle | FILE_FLAG_COMPAT,
        ));
        assert_eq!(ev.kind, FilesystemEventKind::OpenByHandleAt);
        assert!(ev.compat_syscall);
        // By descriptor alone (fchmod): the path-based kind.
        let ev = decode(&file_bytes(
            RecordKind::Chmod,
            b"/x",
            0,
            collector_common::FILE_FLAG_BY_FD,
        ));
        assert_eq!(ev.kind, FilesystemEventKind::Chmod);
    }

    #[test]
    fn a_cut_record_is_an_error_not_a_panic() {
        let bytes = rename_bytes(b"/a", b"/b", 0, 0);
        for n in 0..bytes.len() {
            let _ = decode_filesystem(&bytes[..n], &BootClock::default(), &SourceName::from("t"));
        }
        let mut bad = rename_bytes(b"/a", b"/b", 0, 0);
        // Lengths past the end: an error.
        bad[std::mem::size_of::<RecordHeader>() + 16..][..4]
            .copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(decode_filesystem(&bad, &BootClock::default(), &SourceName::from("t")).is_err());
    }
}
