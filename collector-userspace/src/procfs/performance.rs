//! `procfs-performance`: host CPU, memory and load metrics, sampled from `/proc/stat`,
//! `/proc/meminfo` and `/proc/loadavg` (via sysinfo).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use collector_core::event::{PerformanceEvent, PerformanceEventKind, SourceName};
use collector_core::pressure::BackpressurePolicy;
use collector_core::{CollectionEvent, EventSource, SourceCaps, SourceStats};
use sysinfo::System;
use tokio::sync::mpsc;

use super::scan::ScanError;
use super::{backpressure_stats, send_polled, wait_or_stop};

/// Name of the host metrics source.
pub const PERFORMANCE_SOURCE_NAME: &str = "procfs-performance";

/// How [`PerformanceEventSource`] samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerformanceSourceConfig {
    /// Time between two samples; CPU usage is averaged over it. At least
    /// [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`] is used.
    pub interval: Duration,
    /// Longest wait for room in the collector's queue before a sample is dropped.
    pub max_send_wait: Duration,
}

impl Default for PerformanceSourceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            max_send_wait: Duration::from_millis(500),
        }
    }
}

/// CPU seconds (user + system) and resident bytes of this process, from /proc/self.
pub(crate) fn own_usage() -> Option<(f64, u64)> {
    let me = procfs::process::Process::myself().ok()?;
    let stat = me.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let cpu = (stat.utime + stat.stime) as f64 / ticks;
    let rss = stat.rss * procfs::page_size();
    Some((cpu, rss))
}

/// One sample of the host, and of the collector itself.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HostSample {
    cpu_usage_percent: f64,
    memory_used_bytes: u64,
    memory_total_bytes: u64,
    load_average_1m: Option<f64>,
    /// The collector's CPU seconds so far and resident bytes.
    own: Option<(f64, u64)>,
}

impl HostSample {
    fn read(system: &mut System) -> Self {
        system.refresh_cpu_usage();
        system.refresh_memory();
        Self {
            cpu_usage_percent: f64::from(system.global_cpu_usage()),
            memory_used_bytes: system.used_memory(),
            memory_total_bytes: system.total_memory(),
            load_average_1m: System::load_average().ok().map(|l| l.one),
            own: own_usage(),
        }
    }

    fn events(&self, timestamp: DateTime<Utc>, source: &SourceName) -> Vec<PerformanceEvent> {
        let metric = |name: &str, value: f64, unit: &str| PerformanceEvent {
            kind: PerformanceEventKind::Metric,
            timestamp,
            pid: 0,
            source: source.clone(),
            metric_name: name.into(),
            value,
            unit: unit.into(),
            component: "host".into(),
        };
        let mut events = vec![
            metric("cpu_usage", self.cpu_usage_percent, "percent"),
            metric("memory_used", self.memory_used_bytes as f64, "bytes"),
            metric("memory_total", self.memory_total_bytes as f64, "bytes"),
        ];
        if let Some(load) = self.load_average_1m {
            events.push(metric("load_average_1m", load, "load"));
        }
        if let Some((cpu, rss)) = self.own {
            let own = |name: &str, value: f64, unit: &str| PerformanceEvent {
                pid: std::process::id(),
                component: "collector".into(),
                ..metric(name, value, unit)
            };
            events.push(own("cpu_time", cpu, "seconds"));
            events.push(own("memory_rss", rss as f64, "bytes"));
        }
        events
    }
}

/// Host metrics every `interval`: `cpu_usage` (percent of all CPUs), `memory_used` and
/// `memory_total` (bytes), `load_average_1m`; `pid` 0, `component` `host`. And the
/// collector's own `cpu_time` (seconds so far) and `memory_rss` (bytes): its pid,
/// `component` `collector`.
pub struct PerformanceEventSource {
    config: PerformanceSourceConfig,
    system: Mutex<Option<System>>,
    backpressure_drops: AtomicU64,
    stop: Arc<AtomicBool>,
}

impl PerformanceEventSource {
    /// A source over this host.
    pub fn new(config: PerformanceSourceConfig) -> Result<Self, ScanError> {
        let system = System::new().map_err(|source| ScanError::Init { source })?;
        Ok(Self {
            config,
            system: Mutex::new(Some(system)),
            backpressure_drops: AtomicU64::new(0),
            stop: Arc::default(),
        })
    }
}

#[async_trait]
impl EventSource for PerformanceEventSource {
    fn name(&self) -> &'static str {
        PERFORMANCE_SOURCE_NAME
    }

    fn capabilities(&self) -> SourceCaps {
        SourceCaps::PERFORMANCE | SourceCaps::SYSTEM_WIDE
    }

    async fn start(
        &self,
        tx: mpsc::Sender<CollectionEvent>,
        shutdown_signal: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        let mut system = self
            .system
            .lock()
            .expect("system lock poisoned")
            .take()
            .ok_or_else(|| anyhow::anyhow!("{PERFORMANCE_SOURCE_NAME} was already started"))?;
        let interval = self
            .config
            .interval
            .max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        // `send` looks only at `max_wait`.
        let policy = BackpressurePolicy {
            threshold: 1.0,
            max_wait: self.config.max_send_wait,
        };
        let source: SourceName = PERFORMANCE_SOURCE_NAME.into();
        // CPU usage is a difference between two readings: take the first one now.
        system = tokio::task::spawn_blocking(move || {
            system.refresh_cpu_usage();
            system
        })
        .await?;
        let mut next = tokio::time::Instant::now() + interval;
        while wait_or_stop(next, &shutdown_signal, &self.stop).await {
            next += interval;
            let (returned, sample) = tokio::task::spawn_blocking(move || {
                let sample = HostSample::read(&mut system);
                (system, sample)
            })
            .await?;
            system = returned;
            let events = sample
                .events(Utc::now(), &source)
                .into_iter()
                .map(CollectionEvent::Performance);
            if !send_polled(&policy, &tx, events, &self.backpressure_drops).await {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn stop(&self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn stats(&self) -> SourceStats {
        backpressure_stats(&self.backpressure_drops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_sample_becomes_four_host_metrics() {
        let sample = HostSample {
            cpu_usage_percent: 12.5,
            memory_used_bytes: 1 << 30,
            memory_total_bytes: 4 << 30,
            load_average_1m: Some(0.75),
            own: None,
        };
        let now = Utc::now();
        let events = sample.events(now, &"procfs-performance".into());
        let got: Vec<(&str, f64, &str)> = events
            .iter()
            .map(|e| (e.metric_name.as_str(), e.value, e.unit.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("cpu_usage", 12.5, "percent"),
                ("memory_used", (1u64 << 30) as f64, "bytes"),
                ("memory_total", (4u64 << 30) as f64, "bytes"),
                ("load_average_1m", 0.75, "load"),
            ]
        );
        assert!(events
            .iter()
            .all(|e| e.pid == 0 && e.component == "host" && e.timestamp == now));
    }

    #[tokio::test]
    async fn samples_this_host() {
        let source = Arc::new(
            PerformanceEventSource::new(PerformanceSourceConfig {
                interval: Duration::from_millis(250),
                ..PerformanceSourceConfig::default()
            })
            .unwrap(),
        );
        assert_eq!(
            source.capabilities(),
            SourceCaps::PERFORMANCE | SourceCaps::SYSTEM_WIDE
        );
        let (tx, mut rx) = mpsc::channel(64);
        let shutdown = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (source, shutdown) = (source.clone(), shutdown.clone());
            async move { source.start(tx, shutdown).await }
        });
        let mut metrics = BTreeMap::new();
        while metrics.len() < 6 {
            let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a sample within 5 s")
                .unwrap();
            let CollectionEvent::Performance(p) = ev else {
                panic!("not a metric: {ev:?}")
            };
            assert_eq!(p.source, PERFORMANCE_SOURCE_NAME);
            if p.component == "collector" {
                assert_eq!(p.pid, std::process::id());
            }
            metrics.insert(p.metric_name, p.value);
        }
        assert!((0.0..=100.0).contains(&metrics["cpu_usage"]));
        assert!(metrics["memory_total"] > 0.0);
        assert!(metrics["memory_used"] > 0.0 && metrics["memory_used"] <= metrics["memory_total"]);
        assert!(metrics["load_average_1m"] >= 0.0);
        // This test process's own CPU and memory (it is the "collector" here).
        assert!(metrics["cpu_time"] > 0.0);
        assert!(metrics["memory_rss"] > 1e6);
        source.stop().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops")
            .unwrap()
            .unwrap();
        drop(shutdown);
    }
}
