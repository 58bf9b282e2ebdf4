use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{rfc3339_nanos, SourceName};

/// What happened to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessEventKind {
    /// A new program image (successful execve/execveat).
    Exec,
    /// A new process was created.
    Fork,
    /// A process exited.
    Exit,
    /// The process was seen by a scan (not a lifecycle change).
    Snapshot,
    /// The process's uids, gids or capabilities changed (setuid family, capset, a
    /// privilege-gaining exec): `old_credentials` before, `credentials` after.
    #[serde(rename = "cred_change")]
    CredChange,
    /// An execve/execveat failed: `errno` says why, `executable_path` is the path the
    /// caller passed.
    #[serde(rename = "exec_failed")]
    ExecFailed,
}

impl ProcessEventKind {
    /// JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Fork => "fork",
            Self::Exit => "exit",
            Self::Snapshot => "snapshot",
            Self::CredChange => "cred_change",
            Self::ExecFailed => "exec_failed",
        }
    }
}

/// A task's credentials as the kernel checks them (`task->cred`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessCredentials {
    /// Real uid.
    pub uid: u32,
    /// Effective uid: what permission checks use.
    pub euid: u32,
    /// Saved uid.
    pub suid: u32,
    /// Filesystem uid.
    pub fsuid: u32,
    /// Real gid.
    pub gid: u32,
    /// Effective gid.
    pub egid: u32,
    /// Saved gid.
    pub sgid: u32,
    /// Filesystem gid.
    pub fsgid: u32,
    /// Effective capabilities (bit n = capability n, e.g. bit 21 `CAP_SYS_ADMIN`).
    pub cap_effective: u64,
    /// Permitted capabilities.
    pub cap_permitted: u64,
    /// Audit login uid; absent when unset (`-1` in the kernel) or without CONFIG_AUDIT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loginuid: Option<u32>,
    /// Audit session id; absent when unset or without CONFIG_AUDIT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessionid: Option<u32>,
}

/// A process lifecycle event. Optional fields are absent from JSON when unknown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessEvent {
    /// What happened.
    pub kind: ProcessEventKind,
    /// When it happened.
    #[serde(with = "rfc3339_nanos")]
    pub timestamp: DateTime<Utc>,
    /// Process id.
    pub pid: u32,
    /// Source name.
    pub source: SourceName,
    /// Parent process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    /// Real uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Real gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Task name (`comm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<super::CompactString>,
    /// Path of the executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable_path: Option<String>,
    /// Arguments, argv[0] first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command_line: Vec<String>,
    /// True when `command_line` was cut at the collector's cap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub command_line_truncated: bool,
    /// When the process started.
    #[serde(
        default,
        with = "rfc3339_nanos::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_time: Option<DateTime<Utc>>,
    /// Exit code (for `exit`): the status passed to exit(), or 128 + signal when killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// cgroup v2 id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// Hex digest of the executable, when computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable_hash: Option<String>,
    /// Algorithm of `executable_hash` (e.g. `sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_algorithm: Option<String>,
    /// For `fork`: the new child's pid (`pid` is the parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_pid: Option<u32>,
    /// Credentials of the task (after the change, for `cred_change`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<ProcessCredentials>,
    /// For `cred_change`: the credentials before the change (the thread's as last seen
    /// by the kernel side); `None` when they were never seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_credentials: Option<ProcessCredentials>,
    /// For `exec`: the exec gained privileges (setuid/setgid bit or file capabilities).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secure_exec: bool,
    /// For `exec_failed`: the errno the call returned (positive, e.g. 2 = ENOENT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// For `cred_change` and `exec_failed`: the syscall number (i386 numbering when
    /// `compat_syscall`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall_nr: Option<u32>,
    /// The syscall came through the 32-bit entry (`int $0x80`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compat_syscall: bool,
    /// Stable key of the process: `<pid>:<start time, CLOCK_BOOTTIME ns>` of the
    /// thread-group leader. Unlike the pid it is not reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_key: Option<super::CompactString>,
    /// For `fork`: the child's start time (with `child_pid`, the child's key).
    #[serde(
        default,
        with = "rfc3339_nanos::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub child_start_time: Option<DateTime<Utc>>,
    /// For `exec`: inode number of the image the kernel loaded (for a script, the
    /// interpreter's: the kernel has let go of the script's file by then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable_inode: Option<u64>,
    /// For `exec`: device of that inode (the kernel's `MKDEV(major, minor)`:
    /// `major << 20 | minor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable_device: Option<u32>,
    /// For `exec`: the executed file had no links left (deleted before or while it ran,
    /// a memfd, an `O_TMPFILE`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable_deleted: bool,
    /// For `exec`: fileless execution from a memfd; the memfd's name (without `memfd:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memfd_name: Option<String>,
    /// For `exec` of a script: the interpreter the kernel ran (`#!` line or binfmt_misc),
    /// as the kernel-resolved path of the file it loaded (symlinks followed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// The process's pid inside its own pid namespace (equals `pid` on the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_pid: Option<u32>,
    /// Inode of the process's pid namespace (as in `/proc/<pid>/ns/pid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace_inode: Option<u32>,
    /// Path of the cgroup v2 (`cgroup_id`) under the cgroup2 mount, e.g.
    /// `/system.slice/ssh.service`; resolved in userspace, absent when the cgroup is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<String>,
    /// For `exec`: the working directory at the exec, walked in the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// For `exec`: `executable_path` is the string the caller gave (made absolute
    /// against `cwd`), not the file the kernel resolved: a script (the kernel has let go
    /// of its file by the time the exec is reported) or an unreadable walk.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable_path_user_supplied: bool,
    /// `executable_path` was cut (longer than `PATH_MAX`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable_path_truncated: bool,
}

impl ProcessEvent {
    /// An event with only the required fields set.
    pub fn new(
        kind: ProcessEventKind,
        timestamp: DateTime<Utc>,
        pid: u32,
        source: impl Into<SourceName>,
    ) -> Self {
        Self {
            kind,
            timestamp,
            pid,
            source: source.into(),
            ppid: None,
            uid: None,
            gid: None,
            name: None,
            executable_path: None,
            command_line: Vec::new(),
            command_line_truncated: false,
            start_time: None,
            exit_code: None,
            cgroup_id: None,
            executable_hash: None,
            hash_algorithm: None,
            child_pid: None,
            credentials: None,
            old_credentials: None,
            secure_exec: false,
            errno: None,
            syscall_nr: None,
            compat_syscall: false,
            process_key: None,
            child_start_time: None,
            executable_inode: None,
            executable_device: None,
            executable_deleted: false,
            memfd_name: None,
            interpreter: None,
            namespace_pid: None,
            pid_namespace_inode: None,
            cgroup_path: None,
            cwd: None,
            executable_path_user_supplied: false,
            executable_path_truncated: false,
        }
    }
}

/// The process behind a network or filesystem event, as the collector's process table
/// knows it (filled in userspace from what the process events said: the kernel record of
/// a socket or file operation carries only the pid and `comm`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessContext {
    /// The process key the table holds for the pid (`<pid>:<start ns>`, as in process
    /// events).
    pub process_key: String,
    /// Executable path at its last exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable_path: Option<String>,
    /// Task name at its last exec (a later rename changes `name`, not this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_name: Option<String>,
    /// Parent pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    /// The parent's process key, when the table knows the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_process_key: Option<String>,
}
