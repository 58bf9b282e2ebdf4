//! Detection tasks: one-shot queries a client asks the collector to answer
//! (enumerate processes, hash an executable, list connections, stat a path, sample
//! metrics). The host-specific work lives behind [`TaskHandler`]; the server checks that
//! some registered source covers the task's domain before calling it.

use async_trait::async_trait;
use collector_proto::v1 as pb;

use crate::event::Domain;

/// Answers detection tasks. Implemented by the agent side (procfs, the filesystem).
#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    /// Run one task. Failures are answered in-band with `DetectionResult.error`
    /// (see [`error_result`]), never by panicking.
    async fn handle(&self, task: pb::DetectionTask) -> pb::DetectionResult;
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
