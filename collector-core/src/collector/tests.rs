//! Lifecycle tests with fake sources: no root, no kernel; time-driven ones use paused time.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::*;
use crate::event::{CollectionEvent, PerformanceEvent, PerformanceEventKind};
use crate::sink::{Delivery, EventBatch};
use crate::status::HealthState;

fn metric(pid: u32) -> CollectionEvent {
    CollectionEvent::Performance(PerformanceEvent {
        kind: PerformanceEventKind::Metric,
        timestamp: chrono::DateTime::UNIX_EPOCH,
        pid,
        source: "test".into(),
        metric_name: String::new(),
        value: 0.0,
        unit: String::new(),
        component: String::new(),
    })
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Start {
    /// Sends `events`, then returns Ok.
    SendThenReturn,
    /// Sends `events`, then runs until its shutdown signal is set.
    SendThenRunUntilStopped,
    /// Returns an error at once.
    Fail,
    /// Panics at once.
    Panic,
    /// Ignores its shutdown signal forever.
    Hang,
}

#[derive(Clone)]
struct Fake {
    name: &'static str,
    caps: SourceCaps,
    start: Start,
    events: u32,
    stop_called: Arc<AtomicBool>,
    start_returned: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
    checks: Arc<AtomicU32>,
}

impl Fake {
    fn new(name: &'static str, caps: SourceCaps, start: Start) -> Self {
        Self {
            name,
            caps,
            start,
            events: 0,
            stop_called: Arc::default(),
            start_returned: Arc::default(),
            healthy: Arc::new(AtomicBool::new(true)),
            checks: Arc::default(),
        }
    }

    fn with_events(mut self, events: u32) -> Self {
        self.events = events;
        self
    }

    fn boxed(&self) -> Box<dyn EventSource> {
        Box::new(self.clone())
    }
}

#[async_trait]
impl EventSource for Fake {
    fn name(&self) -> &'static str {
        self.name
    }

    fn capabilities(&self) -> SourceCaps {
        self.caps
    }

    async fn start(
        &self,
        tx: mpsc::Sender<CollectionEvent>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        match self.start {
            Start::Fail => anyhow::bail!("no such tracepoint"),
            Start::Panic => panic!("source bug"),
            Start::Hang => loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
            },
            Start::SendThenReturn | Start::SendThenRunUntilStopped => {}
        }
        for i in 0..self.events {
            tx.send(metric(i)).await?;
        }
        if self.start == Start::SendThenRunUntilStopped {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.start_returned.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn stop(&self) -> anyhow::Result<()> {
        self.stop_called.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn health_check(&self) -> anyhow::Result<()> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        if self.healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            anyhow::bail!("ring buffer reader stalled")
        }
    }
}

#[derive(Default)]
struct Counting {
    events: AtomicU64,
    batches: AtomicU64,
}

impl EventSink for Counting {
    fn name(&self) -> &str {
        "counting"
    }

    fn deliver(&self, batch: &EventBatch) -> Delivery {
        self.events.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        Delivery::Accepted
    }
}

fn config() -> CollectorConfig {
    // Restarts off: these tests look at one run of a source (restart tests turn them on).
    CollectorConfig::default()
        .with_telemetry(false)
        .with_source_restart_limit(0)
}

fn health(handle: &CollectorHandle, name: &str) -> (HealthState, Option<String>) {
    let status = handle.status();
    let source = status
        .sources
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} not in status"));
    (source.health, source.last_error.clone())
}

#[test]
fn registration_enforces_limit_and_unique_names() {
    let mut collector = Collector::new(config().with_max_event_sources(2)).unwrap();
    collector
        .register(Fake::new("a", SourceCaps::PROCESS, Start::Hang).boxed())
        .unwrap();
    let err = collector
        .register(Fake::new("a", SourceCaps::NETWORK, Start::Hang).boxed())
        .unwrap_err();
    assert!(
        matches!(err, CollectorError::DuplicateName { ref name } if name == "a"),
        "{err}"
    );
    collector
        .register(Fake::new("b", SourceCaps::NETWORK, Start::Hang).boxed())
        .unwrap();
    let err = collector
        .register(Fake::new("c", SourceCaps::FILESYSTEM, Start::Hang).boxed())
        .unwrap_err();
    assert!(
        matches!(err, CollectorError::LimitReached { limit: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("max_event_sources"));
    collector.unregister("b").unwrap();
    collector
        .register(Fake::new("c", SourceCaps::FILESYSTEM, Start::Hang).boxed())
        .unwrap();
    assert!(matches!(
        collector.unregister("zzz"),
        Err(CollectorError::NotFound { .. })
    ));
}

#[test]
fn invalid_config_is_refused() {
    let err = Collector::new(config().with_event_buffer_size(0))
        .err()
        .unwrap();
    assert!(matches!(err, CollectorError::Config(_)), "{err}");
}

#[test]
fn capabilities_are_the_union_and_follow_unregister() {
    let mut collector = Collector::new(config()).unwrap();
    let mut watch = collector.handle().watch_capabilities();
    assert_eq!(collector.capabilities(), SourceCaps::empty());
    collector
        .register(
            Fake::new(
                "p",
                SourceCaps::PROCESS | SourceCaps::KERNEL_LEVEL,
                Start::Hang,
            )
            .boxed(),
        )
        .unwrap();
    collector
        .register(
            Fake::new(
                "n",
                SourceCaps::NETWORK | SourceCaps::KERNEL_LEVEL,
                Start::Hang,
            )
            .boxed(),
        )
        .unwrap();
    assert_eq!(
        collector.capabilities(),
        SourceCaps::PROCESS | SourceCaps::NETWORK | SourceCaps::KERNEL_LEVEL
    );
    assert!(watch.has_changed().unwrap());
    watch.borrow_and_update();
    collector.unregister("p").unwrap();
    assert!(watch.has_changed().unwrap());
    assert_eq!(
        *watch.borrow_and_update(),
        SourceCaps::NETWORK | SourceCaps::KERNEL_LEVEL,
        "KERNEL_LEVEL stays: the network source still has it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_every_source_reach_every_sink_in_batches() {
    let mut collector = Collector::new(config()).unwrap();
    let a = Fake::new("a", SourceCaps::PROCESS, Start::SendThenReturn).with_events(10_000);
    let b = Fake::new("b", SourceCaps::NETWORK, Start::SendThenRunUntilStopped).with_events(5_001);
    collector.register(a.boxed()).unwrap();
    collector.register(b.boxed()).unwrap();
    let first = Arc::new(Counting::default());
    let second = Arc::new(Counting::default());
    collector.add_sink(first.clone());
    collector.add_sink(second.clone());
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());
    while first.events.load(Ordering::Relaxed) < 15_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.shutdown();
    let summary = run.await.unwrap().unwrap();
    // The last event arrives with the final flush at shutdown at the latest.
    assert_eq!(first.events.load(Ordering::Relaxed), 15_001);
    assert_eq!(second.events.load(Ordering::Relaxed), 15_001);
    let c = &summary.status.counters;
    assert_eq!(c.events_received, 15_001);
    assert_eq!(c.events_delivered, 15_001);
    assert_eq!(c.batches, first.batches.load(Ordering::Relaxed));
    assert!(c.batch_size_max <= 100 && c.batch_size_max > 1, "{c:?}");
    assert!(c.batches >= 151, "{c:?}");
    assert_eq!(c.dropped["backpressure"], 0);
    assert!(c.queue_high_water <= 1000);
    let per_source: Vec<(String, u64)> = summary
        .status
        .sources
        .iter()
        .map(|s| (s.name.clone(), s.events_received))
        .collect();
    assert_eq!(per_source, vec![("a".into(), 10_000), ("b".into(), 5_001)]);
    assert!(summary.aborted.is_empty(), "{:?}", summary.aborted);
    assert!(a.stop_called.load(Ordering::SeqCst) && b.stop_called.load(Ordering::SeqCst));
    assert!(b.start_returned.load(Ordering::SeqCst));
    assert!(summary
        .status
        .sources
        .iter()
        .all(|s| s.health == HealthState::Stopped));
}

#[tokio::test(start_paused = true)]
async fn long_running_start_is_not_cancelled_by_startup_timeout() {
    let cfg = config()
        .with_startup_timeout(Duration::from_secs(1))
        .with_health_check_interval(Duration::from_secs(3600));
    let mut collector = Collector::new(cfg).unwrap();
    // Sends nothing, so only the startup-timeout rule can mark it up.
    let src = Fake::new("long", SourceCaps::PROCESS, Start::SendThenRunUntilStopped);
    collector.register(src.boxed()).unwrap();
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(health(&handle, "long").0, HealthState::Starting);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(health(&handle, "long"), (HealthState::Healthy, None));
    assert_eq!(
        src.checks.load(Ordering::SeqCst),
        1,
        "checked once at the startup mark"
    );
    assert!(
        !src.start_returned.load(Ordering::SeqCst),
        "start still running"
    );
    handle.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert!(summary.aborted.is_empty(), "{:?}", summary.aborted);
    assert!(
        src.start_returned.load(Ordering::SeqCst),
        "start ended by its signal"
    );
}

#[tokio::test(start_paused = true)]
async fn source_failing_its_startup_check_is_failed_and_stopped() {
    let cfg = config().with_startup_timeout(Duration::from_secs(1));
    let mut collector = Collector::new(cfg).unwrap();
    let src = Fake::new("slow", SourceCaps::PROCESS, Start::SendThenRunUntilStopped);
    src.healthy.store(false, Ordering::SeqCst);
    collector.register(src.boxed()).unwrap();
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (state, error) = health(&handle, "slow");
    assert_eq!(state, HealthState::Failed);
    let error = error.unwrap();
    assert!(
        error.contains("startup_timeout") && error.contains("stalled"),
        "{error}"
    );
    assert!(src.stop_called.load(Ordering::SeqCst));
    assert!(src.start_returned.load(Ordering::SeqCst));
    handle.shutdown();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn health_checks_move_between_healthy_degraded_and_failed() {
    let cfg = config().with_health_check_interval(Duration::from_secs(10));
    let mut collector = Collector::new(cfg).unwrap();
    let src = Fake::new("h", SourceCaps::PROCESS, Start::SendThenReturn);
    collector.register(src.boxed()).unwrap();
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());

    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        health(&handle, "h").0,
        HealthState::Healthy,
        "start returned Ok"
    );
    src.healthy.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (state, error) = health(&handle, "h");
    assert_eq!(state, HealthState::Degraded);
    assert!(error.unwrap().contains("ring buffer reader stalled"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(health(&handle, "h").0, HealthState::Degraded);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(health(&handle, "h").0, HealthState::Failed);
    assert_eq!(src.checks.load(Ordering::SeqCst), FAILED_AFTER_CHECKS);
    src.healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (state, error) = health(&handle, "h");
    assert_eq!(state, HealthState::Healthy);
    assert!(error.is_some(), "the last error is kept");

    handle.shutdown();
    run.await.unwrap().unwrap();
    assert_eq!(health(&handle, "h").0, HealthState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_panicking_sources_are_isolated() {
    let mut collector = Collector::new(config()).unwrap();
    let panicky = Fake::new("panicky", SourceCaps::PROCESS, Start::Panic);
    let failing = Fake::new("failing", SourceCaps::NETWORK, Start::Fail);
    let good = Fake::new(
        "good",
        SourceCaps::FILESYSTEM,
        Start::SendThenRunUntilStopped,
    )
    .with_events(1000);
    for s in [&panicky, &failing, &good] {
        collector.register(s.boxed()).unwrap();
    }
    let sink = Arc::new(Counting::default());
    collector.add_sink(sink.clone());
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());
    while sink.events.load(Ordering::Relaxed) < 1000
        || health(&handle, "failing").0 != HealthState::Failed
        || health(&handle, "panicky").0 != HealthState::Failed
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, error) = health(&handle, "panicky");
    assert!(error.unwrap().contains("panicked: source bug"));
    let (_, error) = health(&handle, "failing");
    assert!(error.unwrap().contains("no such tracepoint"));
    assert_eq!(health(&handle, "good").0, HealthState::Healthy);
    assert!(
        !good.start_returned.load(Ordering::SeqCst),
        "good source still running"
    );
    handle.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert!(summary.aborted.is_empty());
    assert!(
        panicky.stop_called.load(Ordering::SeqCst),
        "stop is called on every source"
    );
    assert_eq!(
        health(&handle, "panicky").0,
        HealthState::Failed,
        "failure stays visible"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_calls_stop_and_aborts_after_the_timeout() {
    let cfg = config().with_shutdown_timeout(Duration::from_secs(2));
    let mut collector = Collector::new(cfg).unwrap();
    let stuck = Fake::new("stuck", SourceCaps::PROCESS, Start::Hang);
    let polite = Fake::new(
        "polite",
        SourceCaps::NETWORK,
        Start::SendThenRunUntilStopped,
    );
    collector.register(stuck.boxed()).unwrap();
    collector.register(polite.boxed()).unwrap();
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = tokio::time::Instant::now();
    handle.shutdown();
    let summary = run.await.unwrap().unwrap();
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(stuck.stop_called.load(Ordering::SeqCst));
    assert!(polite.stop_called.load(Ordering::SeqCst));
    assert!(polite.start_returned.load(Ordering::SeqCst));
    assert_eq!(summary.aborted.len(), 1, "{:?}", summary.aborted);
    assert_eq!(summary.aborted[0].0, "stuck");
    assert!(summary.aborted[0].1.contains(&"start".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn register_and_unregister_while_running() {
    let mut collector = Collector::new(config()).unwrap();
    collector
        .register(Fake::new("p", SourceCaps::PROCESS, Start::SendThenRunUntilStopped).boxed())
        .unwrap();
    let handle = collector.handle();
    let mut caps = handle.watch_capabilities();
    caps.borrow_and_update();
    let sink = Arc::new(Counting::default());
    collector.add_sink(sink.clone());
    let run = tokio::spawn(collector.run());
    tokio::time::sleep(Duration::from_millis(10)).await;

    let late =
        Fake::new("late", SourceCaps::NETWORK, Start::SendThenRunUntilStopped).with_events(7);
    handle.register(late.boxed()).unwrap();
    caps.changed().await.unwrap();
    assert_eq!(
        *caps.borrow_and_update(),
        SourceCaps::PROCESS | SourceCaps::NETWORK
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        sink.events.load(Ordering::Relaxed),
        7,
        "late source's events flowed"
    );

    handle.unregister("late").await.unwrap();
    assert!(late.stop_called.load(Ordering::SeqCst));
    assert!(late.start_returned.load(Ordering::SeqCst));
    caps.changed().await.unwrap();
    assert_eq!(*caps.borrow_and_update(), SourceCaps::PROCESS);
    assert_eq!(handle.status().sources.len(), 1);

    handle.shutdown();
    run.await.unwrap().unwrap();
    let err = handle
        .register(Fake::new("after", SourceCaps::PROCESS, Start::Hang).boxed())
        .unwrap_err();
    assert!(matches!(err, CollectorError::ShuttingDown { .. }));
}

/// A sink that blocks its caller until opened: a contract breach that stalls the batcher,
/// which is exactly what lets the shared queue fill.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    events: AtomicU64,
}

impl EventSink for Gate {
    fn name(&self) -> &str {
        "gate"
    }

    fn deliver(&self, batch: &EventBatch) -> Delivery {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        self.events.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Delivery::Accepted
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn stalled_pipeline_drops_with_reason_backpressure_and_never_blocks_sources_long() {
    let cfg = config()
        .with_event_buffer_size(20)
        .with_max_batch_size(10)
        .with_max_backpressure_wait(Duration::from_millis(20));
    let mut collector = Collector::new(cfg).unwrap();
    let src =
        Fake::new("flood", SourceCaps::PROCESS, Start::SendThenRunUntilStopped).with_events(500);
    collector.register(src.boxed()).unwrap();
    let gate = Arc::new(Gate::default());
    collector.add_sink(gate.clone());
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());

    // With the sink stalled, the source still gets all 500 events out: the forwarder
    // waits 20 ms per chunk at most, then drops it.
    let sent_all = async {
        loop {
            let status = handle.status();
            if status.sources[0].events_received == 500 {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let status = tokio::time::timeout(Duration::from_secs(20), sent_all)
        .await
        .expect("source blocked behind a stalled sink");
    let dropped = status.sources[0].dropped["backpressure"];
    assert!(dropped > 0, "{status:?}");
    assert_eq!(status.counters.dropped["backpressure"], dropped);
    assert!(status.counters.queue_high_water <= 20);

    *gate.open.lock().unwrap() = true;
    gate.opened.notify_all();
    handle.shutdown();
    let summary = run.await.unwrap().unwrap();
    let c = &summary.status.counters;
    assert_eq!(c.events_received, 500);
    assert_eq!(c.events_delivered + c.dropped["backpressure"], 500, "{c:?}");
    assert_eq!(gate.events.load(Ordering::Relaxed), c.events_delivered);
}

#[tokio::test]
async fn status_reports_every_field() {
    let mut collector = Collector::new(config().with_component_name("unit")).unwrap();
    collector
        .register(Fake::new("p", SourceCaps::PROCESS, Start::Hang).boxed())
        .unwrap();
    collector.add_sink(Arc::new(Counting::default()));
    let handle = collector.handle();
    handle.set_subscribers(2);
    handle.ipc_subscribers().fetch_add(1, Ordering::Relaxed);
    let status = handle.status();
    assert_eq!(status.component_name, "unit");
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.uptime_seconds, 0.0, "not running yet");
    assert_eq!(status.capabilities, SourceCaps::PROCESS);
    assert_eq!(status.sources[0].health, HealthState::Starting);
    assert_eq!(status.counters.subscribers, 3);
    assert_eq!(status.counters.sink_dropped["counting"], 0);
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["sources"][0]["dropped"]["backpressure"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_racing_shutdown_never_accepts_a_source_that_will_not_run() {
    for round in 0..20 {
        let mut collector = Collector::new(config().with_max_event_sources(10_000)).unwrap();
        let handle = collector.handle();
        collector.add_sink(Arc::new(Counting::default()));
        let run = tokio::spawn(collector.run());
        // Registers from another thread as fast as it can until refused.
        let registrar = {
            let handle = handle.clone();
            std::thread::spawn(move || {
                let mut accepted = Vec::new();
                for i in 0.. {
                    let name: &'static str = Box::leak(format!("r{round}-{i}").into_boxed_str());
                    let fake = Fake::new(name, SourceCaps::PROCESS, Start::SendThenRunUntilStopped);
                    match handle.register(fake.boxed()) {
                        Ok(()) => accepted.push(fake),
                        Err(CollectorError::ShuttingDown { .. }) => return accepted,
                        Err(e) => panic!("unexpected refusal: {e}"),
                    }
                }
                unreachable!()
            })
        };
        tokio::time::sleep(Duration::from_micros(200 * round)).await;
        handle.shutdown();
        let summary = run.await.unwrap().unwrap();
        let accepted = tokio::task::spawn_blocking(move || registrar.join().unwrap())
            .await
            .unwrap();
        // Every accepted source ran: it was started (its start returned after the stop
        // signal) and stopped, and status shows it stopped, never still starting.
        for fake in &accepted {
            assert!(
                fake.stop_called.load(Ordering::SeqCst),
                "{} never stopped",
                fake.name
            );
            assert!(
                fake.start_returned.load(Ordering::SeqCst),
                "{} never started",
                fake.name
            );
        }
        for s in &summary.status.sources {
            assert_eq!(s.health, HealthState::Stopped, "{}", s.name);
        }
    }
}

/// A batch source: says it is ready when `ready`, sends `batches` batches of `size`
/// events, then idles until cancelled.
struct BatchFake {
    ready: bool,
    batches: u32,
    size: u32,
    stopped: Arc<AtomicBool>,
    returned: Arc<AtomicBool>,
}

impl BatchFake {
    /// Sends nothing and runs until cancelled, like a kernel drain on a quiet host;
    /// says it is ready first when `ready`.
    fn idle(ready: bool) -> Self {
        Self {
            ready,
            batches: 0,
            size: 0,
            stopped: Arc::default(),
            returned: Arc::default(),
        }
    }
}

#[async_trait]
impl EventSource for BatchFake {
    fn name(&self) -> &'static str {
        "batch-fake"
    }
    fn capabilities(&self) -> SourceCaps {
        SourceCaps::PROCESS | SourceCaps::REALTIME
    }
    async fn start(
        &self,
        _tx: mpsc::Sender<CollectionEvent>,
        _stop: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        anyhow::bail!("registered as a batch source; start is not used")
    }
    async fn stop(&self) -> anyhow::Result<()> {
        self.stopped.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl crate::source::BatchSource for BatchFake {
    async fn run_batches(
        &self,
        tx: crate::source::BatchSender,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        if self.ready {
            tx.ready();
        }
        let mut buf = Vec::new();
        for b in 0..self.batches {
            buf.extend((0..self.size).map(|i| metric(b * self.size + i)));
            assert_eq!(tx.send_batch(&mut buf).await, 0);
            assert!(buf.is_empty());
        }
        // Idle, woken by the cancellation alone (no flag polling).
        shutdown.cancelled().await;
        self.returned.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn batch_source_reaches_sinks_in_one_hop_beside_a_trait_source() {
    let mut collector = Collector::new(config()).unwrap();
    let fake = BatchFake {
        ready: false,
        batches: 3,
        size: 250,
        stopped: Arc::default(),
        returned: Arc::default(),
    };
    let (stopped, returned) = (fake.stopped.clone(), fake.returned.clone());
    collector.register_batch_source(Box::new(fake)).unwrap();
    // A source written against the plain trait, as the design's examples are.
    let plain =
        Fake::new("plain", SourceCaps::NETWORK, Start::SendThenRunUntilStopped).with_events(5);
    collector.register(plain.boxed()).unwrap();
    let sink = Arc::new(Counting::default());
    collector.add_sink(sink.clone());
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());
    tokio::time::sleep(Duration::from_millis(1)).await;

    assert_eq!(sink.events.load(Ordering::Relaxed), 755);
    let status = handle.status();
    let batch = status
        .sources
        .iter()
        .find(|s| s.name == "batch-fake")
        .unwrap();
    assert_eq!(batch.events_received, 750);
    // Idle after its batches, and up: healthy, not starting.
    assert_eq!(batch.health, HealthState::Healthy);
    assert_eq!(batch.dropped["backpressure"], 0);
    // max_batch_size 100: each 250-event batch went as 100 + 100 + 50.
    assert_eq!(status.counters.batch_size_max, 100);
    assert_eq!(
        handle.capabilities(),
        SourceCaps::PROCESS | SourceCaps::NETWORK | SourceCaps::REALTIME
    );

    handle.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert!(stopped.load(Ordering::SeqCst));
    assert!(
        returned.load(Ordering::SeqCst),
        "run_batches saw the cancellation"
    );
    assert!(plain.start_returned.load(Ordering::SeqCst));
    assert!(summary.aborted.is_empty(), "{:?}", summary.aborted);
    assert!(summary
        .status
        .sources
        .iter()
        .all(|s| s.health == HealthState::Stopped));
}

struct Refusing;
impl EventSink for Refusing {
    fn name(&self) -> &str {
        "full"
    }
    fn deliver(&self, batch: &EventBatch) -> Delivery {
        Delivery::Dropped(batch.len())
    }
}

struct Panicky;
impl EventSink for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    fn deliver(&self, _: &EventBatch) -> Delivery {
        panic!("sink bug")
    }
}

#[tokio::test(start_paused = true)]
async fn each_loss_is_counted_once_under_its_typed_reason() {
    let mut collector = Collector::new(config()).unwrap();
    collector
        .register(
            Fake::new("p", SourceCaps::PROCESS, Start::SendThenRunUntilStopped)
                .with_events(10)
                .boxed(),
        )
        .unwrap();
    collector.add_sink(Arc::new(Refusing));
    collector.add_sink(Arc::new(Panicky));
    let counting = Arc::new(Counting::default());
    collector.add_sink(counting.clone());
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());
    tokio::time::sleep(Duration::from_millis(10)).await;
    handle.shutdown();
    let status = run.await.unwrap().unwrap().status;
    let c = &status.counters;
    assert_eq!(counting.events.load(Ordering::Relaxed), 10);
    assert_eq!(c.sink_dropped["full"], 10);
    assert_eq!(c.sink_dropped["panicky"], 10);
    assert_eq!(c.sink_dropped_by_reason["full"]["sink_full"], 10);
    assert_eq!(c.sink_dropped_by_reason["full"]["sink_panicked"], 0);
    assert_eq!(c.sink_dropped_by_reason["panicky"]["sink_panicked"], 10);
    assert_eq!(c.sink_dropped_by_reason["counting"]["sink_full"], 0);
    // The pipeline itself lost nothing; its reasons are listed once, with zeros.
    assert_eq!(
        c.dropped,
        [
            ("backpressure".to_string(), 0),
            ("pipeline_closed".to_string(), 0)
        ]
        .into()
    );
    assert_eq!(status.sources[0].dropped, c.dropped);
}

#[tokio::test(start_paused = true)]
async fn idle_batch_source_is_healthy_once_its_startup_check_passes() {
    let cfg = config()
        .with_startup_timeout(Duration::from_secs(1))
        .with_health_check_interval(Duration::from_secs(3600));
    let mut collector = Collector::new(cfg).unwrap();
    let fake = BatchFake::idle(false);
    collector.register_batch_source(Box::new(fake)).unwrap();
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(health(&handle, "batch-fake").0, HealthState::Starting);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(health(&handle, "batch-fake"), (HealthState::Healthy, None));
    handle.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert!(summary.aborted.is_empty(), "{:?}", summary.aborted);
}

#[tokio::test(start_paused = true)]
async fn a_batch_source_that_says_it_is_ready_is_healthy_before_any_event() {
    let cfg = config()
        .with_startup_timeout(Duration::from_secs(10))
        .with_health_check_interval(Duration::from_secs(3600));
    let mut collector = Collector::new(cfg).unwrap();
    // A kernel drain with its programs attached: nothing to send yet.
    let fake = BatchFake::idle(true);
    collector.register_batch_source(Box::new(fake)).unwrap();
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(health(&handle, "batch-fake"), (HealthState::Healthy, None));
    assert_eq!(handle.status().sources[0].events_received, 0);
    handle.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert!(summary.aborted.is_empty(), "{:?}", summary.aborted);
}

/// A source that fails its first `failures` starts, then runs.
#[derive(Clone)]
struct Flaky {
    starts: Arc<AtomicU32>,
    failures: u32,
    panic: bool,
}

#[async_trait]
impl EventSource for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }

    fn capabilities(&self) -> SourceCaps {
        SourceCaps::PROCESS
    }

    async fn start(
        &self,
        tx: mpsc::Sender<CollectionEvent>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        let n = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= self.failures {
            if self.panic {
                panic!("source bug on start {n}");
            }
            anyhow::bail!("ring buffer lost on start {n}");
        }
        tx.send(metric(n)).await?;
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    async fn stop(&self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn health_check(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A source that fails (an error, then a panic) is restarted with a doubling backoff,
/// and comes back healthy; status shows the restarts and the last error.
#[tokio::test(start_paused = true)]
async fn a_failing_source_is_restarted_with_backoff_until_it_runs() {
    for panic in [false, true] {
        let cfg = config()
            .with_source_restart_limit(5)
            .with_source_restart_backoff(Duration::from_secs(1));
        let mut collector = Collector::new(cfg).unwrap();
        let starts = Arc::new(AtomicU32::new(0));
        collector
            .register(Box::new(Flaky {
                starts: starts.clone(),
                failures: 2,
                panic,
            }))
            .unwrap();
        let sink = Arc::new(Counting::default());
        collector.add_sink(sink.clone());
        let handle = collector.handle();
        let run = tokio::spawn(collector.run());
        // First start fails at once; restart after 1 s fails; the next after 2 s more.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert_eq!(health(&handle, "flaky").0, HealthState::Failed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "restarted after 1 s");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "the second wait is 2 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = handle.status();
        let source = status.sources.iter().find(|s| s.name == "flaky").unwrap();
        assert_eq!(source.health, HealthState::Healthy, "{source:?}");
        assert_eq!(source.restarts, 2);
        let error = source.last_error.clone().unwrap();
        assert!(error.contains("start 2"), "{error}");
        assert_eq!(
            sink.events.load(Ordering::Relaxed),
            1,
            "the run that worked delivered"
        );
        handle.shutdown();
        run.await.unwrap().unwrap();
    }
}

/// Past `source_restart_limit` a failing source stays failed.
#[tokio::test(start_paused = true)]
async fn a_source_failing_past_its_restart_limit_stays_failed() {
    let cfg = config()
        .with_source_restart_limit(2)
        .with_source_restart_backoff(Duration::from_secs(1));
    let mut collector = Collector::new(cfg).unwrap();
    let starts = Arc::new(AtomicU32::new(0));
    collector
        .register(Box::new(Flaky {
            starts: starts.clone(),
            failures: u32::MAX,
            panic: false,
        }))
        .unwrap();
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        3,
        "the first start and 2 restarts"
    );
    let status = handle.status();
    let source = status.sources.iter().find(|s| s.name == "flaky").unwrap();
    assert_eq!((source.health, source.restarts), (HealthState::Failed, 2));
    handle.shutdown();
    run.await.unwrap().unwrap();
}
