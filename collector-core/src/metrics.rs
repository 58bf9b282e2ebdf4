//! Prometheus text exposition of a [`StatusSnapshot`]: what `collector status --format
//! prometheus` prints and `collector run --metrics-file` keeps up to date (for
//! node_exporter's textfile collector), so losses and health reach dashboards and alerts.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use crate::status::{HealthState, StatusSnapshot};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    source: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    source: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    source: String,
    domain: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    source: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabels {
    domain: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    source: String,
    program: String,
    hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabels {
    source: String,
    program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
    reason: String,
}

type CounterU64 = Counter<u64, AtomicU64>;
type GaugeF64 = Gauge<f64, AtomicU64>;

fn health_name(h: HealthState) -> &'static str {
    match h {
        HealthState::Starting => "starting",
        HealthState::Healthy => "healthy",
        HealthState::Degraded => "degraded",
        HealthState::Failed => "failed",
        HealthState::Stopped => "stopped",
    }
}

/// Renders `status` in the classic Prometheus text format (see [`encode_classic`]).
pub fn render_prometheus(status: &StatusSnapshot) -> String {
    let mut registry = Registry::with_prefix("collector");

    let uptime = GaugeF64::default();
    uptime.set(status.uptime_seconds);
    registry.register(
        "uptime_seconds",
        "Seconds since the collector started",
        uptime,
    );

    let received = Family::<SourceLabel, CounterU64>::default();
    let dropped = Family::<ReasonLabels, CounterU64>::default();
    let kernel_lost = Family::<KindLabels, CounterU64>::default();
    let events = Family::<EventLabels, CounterU64>::default();
    let kernel_emitted = Family::<KindLabels, CounterU64>::default();
    let health = Family::<HealthLabels, Gauge>::default();
    let hooks = Family::<HookLabels, Gauge>::default();
    let queue_depth = Family::<SourceLabel, Gauge>::default();
    let restarts = Family::<SourceLabel, CounterU64>::default();
    let reattached = Family::<ProgramLabels, CounterU64>::default();
    let all_dropped = Family::<ReasonLabels, CounterU64>::default();
    for s in &status.sources {
        for (reason, n) in loss_reasons(s) {
            all_dropped
                .get_or_create(&ReasonLabels {
                    source: s.name.clone(),
                    reason,
                })
                .inc_by(n);
        }
        let source = || s.name.clone();
        received
            .get_or_create(&SourceLabel { source: source() })
            .inc_by(s.events_received);
        for (kind, n) in &s.events_by_kind {
            let domain = crate::ipc::filter::KIND_NAMES
                .iter()
                .position(|k| k == kind)
                .map_or("unknown", |i| crate::ipc::filter::KIND_DOMAINS[i]);
            events
                .get_or_create(&EventLabels {
                    source: source(),
                    domain: domain.to_owned(),
                    kind: kind.clone(),
                })
                .inc_by(*n);
        }
        // Pipeline drops and the source's own drops, by reason.
        for (reason, n) in s.dropped.iter().chain(s.stats.dropped.iter()) {
            dropped
                .get_or_create(&ReasonLabels {
                    source: source(),
                    reason: reason.clone(),
                })
                .inc_by(*n);
        }
        for (kind, n) in &s.stats.kernel_lost {
            kernel_lost
                .get_or_create(&KindLabels {
                    source: source(),
                    kind: kind.clone(),
                })
                .inc_by(*n);
        }
        for (kind, n) in &s.stats.kernel_emitted {
            kernel_emitted
                .get_or_create(&KindLabels {
                    source: source(),
                    kind: kind.clone(),
                })
                .inc_by(*n);
        }
        for state in [
            HealthState::Starting,
            HealthState::Healthy,
            HealthState::Degraded,
            HealthState::Failed,
            HealthState::Stopped,
        ] {
            health
                .get_or_create(&HealthLabels {
                    source: source(),
                    state: health_name(state).into(),
                })
                .set(i64::from(s.health == state));
        }
        for (program, hook) in &s.stats.hooks {
            hooks
                .get_or_create(&HookLabels {
                    source: source(),
                    program: program.clone(),
                    hook: hook.clone(),
                })
                .set(1);
        }
        for (program, n) in &s.stats.reattached {
            reattached
                .get_or_create(&ProgramLabels {
                    source: source(),
                    program: program.clone(),
                })
                .inc_by(*n);
        }
        queue_depth
            .get_or_create(&SourceLabel { source: source() })
            .set(s.queue_depth as i64);
        restarts
            .get_or_create(&SourceLabel { source: source() })
            .inc_by(u64::from(s.restarts));
    }
    registry.register(
        "source_events_received",
        "Events the pipeline received from each source",
        received,
    );
    registry.register(
        "source_events_dropped",
        "Events of each source dropped in userspace, by reason",
        dropped,
    );
    registry.register(
        "events",
        "Events the pipeline received, by source, domain and kind",
        events,
    );
    registry.register(
        "events_dropped",
        "Every event of each source lost before a sink got it, by reason: kernel losses \
         (kernel_ring_full, kernel_stash_full, ...) and userspace drops (backpressure, \
         decode_error, ...)",
        all_dropped,
    );
    registry.register(
        "kernel_events_lost",
        "Records the kernel could not hand over (ring buffer full), by kind",
        kernel_lost,
    );
    registry.register(
        "kernel_events_emitted",
        "Records the kernel programs submitted, by kind",
        kernel_emitted,
    );
    registry.register(
        "source_health",
        "1 for the health state each source is in",
        health,
    );
    let domains = Family::<DomainLabels, Gauge>::default();
    for d in &status.domains {
        for mode in crate::status::DomainMode::ALL {
            domains
                .get_or_create(&DomainLabels {
                    domain: d.domain.clone(),
                    mode: mode.as_str().into(),
                })
                .set(i64::from(d.mode == mode));
        }
    }
    registry.register(
        "domain_mode",
        "1 for the mode each event domain is collected in (kernel, polling, unavailable)",
        domains,
    );
    registry.register(
        "source_hook_info",
        "The kernel hook each program is attached with",
        hooks,
    );
    registry.register(
        "kernel_program_reattaches",
        "Times a kernel program was found detached (no link in the kernel) and attached again; \
         what its hook saw meanwhile is lost and not counted",
        reattached,
    );
    registry.register(
        "source_queue_depth",
        "Events waiting in each source's queue",
        queue_depth,
    );
    registry.register(
        "source_restarts",
        "Times each source was restarted after failing",
        restarts,
    );

    let c = &status.counters;
    let delivered = CounterU64::default();
    delivered.inc_by(c.events_delivered);
    registry.register(
        "events_delivered",
        "Events handed to sinks in batches",
        delivered,
    );
    let batches = CounterU64::default();
    batches.inc_by(c.batches);
    registry.register("batches", "Batches handed to sinks", batches);
    let sink_dropped = Family::<SinkLabel, CounterU64>::default();
    for (sink, n) in &c.sink_dropped {
        // By reason when the snapshot has them (each drop once), else the total.
        match c.sink_dropped_by_reason.get(sink) {
            Some(reasons) if !reasons.is_empty() => {
                for (reason, n) in reasons {
                    sink_dropped
                        .get_or_create(&SinkLabel {
                            sink: sink.clone(),
                            reason: reason.clone(),
                        })
                        .inc_by(*n);
                }
            }
            _ => {
                sink_dropped
                    .get_or_create(&SinkLabel {
                        sink: sink.clone(),
                        reason: "unknown".into(),
                    })
                    .inc_by(*n);
            }
        }
    }
    registry.register(
        "sink_events_dropped",
        "Events a sink dropped, by reason (sink_full, sink_panicked)",
        sink_dropped,
    );
    let depth = Gauge::<i64>::default();
    depth.set(c.queue_depth as i64);
    registry.register("queue_depth", "Events in the shared queue", depth);
    let high = Gauge::<i64>::default();
    high.set(c.queue_high_water as i64);
    registry.register(
        "queue_high_water",
        "Most events ever in the shared queue",
        high,
    );
    let pressured = Gauge::<i64>::default();
    pressured.set(i64::from(c.under_backpressure));
    registry.register(
        "under_backpressure",
        "1 while the shared queue is above backpressure_threshold and sends wait",
        pressured,
    );
    let waits = CounterU64::default();
    waits.inc_by(c.backpressure_waits);
    registry.register(
        "backpressure_waits",
        "Sends that found the shared queue above backpressure_threshold and waited",
        waits,
    );
    // Prometheus base units: seconds.
    let wait = Counter::<f64, AtomicU64>::default();
    wait.inc_by(c.backpressure_wait_us as f64 / 1e6);
    registry.register(
        "backpressure_wait_seconds",
        "Total time sends waited under backpressure",
        wait,
    );
    let subscribers = Gauge::<i64>::default();
    subscribers.set(c.subscribers as i64);
    registry.register("ipc_subscribers", "Connected IPC subscribers", subscribers);
    if let Some(export) = &status.export {
        register_export(&mut registry, export);
    }
    if let Some(processes) = &status.processes {
        register_process_table(&mut registry, processes);
    }

    let mut text = encode_classic(&registry);
    push_latency_histogram(&mut text, c);
    text
}

/// Every loss of a source under one reason each: the kernel's (`kernel_` + cause, summed
/// over record kinds) and userspace's. Counters that lose no event (a path read only in
/// part, a stale socket entry evicted) are left out.
fn loss_reasons(s: &crate::status::SourceStatus) -> BTreeMap<String, u64> {
    let mut reasons = BTreeMap::<String, u64>::new();
    for (key, &n) in &s.stats.kernel_lost {
        let reason = match key.split_once('/') {
            Some((_, "path_unreadable")) => continue,
            Some((_, cause)) => format!("kernel_{cause}"),
            // A plain record-kind key counts ring-buffer overflows.
            None if crate::ipc::filter::KIND_NAMES.contains(&key.as_str()) => {
                "kernel_ring_full".to_owned()
            }
            None => format!("kernel_{key}"),
        };
        *reasons.entry(reason).or_default() += n;
    }
    for (reason, &n) in s.dropped.iter().chain(s.stats.dropped.iter()) {
        if reason != "owner_stale_evicted" {
            *reasons.entry(reason.clone()).or_default() += n;
        }
    }
    reasons
}

/// The batch-latency histogram (`collector_batch_latency_seconds`), from the pipeline's
/// pre-counted buckets, in the classic text format.
fn push_latency_histogram(text: &mut String, c: &crate::status::PipelineCounters) {
    use std::fmt::Write;
    let name = "collector_batch_latency_seconds";
    let _ = writeln!(
        text,
        "# HELP {name} Time from the pipeline receiving a batch's oldest event to the batch reaching every sink."
    );
    let _ = writeln!(text, "# TYPE {name} histogram");
    let mut cumulative = 0u64;
    for (i, &bound_us) in crate::telemetry::BATCH_LATENCY_BUCKETS_US
        .iter()
        .enumerate()
    {
        cumulative += c.latency_buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            text,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            bound_us as f64 / 1e6
        );
    }
    cumulative += c
        .latency_buckets
        .get(crate::telemetry::BATCH_LATENCY_BUCKETS_US.len())
        .copied()
        .unwrap_or(0);
    let _ = writeln!(text, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(
        text,
        "{name}_sum {}",
        c.latency_mean_us * c.batches as f64 / 1e6
    );
    let _ = writeln!(text, "{name}_count {cumulative}");
}

/// Encodes `registry` in the classic Prometheus text format (version 0.0.4), which is what
/// `promtool check metrics` and node_exporter's textfile collector parse.
///
/// prometheus-client writes OpenMetrics, where a counter family `x` has `# HELP x` and
/// `# TYPE x counter` but samples named `x_total`; the classic parser then sees samples
/// without help or type. This renames the family lines of counters to `x_total` and
/// drops the OpenMetrics-only `# UNIT` and `# EOF` lines.
pub fn encode_classic(registry: &Registry) -> String {
    let mut open_metrics = String::new();
    // Writing into a String cannot fail.
    encode(&mut open_metrics, registry).expect("encode metrics into a String");
    let mut counters = std::collections::HashSet::new();
    for line in open_metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_owned());
            }
        }
    }
    let mut out = String::with_capacity(open_metrics.len() + 64 * counters.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        match meta {
            Some((tag, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str(&format!("{tag}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// The process table's and process store's gauges and counters (`collector_process_*`).
fn register_process_table(registry: &mut Registry, p: &crate::status::ProcessTableStatus) {
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    let counter = |v: u64| {
        let c = CounterU64::default();
        c.inc_by(v);
        c
    };
    registry.register(
        "process_table_live",
        "Live processes in the process table",
        gauge(p.live),
    );
    registry.register(
        "process_table_exited",
        "Exited processes the table still lists",
        gauge(p.exited),
    );
    let lost = Family::<ReasonLabel, CounterU64>::default();
    for (reason, n) in [
        ("evicted_exited", p.evicted_exited),
        ("over_capacity", p.over_capacity),
        ("exit_missed", p.exit_missed),
    ] {
        lost.get_or_create(&ReasonLabel {
            reason: reason.into(),
        })
        .inc_by(n);
    }
    registry.register(
        "process_table_lost",
        "Process table rows lost or closed without their event, by reason",
        lost,
    );
    registry.register(
        "process_store_written_events",
        "Process events the store committed",
        counter(p.store_written_events),
    );
    let dropped = Family::<ReasonLabel, CounterU64>::default();
    for (reason, n) in [
        ("queue_full", p.store_dropped_events),
        ("write_failed", p.store_failed_events),
    ] {
        dropped
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc_by(n);
    }
    registry.register(
        "process_store_events_dropped",
        "Process events the store lost, by reason",
        dropped,
    );
    registry.register(
        "process_store_history_trimmed",
        "History rows removed by the retention policy",
        counter(p.store_history_trimmed),
    );
    let hashes = Family::<OutcomeLabel, CounterU64>::default();
    for (outcome, n) in [
        ("cache_hit", p.hash_cache_hits),
        ("computed", p.hash_computed),
        ("failed", p.hash_failed),
        ("queue_full", p.hash_queue_full),
        ("store_update_dropped", p.store_hash_updates_dropped),
    ] {
        hashes
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc_by(n);
    }
    registry.register(
        "executable_hashes",
        "Executable hash requests and answers, by outcome (cache_hit: answered from the cache; computed: read and hashed, the digest following its event in the table and the store)",
        hashes,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// The fleet exporter's gauges and counters (`collector_export_*`).
fn register_export(registry: &mut Registry, export: &crate::status::ExportStatus) {
    let gauge = |v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        g
    };
    let counter = |v: u64| {
        let c = CounterU64::default();
        c.inc_by(v);
        c
    };
    registry.register(
        "export_connected",
        "1 while connected to NATS with the JetStream stream ready",
        gauge(i64::from(export.connected)),
    );
    registry.register(
        "export_spool_bytes",
        "Bytes of the export spool on disk",
        gauge(export.spool_bytes as i64),
    );
    registry.register(
        "export_spool_events",
        "Events in the export spool not yet acknowledged",
        gauge(export.spool_events as i64),
    );
    let age = GaugeF64::default();
    age.set(export.oldest_unacked_age_seconds);
    registry.register(
        "export_oldest_unacked_age_seconds",
        "Age of the oldest event JetStream has not acknowledged",
        age,
    );
    registry.register(
        "export_published",
        "Messages published to JetStream",
        counter(export.published),
    );
    registry.register(
        "export_acked",
        "Messages JetStream acknowledged",
        counter(export.acked),
    );
    registry.register(
        "export_duplicates",
        "Acknowledgements JetStream flagged as duplicates",
        counter(export.duplicates),
    );
    let dropped = Family::<ReasonLabel, CounterU64>::default();
    for (reason, n) in &export.dropped {
        dropped
            .get_or_create(&ReasonLabel {
                reason: reason.clone(),
            })
            .inc_by(*n);
    }
    registry.register(
        "export_events_dropped",
        "Events the exporter lost, by reason",
        dropped,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{PipelineCounters, SourceStatus};
    use crate::{SourceCaps, SourceStats};

    #[test]
    fn losses_health_and_hooks_are_exposed() {
        let mut stats = SourceStats::default();
        stats.kernel_lost.insert("open".into(), 7);
        stats.kernel_lost.insert("create".into(), 1);
        stats.kernel_lost.insert("open/stash_full".into(), 4);
        stats.kernel_lost.insert("open/path_unreadable".into(), 6);
        stats.kernel_emitted.insert("open".into(), 100);
        stats.dropped.insert("decode_error".into(), 2);
        stats.hooks.insert(
            "sys_exit_openat".into(),
            "tracepoint/syscalls/sys_exit_openat".into(),
        );
        let status = StatusSnapshot {
            version: "0".into(),
            component_name: "c".into(),
            uptime_seconds: 1.5,
            capabilities: SourceCaps::FILESYSTEM,
            sources: vec![SourceStatus {
                restarts: 0,
                name: "ebpf-filesystem".into(),
                capabilities: SourceCaps::FILESYSTEM,
                health: HealthState::Degraded,
                last_error: Some("x".into()),
                events_received: 93,
                events_by_kind: [("open".to_string(), 90), ("create".to_string(), 3)].into(),
                dropped: [("backpressure".to_string(), 3)].into(),
                stats,
                queue_depth: 4,
                queue_high_water: 9,
            }],
            counters: PipelineCounters {
                events_received: 93,
                under_backpressure: true,
                backpressure_waits: 5,
                sink_dropped: [("ipc".to_string(), 4)].into(),
                sink_dropped_by_reason: [(
                    "ipc".to_string(),
                    [
                        ("sink_full".to_string(), 3),
                        ("sink_panicked".to_string(), 1),
                    ]
                    .into(),
                )]
                .into(),
                ..PipelineCounters::default()
            },
            export: None,
            domains: Vec::new(),
            processes: None,
        };
        let text = render_prometheus(&status);
        for line in [
            r#"collector_kernel_events_lost_total{source="ebpf-filesystem",kind="open"} 7"#,
            // Every loss in one family, one reason per cause (a partial path is no loss).
            r#"collector_events_dropped_total{source="ebpf-filesystem",reason="kernel_ring_full"} 8"#,
            r#"collector_events_dropped_total{source="ebpf-filesystem",reason="kernel_stash_full"} 4"#,
            r#"collector_events_dropped_total{source="ebpf-filesystem",reason="backpressure"} 3"#,
            r#"collector_events_dropped_total{source="ebpf-filesystem",reason="decode_error"} 2"#,
            r#"collector_source_events_dropped_total{source="ebpf-filesystem",reason="backpressure"} 3"#,
            r#"collector_source_events_dropped_total{source="ebpf-filesystem",reason="decode_error"} 2"#,
            r#"collector_source_events_received_total{source="ebpf-filesystem"} 93"#,
            r#"collector_source_health{source="ebpf-filesystem",state="degraded"} 1"#,
            r#"collector_source_health{source="ebpf-filesystem",state="healthy"} 0"#,
            r#"collector_source_hook_info{source="ebpf-filesystem",program="sys_exit_openat",hook="tracepoint/syscalls/sys_exit_openat"} 1"#,
            "collector_uptime_seconds 1.5",
            r#"collector_events_total{source="ebpf-filesystem",domain="filesystem",kind="open"} 90"#,
            r#"collector_batch_latency_seconds_bucket{le="+Inf"} 0"#,
            "collector_under_backpressure 1",
            "collector_backpressure_waits_total 5",
            r#"collector_sink_events_dropped_total{sink="ipc",reason="sink_full"} 3"#,
            r#"collector_sink_events_dropped_total{sink="ipc",reason="sink_panicked"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
    }

    /// The exposition passes `promtool check metrics` (Debian's `prometheus` package,
    /// installed by `cargo xtask setup`): every sample has help and type.
    #[test]
    fn exposition_passes_promtool() {
        let mut stats = SourceStats::default();
        stats.kernel_lost.insert("open".into(), 7);
        stats.dropped.insert("decode_error".into(), 2);
        let status = StatusSnapshot {
            version: "0".into(),
            component_name: "c".into(),
            uptime_seconds: 1.5,
            capabilities: SourceCaps::FILESYSTEM,
            sources: vec![SourceStatus {
                restarts: 0,
                name: "ebpf-filesystem".into(),
                capabilities: SourceCaps::FILESYSTEM,
                health: HealthState::Healthy,
                last_error: None,
                events_received: 93,
                events_by_kind: Default::default(),
                dropped: [("backpressure".to_string(), 3)].into(),
                stats,
                queue_depth: 4,
                queue_high_water: 9,
            }],
            counters: PipelineCounters::default(),
            export: None,
            domains: Vec::new(),
            processes: Some(crate::status::ProcessTableStatus {
                live: 12,
                over_capacity: 3,
                store_written_events: 40,
                store_dropped_events: 1,
                ..Default::default()
            }),
        };
        let text = render_prometheus(&status);
        for line in [
            "collector_process_table_live 12",
            "collector_process_table_lost_total{reason=\"over_capacity\"} 3",
            "collector_process_store_written_events_total 40",
            "collector_process_store_events_dropped_total{reason=\"queue_full\"} 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
        assert!(!text.contains("# EOF"));
        assert!(text.contains("# TYPE collector_kernel_events_lost_total counter"));
        let promtool = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file());
        let Some(promtool) = promtool else {
            assert!(
                std::env::var("COLLECTOR_REQUIRE_KERNEL").as_deref() != Ok("1"),
                "promtool is missing in CI: `cargo xtask setup` installs Debian's prometheus"
            );
            eprintln!("skipping the promtool check: promtool is not installed");
            return;
        };
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "promtool: {report}\n{text}"
        );
    }
}
