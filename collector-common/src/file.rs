//! Filesystem-domain records.

use crate::{RecordHeader, FILE_PATH_LEN};

/// A file event with one path.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FileRecord {
    /// Common fields of the acting task.
    pub header: RecordHeader,
    /// Syscall result: a fd or 0 on success, a negative errno on failure.
    pub result: i64,
    /// Open flags (`O_*`), 0 for unlink.
    pub open_flags: u32,
    /// Mode given to open/creat.
    pub mode: u32,
    /// Directory fd the path is relative to (`AT_FDCWD` = -100 for the cwd).
    pub dirfd: i32,
    /// Bytes used in `path`.
    pub path_len: u32,
    /// The path as the process passed it.
    pub path: [u8; FILE_PATH_LEN],
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
    /// Old path as passed.
    pub old_path: [u8; FILE_PATH_LEN],
    /// New path as passed.
    pub new_path: [u8; FILE_PATH_LEN],
}
