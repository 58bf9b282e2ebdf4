//! The procfs polling fallback: sources for hosts where the kernel programs cannot run
//! (not root, no BTF, kernel object missing), or when `collector run --procfs` asks.
//!
//! - `procfs-process` ([`ProcessEventSource`]): `snapshot`, `exec` and `exit` events from
//!   diffs ([`ProcessDiff`]) of successive process table scans ([`ProcessTable`],
//!   [`ProcfsProcessTable`]). A process that starts and exits between two scans is
//!   never seen, and exit codes are unknown: the kernel sources have neither gap.
//! - `procfs-network` ([`NetworkPollSource`]): TCP connects, accepts, listens and
//!   closes and UDP binds from diffs of `/proc/net/{tcp,tcp6,udp,udp6}`, without pids.
//! - `procfs-performance` ([`PerformanceEventSource`]): host CPU, memory and load, and
//!   the collector's own CPU and resident memory. It runs beside the kernel sources too.
//!
//! They read `/proc` through [`read`] on tokio's blocking pool, never on a runtime worker.
//!
//! ```no_run
//! use collector_userspace::procfs::{ProcessEventSource, ProcessSourceConfig};
//! # fn main() -> anyhow::Result<()> {
//! let mut collector = collector_core::Collector::new(collector_core::CollectorConfig::default())?;
//! collector.register(Box::new(ProcessEventSource::new(ProcessSourceConfig::default())?))?;
//! # Ok(()) }
//! ```

mod diff;
mod network;
mod performance;
mod process;
pub mod read;
mod scan;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use collector_core::event::ProcessEvent;
use collector_core::CollectionEvent;

pub use diff::ProcessDiff;
pub use network::{NetworkPollSource, NetworkSourceConfig, NETWORK_SOURCE_NAME};
pub use performance::{PerformanceEventSource, PerformanceSourceConfig, PERFORMANCE_SOURCE_NAME};
pub use process::{
    PollStats, ProcessEventSource, ProcessSourceConfig, DEFAULT_REALTIME_THRESHOLD,
    PROCESS_SOURCE_NAME,
};
pub(crate) use read::own_usage;
pub use scan::{ProcessSnapshot, ProcessTable, ProcfsProcessTable, ScanError};

/// Wraps a process event for the collector.
// `into` is the identity while `CollectionEvent::Process` holds the event inline, and
// boxes it where the variant holds a `Box<ProcessEvent>`: this compiles with both.
#[allow(clippy::useless_conversion)]
pub(crate) fn process_event(event: ProcessEvent) -> CollectionEvent {
    CollectionEvent::Process(event.into())
}

/// How often a wait between two polls looks at the trait's `shutdown_signal`, which is
/// a plain flag and cannot wake anyone. The collector also calls `stop`, which wakes the
/// wait at once ([`StopSignal`]); the flag's check is for callers that only set it.
const FLAG_CHECK: Duration = Duration::from_millis(500);

/// A polling source's `stop`: a flag (for `health_check` and the loop) and a wakeup for
/// the wait between two polls, so that stopping waits for no timer.
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    stopped: AtomicBool,
    wake: tokio::sync::Notify,
}

impl StopSignal {
    /// Stops the source: its wait returns now, or its next one at once.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        // A stored permit when nobody waits yet: the next wait returns at once.
        self.wake.notify_one();
    }

    /// Whether `stop` was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

/// Sleeps until `deadline`, or until `stop` is called or `shutdown` is set. Returns
/// whether the caller should go on (false: stopped).
async fn wait_or_stop(
    deadline: tokio::time::Instant,
    shutdown: &AtomicBool,
    stop: &StopSignal,
) -> bool {
    loop {
        if shutdown.load(Ordering::Relaxed) || stop.is_stopped() {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep((deadline - now).min(FLAG_CHECK)) => {}
            () = stop.wake.notified() => {}
        }
    }
}

/// Sends one poll's events under `policy`, counting those dropped under backpressure in
/// `drops`. False when the collector is gone (the source should return).
async fn send_polled(
    policy: &collector_core::pressure::BackpressurePolicy,
    tx: &tokio::sync::mpsc::Sender<CollectionEvent>,
    events: impl IntoIterator<Item = CollectionEvent>,
    drops: &std::sync::atomic::AtomicU64,
) -> bool {
    use collector_core::pressure::SendOutcome;
    for event in events {
        match policy.send(tx, event).await {
            SendOutcome::Sent => {}
            SendOutcome::Dropped(_) => {
                drops.fetch_add(1, Ordering::Relaxed);
            }
            SendOutcome::Closed(_) => return false,
        }
    }
    true
}

/// A polling source's stats: its backpressure drops.
fn backpressure_stats(drops: &std::sync::atomic::AtomicU64) -> collector_core::SourceStats {
    let mut stats = collector_core::SourceStats::default();
    stats
        .dropped
        .insert("backpressure".into(), drops.load(Ordering::Relaxed));
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wait_returns_at_the_deadline_at_once_on_stop_and_soon_after_the_flag() {
        let (shutdown, stop) = (AtomicBool::new(false), StopSignal::default());
        let start = tokio::time::Instant::now();
        assert!(wait_or_stop(start + Duration::from_secs(2), &shutdown, &stop).await);
        assert_eq!(start.elapsed(), Duration::from_secs(2));

        // `stop` (what the collector calls) wakes the wait: no timer runs out first.
        let start = tokio::time::Instant::now();
        let waiting = wait_or_stop(start + Duration::from_secs(60), &shutdown, &stop);
        let stopping = async {
            tokio::time::sleep(Duration::from_millis(1_234)).await;
            stop.stop();
        };
        let (go_on, ()) = tokio::join!(waiting, stopping);
        assert!(!go_on);
        assert_eq!(start.elapsed(), Duration::from_millis(1_234));
        // Stopped before the next wait began: that one returns at once too.
        assert!(!wait_or_stop(start + Duration::from_secs(60), &shutdown, &stop).await);

        // The trait's flag alone is seen at the next check.
        let (shutdown, stop) = (AtomicBool::new(false), StopSignal::default());
        let start = tokio::time::Instant::now();
        let waiting = wait_or_stop(start + Duration::from_secs(60), &shutdown, &stop);
        let stopping = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            shutdown.store(true, Ordering::Relaxed);
        };
        let (go_on, ()) = tokio::join!(waiting, stopping);
        assert!(!go_on);
        assert!(start.elapsed() <= Duration::from_secs(1) + FLAG_CHECK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_poller_wakes_only_for_its_flag_check() {
        // Idle, a poller costs a wakeup per FLAG_CHECK, not one per 50 ms.
        let (shutdown, stop) = (AtomicBool::new(false), StopSignal::default());
        let start = tokio::time::Instant::now();
        let mut wakeups = 0;
        let mut waiting = std::pin::pin!(wait_or_stop(
            start + Duration::from_secs(10),
            &shutdown,
            &stop
        ));
        let go_on = std::future::poll_fn(|cx| {
            wakeups += 1;
            std::future::Future::poll(waiting.as_mut(), cx)
        })
        .await;
        assert!(go_on);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // The first poll, one per check, the last at the deadline.
        assert_eq!(wakeups, 1 + 10_000 / FLAG_CHECK.as_millis() as usize);
    }
}
