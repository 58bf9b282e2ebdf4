//! collector-core: the reusable runtime that security event sources plug into.
//!
//! Layout, following the data flow:
//!
//! * [`source`] — the [`EventSource`] trait sources implement; [`caps`] — what they observe.
//! * [`event`] — the [`CollectionEvent`]s they emit.
//! * [`collector`] — the [`Collector`]: registration, start-up, health checks, shutdown.
//! * [`pipeline`](crate::collector) internals — per-source bounded channels, forwarders with
//!   backpressure, one shared bounded queue, and the batcher that feeds [`sink`]s.
//! * [`pressure`](mod@pressure) — what a source reads to shed load instead of blocking.
//! * [`config`] — [`CollectorConfig`] and its layered loading.
//! * [`status`] — the [`StatusSnapshot`] served by IPC; [`ipc`] — the IPC server.
//!
//! ```no_run
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::Arc;
//!
//! use collector_core::{Collector, CollectorConfig, CollectionEvent, EventSource, SourceCaps};
//! use tokio::sync::mpsc;
//!
//! struct Ticker;
//!
//! #[async_trait::async_trait]
//! impl EventSource for Ticker {
//!     fn name(&self) -> &'static str { "ticker" }
//!     fn capabilities(&self) -> SourceCaps { SourceCaps::PERFORMANCE }
//!     async fn start(&self, _tx: mpsc::Sender<CollectionEvent>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
//!         while !stop.load(Ordering::Relaxed) {
//!             tokio::time::sleep(std::time::Duration::from_secs(1)).await;
//!         }
//!         Ok(())
//!     }
//!     async fn stop(&self) -> anyhow::Result<()> { Ok(()) }
//! }
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let mut collector = Collector::new(CollectorConfig::load(None)?)?;
//! collector.register(Box::new(Ticker))?;
//! let summary = collector.run().await?; // until SIGINT/SIGTERM or handle.shutdown()
//! println!("{} events", summary.status.counters.events_received);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod caps;
pub mod collector;
pub mod config;
pub mod event;
pub mod ipc;
pub mod metrics;
mod pipeline;
pub mod pressure;
pub mod report;
pub mod sink;
pub mod source;
pub mod status;
pub mod telemetry;

pub use caps::SourceCaps;
pub use collector::{Collector, CollectorError, CollectorHandle, RunSummary};
pub use config::{CollectorConfig, ConfigError, ExportConfig, ExportPayload};
pub use event::CollectionEvent;
pub use pressure::pressure;
pub use report::{report, Report};
pub use sink::{Delivery, EventBatch, EventSink};
pub use source::{BatchSender, BatchSource, EventSource, SourceStats};
pub use status::{
    DomainMode, DomainStatus, ExportStatus, HealthState, ProcessTableStatus, StatusSnapshot,
};
