//! [`CollectorHandle`]: control and observe a collector from other tasks (IPC, signals).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::supervisor::{supervise, SourceUnit};
use super::{CollectorError, Shared, SourceSlot};
use crate::caps::SourceCaps;
use crate::config::CollectorConfig;
use crate::sink::EventSink;
use crate::source::{BatchSource, EventSource};
use crate::status::StatusSnapshot;

/// A cheap, cloneable handle to a [`Collector`](super::Collector), valid before, during
/// and after [`run`](super::Collector::run).
#[derive(Clone)]
pub struct CollectorHandle {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for CollectorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorHandle")
            .field("component_name", &self.shared.config.component_name)
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}

impl CollectorHandle {
    /// Asks the collector to shut down; `run` then stops every source and returns.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Whether shutdown has been requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    /// A token cancelled when shutdown starts, for tasks that live beside the collector
    /// (the IPC server). Cancelling the returned token does not shut the collector down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.child_token()
    }

    /// The configuration in force.
    pub fn config(&self) -> &CollectorConfig {
        &self.shared.config
    }

    /// Union of the registered sources' capabilities.
    pub fn capabilities(&self) -> SourceCaps {
        *self.shared.caps.borrow()
    }

    /// Follows the capability union; it changes on every register and unregister,
    /// before or during `run`.
    pub fn watch_capabilities(&self) -> watch::Receiver<SourceCaps> {
        self.shared.caps.subscribe()
    }

    /// The connected-subscriber gauge reported as `counters.subscribers` in status. The
    /// IPC server increments it when a subscriber attaches and decrements it when one
    /// leaves (`fetch_add(1, Relaxed)` / `fetch_sub(1, Relaxed)`).
    pub fn ipc_subscribers(&self) -> &AtomicU64 {
        &self.shared.subscribers
    }

    /// Sets the connected-subscriber gauge.
    pub fn set_subscribers(&self, subscribers: u64) {
        self.shared.subscribers.store(subscribers, Relaxed);
    }

    /// Adds a sink; while running it receives batches from the next one on.
    pub fn add_sink(&self, sink: Arc<dyn EventSink>) {
        self.shared.sinks.add(sink);
    }

    /// Registers a source; while running it starts at once.
    pub fn register(&self, source: Box<dyn EventSource>) -> Result<(), CollectorError> {
        let cancel = self.shared.shutdown.child_token();
        self.register_unit(SourceUnit::new(source, cancel))
    }

    /// Registers a source that sends whole batches straight into the shared queue (see
    /// [`BatchSource`]); otherwise as [`register`](Self::register).
    pub fn register_batch_source(
        &self,
        source: Box<dyn BatchSource>,
    ) -> Result<(), CollectorError> {
        let cancel = self.shared.shutdown.child_token();
        self.register_unit(SourceUnit::new_batch(source, cancel))
    }

    fn register_unit(&self, unit: SourceUnit) -> Result<(), CollectorError> {
        let shared = &self.shared;
        let name = unit.name;
        let mut registry = shared.registry();
        // Checked under the registry lock: `run` cancels the token before it takes the
        // lock to collect the supervisors, so a source admitted here is either started
        // now (and then stopped by that shutdown) or starts with `run`; never neither.
        if shared.shutdown.is_cancelled() {
            return Err(CollectorError::ShuttingDown {
                name: name.to_owned(),
            });
        }
        if registry.slots.iter().any(|s| s.unit.name == name) {
            return Err(CollectorError::DuplicateName {
                name: name.to_owned(),
            });
        }
        let limit = shared.config.max_event_sources;
        if registry.slots.len() >= limit {
            return Err(CollectorError::LimitReached {
                name: name.to_owned(),
                limit,
            });
        }
        let unit = Arc::new(unit);
        let supervisor = registry.running.clone().map(|running| {
            running
                .runtime
                .spawn(supervise(unit.clone(), running.queue, shared.settings()))
        });
        tracing::info!(source = name, capabilities = ?unit.caps.names(), "source registered");
        registry.slots.push(SourceSlot { unit, supervisor });
        shared.publish_caps(&registry);
        Ok(())
    }

    /// Removes a source; if it is running, stops it first (signal, `stop`, then abort
    /// after `shutdown_timeout`).
    pub async fn unregister(&self, name: &str) -> Result<(), CollectorError> {
        let slot = self.shared.remove_source(name)?;
        slot.unit.cancel.cancel();
        if let Some(mut supervisor) = slot.supervisor {
            let grace = self.shared.config.shutdown_timeout + Duration::from_secs(1);
            match tokio::time::timeout(grace, &mut supervisor).await {
                Ok(Ok(report)) if !report.aborted.is_empty() => {
                    tracing::warn!(source = name, aborted = ?report.aborted, "unregistered source was aborted");
                }
                Ok(_) => {}
                Err(_) => supervisor.abort(),
            }
        }
        tracing::info!(source = name, "source unregistered");
        Ok(())
    }

    /// A point-in-time view of every source and the pipeline.
    pub fn status(&self) -> StatusSnapshot {
        let shared = &self.shared;
        let (sources, started_at, queue_depth, above_threshold) = {
            let registry = shared.registry();
            (
                registry
                    .slots
                    .iter()
                    .map(|s| s.unit.status())
                    .collect::<Vec<_>>(),
                registry.started_at,
                registry.running.as_ref().map_or(0, |r| r.queue.depth()),
                registry
                    .running
                    .as_ref()
                    .is_some_and(|r| r.queue.under_backpressure()),
            )
        };
        let mut counters = shared.telemetry.counters();
        counters.queue_depth = queue_depth as u64;
        counters.under_backpressure |= above_threshold;
        counters.subscribers = shared.subscribers.load(Relaxed);
        let sinks = shared.sinks.snapshot();
        counters.sink_dropped = sinks
            .iter()
            .map(|e| (e.sink.name().to_owned(), e.dropped.total()))
            .collect();
        counters.sink_dropped_by_reason = sinks
            .iter()
            .map(|e| {
                let reasons = e.dropped.map(&crate::telemetry::SINK_REASONS);
                (e.sink.name().to_owned(), reasons)
            })
            .collect();
        StatusSnapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            component_name: shared.config.component_name.clone(),
            uptime_seconds: started_at.map_or(0.0, |t| t.elapsed().as_secs_f64()),
            capabilities: self.capabilities(),
            sources,
            counters,
            export: None,
            domains: self
                .shared
                .domains
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            processes: None,
        }
    }

    /// Declares how a domain is collected, for `status` (replaces the domain's earlier
    /// entry).
    pub fn set_domain_status(&self, status: crate::status::DomainStatus) {
        let mut domains = self
            .shared
            .domains
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        domains.retain(|d| d.domain != status.domain);
        domains.push(status);
    }
}
