//! The ring-buffer drain loop shared by every kernel source.
//!
//! Never blocks a thread: readiness comes from tokio's `AsyncFd` (the ring buffer's
//! epoll fd) plus a timer for rings whose programs skip wakeups below a watermark.
//! When the runtime's queue is full the loop stops draining (the kernel ring keeps
//! buffering) and waits up to `max_send_wait`; past that it drops and counts, so
//! losses are always visible: kernel-side in `COUNTERS`, here in [`DrainStats`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use collector_core::CollectionEvent;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::clock::BootClock;
use super::decode::DecodeError;

/// Userspace counters of one drain loop.
#[derive(Debug, Default)]
pub struct DrainStats {
    /// Records read from the ring buffer.
    pub records: AtomicU64,
    /// Events handed to the runtime.
    pub delivered: AtomicU64,
    /// Records that did not decode.
    pub decode_errors: AtomicU64,
    /// Events dropped after waiting `max_send_wait` for room.
    pub backpressure_drops: AtomicU64,
    /// Events dropped because the runtime's queue was closed.
    pub closed_drops: AtomicU64,
}

/// How a drain loop behaves.
#[derive(Debug, Clone, Copy)]
pub struct DrainConfig {
    /// Drain at least this often even without a wakeup.
    pub poll_interval: Duration,
    /// Longest wait for room in the runtime's queue before dropping an event.
    pub max_send_wait: Duration,
}

/// Most records decoded before sending: bounds the local buffer.
const DRAIN_CHUNK: usize = 1024;

/// Runs until `shutdown` or `stop` is set.
pub async fn drain<F>(
    ring: RingBuf<MapData>,
    mut decode: F,
    tx: mpsc::Sender<CollectionEvent>,
    shutdown: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    stats: Arc<DrainStats>,
    config: DrainConfig,
) -> anyhow::Result<()>
where
    F: FnMut(&[u8], &BootClock) -> Result<CollectionEvent, DecodeError>,
{
    // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open for as long as it
    // is registered, and nothing else registers it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)? };
    let mut clock = BootClock::new();
    let mut last_resync = std::time::Instant::now();
    let mut pending: Vec<CollectionEvent> = Vec::with_capacity(DRAIN_CHUNK);
    let mut tick = tokio::time::interval(config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        if shutdown.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
            break;
        }
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                // Clear first: a record arriving after our drain re-arms readiness.
                guard.clear_ready();
            }
            _ = tick.tick() => {}
        }
        if last_resync.elapsed() > Duration::from_secs(1) {
            clock.resync();
            last_resync = std::time::Instant::now();
        }
        drain_available(
            ring.get_mut(),
            &mut decode,
            &clock,
            &mut pending,
            &tx,
            &stats,
            config.max_send_wait,
        )
        .await;
    }
    // Records submitted before the programs were detached are still in the ring: hand
    // them over too (with a short wait), so a clean shutdown loses nothing uncounted.
    drain_available(
        ring.get_mut(),
        &mut decode,
        &clock,
        &mut pending,
        &tx,
        &stats,
        config.max_send_wait.min(Duration::from_millis(100)),
    )
    .await;
    Ok(())
}

/// Reads every record available now and sends it, in chunks of `DRAIN_CHUNK`.
async fn drain_available<F>(
    ring: &mut RingBuf<MapData>,
    decode: &mut F,
    clock: &BootClock,
    pending: &mut Vec<CollectionEvent>,
    tx: &mpsc::Sender<CollectionEvent>,
    stats: &DrainStats,
    max_wait: Duration,
) where
    F: FnMut(&[u8], &BootClock) -> Result<CollectionEvent, DecodeError>,
{
    loop {
        while pending.len() < DRAIN_CHUNK {
            let Some(item) = ring.next() else { break };
            stats.records.fetch_add(1, Ordering::Relaxed);
            match decode(&item, clock) {
                Ok(ev) => pending.push(ev),
                Err(e) => {
                    stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("undecodable kernel record: {e}");
                }
            }
        }
        if pending.is_empty() {
            return;
        }
        let more = pending.len() == DRAIN_CHUNK;
        send_all(pending, tx, stats, max_wait).await;
        if !more {
            return;
        }
    }
}

async fn send_all(
    pending: &mut Vec<CollectionEvent>,
    tx: &mpsc::Sender<CollectionEvent>,
    stats: &DrainStats,
    max_wait: Duration,
) {
    let mut delivered = 0u64;
    for ev in pending.drain(..) {
        match tx.try_send(ev) {
            Ok(()) => delivered += 1,
            Err(mpsc::error::TrySendError::Full(ev)) => {
                match tokio::time::timeout(max_wait, tx.send(ev)).await {
                    Ok(Ok(())) => delivered += 1,
                    Ok(Err(_)) => {
                        stats.closed_drops.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        stats.backpressure_drops.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                stats.closed_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    stats.delivered.fetch_add(delivered, Ordering::Relaxed);
}
