//! Where batches go after the pipeline: IPC subscribers, stdout, the store, metrics.

use std::sync::Arc;

use crate::event::CollectionEvent;

/// A batch of events as handed to sinks; shared, so every sink sees it without a copy.
pub type EventBatch = Arc<[CollectionEvent]>;

/// A consumer of event batches.
///
/// `deliver` is called on the pipeline's task and must never block or await: a sink
/// that cannot keep up queues in its own bounded buffer and, when that is full, drops
/// the batch and counts it (returning [`Delivery::Dropped`]). A slow sink therefore
/// never stalls the pipeline or the other sinks.
pub trait EventSink: Send + Sync + 'static {
    /// A unique name, used in telemetry (`stdout`, `ipc`, `store`).
    fn name(&self) -> &str;

    /// Offer one batch.
    fn deliver(&self, batch: &EventBatch) -> Delivery;
}

/// What a sink did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued or consumed in full.
    Accepted,
    /// This many events were dropped because the sink's queue was full.
    Dropped(usize),
}
