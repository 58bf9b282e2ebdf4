//! Pipeline counters: written once per chunk or batch on the hot path (never per event),
//! read by [`status`](crate::CollectorHandle::status) and the periodic telemetry log.
//!
//! Every counter has a single writer except the shared queue's high-water mark and the
//! pipeline-wide totals, which forwarders update once per chunk of up to
//! `max_batch_size` events; relaxed atomics suffice because readers only need eventually
//! consistent numbers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::status::PipelineCounters;

/// Why the runtime dropped events: one typed reason, counted once where the drop
/// happens. Shown in status and metrics under [`as_str`](Self::as_str).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The shared queue stayed above `backpressure_threshold` for
    /// `max_backpressure_wait` and had no room left.
    Backpressure,
    /// The batcher was gone (only after it crashed), so the events had nowhere to go.
    PipelineClosed,
    /// A sink's own queue was full (a slow IPC subscriber, stdout).
    SinkFull,
    /// A sink panicked while taking the batch.
    SinkPanicked,
}

impl DropReason {
    /// Every reason, in display order.
    pub const ALL: [DropReason; 4] = [
        DropReason::Backpressure,
        DropReason::PipelineClosed,
        DropReason::SinkFull,
        DropReason::SinkPanicked,
    ];

    /// The name used in status and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Backpressure => "backpressure",
            DropReason::PipelineClosed => "pipeline_closed",
            DropReason::SinkFull => "sink_full",
            DropReason::SinkPanicked => "sink_panicked",
        }
    }
}

/// Drop reason: the shared queue stayed full for `max_backpressure_wait`.
pub const DROP_BACKPRESSURE: &str = DropReason::Backpressure.as_str();

/// One counter per [`DropReason`].
#[derive(Debug, Default)]
pub(crate) struct DropCounters([AtomicU64; DropReason::ALL.len()]);

impl DropCounters {
    pub(crate) fn add(&self, reason: DropReason, n: u64) {
        self.0[reason as usize].fetch_add(n, Relaxed);
    }

    pub(crate) fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize].load(Relaxed)
    }

    pub(crate) fn total(&self) -> u64 {
        self.0.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The counts of `reasons`, by name (zeros included, so the keys are stable).
    pub(crate) fn map(&self, reasons: &[DropReason]) -> BTreeMap<String, u64> {
        reasons
            .iter()
            .map(|&r| (r.as_str().to_owned(), self.get(r)))
            .collect()
    }
}

/// Reasons the pipeline drops for (per source and in total).
pub(crate) const PIPELINE_REASONS: [DropReason; 2] =
    [DropReason::Backpressure, DropReason::PipelineClosed];
/// Reasons a sink drops for.
pub(crate) const SINK_REASONS: [DropReason; 2] = [DropReason::SinkFull, DropReason::SinkPanicked];

/// Counters the pipeline keeps for one source.
#[derive(Debug, Default)]
pub(crate) struct SourceCounters {
    /// Events taken from the source's channel.
    pub received: AtomicU64,
    /// Events of this source the pipeline dropped, by reason.
    pub dropped: DropCounters,
    /// Most events seen waiting in the source's channel at once.
    pub channel_high_water: AtomicU64,
    /// Events received, by kind (index in `ipc::filter::KIND_NAMES`).
    pub by_kind: [AtomicU64; 32],
}

impl SourceCounters {
    /// Counts `events` by kind: one atomic add per kind present, not per event.
    pub(crate) fn count_kinds(&self, events: &[crate::CollectionEvent]) {
        let mut local = [0u64; 32];
        for ev in events {
            local[crate::ipc::filter::kind_index(ev) & 31] += 1;
        }
        for (slot, n) in self.by_kind.iter().zip(local) {
            if n > 0 {
                slot.fetch_add(n, Relaxed);
            }
        }
    }

    /// Events received, by kind name.
    pub(crate) fn received_by_kind(&self) -> BTreeMap<String, u64> {
        crate::ipc::filter::KIND_NAMES
            .iter()
            .zip(&self.by_kind)
            .map(|(name, n)| (name.to_string(), n.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub(crate) fn dropped(&self) -> BTreeMap<String, u64> {
        self.dropped.map(&PIPELINE_REASONS)
    }
}

/// Pipeline-wide counters.
#[derive(Debug, Default)]
pub(crate) struct PipelineTelemetry {
    pub received: AtomicU64,
    pub dropped: DropCounters,
    pub queue_high_water: AtomicU64,
    pub batches: AtomicU64,
    pub events_delivered: AtomicU64,
    pub batch_size_max: AtomicU64,
    pub latency_sum_ns: AtomicU64,
    pub latency_max_ns: AtomicU64,
    /// Pushes that found the shared queue above `backpressure_threshold` and waited.
    pub backpressure_waits: AtomicU64,
    /// Pushes waiting for the queue to drain right now.
    pub backpressure_waiting: AtomicU64,
    /// Total time pushes spent waiting under backpressure.
    pub backpressure_wait_ns: AtomicU64,
    /// Batches by latency bucket (upper bounds in [`BATCH_LATENCY_BUCKETS_US`], then +Inf).
    pub latency_buckets: [AtomicU64; BATCH_LATENCY_BUCKETS_US.len() + 1],
}

/// Upper bounds, in microseconds, of the batch-latency histogram's buckets.
pub const BATCH_LATENCY_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

impl PipelineTelemetry {
    /// Records one batch handed to the sinks (called by the single batcher task).
    pub(crate) fn record_batch(&self, size: usize, latency: Duration) {
        let size = size as u64;
        let latency_ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.batches.fetch_add(1, Relaxed);
        self.events_delivered.fetch_add(size, Relaxed);
        self.batch_size_max.fetch_max(size, Relaxed);
        self.latency_sum_ns.fetch_add(latency_ns, Relaxed);
        self.latency_max_ns.fetch_max(latency_ns, Relaxed);
        let us = latency_ns / 1000;
        let bucket = BATCH_LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BATCH_LATENCY_BUCKETS_US.len());
        self.latency_buckets[bucket].fetch_add(1, Relaxed);
    }

    /// Fills the pipeline counters; `queue_depth`, `sink_dropped` and `subscribers` come
    /// from elsewhere.
    pub(crate) fn counters(&self) -> PipelineCounters {
        let batches = self.batches.load(Relaxed);
        let delivered = self.events_delivered.load(Relaxed);
        let per_batch = |total: u64| {
            if batches == 0 {
                0.0
            } else {
                total as f64 / batches as f64
            }
        };
        PipelineCounters {
            events_received: self.received.load(Relaxed),
            dropped: self.dropped.map(&PIPELINE_REASONS),
            batches,
            queue_high_water: self.queue_high_water.load(Relaxed),
            events_delivered: delivered,
            batch_size_mean: per_batch(delivered),
            batch_size_max: self.batch_size_max.load(Relaxed),
            latency_mean_us: per_batch(self.latency_sum_ns.load(Relaxed)) / 1000.0,
            latency_max_us: self.latency_max_ns.load(Relaxed) / 1000,
            under_backpressure: self.backpressure_waiting.load(Relaxed) > 0,
            backpressure_waits: self.backpressure_waits.load(Relaxed),
            backpressure_wait_us: self.backpressure_wait_ns.load(Relaxed) / 1000,
            latency_buckets: self
                .latency_buckets
                .iter()
                .map(|b| b.load(Relaxed))
                .collect(),
            ..PipelineCounters::default()
        }
    }
}

/// Logs one telemetry report: a pipeline line, then one line per source.
pub(crate) fn log_report(component: &str, status: &crate::status::StatusSnapshot) {
    let c = &status.counters;
    tracing::info!(
        component,
        events_received = c.events_received,
        events_delivered = c.events_delivered,
        dropped = ?c.dropped,
        sink_dropped = ?c.sink_dropped,
        batches = c.batches,
        batch_size_mean = c.batch_size_mean,
        batch_size_max = c.batch_size_max,
        queue_depth = c.queue_depth,
        queue_high_water = c.queue_high_water,
        latency_mean_us = c.latency_mean_us,
        latency_max_us = c.latency_max_us,
        under_backpressure = c.under_backpressure,
        backpressure_waits = c.backpressure_waits,
        backpressure_wait_us = c.backpressure_wait_us,
        subscribers = c.subscribers,
        "pipeline telemetry"
    );
    for s in &status.sources {
        tracing::info!(
            component,
            source = %s.name,
            health = ?s.health,
            events_received = s.events_received,
            dropped = ?s.dropped,
            queue_depth = s.queue_depth,
            queue_high_water = s.queue_high_water,
            last_error = s.last_error.as_deref().unwrap_or(""),
            "source telemetry"
        );
    }
}
