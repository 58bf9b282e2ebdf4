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

/// How often a sleeping poller looks at its stop flags: bounds how late it stops.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Sleeps until `deadline`, or until `shutdown` or `stop` is set. Returns whether the
/// caller should go on (false: a flag is set).
async fn wait_or_stop(
    deadline: tokio::time::Instant,
    shutdown: &AtomicBool,
    stop: &AtomicBool,
) -> bool {
    loop {
        if shutdown.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return true;
        }
        tokio::time::sleep((deadline - now).min(STOP_CHECK)).await;
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
    async fn wait_returns_at_the_deadline_or_soon_after_a_stop() {
        let (shutdown, stop) = (AtomicBool::new(false), AtomicBool::new(false));
        let start = tokio::time::Instant::now();
        assert!(wait_or_stop(start + Duration::from_secs(2), &shutdown, &stop).await);
        assert_eq!(start.elapsed(), Duration::from_secs(2));

        let start = tokio::time::Instant::now();
        let waiting = wait_or_stop(start + Duration::from_secs(60), &shutdown, &stop);
        let stopping = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            shutdown.store(true, Ordering::Relaxed);
        };
        let (go_on, ()) = tokio::join!(waiting, stopping);
        assert!(!go_on);
        assert!(start.elapsed() <= Duration::from_secs(1) + STOP_CHECK);
    }
}
