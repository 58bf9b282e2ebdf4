//! One source's life: start-up, health checks, isolation of failures, stop.
//!
//! Each registered source gets a supervisor task while the collector runs. The source's
//! `start` runs on a task of its own, so a panic or error in it ends only that task (the
//! supervisor sees it through the `JoinHandle`); health checks and `stop` run under
//! `catch_unwind` for the same reason.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::caps::SourceCaps;
use crate::event::CollectionEvent;
use crate::pipeline::{forward, BatchSenderInner, BatchSettings, SharedQueue};
use crate::source::{BatchSender, BatchSource, EventSource};
use crate::status::{HealthState, SourceStatus};
use crate::telemetry::SourceCounters;

/// Consecutive failed health checks after which a source is `Failed` (before that it is
/// `Degraded`). A later passing check makes it `Healthy` again.
pub const FAILED_AFTER_CHECKS: u32 = 3;

/// A registered source and everything the runtime keeps about it.
pub(crate) struct SourceUnit {
    pub name: &'static str,
    pub caps: SourceCaps,
    pub source: Arc<dyn EventSource>,
    /// Set when registered as a [`BatchSource`]: it then runs `run_batches`, sending
    /// straight into the shared queue, instead of `start`.
    pub batch: Option<Arc<dyn BatchSource>>,
    pub counters: Arc<SourceCounters>,
    /// The `shutdown_signal` handed to this source's `start`.
    pub stop_flag: Arc<AtomicBool>,
    /// Cancelled on shutdown (a child of the collector's token) or unregister.
    pub cancel: CancellationToken,
    health: Mutex<HealthRecord>,
    /// Lets status read the channel's depth without keeping it open.
    channel: Mutex<Option<mpsc::WeakSender<CollectionEvent>>>,
}

#[derive(Debug)]
struct HealthRecord {
    state: HealthState,
    last_error: Option<String>,
    failed_checks: u32,
    restarts: u32,
}

/// What stopping a source took.
#[derive(Debug)]
pub(crate) struct StopReport {
    pub name: &'static str,
    /// Tasks that had to be aborted because they outlived `shutdown_timeout`.
    pub aborted: Vec<&'static str>,
}

/// Timing the supervisor needs from the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SupervisorSettings {
    pub event_buffer_size: usize,
    pub batch: BatchSettings,
    pub startup_timeout: Duration,
    pub health_check_interval: Duration,
    pub shutdown_timeout: Duration,
    /// Restarts of a failed source before it is left failed.
    pub restart_limit: u32,
    /// Wait before the first restart; doubled for each next one, up to
    /// [`MAX_RESTART_BACKOFF`].
    pub restart_backoff: Duration,
}

/// Longest wait between two restarts of a failing source.
pub const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(300);

impl SourceUnit {
    pub(crate) fn new(source: Box<dyn EventSource>, cancel: CancellationToken) -> Self {
        Self::with(Arc::from(source), None, cancel)
    }

    pub(crate) fn new_batch(source: Box<dyn BatchSource>, cancel: CancellationToken) -> Self {
        let batch: Arc<dyn BatchSource> = Arc::from(source);
        Self::with(batch.clone(), Some(batch), cancel)
    }

    fn with(
        source: Arc<dyn EventSource>,
        batch: Option<Arc<dyn BatchSource>>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            name: source.name(),
            caps: source.capabilities(),
            source,
            batch,
            counters: Arc::default(),
            stop_flag: Arc::new(AtomicBool::new(false)),
            cancel,
            health: Mutex::new(HealthRecord {
                state: HealthState::Starting,
                last_error: None,
                failed_checks: 0,
                restarts: 0,
            }),
            channel: Mutex::new(None),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, HealthRecord> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn state(&self) -> HealthState {
        self.health().state
    }

    fn set_healthy_if_starting(&self) {
        let mut h = self.health();
        if h.state == HealthState::Starting {
            h.state = HealthState::Healthy;
        }
    }

    fn fail(&self, error: String) {
        tracing::error!(source = self.name, %error, "source failed");
        let mut h = self.health();
        h.state = HealthState::Failed;
        h.last_error = Some(error);
    }

    fn record_check(&self, result: Result<(), String>) {
        let mut h = self.health();
        match result {
            Ok(()) => {
                h.failed_checks = 0;
                h.state = HealthState::Healthy;
            }
            Err(error) => {
                h.failed_checks += 1;
                h.state = if h.failed_checks >= FAILED_AFTER_CHECKS {
                    HealthState::Failed
                } else {
                    HealthState::Degraded
                };
                tracing::warn!(
                    source = self.name,
                    %error,
                    failed_checks = h.failed_checks,
                    state = ?h.state,
                    "health check failed"
                );
                h.last_error = Some(error);
            }
        }
    }

    /// Back to `Starting` for another run (the last error stays visible).
    fn prepare_restart(&self) -> u32 {
        self.stop_flag.store(false, Ordering::SeqCst);
        let mut h = self.health();
        h.state = HealthState::Starting;
        h.failed_checks = 0;
        h.restarts += 1;
        h.restarts
    }

    pub(crate) fn status(&self) -> SourceStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let (health, last_error, restarts) = {
            let h = self.health();
            (h.state, h.last_error.clone(), h.restarts)
        };
        let queue_depth = self
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|weak| weak.upgrade())
            .map(|tx| (tx.max_capacity() - tx.capacity()) as u64)
            .unwrap_or(0);
        SourceStatus {
            name: self.name.to_owned(),
            capabilities: self.caps,
            health,
            last_error,
            restarts,
            events_received: self.counters.received.load(Relaxed),
            events_by_kind: self.counters.received_by_kind(),
            dropped: self.counters.dropped(),
            stats: self.source.stats(),
            queue_depth,
            queue_high_water: self.counters.channel_high_water.load(Relaxed),
        }
    }
}

/// Text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

fn start_outcome(result: Result<anyhow::Result<()>, JoinError>) -> Result<(), String> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("start failed: {e:#}")),
        Err(e) if e.is_panic() => Err(format!(
            "start panicked: {}",
            panic_message(&*e.into_panic())
        )),
        Err(_) => Err("start task was cancelled".to_owned()),
    }
}

/// Runs a source call, turning an error, a panic or a timeout into a message.
async fn guarded(
    what: &str,
    limit: Duration,
    call: impl Future<Output = anyhow::Result<()>>,
) -> Result<(), String> {
    match tokio::time::timeout(limit, AssertUnwindSafe(call).catch_unwind()).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("{what} failed: {e:#}")),
        Ok(Err(panic)) => Err(format!("{what} panicked: {}", panic_message(&*panic))),
        Err(_) => Err(format!("{what} did not return within {limit:?}")),
    }
}

/// Supervises one source until it is cancelled (shutdown or unregister), or until it
/// fails to come up; then stops it. Never panics on behalf of the source.
///
/// Start-up rule: the source counts as up (`Healthy`) as soon as `start` returns `Ok`,
/// or it delivers its first event, or `start` is still running when `startup_timeout`
/// passes and its `health_check` then passes. `start` returning an error or panicking
/// at any time makes it `Failed`. A `health_check` failing at the `startup_timeout`
/// mark makes it `Failed` and stops it. A `start` that runs until shutdown is therefore
/// never cancelled by `startup_timeout`.
/// A source that fails (`start` errors or panics, or its health checks fail
/// `FAILED_AFTER_CHECKS` times) is stopped and started again after a backoff that doubles
/// each time (`restart_backoff`, at most [`MAX_RESTART_BACKOFF`]), up to `restart_limit`
/// times; then it stays `Failed`. Each restart and its cause show in the source's status
/// (`restarts`, `last_error`) and the log.
pub(crate) async fn supervise(
    unit: Arc<SourceUnit>,
    queue: Arc<SharedQueue>,
    settings: SupervisorSettings,
) -> StopReport {
    let mut report = supervise_once(unit.clone(), queue.clone(), settings).await;
    let mut backoff = settings.restart_backoff;
    loop {
        let failed = unit.state() == HealthState::Failed;
        let restarts = unit.health().restarts;
        if !failed || unit.cancel.is_cancelled() || restarts >= settings.restart_limit {
            if failed && restarts >= settings.restart_limit && settings.restart_limit > 0 {
                tracing::error!(
                    source = unit.name,
                    restarts,
                    "source failed again after its last allowed restart; it stays failed"
                );
            }
            return report;
        }
        tracing::warn!(
            source = unit.name,
            error = unit.health().last_error.as_deref().unwrap_or(""),
            ?backoff,
            "restarting the failed source after a backoff"
        );
        tokio::select! {
            () = unit.cancel.cancelled() => return report,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = backoff.saturating_mul(2).min(MAX_RESTART_BACKOFF);
        let n = unit.prepare_restart();
        tracing::info!(source = unit.name, restart = n, "source restarting");
        let next = supervise_once(unit.clone(), queue.clone(), settings).await;
        report.aborted.extend(next.aborted);
    }
}

async fn supervise_once(
    unit: Arc<SourceUnit>,
    queue: Arc<SharedQueue>,
    settings: SupervisorSettings,
) -> StopReport {
    let (mut start, mut forwarder) = match unit.batch.clone() {
        // One hop: the source pushes whole batches into the shared queue itself.
        Some(batch) => {
            let first_batch_unit = unit.clone();
            let tx = BatchSender {
                inner: Arc::new(BatchSenderInner {
                    queue,
                    counters: unit.counters.clone(),
                    max_chunk: settings.batch.max_batch_size,
                    started: AtomicBool::new(false),
                    on_first_batch: Box::new(move || first_batch_unit.set_healthy_if_starting()),
                }),
            };
            let token = unit.cancel.clone();
            let start: JoinHandle<anyhow::Result<()>> =
                tokio::spawn(async move { batch.run_batches(tx, token).await });
            (start, None)
        }
        None => {
            let (tx, rx) = mpsc::channel(settings.event_buffer_size);
            *unit.channel.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.downgrade());
            let first_event_unit = unit.clone();
            let forwarder: JoinHandle<()> = tokio::spawn(forward(
                rx,
                queue,
                unit.counters.clone(),
                settings.batch,
                move || first_event_unit.set_healthy_if_starting(),
            ));
            let source = unit.source.clone();
            let flag = unit.stop_flag.clone();
            let start: JoinHandle<anyhow::Result<()>> =
                tokio::spawn(async move { source.start(tx, flag).await });
            (start, Some(forwarder))
        }
    };

    let mut start_running = true;
    let mut in_startup = true;
    let startup_deadline = tokio::time::sleep(settings.startup_timeout);
    tokio::pin!(startup_deadline);
    let period = settings.health_check_interval;
    let mut checks = tokio::time::interval_at(Instant::now() + period, period);
    checks.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            biased;
            () = unit.cancel.cancelled() => break,
            result = &mut start, if start_running => {
                start_running = false;
                match start_outcome(result) {
                    Ok(()) => {
                        // Returned: its work runs on tasks it spawned (or it is done, which
                        // its health check will tell).
                        tracing::debug!(source = unit.name, "start returned");
                        unit.set_healthy_if_starting();
                    }
                    Err(error) => {
                        unit.fail(error);
                        // Stop what is left of it; `supervise` decides on a restart.
                        break;
                    }
                }
                in_startup = false;
            }
            () = &mut startup_deadline, if in_startup => {
                in_startup = false;
                if unit.state() == HealthState::Starting {
                    let check = tokio::select! {
                        () = unit.cancel.cancelled() => break,
                        r = guarded("health_check", settings.startup_timeout, unit.source.health_check()) => r,
                    };
                    match check {
                        Ok(()) => unit.set_healthy_if_starting(),
                        Err(error) => {
                            unit.fail(format!(
                                "not up within startup_timeout ({:?}): {error}",
                                settings.startup_timeout
                            ));
                            break;
                        }
                    }
                }
            }
            _ = checks.tick(), if !in_startup => {
                let check = tokio::select! {
                    () = unit.cancel.cancelled() => break,
                    r = guarded("health_check", period, unit.source.health_check()) => r,
                };
                unit.record_check(check);
                // With a restart left, a source failed by its checks is restarted; without,
                // it keeps being checked and may recover.
                if unit.state() == HealthState::Failed
                    && unit.health().restarts < settings.restart_limit
                {
                    break;
                }
            }
        }
    }

    stop(&unit, start, start_running, &mut forwarder, settings).await
}

/// Signals the source, calls `stop`, waits for its tasks up to `shutdown_timeout`, then
/// aborts whatever is left.
async fn stop(
    unit: &SourceUnit,
    mut start: JoinHandle<anyhow::Result<()>>,
    start_running: bool,
    forwarder: &mut Option<JoinHandle<()>>,
    settings: SupervisorSettings,
) -> StopReport {
    let deadline = Instant::now() + settings.shutdown_timeout;
    let mut aborted = Vec::new();
    unit.stop_flag.store(true, Ordering::SeqCst);

    let remaining = deadline.saturating_duration_since(Instant::now());
    if let Err(error) = guarded("stop", remaining, unit.source.stop()).await {
        tracing::warn!(source = unit.name, %error, "stopping source");
    }
    if start_running {
        match tokio::time::timeout_at(deadline, &mut start).await {
            Ok(result) => {
                if let Err(error) = start_outcome(result) {
                    unit.fail(error);
                }
            }
            Err(_) => {
                start.abort();
                aborted.push("start");
            }
        }
    }
    // The forwarder ends once every sender clone is dropped, i.e. once the source's own
    // tasks are gone too. (A batch source has none: its sends go straight to the queue.)
    if let Some(forwarder) = forwarder.as_mut() {
        if tokio::time::timeout_at(deadline, &mut *forwarder)
            .await
            .is_err()
        {
            forwarder.abort();
            aborted.push("forwarder (the source still holds its event sender)");
        }
    }
    {
        let mut h = unit.health();
        if h.state != HealthState::Failed {
            h.state = HealthState::Stopped;
        }
    }
    // Batch sources send straight into the queue; plain ones through the forwarder,
    // which was just drained: nothing of a stopped run is left behind.
    if aborted.is_empty() {
        tracing::info!(source = unit.name, "source stopped");
    } else {
        tracing::warn!(
            source = unit.name,
            aborted = ?aborted,
            timeout = ?settings.shutdown_timeout,
            "source did not stop within shutdown_timeout; aborted its tasks"
        );
    }
    StopReport {
        name: unit.name,
        aborted,
    }
}
