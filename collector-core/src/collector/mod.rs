//! The [`Collector`]: registers sources and sinks, then runs the pipeline until shutdown.
//!
//! # Lifecycle rules
//!
//! * **Start-up.** `startup_timeout` bounds how long a source may take to come up, never
//!   its whole life. A source is up (`Healthy`) as soon as its `start` returns `Ok`, or it
//!   sends its first event, or `start` is still running at the `startup_timeout` mark and
//!   its `health_check` passes then. If that check fails, the source is `Failed` and is
//!   stopped. A `start` that returns an error or panics makes the source `Failed`; the
//!   other sources keep running.
//! * **Health.** Every `health_check_interval` each running source's `health_check` runs
//!   (bounded by the interval): a pass makes it `Healthy`, a failure `Degraded`, and
//!   [`FAILED_AFTER_CHECKS`] failures in a row `Failed`; the last error is kept in
//!   [`SourceStatus::last_error`](crate::status::SourceStatus). A failed check is not
//!   terminal: a later pass makes the source `Healthy` again.
//! * **Shutdown** (SIGINT, SIGTERM or [`CollectorHandle::shutdown`]): every source's
//!   `shutdown_signal` is set and its `stop` called, all in parallel; each gets up to
//!   `shutdown_timeout` for `stop`, its `start` task and the draining of its channel,
//!   after which what is left is aborted and named in the log and in [`RunSummary`].
//!   Events already queued are flushed to the sinks before `run` returns.
//! * **Unregister** while running stops just that source by the same rule.

mod handle;
mod supervisor;
#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a running collector re-reads its sources' capabilities.
const CAPS_REFRESH: Duration = Duration::from_secs(1);

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use handle::CollectorHandle;
pub use supervisor::FAILED_AFTER_CHECKS;

use crate::caps::SourceCaps;
use crate::config::{CollectorConfig, ConfigError};
use crate::pipeline::{run_batcher, BatchSettings, SharedQueue, SinkSet};
use crate::sink::EventSink;
use crate::source::EventSource;
use crate::status::StatusSnapshot;
use crate::telemetry::PipelineTelemetry;
use supervisor::{supervise, SourceUnit, StopReport, SupervisorSettings};

/// Why a collector operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// `max_event_sources` sources are already registered.
    #[error("cannot register `{name}`: {limit} sources are registered, the max_event_sources limit; raise it or unregister one")]
    LimitReached {
        /// The source that was refused.
        name: String,
        /// The configured limit.
        limit: usize,
    },
    /// A source with this name is already registered.
    #[error("a source named `{name}` is already registered; source names must be unique")]
    DuplicateName {
        /// The taken name.
        name: String,
    },
    /// No source with this name is registered.
    #[error("no source named `{name}` is registered")]
    NotFound {
        /// The requested name.
        name: String,
    },
    /// The collector is shutting down and takes no new sources.
    #[error("the collector is shutting down; `{name}` was not registered")]
    ShuttingDown {
        /// The source that was refused.
        name: String,
    },
    /// The configuration did not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What a finished [`Collector::run`] reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The final status, after the last batch was flushed.
    pub status: StatusSnapshot,
    /// Sources that did not stop within `shutdown_timeout`, with the tasks aborted.
    pub aborted: Vec<(String, Vec<String>)>,
}

/// Runs registered [`EventSource`]s and feeds their events, batched, to [`EventSink`]s.
///
/// See the [module docs](self) for the start-up, health and shutdown rules.
pub struct Collector {
    handle: CollectorHandle,
}

pub(crate) struct Shared {
    pub config: CollectorConfig,
    pub registry: Mutex<Registry>,
    pub caps: watch::Sender<SourceCaps>,
    pub shutdown: CancellationToken,
    pub sinks: Arc<SinkSet>,
    pub telemetry: Arc<PipelineTelemetry>,
    pub subscribers: AtomicU64,
    /// Collection mode per domain, declared by the embedding binary.
    pub domains: Mutex<Vec<crate::status::DomainStatus>>,
}

#[derive(Default)]
pub(crate) struct Registry {
    pub slots: Vec<SourceSlot>,
    /// Set while `run` is active, so sources registered then start at once.
    pub running: Option<Running>,
    pub started_at: Option<std::time::Instant>,
}

pub(crate) struct SourceSlot {
    pub unit: Arc<SourceUnit>,
    pub supervisor: Option<JoinHandle<StopReport>>,
}

#[derive(Clone)]
pub(crate) struct Running {
    pub queue: Arc<SharedQueue>,
    pub runtime: tokio::runtime::Handle,
}

impl Shared {
    pub(crate) fn settings(&self) -> SupervisorSettings {
        let c = &self.config;
        SupervisorSettings {
            event_buffer_size: c.event_buffer_size,
            batch: BatchSettings {
                max_batch_size: c.max_batch_size,
                batch_timeout: c.batch_timeout,
            },
            startup_timeout: c.startup_timeout,
            health_check_interval: c.health_check_interval,
            shutdown_timeout: c.shutdown_timeout,
            restart_limit: c.source_restart_limit,
            restart_backoff: c.source_restart_backoff,
        }
    }

    pub(crate) fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the source called `name` out of the registry and republishes the
    /// capability union.
    pub(crate) fn remove_source(&self, name: &str) -> Result<SourceSlot, CollectorError> {
        let mut registry = self.registry();
        let index = registry
            .slots
            .iter()
            .position(|s| s.unit.name == name)
            .ok_or_else(|| CollectorError::NotFound {
                name: name.to_owned(),
            })?;
        let slot = registry.slots.remove(index);
        self.publish_caps(&registry);
        Ok(slot)
    }

    pub(crate) fn publish_caps(&self, registry: &Registry) {
        let union = registry
            .slots
            .iter()
            // Read live: a source's capabilities may change while it runs (a poller whose
            // interval changed); `refresh_caps` calls this periodically.
            .fold(SourceCaps::empty(), |acc, s| {
                acc | s.unit.source.capabilities()
            });
        self.caps.send_if_modified(|caps| {
            let changed = *caps != union;
            *caps = union;
            changed
        });
    }
}

impl Collector {
    /// A collector with a validated `config` and no sources.
    pub fn new(config: CollectorConfig) -> Result<Self, CollectorError> {
        config.validate()?;
        let (caps, _) = watch::channel(SourceCaps::empty());
        let shared = Arc::new(Shared {
            config,
            registry: Mutex::new(Registry::default()),
            caps,
            shutdown: CancellationToken::new(),
            sinks: Arc::default(),
            telemetry: Arc::default(),
            subscribers: AtomicU64::new(0),
            domains: Mutex::default(),
        });
        Ok(Self {
            handle: CollectorHandle { shared },
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &CollectorConfig {
        &self.handle.shared.config
    }

    /// Adds a source; fails when `max_event_sources` are registered or the name is taken.
    pub fn register(&mut self, source: Box<dyn EventSource>) -> Result<(), CollectorError> {
        self.handle.register(source)
    }

    /// Adds a source that sends whole batches straight into the shared queue (one hop,
    /// see [`BatchSource`](crate::BatchSource)); otherwise as [`register`](Self::register).
    pub fn register_batch_source(
        &mut self,
        source: Box<dyn crate::source::BatchSource>,
    ) -> Result<(), CollectorError> {
        self.handle.register_batch_source(source)
    }

    /// Removes a source that has not started (the collector is not running yet).
    /// While running, use [`CollectorHandle::unregister`], which also stops it.
    pub fn unregister(&mut self, name: &str) -> Result<(), CollectorError> {
        self.handle.shared.remove_source(name).map(drop)
    }

    /// Union of the registered sources' capabilities.
    pub fn capabilities(&self) -> SourceCaps {
        self.handle.capabilities()
    }

    /// Adds a sink; every batch is offered to every sink.
    pub fn add_sink(&mut self, sink: Arc<dyn EventSink>) {
        self.handle.add_sink(sink);
    }

    /// A handle for shutdown, status and (un)registration from other tasks.
    pub fn handle(&self) -> CollectorHandle {
        self.handle.clone()
    }

    /// Runs every source and the pipeline until SIGINT, SIGTERM or
    /// [`CollectorHandle::shutdown`], then stops everything (see the module docs).
    pub async fn run(self) -> anyhow::Result<RunSummary> {
        use tokio::signal::unix::{signal, SignalKind};

        let shared = self.handle.shared.clone();
        let config = &shared.config;
        let (queue, queue_rx) = SharedQueue::new(
            config.event_buffer_size,
            config.backpressure_threshold_events(),
            config.max_backpressure_wait,
            shared.telemetry.clone(),
        );
        let batcher = tokio::spawn(run_batcher(
            queue_rx,
            shared.sinks.clone(),
            shared.telemetry.clone(),
            shared.settings().batch,
        ));
        let mut sigterm = signal(SignalKind::terminate())
            .map_err(|e| anyhow::anyhow!("cannot install the SIGTERM handler: {e}"))?;
        let mut sigint = signal(SignalKind::interrupt())
            .map_err(|e| anyhow::anyhow!("cannot install the SIGINT handler: {e}"))?;

        {
            let mut registry = shared.registry();
            registry.started_at = Some(std::time::Instant::now());
            registry.running = Some(Running {
                queue: queue.clone(),
                runtime: tokio::runtime::Handle::current(),
            });
            let settings = shared.settings();
            for slot in &mut registry.slots {
                slot.supervisor = Some(tokio::spawn(supervise(
                    slot.unit.clone(),
                    queue.clone(),
                    settings,
                )));
            }
            tracing::info!(
                component = %config.component_name,
                sources = registry.slots.len(),
                capabilities = ?shared.caps.borrow().names(),
                "collector running"
            );
        }
        drop(queue);

        // Capabilities are re-read while running, so a change reaches the watch channel
        // (and IPC clients as CapabilityUpdate) within CAPS_REFRESH.
        let caps_task = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(CAPS_REFRESH);
                loop {
                    ticks.tick().await;
                    let registry = shared.registry();
                    shared.publish_caps(&registry);
                }
            })
        };

        let telemetry_task = config.enable_telemetry.then(|| {
            let handle = self.handle.clone();
            let period = config.telemetry_interval;
            tokio::spawn(async move {
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                loop {
                    ticks.tick().await;
                    crate::telemetry::log_report(
                        &handle.shared.config.component_name,
                        &handle.status(),
                    );
                }
            })
        });

        tokio::select! {
            () = shared.shutdown.cancelled() => tracing::info!("shutdown requested"),
            _ = sigterm.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = sigint.recv() => tracing::info!("SIGINT received, shutting down"),
        }
        // Cancels every source's token (they are children), so supervisors start stopping.
        shared.shutdown.cancel();

        let supervisors: Vec<(String, JoinHandle<StopReport>)> = {
            let mut registry = shared.registry();
            // Dropping the last queue handle outside the supervisors lets the batcher finish
            // once every forwarder has.
            registry.running = None;
            registry
                .slots
                .iter_mut()
                .filter_map(|s| s.supervisor.take().map(|h| (s.unit.name.to_owned(), h)))
                .collect()
        };
        let aborted = join_supervisors(supervisors, config.shutdown_timeout).await;

        // Every forwarder has ended or been aborted, so the queue closes and the batcher
        // flushes the last batch. Bounded anyway: it only runs non-blocking sink calls.
        let mut batcher = batcher;
        if tokio::time::timeout(Duration::from_secs(5), &mut batcher)
            .await
            .is_err()
        {
            batcher.abort();
            tracing::error!("batcher did not finish flushing within 5s; aborted");
        }
        caps_task.abort();
        if let Some(task) = telemetry_task {
            task.abort();
        }
        let status = self.handle.status();
        if config.enable_telemetry {
            crate::telemetry::log_report(&config.component_name, &status);
        }
        tracing::info!(component = %config.component_name, "collector stopped");
        Ok(RunSummary { status, aborted })
    }
}

/// Waits for every supervisor; each bounds its own stop by `shutdown_timeout`, so the
/// grace here only covers a supervisor that is itself stuck.
async fn join_supervisors(
    supervisors: Vec<(String, JoinHandle<StopReport>)>,
    shutdown_timeout: Duration,
) -> Vec<(String, Vec<String>)> {
    let deadline = tokio::time::Instant::now() + shutdown_timeout + Duration::from_secs(1);
    let mut aborted = Vec::new();
    for (name, mut supervisor) in supervisors {
        match tokio::time::timeout_at(deadline, &mut supervisor).await {
            Ok(Ok(report)) if report.aborted.is_empty() => {}
            Ok(Ok(report)) => aborted.push((
                report.name.to_owned(),
                report.aborted.iter().map(|s| (*s).to_owned()).collect(),
            )),
            Ok(Err(e)) => {
                tracing::error!(source = %name, error = %e, "source supervisor crashed");
                aborted.push((name, vec!["supervisor".to_owned()]));
            }
            Err(_) => {
                supervisor.abort();
                tracing::error!(source = %name, "source supervisor did not finish; aborted");
                aborted.push((name, vec!["supervisor".to_owned()]));
            }
        }
    }
    aborted
}
