//! collector-core: the reusable runtime that security event sources plug into.
#![deny(missing_docs)]

pub mod caps;
pub mod event;
pub mod ipc;
pub mod sink;
pub mod source;
pub mod status;

pub use caps::SourceCaps;
pub use event::CollectionEvent;
pub use sink::{Delivery, EventBatch, EventSink};
pub use source::{EventSource, SourceStats};
pub use status::{HealthState, StatusSnapshot};
