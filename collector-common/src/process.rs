//! Process-domain records (exec, fork, exit).

use crate::{RecordHeader, EXEC_ARGV_LEN, EXEC_FILENAME_LEN};

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
