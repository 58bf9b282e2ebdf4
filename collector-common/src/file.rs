//! Filesystem-domain records.

use crate::RecordHeader;

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

/// `FileRecord.path_flags`: the user string read when the call entered differs from the
/// one read when it returned (another thread rewrote the buffer, or unmapped it): the
/// kernel may have acted on either, or on a third. Only set where the path is (in part)
/// the user string.
pub const PATH_FLAG_CHANGED: u32 = 8;
/// `FileRecord.path_flags` / `RenameRecord.old_path_flags`: the path is a descriptor's
/// file and another thread may have swapped the descriptor. For an open's new
/// descriptor: its file was held more than once (or was gone) when it was walked. For a
/// call that names its file by a descriptor: the descriptor held another file at entry.
pub const PATH_FLAG_FD_RACED: u32 = 16;

/// `FileRecord.file_flags` / `RenameRecord.file_flags`: the call came through the
/// 32-bit syscall entry (`int $0x80`, `TS_COMPAT`).
pub const FILE_FLAG_COMPAT: u32 = 1;
/// `FileRecord.file_flags` / `RenameRecord.file_flags`: the operation was submitted
/// through io_uring (`IORING_OP_*`), not a syscall of its own. The path strings are the
/// kernel's copies (`struct filename`), so `PATH_FLAG_CHANGED` never applies.
pub const FILE_FLAG_IO_URING: u32 = 2;
/// `FileRecord.file_flags` / `RenameRecord.file_flags`: no result is known. An io_uring
/// request submitted with `IOSQE_CQE_SKIP_SUCCESS` posts no completion when it
/// succeeds, so it is reported at submission; `result` is meaningless (0).
pub const FILE_FLAG_NO_RESULT: u32 = 4;
/// `FileRecord.file_flags`: the call named its file by a descriptor, not by a path
/// (`fchmod`, `fchown`, a failed `open_by_handle_at`'s mount fd): `dirfd` holds that
/// descriptor, and the path is its file's, walked in the kernel (never the user's).
pub const FILE_FLAG_BY_FD: u32 = 8;
/// `FileRecord.file_flags`: `open_by_handle_at`, an open by a file handle (from
/// `name_to_handle_at`, or forged) on the filesystem of the mount fd in `dirfd`, not by
/// a path: the way around a container's mount namespace that needs only
/// `CAP_DAC_READ_SEARCH`. On success the path is the opened file's, walked in the kernel.
pub const FILE_FLAG_BY_HANDLE: u32 = 16;

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

/// A two-path file event (rename, link, symlink), variable length: this fixed part, then
/// `old_path_len` bytes of the old path, then `new_path_len` bytes of the new path (no
/// NULs). The ring record is exactly `size_of::<RenameRecord>() + old_path_len +
/// new_path_len` bytes. Each path carries its own `PATH_FLAG_*`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RenameRecord {
    /// Common fields of the acting task.
    pub header: RecordHeader,
    /// Syscall result: 0 or a negative errno.
    pub result: i64,
    /// Directory fd of the old path (`AT_FDCWD` = -100 for the cwd).
    pub old_dirfd: i32,
    /// Directory fd of the new path (setxattr: the value's size; its name has none).
    pub new_dirfd: i32,
    /// Bytes of old path following this struct (at most [`FILE_PATH_MAX`]).
    pub old_path_len: u32,
    /// Bytes of new path following the old one (at most [`FILE_PATH_MAX`]).
    pub new_path_len: u32,
    /// `PATH_FLAG_*` of the old path (symlink: the target string, always `PATH_FLAG_USER`).
    pub old_path_flags: u32,
    /// `PATH_FLAG_*` of the new path.
    pub new_path_flags: u32,
    /// `FILE_FLAG_*`
    pub file_flags: u32,
    /// renameat2 flags (`RENAME_*`), linkat flags (`AT_*`), setxattr flags (`XATTR_*`);
    /// 0 otherwise.
    pub call_flags: u32,
}
