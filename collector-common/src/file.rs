//! Filesystem-domain records.

use crate::{RecordHeader, FILE_PATH_LEN};

/// Longest path a variable-length file record carries (the kernel's `PATH_MAX`).
pub const FILE_PATH_MAX: usize = 4096;

/// `FileRecord.path_flags`: the path was cut (it was longer than [`FILE_PATH_MAX`]).
pub const PATH_FLAG_TRUNCATED: u32 = 1;
/// `FileRecord.path_flags`: a kernel object or the user string could not be read; the
/// path is partial or empty.
pub const PATH_FLAG_UNREADABLE: u32 = 2;
/// `FileRecord.path_flags`: the path (or its last part) is the user-supplied string,
/// not resolved by the kernel (may hold `..` or symlinks). Without it the path is the
/// kernel-resolved canonical path of the object the call produced.
pub const PATH_FLAG_USER: u32 = 4;

/// `FileRecord.file_flags` / `RenameRecord.file_flags`: the call came through the
/// 32-bit syscall entry (`int $0x80`, `TS_COMPAT`).
pub const FILE_FLAG_COMPAT: u32 = 1;

/// A file event with one path, variable length: this fixed part, then `path_len` bytes
/// of path (no NUL). The ring record is exactly `size_of::<FileRecord>() + path_len`
/// bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FileRecord {
    /// Common fields of the acting task.
    pub header: RecordHeader,
    /// Syscall result: a fd or 0 on success, a negative errno on failure.
    pub result: i64,
    /// Open flags (`O_*`), `unlinkat` flags for unlink.
    pub open_flags: u32,
    /// Mode given to open/creat.
    pub mode: u32,
    /// Directory fd the path is relative to (`AT_FDCWD` = -100 for the cwd).
    pub dirfd: i32,
    /// Bytes of path following this struct (at most [`FILE_PATH_MAX`]).
    pub path_len: u32,
    /// `PATH_FLAG_*`
    pub path_flags: u32,
    /// `FILE_FLAG_*`
    pub file_flags: u32,
    /// chown: the new owner uid (`u32::MAX`: unchanged); 0 for other kinds.
    pub owner_uid: u32,
    /// chown: the new owner gid (`u32::MAX`: unchanged); 0 for other kinds.
    pub owner_gid: u32,
}

/// A rename with both paths.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RenameRecord {
    /// Common fields of the acting task.
    pub header: RecordHeader,
    /// Syscall result: 0 or a negative errno.
    pub result: i64,
    /// Directory fd of the old path.
    pub old_dirfd: i32,
    /// Directory fd of the new path.
    pub new_dirfd: i32,
    /// Bytes used in `old_path`.
    pub old_path_len: u32,
    /// Bytes used in `new_path`.
    pub new_path_len: u32,
    /// `FILE_FLAG_*`
    pub file_flags: u32,
    /// Zero.
    pub _pad: u32,
    /// Old path as passed.
    pub old_path: [u8; FILE_PATH_LEN],
    /// New path as passed.
    pub new_path: [u8; FILE_PATH_LEN],
}
