//! [`CollectorIpcServer`]: the Unix-socket server agents connect to.
//!
//! One task per connection, split into a reader (requests) and a writer (responses,
//! event batches, `Lagged` and `CapabilityUpdate` pushes). Admission happens before a
//! connection gets a task: peer credentials first, then a permit from the connection
//! semaphore; a refused client gets one Error frame and is closed. A connection's
//! failure (bad frames, timeouts, a panic) ends that connection only.
//!
//! Layout, in the order a connection meets it:
//! - [`config`]: [`IpcServerConfig`] and [`PeerPolicy`];
//! - `listener`: binding the socket, the accept loop, peer credentials, connection
//!   slots and limits;
//! - `connection`: one connection's requests (negotiation, subscribe, status, tasks)
//!   and its writer;
//! - `stream`: event batches encoded into frames under the frame budget, `Lagged` and
//!   end-of-stream notices.

use std::sync::Arc;

use collector_proto::v1 as pb;
use collector_proto::v1::envelope::Body;

use crate::ipc::provider::StatusProvider;
use crate::ipc::sink::IpcSink;
use crate::ipc::task::TaskHandler;

pub mod config;
mod connection;
mod listener;
mod stream;

pub use crate::ipc::error::ServerError;
pub use config::{IpcServerConfig, PeerPolicy};
pub use listener::CollectorIpcServer;

/// Everything a connection needs, shared by all of them.
struct Shared {
    /// Open connections per non-root uid.
    per_uid: std::sync::Mutex<std::collections::HashMap<u32, usize>>,
    config: IpcServerConfig,
    status: Arc<dyn StatusProvider>,
    sink: IpcSink,
    tasks: Option<Arc<dyn TaskHandler>>,
}

fn error_envelope(
    request_id: u64,
    code: pb::ErrorCode,
    message: impl Into<String>,
) -> pb::Envelope {
    pb::Envelope {
        request_id,
        body: Some(Body::Error(pb::Error {
            code: code as i32,
            message: message.into(),
        })),
    }
}
