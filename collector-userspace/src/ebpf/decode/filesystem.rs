//! Filesystem-domain records: open, create, unlink, rename.

use std::path::Path;

use collector_common::{
    FileRecord, RecordHeader, RecordKind, RenameRecord, FILE_FLAG_COMPAT, FILE_PATH_LEN,
    FILE_PATH_MAX, PATH_FLAG_TRUNCATED, PATH_FLAG_UNREADABLE, PATH_FLAG_USER,
};
use collector_core::event::{CollectionEvent, FilesystemEvent, FilesystemEventKind, SourceName};

use super::{c_str, read, record_kind, DecodeError};
use crate::ebpf::clock::BootClock;

const AT_FDCWD: i32 = -100;

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
        path_truncated: false,
        path_unreadable: false,
        path_user_supplied: true,
        compat_syscall: false,
        owner_uid: None,
        owner_gid: None,
        process: None,
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
        RecordKind::Open
        | RecordKind::Create
        | RecordKind::Unlink
        | RecordKind::Mkdir
        | RecordKind::Rmdir
        | RecordKind::Chmod
        | RecordKind::Chown
        | RecordKind::MemfdCreate => {
            let r: FileRecord = read(bytes, kind as u32)?;
            // Variable length: the path bytes follow the fixed part. The kernel already
            // made the path absolute (resolved object, or cwd/dirfd walked + the user
            // string), so nothing is looked up in /proc here.
            let start = std::mem::size_of::<FileRecord>();
            let len = (r.path_len as usize).min(FILE_PATH_MAX);
            let raw = bytes.get(start..start + len).ok_or(DecodeError::Short {
                kind: kind as u32,
                got: bytes.len(),
                need: start + len,
            })?;
            let path = String::from_utf8_lossy(raw).into_owned();
            // A memfd name is not a path: never "relative".
            let relative = kind != RecordKind::MemfdCreate && !path.starts_with('/');
            let is_open = matches!(kind, RecordKind::Open | RecordKind::Create);
            let has_flags = is_open || kind == RecordKind::MemfdCreate;
            let has_mode = is_open || matches!(kind, RecordKind::Mkdir | RecordKind::Chmod);
            let event_kind = match kind {
                RecordKind::Open => FilesystemEventKind::Open,
                RecordKind::Create => FilesystemEventKind::Create,
                RecordKind::Mkdir => FilesystemEventKind::Mkdir,
                RecordKind::Rmdir => FilesystemEventKind::Rmdir,
                RecordKind::Chmod => FilesystemEventKind::Chmod,
                RecordKind::Chown => FilesystemEventKind::Chown,
                RecordKind::MemfdCreate => FilesystemEventKind::MemfdCreate,
                _ => FilesystemEventKind::Unlink,
            };
            let mut ev = file_base(&r.header, event_kind, path, r.result, clock, source);
            ev.path_relative = relative;
            ev.path_truncated = r.path_flags & PATH_FLAG_TRUNCATED != 0;
            ev.path_unreadable = r.path_flags & PATH_FLAG_UNREADABLE != 0;
            ev.path_user_supplied = r.path_flags & PATH_FLAG_USER != 0;
            ev.compat_syscall = r.file_flags & FILE_FLAG_COMPAT != 0;
            ev.flags = has_flags.then_some(r.open_flags);
            if kind == RecordKind::Chown {
                // -1 (u32::MAX) leaves that id unchanged: absent.
                ev.owner_uid = (r.owner_uid != u32::MAX).then_some(r.owner_uid);
                ev.owner_gid = (r.owner_gid != u32::MAX).then_some(r.owner_gid);
            }
            ev.mode = has_mode.then_some(r.mode);
            ev
        }
        RecordKind::Rename | RecordKind::Link | RecordKind::Symlink => {
            let r: RenameRecord = read(bytes, kind as u32)?;
            let old_len = (r.old_path_len as usize).min(FILE_PATH_LEN);
            let new_len = (r.new_path_len as usize).min(FILE_PATH_LEN);
            let old = c_str(&r.old_path[..old_len]);
            // A symlink's target is stored as given: resolving it against the caller's
            // cwd would name a file the link does not point to.
            let (path, rel_old) = if kind == RecordKind::Symlink {
                (old, false)
            } else {
                resolve_path(r.header.pid, r.old_dirfd, old)
            };
            let (new_path, rel_new) =
                resolve_path(r.header.pid, r.new_dirfd, c_str(&r.new_path[..new_len]));
            let event_kind = match kind {
                RecordKind::Link => FilesystemEventKind::Link,
                RecordKind::Symlink => FilesystemEventKind::Symlink,
                _ => FilesystemEventKind::Rename,
            };
            let mut ev = file_base(&r.header, event_kind, path, r.result, clock, source);
            ev.new_path = Some(new_path);
            ev.path_relative = rel_old || rel_new;
            ev.compat_syscall = r.file_flags & FILE_FLAG_COMPAT != 0;
            ev
        }
        other => return Err(DecodeError::UnknownKind(other as u32)),
    };
    Ok(CollectionEvent::Filesystem(ev))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
