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
}

impl ProcessEventKind {
    /// JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Fork => "fork",
            Self::Exit => "exit",
            Self::Snapshot => "snapshot",
        }
    }
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
    pub name: Option<String>,
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
        }
    }
}
