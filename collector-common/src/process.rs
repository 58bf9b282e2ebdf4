//! Process-domain records (exec, fork, exit).

use crate::RecordHeader;

/// A task's credentials (`task->cred`), as the kernel checks them.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Real user id.
    pub uid: u32,
    /// Effective user id.
    pub euid: u32,
    /// Saved user id.
    pub suid: u32,
    /// Filesystem user id.
    pub fsuid: u32,
    /// Real group id.
    pub gid: u32,
    /// Effective group id.
    pub egid: u32,
    /// Saved group id.
    pub sgid: u32,
    /// Filesystem group id.
    pub fsgid: u32,
    /// Effective capabilities (`cap_effective`, bit n = capability n).
    pub cap_effective: u64,
    /// Permitted capabilities (`cap_permitted`).
    pub cap_permitted: u64,
    /// Audit login uid (`task->loginuid`; `u32::MAX` when unset or without CONFIG_AUDIT).
    pub loginuid: u32,
    /// Audit session id (`task->sessionid`; `u32::MAX` when unset or without CONFIG_AUDIT).
    pub sessionid: u32,
}

/// Bits of [`ExecRecord::exec_flags`].
pub mod exec_flags {
    /// The exec gained privileges (`bprm->secureexec`: setuid/setgid bits or file
    /// capabilities took effect; AT_SECURE is set for the new image).
    pub const SECURE_EXEC: u32 = 1 << 0;
    /// The executed file lives in a memfd (its dentry is named `memfd:<name>`):
    /// fileless execution. `exe_name` holds the dentry name.
    pub const MEMFD: u32 = 1 << 1;
    /// The executed file had no links left (deleted, or an unlinked memfd/O_TMPFILE).
    pub const DELETED: u32 = 1 << 2;
    /// A script: `interpreter` holds the interpreter's path (`bprm->interp`).
    pub const SCRIPT: u32 = 1 << 3;
    /// `interpreter` was cut at [`super::EXEC_INTERP_LEN`].
    pub const INTERP_TRUNCATED: u32 = 1 << 4;
}

/// Bytes kept of the executed file's dentry name (memfd names are at most 249 + 6).
/// A power of two: the kernel program masks with it.
pub const EXEC_EXE_NAME_LEN: usize = 256;
/// Bytes kept of a script's interpreter path (`BINPRM_BUF_SIZE` bounds a `#!` line).
/// A power of two: the kernel program masks with it.
pub const EXEC_INTERP_LEN: usize = 256;

/// A task's credentials changed in a syscall (setuid family, capset, a privilege-gaining
/// execve), written at `sys_exit` by comparing them with the thread's last known ones
/// (from its creation or its last watched call; see `flags::OLD_CREDS_UNKNOWN`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CredChangeRecord {
    /// Common fields, after the change.
    pub header: RecordHeader,
    /// Syscall number as the entry used it (i386 numbering when `compat` is 1).
    pub syscall_nr: u32,
    /// 1 when the call came through the 32-bit entry (`int $0x80`, `TS_COMPAT`).
    pub compat: u32,
    /// Credentials before the syscall (a copy of `new` with `OLD_CREDS_UNKNOWN`).
    pub old: Credentials,
    /// Credentials after the syscall.
    pub new: Credentials,
}

/// Bytes of the path kept for a failed exec (the string the caller passed).
pub const EXEC_FAILED_PATH_LEN: usize = 256;

/// An `execve`/`execveat` that failed, written at `sys_exit`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExecFailedRecord {
    /// Common fields of the caller.
    pub header: RecordHeader,
    /// The positive errno the syscall returned.
    pub errno: u32,
    /// Syscall number as the entry used it (i386 numbering when `compat` is 1).
    pub syscall_nr: u32,
    /// 1 when the call came through the 32-bit entry.
    pub compat: u32,
    /// Bytes used in `filename`; the path is read from the caller's memory at exit
    /// (user-supplied, may be cut: then `FILENAME_TRUNCATED` is set).
    pub filename_len: u32,
    /// The path the caller passed.
    pub filename: [u8; EXEC_FAILED_PATH_LEN],
}

/// A successful exec, written at `sched_process_exec` in the new image's context.
///
/// Variable length: this fixed part is followed by `filename_len` bytes of path,
/// `interp_len` bytes of interpreter, `exe_name_len` bytes of dentry name,
/// `exe_path_len` bytes of the executed file's kernel-resolved path, `cwd_len` bytes of
/// the working directory and `argv_len` bytes of arguments, in that order, none
/// NUL-terminated (the kernel assembles them in per-CPU scratch and copies exactly that
/// many bytes into the ring).
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
    /// Credentials of the new image (after any setuid/setgid/file-capability gain).
    pub creds: Credentials,
    /// Bits from [`exec_flags`].
    pub exec_flags: u32,
    /// Bytes of the path the kernel executed (`bprm->filename`) that follow.
    pub filename_len: u32,
    /// Bytes of NUL-separated arguments (`mm->arg_start..arg_end`) that follow.
    pub argv_len: u32,
    /// Link count of the executed file's inode (0: deleted or never linked).
    pub exe_nlink: u32,
    /// Inode number of the image the kernel loaded (`bprm->executable` when set, i.e.
    /// binfmt_misc with the `O` flag, else `bprm->file`: for a script, the interpreter's,
    /// since `exec_binprm` has swapped the script's file out by this tracepoint).
    pub exe_ino: u64,
    /// Device of that inode (`i_sb->s_dev`, the kernel's `MKDEV(major, minor)`).
    pub exe_dev: u32,
    /// Bytes of a script's interpreter (`bprm->interp` when it differs from
    /// `bprm->filename`) that follow.
    pub interp_len: u32,
    /// The process's pid in its own pid namespace (`thread_pid->numbers[level].nr`).
    pub ns_pid: u32,
    /// Inode number of that pid namespace (`ns.inum`, as in `/proc/<pid>/ns/pid`).
    pub pidns_inum: u32,
    /// Bytes of the executed file's dentry name (`memfd:<name>` for a memfd) that follow.
    pub exe_name_len: u32,
    /// Bytes of the absolute path of the file the kernel loaded (the same file as
    /// `exe_ino`), walked in the kernel from its `struct file`, that follow.
    pub exe_path_len: u32,
    /// `PATH_FLAG_*` of that path (truncated, unreadable).
    pub exe_path_flags: u32,
    /// Bytes of the task's working directory at the exec, walked in the kernel.
    pub cwd_len: u32,
    /// `PATH_FLAG_*` of the working directory.
    pub cwd_flags: u32,
    /// Nanoseconds part of the executed file's mtime (`inode.i_mtime_nsec`).
    pub exe_mtime_nsec: u32,
    /// Nanoseconds part of its ctime (`inode.i_ctime_nsec`).
    pub exe_ctime_nsec: u32,
    /// Padding; always zero.
    pub _pad: u32,
    /// Size of the executed file (`inode.i_size`). With the times below, the version of
    /// the file the kernel loaded, read at the exec: the executable-hash cache's key.
    /// All three are 0 where the kernel lacks the split time fields (before 6.11).
    pub exe_size: u64,
    /// Seconds part of its mtime (`inode.i_mtime_sec`).
    pub exe_mtime_sec: i64,
    /// Seconds part of its ctime (`inode.i_ctime_sec`): a user cannot set it, so an
    /// in-place rewrite (even one that restores mtime) changes the key.
    pub exe_ctime_sec: i64,
}

impl ExecRecord {
    /// Offset of the variable-length tail (path, interpreter, dentry name, arguments).
    pub const TAIL_OFFSET: usize = core::mem::size_of::<ExecRecord>();
    /// Largest tail: every part at its cap.
    pub const MAX_TAIL_LEN: usize = crate::EXEC_FILENAME_LEN
        + EXEC_INTERP_LEN
        + EXEC_EXE_NAME_LEN
        + 2 * crate::FILE_PATH_MAX
        + crate::EXEC_ARGV_LEN;
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
    /// The child's start time (`start_boottime`): with `child_pid`, the child's process key.
    pub child_start_boottime_ns: u64,
    /// Credentials of the parent (the child starts with the same).
    pub creds: Credentials,
    /// The parent's pid in its own pid namespace.
    pub ns_pid: u32,
    /// Inode number of that pid namespace.
    pub pidns_inum: u32,
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
    /// Credentials of the exiting task.
    pub creds: Credentials,
    /// The process's pid in its own pid namespace.
    pub ns_pid: u32,
    /// Inode number of that pid namespace.
    pub pidns_inum: u32,
}
