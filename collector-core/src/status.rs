//! A point-in-time view of the collector, served by IPC `status` and the metrics sink.
//!
//! Fields may be added; none are renamed or removed (IPC and JSON consumers depend on them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::caps::SourceCaps;
use crate::source::SourceStats;

/// Health of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// `start` has not reported yet.
    Starting,
    /// Running and its last health check passed.
    Healthy,
    /// Running, but its last health check failed.
    Degraded,
    /// Its task ended with an error or panic, or it failed repeated health checks.
    Failed,
    /// Stopped by shutdown or unregister.
    Stopped,
}

/// One source's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// Source name.
    pub name: String,
    /// Its capabilities.
    pub capabilities: SourceCaps,
    /// Current health.
    pub health: HealthState,
    /// The last error from start, the task or a health check.
    pub last_error: Option<String>,
    /// Times the source was restarted after failing (see `source_restart_limit`).
    #[serde(default)]
    pub restarts: u32,
    /// Events received from the source by the pipeline.
    pub events_received: u64,
    /// The same, by event kind (`exec`, `open`, ...).
    #[serde(default)]
    pub events_by_kind: BTreeMap<String, u64>,
    /// Events of this source dropped by the pipeline, by reason (`backpressure`, ...).
    pub dropped: BTreeMap<String, u64>,
    /// The source's own counters (kernel losses, hooks).
    pub stats: SourceStats,
    /// Events waiting in the source's channel now.
    #[serde(default)]
    pub queue_depth: u64,
    /// Most events ever waiting in the source's channel at once.
    #[serde(default)]
    pub queue_high_water: u64,
}

/// Pipeline-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineCounters {
    /// Events received from all sources.
    pub events_received: u64,
    /// Events dropped anywhere in the pipeline, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Batches handed to sinks.
    pub batches: u64,
    /// Events in the queue now.
    pub queue_depth: u64,
    /// Most events ever queued at once.
    pub queue_high_water: u64,
    /// Per sink: events dropped because the sink could not keep up (all reasons).
    pub sink_dropped: BTreeMap<String, u64>,
    /// Per sink, by reason (`sink_full`, `sink_panicked`): the same drops as
    /// `sink_dropped`, split.
    #[serde(default)]
    pub sink_dropped_by_reason: BTreeMap<String, BTreeMap<String, u64>>,
    /// Connected IPC subscribers.
    pub subscribers: u64,
    /// Events handed to sinks in batches.
    #[serde(default)]
    pub events_delivered: u64,
    /// Mean events per batch.
    #[serde(default)]
    pub batch_size_mean: f64,
    /// Largest batch so far.
    #[serde(default)]
    pub batch_size_max: u64,
    /// Mean time, in microseconds, from the pipeline receiving a batch's oldest event to
    /// the batch being handed to every sink.
    #[serde(default)]
    pub latency_mean_us: f64,
    /// Largest such time, in microseconds.
    #[serde(default)]
    pub latency_max_us: u64,
    /// Whether the shared queue is above `backpressure_threshold` now (or a source is
    /// waiting for it to drain): sources are being slowed down.
    #[serde(default)]
    pub under_backpressure: bool,
    /// Sends that found the queue above `backpressure_threshold` and waited (at most
    /// `max_backpressure_wait` each).
    #[serde(default)]
    pub backpressure_waits: u64,
    /// Total time, in microseconds, sends spent waiting under backpressure.
    #[serde(default)]
    pub backpressure_wait_us: u64,
    /// Batches by latency (receipt of the oldest event to hand-over to every sink), per
    /// bucket of `telemetry::BATCH_LATENCY_BUCKETS_US` and a last one above them.
    #[serde(default)]
    pub latency_buckets: Vec<u64>,
}

/// The whole status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Crate version.
    pub version: String,
    /// `component_name` from the config.
    pub component_name: String,
    /// Seconds since the collector started.
    pub uptime_seconds: f64,
    /// Union of the registered sources' capabilities.
    pub capabilities: SourceCaps,
    /// Every registered source.
    pub sources: Vec<SourceStatus>,
    /// Pipeline counters.
    pub counters: PipelineCounters,
    /// The fleet exporter (NATS JetStream), when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportStatus>,
    /// How each event domain is collected (kernel, polling, or not at all) and why,
    /// as the embedding binary declared it ([`CollectorHandle::set_domain_status`]).
    ///
    /// [`CollectorHandle::set_domain_status`]: crate::CollectorHandle::set_domain_status
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<DomainStatus>,
    /// The daemon's process table and process store, when it keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<ProcessTableStatus>,
}

/// How an event domain is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainMode {
    /// Kernel programs, in real time.
    Kernel,
    /// Polling (`/proc`): events between two polls can be missed, and the sources do not
    /// claim `KERNEL_LEVEL`.
    Polling,
    /// Not collected.
    Unavailable,
}

impl DomainMode {
    /// Every mode.
    pub const ALL: [DomainMode; 3] = [Self::Kernel, Self::Polling, Self::Unavailable];

    /// The name used in JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Polling => "polling",
            Self::Unavailable => "unavailable",
        }
    }
}

/// One event domain's collection mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainStatus {
    /// `process`, `network`, `filesystem` or `performance`.
    pub domain: String,
    /// How it is collected.
    pub mode: DomainMode,
    /// The source that collects it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why it is not collected in the kernel (the load or attach error), if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The live process table and its store: sizes, losses by reason, and what the store has
/// committed (a record counted in `store_written_events` is on disk).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessTableStatus {
    /// Live processes in the table.
    pub live: u64,
    /// Exited processes still listed (within `process_exited_retention`).
    pub exited: u64,
    /// Process events applied to the table.
    pub events: u64,
    /// Rows seeded from `/proc` at start.
    pub seeded: u64,
    /// Exited rows removed early to make room (a loss: `--exited` no longer lists them).
    pub evicted_exited: u64,
    /// New processes not tracked because the table was full of live ones (a loss).
    pub over_capacity: u64,
    /// Live rows closed because their pid was reused before their exit was seen.
    pub exit_missed: u64,
    /// Process events the store committed to disk.
    pub store_written_events: u64,
    /// Store transactions committed.
    pub store_commits: u64,
    /// Process events the store dropped (its queue was full).
    pub store_dropped_events: u64,
    /// Process events lost because their transaction failed.
    pub store_failed_events: u64,
    /// History rows removed by the retention policy (size or age).
    pub store_history_trimmed: u64,
    /// Executable hashes: requests queued for the worker pool.
    pub hash_requested: u64,
    /// Requests answered with a digest.
    pub hash_computed: u64,
    /// Requests that ended without one (process and file gone, file changed since the
    /// exec, not a regular file, over `executable_hash_max_bytes`, past the deadline).
    pub hash_failed: u64,
    /// Requests dropped because the pool's queue was full (those execs get no digest).
    pub hash_queue_full: u64,
    /// Digests served from the cache (on the event at once).
    pub hash_cache_hits: u64,
    /// Files read and hashed.
    pub hash_cache_misses: u64,
    /// Finished digests the store did not get (its queue was full).
    pub store_hash_updates_dropped: u64,
}

/// The fleet exporter's state: connection, spool and publish counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportStatus {
    /// Connected to a NATS server whose JetStream stream is ready.
    pub connected: bool,
    /// The server URLs.
    pub servers: Vec<String>,
    /// The JetStream stream.
    pub stream: String,
    /// Bytes of the on-disk spool (acknowledged events are removed by whole segments).
    pub spool_bytes: u64,
    /// Events in the spool not yet acknowledged by JetStream.
    pub spool_events: u64,
    /// Age, in seconds, of the oldest event not yet acknowledged (0 when none).
    pub oldest_unacked_age_seconds: f64,
    /// Events appended to the spool.
    pub spooled: u64,
    /// Messages published (resends included).
    pub published: u64,
    /// Messages acknowledged by JetStream (duplicates included).
    pub acked: u64,
    /// Events in the messages published (equal to `published` with one event per
    /// message).
    #[serde(default)]
    pub published_events: u64,
    /// Events in the messages acknowledged.
    #[serde(default)]
    pub acked_events: u64,
    /// Acknowledgements that JetStream flagged as duplicates (a resend it already had).
    pub duplicates: u64,
    /// Events lost by the exporter, by reason (`export_spool_full`, `export_encode`, ...).
    pub dropped: BTreeMap<String, u64>,
    /// The last connection, stream or publish error, until the next success.
    pub last_error: Option<String>,
}
