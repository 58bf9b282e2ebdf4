use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{rfc3339_nanos, SourceName};

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilesystemEventKind {
    /// A file was created (an open that created it).
    Create,
    /// A file was opened.
    Open,
    /// A file was unlinked.
    Unlink,
    /// A file was renamed.
    Rename,
    /// A directory was created.
    Mkdir,
    /// A directory was removed.
    Rmdir,
    /// A file's mode was changed (`mode` holds the new one, setuid/setgid included).
    Chmod,
    /// A file's owner was changed (`owner_uid`/`owner_gid`).
    Chown,
    /// A hard link was made: `path` is the existing file, `new_path` the new link.
    Link,
    /// A symlink was made: `path` is the target string as given (not resolved),
    /// `new_path` the link.
    Symlink,
    /// An anonymous memory file was made: `path` is the name given (not a path).
    /// (`memfd_create` in JSON, as in the docs, the IPC filter and `as_str`.)
    #[serde(rename = "memfd_create")]
    MemfdCreate,
    /// An unnamed file was made with `O_TMPFILE`: `path` is its directory, walked in the
    /// kernel, + `#<inode>` (the kernel's name for it). Nothing can open it by name until
    /// a `linkat` gives it one (a `link` event).
    Tmpfile,
    /// A file was opened by a file handle (`open_by_handle_at`), not by a path: `path`
    /// is the opened file's, walked in the kernel (on failure, the directory of the mount
    /// fd the handle was to be looked up on). A handle reaches files outside the
    /// caller's mount namespace and root (the "shocker" container escape; it needs
    /// `CAP_DAC_READ_SEARCH`).
    #[serde(rename = "open_by_handle_at")]
    OpenByHandleAt,
    /// A file system node was made by mknod/mknodat: `mode` holds its type (`S_IFCHR`
    /// 0o020000, `S_IFBLK` 0o060000, `S_IFIFO` 0o010000, `S_IFSOCK` 0o140000, `S_IFREG`
    /// 0o100000) and permissions, setuid/setgid included; `device_major`/`device_minor`
    /// the device. A block device node gives raw access to a disk.
    Mknod,
    /// A file's size was set by truncate/ftruncate: `length` is the new size (0 empties
    /// the file, as log wiping does without an open that truncates).
    Truncate,
    /// An extended attribute was set by setxattr/lsetxattr/fsetxattr/setxattrat:
    /// `xattr_name` names it, `flags` holds `XATTR_CREATE`/`XATTR_REPLACE`, `length` the
    /// value's size. `security.capability` gives a file capabilities (as a setuid bit
    /// would give it privileges); `security.*` and `trusted.*` need privilege to set.
    Setxattr,
}

impl FilesystemEventKind {
    /// JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Open => "open",
            Self::Unlink => "unlink",
            Self::Rename => "rename",
            Self::Mkdir => "mkdir",
            Self::Rmdir => "rmdir",
            Self::Chmod => "chmod",
            Self::Chown => "chown",
            Self::Link => "link",
            Self::Symlink => "symlink",
            Self::MemfdCreate => "memfd_create",
            Self::Tmpfile => "tmpfile",
            Self::OpenByHandleAt => "open_by_handle_at",
            Self::Mknod => "mknod",
            Self::Truncate => "truncate",
            Self::Setxattr => "setxattr",
        }
    }
}

/// A file operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilesystemEvent {
    /// What happened.
    pub kind: FilesystemEventKind,
    /// When it happened.
    #[serde(with = "rfc3339_nanos")]
    pub timestamp: DateTime<Utc>,
    /// Acting process.
    pub pid: u32,
    /// Source name.
    pub source: SourceName,
    /// Path (absolute when it could be resolved; see `path_relative`).
    pub path: String,
    /// New path, for `rename`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_path: Option<String>,
    /// True when `path` is relative and could not be resolved.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_relative: bool,
    /// Open flags (`O_*`), for open and create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<u32>,
    /// Mode, for open and create (given), mkdir (given, before the umask) and chmod
    /// (the new mode, `S_ISUID` 0o4000 / `S_ISGID` 0o2000 included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Syscall result: fd or 0 on success, negative errno on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<i64>,
    /// uid of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Process name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<super::CompactString>,
    /// The path was cut (longer than `PATH_MAX`); the kept bytes are its start for a
    /// user-supplied path, its leaf-most end for a kernel-resolved one.
    #[serde(default)]
    pub path_truncated: bool,
    /// A kernel object or the user string could not be read: the path is partial.
    #[serde(default)]
    pub path_unreadable: bool,
    /// Path source: true when (the last part of) the path is the string the process
    /// passed (may hold `..`, symlinks; the kernel may have reached something else),
    /// false when the kernel resolved it from the object the call reached.
    #[serde(default)]
    pub path_user_supplied: bool,
    /// The call came through the 32-bit syscall entry (`int $0x80`); the event's
    /// fields mean the same as for the native entry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compat_syscall: bool,
    /// chown: the new owner uid (absent when the call left it unchanged, -1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_uid: Option<u32>,
    /// chown: the new owner gid (absent when the call left it unchanged, -1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_gid: Option<u32>,
    /// Stable key of the acting process (`<pid>:<start time, CLOCK_BOOTTIME ns>`), the
    /// same as on its process events: joins this event to its exec without pid-reuse
    /// mistakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_key: Option<super::CompactString>,
    /// The user string of `path` read when the call entered differed from the one read
    /// when it returned: another thread rewrote the buffer, and the kernel may have
    /// acted on a name other than `path`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_changed: bool,
    /// `path_truncated` for `new_path`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_path_truncated: bool,
    /// `path_unreadable` for `new_path`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_path_unreadable: bool,
    /// `path_user_supplied` for `new_path`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_path_user_supplied: bool,
    /// `path_changed` for `new_path`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_path_changed: bool,
    /// Submitted through io_uring (`IORING_OP_OPENAT`, `UNLINKAT`, ...) rather than a
    /// syscall of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub io_uring: bool,
    /// mknod: the device number's major (character and block devices; 0 otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_major: Option<u32>,
    /// mknod: the device number's minor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_minor: Option<u32>,
    /// truncate: the length the file was set to (as passed; a refused call's too).
    /// setxattr: the value's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// setxattr: the attribute's name (`user.*`, `security.capability`, ...), as the
    /// caller passed it (read at entry and again at exit: a difference sets
    /// `path_changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xattr_name: Option<String>,
    /// open, create: when the call returned, the file behind its new descriptor was held
    /// more than once (or gone). Another thread replaced the descriptor (`dup2`),
    /// duplicated or closed it between the kernel installing it and the collector
    /// reading it, so `path` may name a file other than the one the call opened. Calls
    /// that name their file by a descriptor (fchmod, fchown, ftruncate, fsetxattr): the
    /// descriptor held another file at the call's entry than the one walked at its exit.
    /// What it cannot see is in docs/kernel.md.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fd_raced: bool,
    /// The process, from the collector's process table (absent when the table does not
    /// know the pid: a process that ended before its event was read, or a table off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Shared: every event of one process points at the same context.
    pub process: Option<std::sync::Arc<super::ProcessContext>>,
}

impl FilesystemEvent {
    /// An event with only the required fields set (the path as given: user-supplied,
    /// complete, readable), like [`ProcessEvent::new`](super::ProcessEvent::new).
    pub fn new(
        kind: FilesystemEventKind,
        timestamp: DateTime<Utc>,
        pid: u32,
        source: impl Into<SourceName>,
        path: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            timestamp,
            pid,
            source: source.into(),
            path: path.into(),
            new_path: None,
            path_relative: false,
            flags: None,
            mode: None,
            result: None,
            uid: None,
            name: None,
            path_truncated: false,
            path_unreadable: false,
            path_user_supplied: true,
            compat_syscall: false,
            owner_uid: None,
            owner_gid: None,
            process_key: None,
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
            process: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectionEvent;

    fn rename() -> FilesystemEvent {
        FilesystemEvent {
            kind: FilesystemEventKind::Rename,
            timestamp: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            pid: 7,
            source: "ebpf-filesystem".into(),
            path: "/d/a".into(),
            new_path: Some("/d/b".into()),
            path_relative: false,
            flags: Some(2),
            mode: None,
            result: Some(0),
            uid: Some(65534),
            name: Some("mv".into()),
            path_truncated: false,
            path_unreadable: false,
            path_user_supplied: true,
            compat_syscall: false,
            owner_uid: None,
            owner_gid: None,
            path_changed: true,
            new_path_truncated: true,
            new_path_unreadable: false,
            new_path_user_supplied: true,
            new_path_changed: false,
            io_uring: true,
            device_major: None,
            device_minor: None,
            length: None,
            xattr_name: None,
            fd_raced: true,
            process_key: Some("7:1000".into()),
            process: None,
        }
    }

    #[test]
    fn per_path_flags_and_io_uring_are_in_the_json() {
        let line = CollectionEvent::from(rename()).to_json_line();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["path_changed"], true);
        assert_eq!(json["new_path_truncated"], true);
        assert_eq!(json["new_path_user_supplied"], true);
        assert_eq!(json["io_uring"], true);
        assert_eq!(json["fd_raced"], true);
        assert_eq!(json["flags"], 2);
        // Absent when false, like `compat_syscall`.
        assert!(json.get("new_path_changed").is_none());
        assert!(json.get("new_path_unreadable").is_none());
        let back: CollectionEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back, CollectionEvent::from(rename()));
    }
}
