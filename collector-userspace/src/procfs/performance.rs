//! `procfs-performance`: host CPU, memory and load metrics, sampled from `/proc/stat`,
//! `/proc/meminfo` and `/proc/loadavg` (through [`super::read`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use collector_core::event::{PerformanceEvent, PerformanceEventKind, SourceName};
use collector_core::pressure::BackpressurePolicy;
use collector_core::{CollectionEvent, EventSource, SourceCaps, SourceStats};
use tokio::sync::mpsc;

use super::read::{self, CpuTimes};
use super::scan::ScanError;
use super::{backpressure_stats, send_polled, wait_or_stop};

/// Name of the host metrics source.
pub const PERFORMANCE_SOURCE_NAME: &str = "procfs-performance";

/// How [`PerformanceEventSource`] samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerformanceSourceConfig {
    /// Time between two samples; CPU usage is averaged over it. At least
    /// 200 ms (`MIN_INTERVAL`) is used.
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

/// Longest wait for the first sample (its CPU usage covers that first stretch).
const FIRST_SAMPLE_AFTER: Duration = Duration::from_secs(1);

/// Shortest sampling interval: `/proc/stat` counts in clock ticks (100 a second on most
/// kernels), so a shorter interval has too few ticks for a meaningful percentage.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// One sample of the host, and of the collector itself.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HostSample {
    /// `None` when `/proc/stat` could not be read (then no metric is sent, not a 0).
    cpu_usage_percent: Option<f64>,
    /// (used, total); `None` when `/proc/meminfo` could not be read.
    memory_bytes: Option<(u64, u64)>,
    load_average_1m: Option<f64>,
    /// The collector's CPU seconds so far and resident bytes.
    own: Option<(f64, u64)>,
}

impl HostSample {
    /// Reads the host; `cpu` holds the previous CPU times and gets the new ones.
    fn read(cpu: &mut Option<CpuTimes>) -> Self {
        let now = CpuTimes::read().ok();
        let cpu_usage_percent = match (now, *cpu) {
            (Some(now), Some(before)) => Some(now.usage_percent_since(&before)),
            _ => None,
        };
        if now.is_some() {
            *cpu = now;
        }
        Self {
            cpu_usage_percent,
            memory_bytes: read::memory().ok().map(|(total, used)| (used, total)),
            load_average_1m: read::load_average_1m(),
            own: read::own_usage(),
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
        let mut events = Vec::new();
        if let Some(cpu) = self.cpu_usage_percent {
            events.push(metric("cpu_usage", cpu, "percent"));
        }
        if let Some((used, total)) = self.memory_bytes {
            events.push(metric("memory_used", used as f64, "bytes"));
            events.push(metric("memory_total", total as f64, "bytes"));
        }
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
    /// Set by the first `start`: a source runs once.
    started: AtomicBool,
    backpressure_drops: AtomicU64,
    stop: Arc<super::StopSignal>,
}

impl PerformanceEventSource {
    /// A source over this host.
    pub fn new(config: PerformanceSourceConfig) -> Result<Self, ScanError> {
        // Fails here, at registration, on a host without /proc.
        CpuTimes::read().map_err(|source| ScanError::Init { source })?;
        Ok(Self {
            config,
            started: AtomicBool::new(false),
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
        if self.started.swap(true, Ordering::Relaxed) {
            anyhow::bail!("{PERFORMANCE_SOURCE_NAME} was already started");
        }
        let interval = self.config.interval.max(MIN_INTERVAL);
        // `send` looks only at `max_wait`.
        let policy = BackpressurePolicy {
            threshold: 1.0,
            max_wait: self.config.max_send_wait,
        };
        let source: SourceName = PERFORMANCE_SOURCE_NAME.into();
        // CPU usage is a difference between two readings: take the first one now.
        let mut cpu = tokio::task::spawn_blocking(|| CpuTimes::read().ok()).await?;
        // The first sample after at most FIRST_SAMPLE_AFTER, not a whole interval: it is
        // also what shows the source up (`Healthy`) on a quiet host, and `/healthz`
        // answers 503 while any source is `starting`.
        let mut next = tokio::time::Instant::now() + interval.min(FIRST_SAMPLE_AFTER);
        let mut first = true;
        while wait_or_stop(next, &shutdown_signal, &self.stop).await {
            // From the first sample on, one every `interval`.
            next = if std::mem::take(&mut first) {
                tokio::time::Instant::now() + interval
            } else {
                next + interval
            };
            let (returned, sample) = tokio::task::spawn_blocking(move || {
                let sample = HostSample::read(&mut cpu);
                (cpu, sample)
            })
            .await?;
            cpu = returned;
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
        self.stop.stop();
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
            cpu_usage_percent: Some(12.5),
            memory_bytes: Some((1 << 30, 4 << 30)),
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

    /// What could not be read is left out, not sent as a zero.
    #[test]
    fn an_unread_value_sends_no_metric() {
        let sample = HostSample {
            cpu_usage_percent: None,
            memory_bytes: None,
            load_average_1m: None,
            own: None,
        };
        assert!(sample.events(Utc::now(), &"p".into()).is_empty());
        // The first reading has nothing to compare with.
        let mut cpu = None;
        assert_eq!(HostSample::read(&mut cpu).cpu_usage_percent, None);
        assert!(cpu.is_some());
        let second = HostSample::read(&mut cpu);
        assert!(second
            .cpu_usage_percent
            .is_some_and(|p| (0.0..=100.0).contains(&p)));
    }

    /// Spends `cpu` of this process's CPU time (the kernel counts it in 10 ms ticks, so a
    /// fresh test process run alone may otherwise have none to report).
    fn burn_cpu(cpu: Duration) {
        let used = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid clock id and a valid out-pointer.
            unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        };
        let until = used() + cpu;
        let mut x = 0u64;
        while used() < until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }

    #[tokio::test]
    async fn samples_this_host() {
        // Its own CPU time must be above 0 for the assertion below to mean anything.
        burn_cpu(Duration::from_millis(50));
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
