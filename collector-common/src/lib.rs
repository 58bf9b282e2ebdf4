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
/// Bytes of the executable path kept for an exec (`PATH_MAX`; longer paths set
/// [`flags::FILENAME_TRUNCATED`]). A power of two: the kernel program masks with it.
pub const EXEC_FILENAME_LEN: usize = 4096;
/// Bytes of the NUL-separated argument vector kept for an exec (longer sets
/// [`flags::ARGV_TRUNCATED`]). Must be a power of two: the kernel program masks with it.
pub const EXEC_ARGV_LEN: usize = 32768;
/// Bytes of a path kept for a file event (longer sets [`flags::PATH_TRUNCATED`]).
/// Must be a power of two.
pub const FILE_PATH_LEN: usize = 256;

/// Bytes of a path compared against excluded path prefixes (longer prefixes are cut).
pub const PATH_PREFIX_LEN: usize = 128;

pub mod abi;
mod file;
mod net;
mod process;

pub use file::*;
pub use net::*;
pub use process::*;

/// What a record is. The numeric values are the ABI between kernel and userspace.
///
/// Ranges: 1-3 and 12-19 process, 4-7 and 20-29 network, 8-11 and 30-39 filesystem.
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
    // -- process kinds from 12 --
    /// A task's uids, gids or capabilities changed ([`CredChangeRecord`]).
    CredChange = 12,
    /// An `execve`/`execveat` failed ([`ExecFailedRecord`]).
    ExecFailed = 13,
    // -- network kinds from 20 --
    /// A socket was bound to a local address ([`NetRecord`]).
    Bind = 20,
    /// A UDP datagram was sent to a new destination, or a send-count update ([`NetRecord`]).
    UdpSend = 21,
    /// A unix socket connected to a path ([`UnixRecord`]).
    UnixConnect = 22,
    /// A unix socket was bound to a path ([`UnixRecord`]).
    UnixBind = 23,
    // -- filesystem kinds from 30 --
    /// A directory was created by mkdir/mkdirat ([`FileRecord`], `mode`).
    Mkdir = 30,
    /// A directory was removed by rmdir or unlinkat(AT_REMOVEDIR) ([`FileRecord`]).
    Rmdir = 31,
    /// A file's mode was changed by chmod/fchmodat/fchmodat2 ([`FileRecord`], `mode`).
    Chmod = 32,
    /// A file's owner was changed by chown/lchown/fchownat ([`FileRecord`], `owner_uid`/`owner_gid`).
    Chown = 33,
    /// A hard link was made by link/linkat ([`RenameRecord`]: old = existing, new = link).
    Link = 34,
    /// A symlink was made by symlink/symlinkat ([`RenameRecord`]: old = target string, new = link).
    Symlink = 35,
    /// An anonymous memory file was made by memfd_create ([`FileRecord`]: path = its name).
    MemfdCreate = 36,
    /// A file system node was made by mknod/mknodat ([`FileRecord`]: `mode` with its
    /// type bits, the device number in `open_flags`).
    Mknod = 37,
    /// A file's size was set by truncate/ftruncate ([`FileRecord`]: the new length's low
    /// 32 bits in `open_flags`, its high 32 bits in `mode`).
    Truncate = 38,
    /// An extended attribute was set by setxattr/lsetxattr/fsetxattr/setxattrat
    /// ([`RenameRecord`]: old = the file, new = the attribute's name, never resolved;
    /// `call_flags` the `XATTR_*` flags, `new_dirfd` the value's size in bytes).
    Setxattr = 39,
}

impl RecordKind {
    /// Number of kinds, for sizing per-kind counter arrays (index = kind value).
    pub const COUNT: u32 = 40;

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
            // process kinds from 12
            12 => Self::CredChange,
            13 => Self::ExecFailed,

            // network kinds from 20
            20 => Self::Bind,
            21 => Self::UdpSend,
            22 => Self::UnixConnect,
            23 => Self::UnixBind,

            // filesystem kinds from 30
            30 => Self::Mkdir,
            31 => Self::Rmdir,
            32 => Self::Chmod,
            33 => Self::Chown,
            34 => Self::Link,
            35 => Self::Symlink,
            36 => Self::MemfdCreate,
            37 => Self::Mknod,
            38 => Self::Truncate,
            39 => Self::Setxattr,
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
    /// A file path was longer than [`super::FILE_PATH_MAX`] and was cut (the record's
    /// `PATH_FLAG_TRUNCATED` says the same, per path).
    pub const PATH_TRUNCATED: u32 = 1 << 2;
    /// A second file path (rename target) was cut.
    pub const NEW_PATH_TRUNCATED: u32 = 1 << 3;
    /// The path is relative to a directory fd other than the cwd (see `dirfd`).
    pub const PATH_RELATIVE_TO_DIRFD: u32 = 1 << 4;
    /// The argument vector could not be read from the new process image.
    pub const ARGV_UNREADABLE: u32 = 1 << 5;
    /// A credentials change of a thread whose earlier credentials the kernel side did
    /// not know (it predates the collector, or was evicted from the map of them): the
    /// record's `old` is a copy of `new`, not the credentials before the call.
    pub const OLD_CREDS_UNKNOWN: u32 = 1 << 6;
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
    /// Start time of the thread-group leader (`group_leader->start_boottime`,
    /// CLOCK_BOOTTIME ns): with `pid`, the process key that survives pid reuse.
    pub process_start_ns: u64,
    /// Task name, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// Indices of the per-CPU kernel counter array (`COUNTERS`): for each record kind `k`,
/// `k * COUNTERS_PER_KIND + COUNTER_EMITTED` counts records submitted,
/// `+ COUNTER_LOST` records lost because the ring buffer had no room,
/// `+ COUNTER_LOST_STASH_FULL` calls lost because the per-thread stash map was full at
/// syscall entry, `+ COUNTER_PATH_UNREADABLE` records sent with a path that could not be
/// read (the event arrives, its path is partial: `path_unreadable`), `+ COUNTER_FD_GONE`
/// calls that succeeded but whose new descriptor another thread had closed before the
/// exit could read it (an accept: no socket left to describe).
pub const COUNTER_EMITTED: u32 = 0;
/// See [`COUNTER_EMITTED`].
pub const COUNTER_LOST: u32 = 1;
/// See [`COUNTER_EMITTED`].
pub const COUNTER_LOST_STASH_FULL: u32 = 2;
/// See [`COUNTER_EMITTED`].
pub const COUNTER_PATH_UNREADABLE: u32 = 3;
/// See [`COUNTER_EMITTED`].
pub const COUNTER_FD_GONE: u32 = 4;
/// Counters per record kind.
pub const COUNTERS_PER_KIND: u32 = 5;
/// Entries in the `COUNTERS` per-CPU array.
pub const COUNTERS_LEN: u32 = RecordKind::COUNT * COUNTERS_PER_KIND;

/// Index into `COUNTERS` for `kind`'s counter `which`.
pub const fn counter_index(kind: RecordKind, which: u32) -> u32 {
    kind as u32 * COUNTERS_PER_KIND + which
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
    unsafe impl aya::Pod for CredChangeRecord {}
    unsafe impl aya::Pod for ExecFailedRecord {}
    unsafe impl aya::Pod for NetRecord {}
    unsafe impl aya::Pod for UnixRecord {}
    unsafe impl aya::Pod for FileRecord {}
    unsafe impl aya::Pod for RenameRecord {}
}
