//! The [`EventSource`] trait every collector plugs in.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

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
}
