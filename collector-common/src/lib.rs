//! Records shared by the kernel programs (`collector-ebpf`) and their userspace readers
//! (`collector-userspace`).
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of pointers so that a record written
//! into a BPF ring buffer by the kernel can be read back byte-for-byte in userspace. The
//! crate is `no_std` so the kernel crate can build it for `bpfel-unknown-none`; the `user`
//! feature adds userspace-only helpers (`aya::Pod`, string decoding).
//!
//! Layout of the data flow:
//!
//! ```text
//! kernel program --(RecordHeader + body)--> ring buffer (one per domain) --> userspace source
//! ```
//!
//! Every record starts with a [`RecordHeader`] whose `kind` says which body follows.
#![no_std]
#![deny(missing_docs)]

/// Length of a task's `comm` in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Bytes of the executable path kept for an exec (longer paths set [`flags::FILENAME_TRUNCATED`]).
pub const EXEC_FILENAME_LEN: usize = 512;
/// Bytes of the NUL-separated argument vector kept for an exec (longer sets
/// [`flags::ARGV_TRUNCATED`]). Must be a power of two: the kernel program masks with it.
pub const EXEC_ARGV_LEN: usize = 4096;
/// Bytes of a path kept for a file event (longer sets [`flags::PATH_TRUNCATED`]).
/// Must be a power of two.
pub const FILE_PATH_LEN: usize = 256;

/// Bytes of a path compared against excluded path prefixes (longer prefixes are cut).
pub const PATH_PREFIX_LEN: usize = 128;

/// What a record is. The numeric values are the ABI between kernel and userspace.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A successful `execve`/`execveat` ([`ExecRecord`]).
    Exec = 1,
    /// A new process (not a thread) was created ([`ForkRecord`]).
    Fork = 2,
    /// A process (thread-group leader) exited ([`ExitRecord`]).
    Exit = 3,
    /// An outgoing TCP connection started ([`NetRecord`]).
    Connect = 4,
    /// An incoming TCP connection was accepted ([`NetRecord`]).
    Accept = 5,
    /// A TCP connection closed ([`NetRecord`]).
    Close = 6,
    /// A socket started listening ([`NetRecord`]).
    Listen = 7,
    /// A file was opened ([`FileRecord`]).
    Open = 8,
    /// A file was created by an open ([`FileRecord`]).
    Create = 9,
    /// A file was unlinked ([`FileRecord`]).
    Unlink = 10,
    /// A file was renamed ([`RenameRecord`]).
    Rename = 11,
}

impl RecordKind {
    /// Number of kinds, for sizing per-kind counter arrays (index = kind value).
    pub const COUNT: u32 = 12;

    /// Decodes the kind written by the kernel.
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::Exec,
            2 => Self::Fork,
            3 => Self::Exit,
            4 => Self::Connect,
            5 => Self::Accept,
            6 => Self::Close,
            7 => Self::Listen,
            8 => Self::Open,
            9 => Self::Create,
            10 => Self::Unlink,
            11 => Self::Rename,
            _ => return None,
        })
    }
}

/// Bits of [`RecordHeader::flags`].
pub mod flags {
    /// The argument vector was longer than [`super::EXEC_ARGV_LEN`] and was cut.
    pub const ARGV_TRUNCATED: u32 = 1 << 0;
    /// The executable path was longer than [`super::EXEC_FILENAME_LEN`] and was cut.
    pub const FILENAME_TRUNCATED: u32 = 1 << 1;
    /// A file path was longer than [`super::FILE_PATH_LEN`] and was cut.
    pub const PATH_TRUNCATED: u32 = 1 << 2;
    /// A second file path (rename target) was cut.
    pub const NEW_PATH_TRUNCATED: u32 = 1 << 3;
    /// The path is relative to a directory fd other than the cwd (see `dirfd`).
    pub const PATH_RELATIVE_TO_DIRFD: u32 = 1 << 4;
    /// The argument vector could not be read from the new process image.
    pub const ARGV_UNREADABLE: u32 = 1 << 5;
}

/// Fields every record starts with, filled from the current task.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RecordHeader {
    /// A [`RecordKind`] value.
    pub kind: u32,
    /// Bits from [`flags`].
    pub flags: u32,
    /// `bpf_ktime_get_boot_ns()` when the record was made (CLOCK_BOOTTIME).
    pub ktime_ns: u64,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// Real user id.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    /// Task name, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// A successful exec, written at `sched_process_exec` in the new image's context.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExecRecord {
    /// Common fields; `pid`/`tid` are the exec'ing task after the exec.
    pub header: RecordHeader,
    /// Parent process id (`real_parent->tgid`).
    pub ppid: u32,
    /// The pid the task had before exec (differs when a non-leader thread exec'd).
    pub old_pid: u32,
    /// When the process started (`task->start_boottime`, CLOCK_BOOTTIME ns).
    pub start_boottime_ns: u64,
    /// Bytes used in `filename` (without NUL).
    pub filename_len: u32,
    /// Bytes used in `argv` (NUL-separated arguments).
    pub argv_len: u32,
    /// The path the kernel executed (`bprm->filename`).
    pub filename: [u8; EXEC_FILENAME_LEN],
    /// NUL-separated arguments read from `mm->arg_start..arg_end`.
    pub argv: [u8; EXEC_ARGV_LEN],
}

/// A new process, written at `sched_process_fork` in the parent's context.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ForkRecord {
    /// Common fields of the parent.
    pub header: RecordHeader,
    /// The child's process id.
    pub child_pid: u32,
    /// Padding; always zero.
    pub _pad: u32,
}

/// A process exit, written at `sched_process_exit` for the thread-group leader.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExitRecord {
    /// Common fields of the exiting task.
    pub header: RecordHeader,
    /// The raw wait status (`task->exit_code`): `code << 8 | signal`.
    pub exit_code: u32,
    /// Parent process id at exit.
    pub ppid: u32,
}

/// A TCP (or UDP) connection event.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NetRecord {
    /// Common fields of the task the event is attributed to.
    pub header: RecordHeader,
    /// Kernel socket address: stable for the socket's life, used as connection id.
    pub sock_id: u64,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// `IPPROTO_TCP` (6) or `IPPROTO_UDP` (17).
    pub protocol: u16,
    /// Local port (host order).
    pub local_port: u16,
    /// Remote port (host order).
    pub remote_port: u16,
    /// Local address; IPv4 uses the first four bytes.
    pub local_addr: [u8; 16],
    /// Remote address; IPv4 uses the first four bytes.
    pub remote_addr: [u8; 16],
    /// Kernel TCP state at the event (`TCP_*`), or 0.
    pub state: u32,
    /// Syscall result where there is one (0 or a negative errno), else 0.
    pub result: i32,
}

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

/// Indices of the per-CPU kernel counter array (`COUNTERS`): for each record kind `k`,
/// `k * 2 + COUNTER_EMITTED` counts records submitted and `k * 2 + COUNTER_LOST` counts
/// records lost because the ring buffer had no room.
pub const COUNTER_EMITTED: u32 = 0;
/// See [`COUNTER_EMITTED`].
pub const COUNTER_LOST: u32 = 1;
/// Entries in the `COUNTERS` per-CPU array.
pub const COUNTERS_LEN: u32 = RecordKind::COUNT * 2;

/// Index into `COUNTERS` for `kind`'s counter `which`.
pub const fn counter_index(kind: RecordKind, which: u32) -> u32 {
    kind as u32 * 2 + which
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all are repr(C), Copy, contain only integers and byte arrays, and every bit
    // pattern is valid for them.
    unsafe impl aya::Pod for RecordHeader {}
    unsafe impl aya::Pod for ExecRecord {}
    unsafe impl aya::Pod for ForkRecord {}
    unsafe impl aya::Pod for ExitRecord {}
    unsafe impl aya::Pod for NetRecord {}
    unsafe impl aya::Pod for FileRecord {}
    unsafe impl aya::Pod for RenameRecord {}
}
