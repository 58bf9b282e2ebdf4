//! The [`EventSource`] trait every collector plugs in.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::caps::SourceCaps;
use crate::event::CollectionEvent;

/// A producer of [`CollectionEvent`]s: a kernel ring-buffer reader, a procfs poller, ...
///
/// The [`Collector`](crate::Collector) calls `start` on its own task. `start` may return
/// once the source has spawned its work, or run until `shutdown_signal` is set; the
/// collector's `startup_timeout` bounds only how long a source may take to report that
/// it is up (see `Collector` docs), never its whole life.
///
/// Sending: `tx` is bounded. A source on a hot path must not block on it; it can read
/// the pressure with [`crate::pressure`] and shed load, or await a send.
#[async_trait]
pub trait EventSource: Send + Sync {
    /// A unique, stable name (`ebpf-process`, `procfs-process`, ...).
    fn name(&self) -> &'static str;

    /// What this source observes.
    fn capabilities(&self) -> SourceCaps;

    /// Produce events into `tx` until `shutdown_signal` is set.
    async fn start(
        &self,
        tx: mpsc::Sender<CollectionEvent>,
        shutdown_signal: Arc<AtomicBool>,
    ) -> anyhow::Result<()>;

    /// Stop producing and release resources (kernel links, files).
    async fn stop(&self) -> anyhow::Result<()>;

    /// Report whether the source still works; an error marks it degraded or failed.
    async fn health_check(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Counters the source keeps itself (kernel losses, own drops, hooks in use).
    /// Sources without any keep the default.
    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }
}

/// Counters and facts a source reports beyond its events, shown in status and metrics.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceStats {
    /// Events the kernel could not hand over (ring buffer full), by record kind.
    pub kernel_lost: std::collections::BTreeMap<String, u64>,
    /// Events the kernel submitted, by record kind.
    pub kernel_emitted: std::collections::BTreeMap<String, u64>,
    /// Events the source itself dropped, by reason (`decode_error`, `backpressure`, ...).
    pub dropped: std::collections::BTreeMap<String, u64>,
    /// Which kernel hook each program got (`sched_process_exec` -> `tp_btf`).
    pub hooks: std::collections::BTreeMap<String, String>,
    /// Times each kernel program was found detached from its hook (by something other
    /// than the collector) and attached again. Events its hook saw while detached are
    /// lost without a count: the kernel cannot count what no program saw.
    #[serde(default)]
    pub reattached: std::collections::BTreeMap<String, u64>,
}

/// A source that produces whole batches (a kernel ring drain, a procfs scan) and hands
/// them straight to the collector's shared queue: one hop, no per-event channel and no
/// forwarder task. It is still an [`EventSource`] (name, capabilities, `stop`, health
/// and stats come from there, and it can be registered as one); registered with
/// [`Collector::register_batch_source`](crate::Collector::register_batch_source), the
/// collector calls [`run_batches`](Self::run_batches) instead of `start`.
#[async_trait]
pub trait BatchSource: EventSource {
    /// Produces batches into `tx` until `shutdown` is cancelled (shutdown or unregister),
    /// then returns. `stop` is still called, as for any source.
    async fn run_batches(&self, tx: BatchSender, shutdown: CancellationToken)
        -> anyhow::Result<()>;
}

/// The sending end a [`BatchSource`] gets: whole batches into the shared queue, with one
/// bounded wait per batch. Cheap to clone.
///
/// Below `backpressure_threshold` a send never waits. Above it the send waits, at most
/// `max_backpressure_wait` for the whole batch, for the queue to drain; what still does
/// not fit is dropped and counted once, for this source, with reason `backpressure`.
#[derive(Clone)]
pub struct BatchSender {
    pub(crate) inner: std::sync::Arc<crate::pipeline::BatchSenderInner>,
}

impl BatchSender {
    /// Sends every event of `events` (leaving it empty, its capacity kept for reuse).
    /// Returns how many were dropped (and counted) because the queue stayed full.
    pub async fn send_batch(&self, events: &mut Vec<CollectionEvent>) -> usize {
        self.inner.send_batch(events).await
    }

    /// Whether the collector is under backpressure now (the shared queue is above
    /// `backpressure_threshold`), for a source that would rather shed load itself.
    pub fn is_pressured(&self) -> bool {
        self.inner.is_pressured()
    }

    /// Largest batch the queue takes in one piece; bigger ones are split.
    pub fn max_batch_size(&self) -> usize {
        self.inner.max_batch_size()
    }

    /// Tells the collector the source is up (`Healthy`) before its first batch: for a
    /// source that knows it is collecting (a kernel drain whose programs are attached)
    /// on a host quiet enough that no event may come for a while. Without it such a
    /// source stays `Starting` until its check at `startup_timeout`. Idempotent.
    pub fn ready(&self) {
        self.inner.mark_started();
    }
}

impl std::fmt::Debug for BatchSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSender")
            .field("max_batch_size", &self.max_batch_size())
            .finish()
    }
}
