//! Events/s from 1 and 4 sources through the pipeline (default settings: buffer 1000,
//! batches of 100 / 100 ms) to a sink that only counts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use collector_core::event::{PerformanceEvent, PerformanceEventKind};
use collector_core::{
    CollectionEvent, Collector, CollectorConfig, Delivery, EventBatch, EventSink, EventSource,
    SourceCaps,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::sync::{mpsc, Notify};

const NAMES: [&str; 4] = ["bench-0", "bench-1", "bench-2", "bench-3"];

/// Sends `events` as fast as the channel takes them, then idles until stopped.
struct Flood {
    name: &'static str,
    events: u64,
}

#[async_trait]
impl EventSource for Flood {
    fn name(&self) -> &'static str {
        self.name
    }

    fn capabilities(&self) -> SourceCaps {
        SourceCaps::PERFORMANCE
    }

    async fn start(
        &self,
        tx: mpsc::Sender<CollectionEvent>,
        _stop: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        let template = CollectionEvent::Performance(PerformanceEvent {
            kind: PerformanceEventKind::Metric,
            timestamp: chrono::DateTime::UNIX_EPOCH,
            pid: 0,
            source: self.name.into(),
            metric_name: String::new(),
            value: 1.0,
            unit: String::new(),
            component: String::new(),
        });
        for _ in 0..self.events {
            tx.send(template.clone()).await?;
        }
        Ok(())
    }

    async fn stop(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The same flood through the one-hop batch path: whole batches into the shared queue.
struct BatchFlood {
    events: u64,
}

#[async_trait]
impl EventSource for BatchFlood {
    fn name(&self) -> &'static str {
        "batch-flood"
    }

    fn capabilities(&self) -> SourceCaps {
        SourceCaps::PERFORMANCE
    }

    async fn start(
        &self,
        _tx: mpsc::Sender<CollectionEvent>,
        _stop: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        anyhow::bail!("registered as a batch source")
    }

    async fn stop(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl collector_core::BatchSource for BatchFlood {
    async fn run_batches(
        &self,
        tx: collector_core::BatchSender,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let template = CollectionEvent::Performance(PerformanceEvent {
            kind: PerformanceEventKind::Metric,
            timestamp: chrono::DateTime::UNIX_EPOCH,
            pid: 0,
            source: "batch-flood".into(),
            metric_name: String::new(),
            value: 1.0,
            unit: String::new(),
            component: String::new(),
        });
        let size = tx.max_batch_size() as u64;
        let mut buf = Vec::with_capacity(size as usize);
        let mut left = self.events;
        while left > 0 {
            let n = left.min(size);
            buf.extend((0..n).map(|_| template.clone()));
            tx.send_batch(&mut buf).await;
            left -= n;
        }
        shutdown.cancelled().await;
        Ok(())
    }
}

/// Counts events and wakes the benchmark once `target` have arrived.
struct Counter {
    seen: AtomicU64,
    target: u64,
    done: Notify,
}

impl EventSink for Counter {
    fn name(&self) -> &str {
        "count"
    }

    fn deliver(&self, batch: &EventBatch) -> Delivery {
        let seen = self.seen.fetch_add(batch.len() as u64, Ordering::Relaxed) + batch.len() as u64;
        if seen >= self.target {
            self.done.notify_one();
        }
        Delivery::Accepted
    }
}

async fn run_once(sources: usize, events_per_source: u64) -> Duration {
    run_with(sources, events_per_source, false).await
}

async fn run_with(sources: usize, events_per_source: u64, batch: bool) -> Duration {
    let config = CollectorConfig::default().with_telemetry(false);
    let mut collector = Collector::new(config).expect("default config is valid");
    let counter = Arc::new(Counter {
        seen: AtomicU64::new(0),
        target: sources as u64 * events_per_source,
        done: Notify::new(),
    });
    collector.add_sink(counter.clone());
    if batch {
        collector
            .register_batch_source(Box::new(BatchFlood {
                events: events_per_source,
            }))
            .expect("one source");
    } else {
        for name in NAMES.iter().take(sources) {
            collector
                .register(Box::new(Flood {
                    name,
                    events: events_per_source,
                }))
                .expect("distinct names under the limit");
        }
    }
    let handle = collector.handle();
    let started = Instant::now();
    let run = tokio::spawn(collector.run());
    counter.done.notified().await;
    let elapsed = started.elapsed();
    handle.shutdown();
    let summary = run.await.expect("run task").expect("run");
    assert_eq!(
        summary.status.counters.events_delivered, counter.target,
        "lossless at this rate: {:?}",
        summary.status.counters
    );
    elapsed
}

fn throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let total: u64 = 2_000_000;
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.throughput(Throughput::Elements(total));
    for sources in [1usize, 4] {
        group.bench_with_input(BenchmarkId::new("sources", sources), &sources, |b, &n| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| runtime.block_on(run_once(n, total / n as u64)))
                    .sum()
            });
        });
    }
    group.bench_function("batch_source_one_hop", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| runtime.block_on(run_with(1, total, true)))
                .sum()
        });
    });
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
