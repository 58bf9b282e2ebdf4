//! The ring-buffer drain loop shared by every kernel source.
//!
//! Never blocks a thread: readiness comes from tokio's `AsyncFd` (the ring buffer's
//! epoll fd) plus a timer for rings whose programs skip wakeups below a watermark.
//! Records are decoded into a batch of up to the runtime's `max_batch_size` and handed
//! over whole:
//!
//! * registered as a [`BatchSource`](collector_core::BatchSource), straight into the
//!   collector's shared queue through a [`BatchSender`] (one hop, one bounded wait per
//!   batch; the runtime counts what it drops, once, as `backpressure` for the source);
//! * through the plain `EventSource` trait, into its `mpsc::Sender`, waiting up to
//!   `max_send_wait` per batch; drops are counted here in [`DrainStats`].
//!
//! While a send waits the loop does not drain (the kernel ring keeps buffering), so
//! losses are always visible: kernel-side in `COUNTERS`, here, or in the runtime.
//!
//! The ring sits behind [`RecordRing`] so the loop is tested without root
//! (`tests` below drive it with a fake ring).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aya::maps::{MapData, RingBuf};
use collector_core::{BatchSender, CollectionEvent};
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
    /// Events dropped after waiting `max_send_wait` for room (trait path only; on the
    /// batch path the runtime counts these).
    pub backpressure_drops: AtomicU64,
    /// Events dropped because the runtime's queue was closed (trait path only).
    pub closed_drops: AtomicU64,
}

/// How a drain loop behaves.
#[derive(Debug, Clone, Copy)]
pub struct DrainConfig {
    /// Drain at least this often even without a wakeup.
    pub poll_interval: Duration,
    /// Longest wait for room in the runtime's queue before dropping (trait path).
    pub max_send_wait: Duration,
}

/// A source of raw kernel records: the ring buffer, or a fake in tests.
#[async_trait]
pub trait RecordRing: Send {
    /// Waits until records may be available.
    async fn readable(&mut self) -> std::io::Result<()>;

    /// Hands the next record to `f`; false when none is available now.
    fn next_record(&mut self, f: &mut dyn FnMut(&[u8])) -> bool;
}

/// The kernel ring buffer, registered with the reactor.
pub struct KernelRing(AsyncFd<RingBuf<MapData>>);

impl KernelRing {
    /// Registers `ring`'s epoll fd with tokio.
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open for as long as
        // it is registered, and nothing else registers it.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)? };
        Ok(Self(fd))
    }

    /// The ring buffer back, deregistered, for a later drain.
    pub fn into_inner(self) -> RingBuf<MapData> {
        self.0.into_inner()
    }
}

/// A drain borrowing the ring, so that its owner keeps it for the next run.
#[async_trait]
impl RecordRing for &mut KernelRing {
    async fn readable(&mut self) -> std::io::Result<()> {
        (**self).readable().await
    }

    fn next_record(&mut self, f: &mut dyn FnMut(&[u8])) -> bool {
        (**self).next_record(f)
    }
}

#[async_trait]
impl RecordRing for KernelRing {
    async fn readable(&mut self) -> std::io::Result<()> {
        let mut guard = self.0.readable_mut().await?;
        // Clear first: a record arriving after our drain re-arms readiness.
        guard.clear_ready();
        Ok(())
    }

    fn next_record(&mut self, f: &mut dyn FnMut(&[u8])) -> bool {
        match self.0.get_mut().next() {
            Some(item) => {
                f(&item);
                true
            }
            None => false,
        }
    }
}

/// Where decoded batches go.
#[async_trait]
pub trait Outlet: Send {
    /// Largest batch to gather before sending.
    fn batch_size(&self) -> usize;

    /// Sends all of `pending` (leaving it empty), counting what is lost.
    async fn send(&mut self, pending: &mut Vec<CollectionEvent>, stats: &DrainStats);
}

#[async_trait]
impl Outlet for BatchSender {
    fn batch_size(&self) -> usize {
        self.max_batch_size()
    }

    async fn send(&mut self, pending: &mut Vec<CollectionEvent>, stats: &DrainStats) {
        let n = pending.len() as u64;
        // The runtime counts its drops for this source; counting them here too would
        // show the same loss twice.
        let dropped = self.send_batch(pending).await as u64;
        stats.delivered.fetch_add(n - dropped, Ordering::Relaxed);
    }
}

/// The plain trait's channel, with a bound on how long one batch may wait.
pub struct ChannelOutlet {
    /// The channel `EventSource::start` was given.
    pub tx: mpsc::Sender<CollectionEvent>,
    /// Longest wait for room for one batch.
    pub max_wait: Duration,
}

/// Events gathered per send on the trait path.
const CHANNEL_BATCH: usize = 1024;

#[async_trait]
impl Outlet for ChannelOutlet {
    fn batch_size(&self) -> usize {
        CHANNEL_BATCH
    }

    async fn send(&mut self, pending: &mut Vec<CollectionEvent>, stats: &DrainStats) {
        let n = pending.len() as u64;
        let mut events = pending.drain(..);
        let deadline = tokio::time::Instant::now() + self.max_wait;
        let mut sent = 0u64;
        // One wait for the whole batch: reserve room for as many as fit, as they fit.
        while events.len() > 0 {
            let want = events.len().min(self.tx.max_capacity());
            match tokio::time::timeout_at(deadline, self.tx.reserve_many(want)).await {
                Ok(Ok(permits)) => {
                    for (permit, ev) in permits.zip(events.by_ref()) {
                        permit.send(ev);
                        sent += 1;
                    }
                }
                Ok(Err(_closed)) => {
                    stats.closed_drops.fetch_add(n - sent, Ordering::Relaxed);
                    return;
                }
                Err(_elapsed) => {
                    // Take what fits now without waiting, drop the rest.
                    for ev in events.by_ref() {
                        match self.tx.try_send(ev) {
                            Ok(()) => sent += 1,
                            Err(_) => break,
                        }
                    }
                    break;
                }
            }
        }
        drop(events);
        stats.delivered.fetch_add(sent, Ordering::Relaxed);
        stats
            .backpressure_drops
            .fetch_add(n - sent, Ordering::Relaxed);
    }
}

/// Runs until `stop` completes or `flag` is set (the trait's `shutdown_signal`, checked
/// at each wakeup), then hands over what is still in the ring; `submitted` (records
/// the kernel submitted to this ring so far) lets that last pass wait for stragglers.
#[allow(clippy::too_many_arguments)]
pub async fn drain<R, O, F>(
    mut ring: R,
    mut decode: F,
    mut out: O,
    stop: impl Future<Output = ()> + Send,
    flag: Option<Arc<AtomicBool>>,
    submitted: Option<Box<dyn Fn() -> u64 + Send + Sync>>,
    stats: Arc<DrainStats>,
    config: DrainConfig,
) -> anyhow::Result<()>
where
    R: RecordRing,
    O: Outlet,
    F: FnMut(&[u8], &BootClock) -> Result<CollectionEvent, DecodeError> + Send,
{
    let mut clock = BootClock::new();
    let mut last_resync = std::time::Instant::now();
    let batch = out.batch_size().max(1);
    let mut pending: Vec<CollectionEvent> = Vec::with_capacity(batch);
    let mut tick = tokio::time::interval(config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let flagged = || flag.as_ref().is_some_and(|f| f.load(Ordering::Relaxed));

    loop {
        if flagged() {
            break;
        }
        tokio::select! {
            biased;
            () = &mut stop => break,
            ready = ring.readable() => ready?,
            _ = tick.tick() => {}
        }
        if last_resync.elapsed() > Duration::from_secs(1) {
            clock.resync();
            last_resync = std::time::Instant::now();
        }
        drain_available(
            &mut ring,
            &mut decode,
            &clock,
            &mut pending,
            batch,
            &mut out,
            &stats,
        )
        .await;
    }
    // Records submitted before the programs were detached are still in the ring: hand
    // them over too, so a clean shutdown loses nothing uncounted. A program already
    // running when it was detached may still be submitting (unregistering a tracepoint
    // does not wait for running probes), so drain until every record the kernel says it
    // submitted was read, for a short bounded time.
    let settle_from = tokio::time::Instant::now();
    loop {
        drain_available(
            &mut ring,
            &mut decode,
            &clock,
            &mut pending,
            batch,
            &mut out,
            &stats,
        )
        .await;
        let Some(submitted) = &submitted else { break };
        let waited = settle_from.elapsed();
        // A detached program preempted mid-run (programs run with migration, not
        // preemption, disabled) submits later: give those a moment before trusting
        // "read == submitted".
        let caught_up = stats.records.load(Ordering::Relaxed) >= submitted();
        if (caught_up && waited >= MIN_SETTLE) || waited >= SETTLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Longest the last pass waits for records still being submitted at stop.
const SETTLE: Duration = Duration::from_millis(200);
/// Shortest: programs running when detached finish within this in practice.
const MIN_SETTLE: Duration = Duration::from_millis(20);

/// Reads every record available now and sends it, in batches of `batch`.
async fn drain_available<R, O, F>(
    ring: &mut R,
    decode: &mut F,
    clock: &BootClock,
    pending: &mut Vec<CollectionEvent>,
    batch: usize,
    out: &mut O,
    stats: &DrainStats,
) where
    R: RecordRing,
    O: Outlet,
    F: FnMut(&[u8], &BootClock) -> Result<CollectionEvent, DecodeError>,
{
    loop {
        let mut records = 0u64;
        let mut errors = 0u64;
        while pending.len() < batch {
            let got = ring.next_record(&mut |bytes| {
                records += 1;
                match decode(bytes, clock) {
                    Ok(ev) => pending.push(ev),
                    Err(e) => {
                        errors += 1;
                        tracing::debug!("undecodable kernel record: {e}");
                    }
                }
            });
            if !got {
                break;
            }
        }
        // Counted once per batch, not per record.
        stats.records.fetch_add(records, Ordering::Relaxed);
        stats.decode_errors.fetch_add(errors, Ordering::Relaxed);
        if pending.is_empty() {
            if records == 0 {
                return;
            }
            continue;
        }
        let more = pending.len() >= batch;
        out.send(pending, stats).await;
        if !more {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector_core::event::{PerformanceEvent, PerformanceEventKind};
    use std::collections::VecDeque;

    /// Records to hand out; readiness is signalled by `notify`.
    struct FakeRing {
        records: Arc<std::sync::Mutex<VecDeque<Vec<u8>>>>,
        notify: Arc<tokio::sync::Notify>,
    }

    #[async_trait]
    impl RecordRing for FakeRing {
        async fn readable(&mut self) -> std::io::Result<()> {
            self.notify.notified().await;
            Ok(())
        }
        fn next_record(&mut self, f: &mut dyn FnMut(&[u8])) -> bool {
            let next = self.records.lock().unwrap().pop_front();
            match next {
                Some(r) => {
                    f(&r);
                    true
                }
                None => false,
            }
        }
    }

    /// A 4-byte little-endian pid per record; anything else does not decode.
    fn decode(bytes: &[u8], _: &BootClock) -> Result<CollectionEvent, DecodeError> {
        let pid: [u8; 4] = bytes.try_into().map_err(|_| DecodeError::Short {
            kind: 0,
            got: bytes.len(),
            need: 4,
        })?;
        Ok(CollectionEvent::Performance(PerformanceEvent {
            kind: PerformanceEventKind::Metric,
            timestamp: chrono::DateTime::UNIX_EPOCH,
            pid: u32::from_le_bytes(pid),
            source: "fake".into(),
            metric_name: String::new(),
            value: 0.0,
            unit: String::new(),
            component: String::new(),
        }))
    }

    fn config() -> DrainConfig {
        DrainConfig {
            poll_interval: Duration::from_secs(3600),
            max_send_wait: Duration::from_millis(500),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn drains_in_batches_counts_decode_errors_and_hands_over_the_rest_at_stop() {
        let records = Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let notify = Arc::new(tokio::sync::Notify::new());
        let ring = FakeRing {
            records: records.clone(),
            notify: notify.clone(),
        };
        let (tx, mut rx) = mpsc::channel(10_000);
        let stats = Arc::new(DrainStats::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(drain(
            ring,
            decode,
            ChannelOutlet {
                tx,
                max_wait: Duration::from_millis(500),
            },
            stop.clone().cancelled_owned(),
            None,
            None,
            stats.clone(),
            config(),
        ));
        {
            let mut r = records.lock().unwrap();
            for pid in 0..2500u32 {
                r.push_back(pid.to_le_bytes().to_vec());
            }
            r.push_back(vec![1, 2]); // truncated
        }
        notify.notify_one();
        let mut pids = Vec::new();
        while pids.len() < 2500 {
            pids.push(rx.recv().await.unwrap().pid());
        }
        assert_eq!(pids, (0..2500).collect::<Vec<_>>());
        assert_eq!(stats.records.load(Ordering::Relaxed), 2501);
        assert_eq!(stats.decode_errors.load(Ordering::Relaxed), 1);

        // Records that arrive without a wakeup are still handed over at stop.
        records
            .lock()
            .unwrap()
            .push_back(7u32.to_le_bytes().to_vec());
        stop.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(rx.recv().await.unwrap().pid(), 7);
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 2501);
        assert_eq!(stats.backpressure_drops.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_channel_waits_once_per_batch_then_drops_and_counts() {
        let records = Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let notify = Arc::new(tokio::sync::Notify::new());
        let ring = FakeRing {
            records: records.clone(),
            notify: notify.clone(),
        };
        // Nobody reads: 10 fit, the other 90 of the batch are dropped after one wait.
        let (tx, _rx) = mpsc::channel(10);
        let stats = Arc::new(DrainStats::default());
        let flag = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(drain(
            ring,
            decode,
            ChannelOutlet {
                tx,
                max_wait: Duration::from_millis(500),
            },
            std::future::pending(),
            Some(flag.clone()),
            None,
            stats.clone(),
            config(),
        ));
        records
            .lock()
            .unwrap()
            .extend((0..100u32).map(|p| p.to_le_bytes().to_vec()));
        let started = tokio::time::Instant::now();
        notify.notify_one();
        while stats.backpressure_drops.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_millis(600),
            "{waited:?}"
        );
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 10);
        assert_eq!(stats.backpressure_drops.load(Ordering::Relaxed), 90);

        // The trait's shutdown flag stops the loop at its next wakeup.
        flag.store(true, Ordering::Relaxed);
        notify.notify_one();
        task.await.unwrap().unwrap();
    }
}
