//! Detection tasks: one-shot queries a client asks the collector to answer
//! (enumerate processes, hash an executable, list connections, stat a path, sample
//! metrics). The host-specific work lives behind [`TaskHandler`]; the server checks that
//! some registered source covers the task's domain before calling it.

use async_trait::async_trait;
use collector_proto::v1 as pb;

use crate::event::Domain;

/// Who asked for a task: the peer's credentials as the kernel gave them when it
/// connected (`SO_PEERCRED` and `SO_PEERGROUPS`), never what the peer claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Effective uid of the peer at connect time.
    pub uid: u32,
    /// Effective gid of the peer at connect time.
    pub gid: u32,
    /// Its pid (for logs only: a pid can be reused).
    pub pid: Option<i32>,
    /// Its supplementary groups at connect time.
    pub groups: Vec<u32>,
}

impl Peer {
    /// The superuser (the collector itself, tests, in-process callers).
    pub fn root() -> Self {
        Self {
            uid: 0,
            gid: 0,
            pid: None,
            groups: Vec::new(),
        }
    }

    /// Whether the peer is the superuser: it may have anything answered.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether `gid` is the peer's primary or one of its supplementary groups.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Answers detection tasks. Implemented by the agent side (procfs, the filesystem).
#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    /// Run one task. Failures are answered in-band with `DetectionResult.error`
    /// (see [`error_result`]), never by panicking.
    async fn handle(&self, task: pb::DetectionTask) -> pb::DetectionResult;

    /// Run one task for `peer`: a handler that touches files must answer only what the
    /// peer could read itself. The server calls this one; the default ignores the peer,
    /// which is right only for handlers that read nothing private.
    async fn handle_as(&self, task: pb::DetectionTask, peer: &Peer) -> pb::DetectionResult {
        let _ = peer;
        self.handle(task).await
    }
}

/// The domain a task belongs to: a task can only run when some source covers it.
/// `None` for a task with no body.
pub fn task_domain(task: &pb::DetectionTask) -> Option<Domain> {
    use pb::detection_task::Task;
    Some(match task.task.as_ref()? {
        Task::EnumerateProcesses(_) | Task::CheckExecutableHash(_) => Domain::Process,
        Task::ListNetworkConnections(_) => Domain::Network,
        Task::StatPath(_) => Domain::Filesystem,
        Task::SampleSystemMetrics(_) => Domain::Performance,
    })
}

/// A result carrying an error.
pub fn error_result(
    task_id: impl Into<String>,
    code: pb::ErrorCode,
    message: impl Into<String>,
) -> pb::DetectionResult {
    pb::DetectionResult {
        task_id: task_id.into(),
        result: Some(pb::detection_result::Result::Error(pb::Error {
            code: code as i32,
            message: message.into(),
        })),
    }
}
