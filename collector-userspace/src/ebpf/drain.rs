//! The ring-buffer drain loop shared by every kernel source.
//!
//! Never blocks a thread: readiness comes from tokio's `AsyncFd` (the ring buffer's
//! epoll fd) plus a timer for rings whose programs skip wakeups below a watermark. An
//! idle reader parks (see [`PARK_AFTER_IDLE_TICKS`]): its timer stops and the programs
//! wake it at the next record.
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
    /// Times the reader parked: idle for [`PARK_AFTER_IDLE_TICKS`] ticks, it asked the
    /// programs to wake it at the next record, found the ring still empty and stopped
    /// polling.
    pub parks: AtomicU64,
    /// Parks ended by a record's wakeup (not by the [`PARKED_CHECK`] timer).
    pub parked_wakeups: AtomicU64,
}

/// How a drain loop behaves.
#[derive(Debug, Clone, Copy)]
pub struct DrainConfig {
    /// Drain at least this often even without a wakeup.
    pub poll_interval: Duration,
    /// How often a parked reader still looks at its ring (default [`PARKED_CHECK`]).
    pub parked_check: Duration,
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

    /// Asks the producer to wake the reader at the next record (`true`: the reader
    /// then sleeps without polling) or to go back to its wakeup policy (`false`).
    /// Returns whether the ring was (un)parked; a ring that cannot be parked is polled.
    fn park(&mut self, parked: bool) -> bool {
        let _ = parked;
        false
    }
}

/// What parks a kernel ring: the programs' `READER_PARKED` slot of its domain.
pub struct Parker {
    programs: Arc<super::KernelPrograms>,
    slot: u32,
    parked: bool,
    /// The map could not be written once: the reader polls from then on (warned once).
    failed: bool,
}

impl Parker {
    /// The parker of the ring at `slot` (`collector_common::abi::parked`).
    pub fn new(programs: Arc<super::KernelPrograms>, slot: u32) -> Self {
        Self {
            programs,
            slot,
            parked: false,
            failed: false,
        }
    }

    fn set(&mut self, parked: bool) -> bool {
        if self.parked == parked {
            return true;
        }
        if self.failed {
            return false;
        }
        match self.programs.set_parked(self.slot, parked) {
            Ok(()) => {
                self.parked = parked;
                true
            }
            Err(e) => {
                // No record is late either way: unparked, the reader polls (the host
                // pays the timer); left parked, the programs wake it at each record that
                // finds it caught up.
                self.failed = true;
                tracing::warn!(
                    error = %collector_core::Report(&e),
                    "cannot park the ring reader; it polls from now on"
                );
                false
            }
        }
    }
}

/// The kernel ring buffer, registered with the reactor.
pub struct KernelRing(AsyncFd<RingBuf<MapData>>, Option<Parker>);

impl KernelRing {
    /// Registers `ring`'s epoll fd with tokio.
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open for as long as
        // it is registered, and nothing else registers it.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)? };
        Ok(Self(fd, None))
    }

    /// The ring with `parker`, so that its reader can sleep without polling when idle.
    pub fn with_parker(mut self, parker: Parker) -> Self {
        self.1 = Some(parker);
        self
    }

    /// The ring buffer back, deregistered and unparked, for a later drain.
    pub fn into_inner(mut self) -> RingBuf<MapData> {
        if let Some(parker) = &mut self.1 {
            parker.set(false);
        }
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

    fn park(&mut self, parked: bool) -> bool {
        (**self).park(parked)
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

    fn park(&mut self, parked: bool) -> bool {
        self.1.as_mut().is_some_and(|p| p.set(parked))
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
    // Parking only saves wakeups when the timer ticks more often than a parked reader
    // checks in.
    let may_park = config.poll_interval < config.parked_check;
    let (mut idle_ticks, mut parked, mut recheck) = (0u32, false, false);

    loop {
        if flagged() {
            break;
        }
        // Right after parking the ring is read once more, at once: a record submitted
        // before the programs saw the flag woke nobody (one submitted in the instant
        // between that read and the flag waits for the parked check, `PARKED_CHECK`).
        let rechecked = std::mem::take(&mut recheck);
        let by_ring = if rechecked {
            false
        } else {
            tokio::select! {
                biased;
                () = &mut stop => break,
                ready = ring.readable() => {
                    ready?;
                    true
                }
                _ = tick.tick(), if !parked => false,
                () = tokio::time::sleep(config.parked_check), if parked => false,
            }
        };
        if last_resync.elapsed() > Duration::from_secs(1) {
            clock.resync();
            last_resync = std::time::Instant::now();
        }
        let read = drain_available(
            &mut ring,
            &mut decode,
            &clock,
            &mut pending,
            batch,
            &mut out,
            &stats,
        )
        .await;
        if parked {
            // Parked until records come: woken by one (or, had its wakeup been missed,
            // found by a read without one), the reader polls again until idle again.
            if read > 0 {
                parked = !ring.park(false);
                if by_ring {
                    stats.parked_wakeups.fetch_add(1, Ordering::Relaxed);
                }
                tick.reset();
                idle_ticks = 0;
            } else if rechecked {
                // Asleep from here on, until a record or the parked check.
                stats.parks.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        idle_ticks = if !by_ring && read == 0 {
            idle_ticks + 1
        } else {
            0
        };
        if may_park && idle_ticks >= PARK_AFTER_IDLE_TICKS && ring.park(true) {
            (parked, recheck, idle_ticks) = (true, true, 0);
        }
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

/// Empty ticks in a row after which a reader parks: it stops its timer and the programs
/// wake it at the next record (`READER_PARKED`), so an idle host pays no polling.
pub const PARK_AFTER_IDLE_TICKS: u32 = 10;
/// How often a parked reader still checks its ring (and the shutdown flag) by default
/// (`KernelConfig::parked_check`): the bound on a record's wait should its wakeup be
/// missed (submitted in the instant the reader parked).
pub const PARKED_CHECK: Duration = Duration::from_millis(200);

/// Longest the last pass waits for records still being submitted at stop.
const SETTLE: Duration = Duration::from_millis(200);
/// Shortest: programs running when detached finish within this in practice.
const MIN_SETTLE: Duration = Duration::from_millis(20);

/// Reads every record available now and sends it, in batches of `batch`; returns the
/// records read.
async fn drain_available<R, O, F>(
    ring: &mut R,
    decode: &mut F,
    clock: &BootClock,
    pending: &mut Vec<CollectionEvent>,
    batch: usize,
    out: &mut O,
    stats: &DrainStats,
) -> u64
where
    R: RecordRing,
    O: Outlet,
    F: FnMut(&[u8], &BootClock) -> Result<CollectionEvent, DecodeError>,
{
    let mut total = 0u64;
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
        total += records;
        if pending.is_empty() {
            if records == 0 {
                return total;
            }
            continue;
        }
        let more = pending.len() >= batch;
        out.send(pending, stats).await;
        if !more {
            return total;
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
            parked_check: PARKED_CHECK,
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

    /// A fake ring that can be parked: keeps each (un)park, counts its reads, and can have
    /// a record submitted in the instant it parks (before the producer saw the flag).
    struct ParkingRing {
        ring: FakeRing,
        parks: Arc<std::sync::Mutex<Vec<bool>>>,
        reads: Arc<AtomicU64>,
        record_at_park: Option<Vec<u8>>,
    }

    #[async_trait]
    impl RecordRing for ParkingRing {
        async fn readable(&mut self) -> std::io::Result<()> {
            self.ring.readable().await
        }
        fn next_record(&mut self, f: &mut dyn FnMut(&[u8])) -> bool {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.ring.next_record(f)
        }
        fn park(&mut self, parked: bool) -> bool {
            self.parks.lock().unwrap().push(parked);
            if let Some(record) = self.record_at_park.take().filter(|_| parked) {
                self.ring.records.lock().unwrap().push_back(record);
            }
            true
        }
    }

    struct Parking {
        records: Arc<std::sync::Mutex<VecDeque<Vec<u8>>>>,
        notify: Arc<tokio::sync::Notify>,
        parks: Arc<std::sync::Mutex<Vec<bool>>>,
        reads: Arc<AtomicU64>,
        stats: Arc<DrainStats>,
        rx: mpsc::Receiver<CollectionEvent>,
        stop: tokio_util::sync::CancellationToken,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    /// A drain polling every 10 ms over a parkable fake ring.
    fn parking_drain(record_at_park: Option<Vec<u8>>) -> Parking {
        let records = Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let notify = Arc::new(tokio::sync::Notify::new());
        let parks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let reads = Arc::new(AtomicU64::new(0));
        let ring = ParkingRing {
            ring: FakeRing {
                records: records.clone(),
                notify: notify.clone(),
            },
            parks: parks.clone(),
            reads: reads.clone(),
            record_at_park,
        };
        let (tx, rx) = mpsc::channel(100);
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
            DrainConfig {
                poll_interval: Duration::from_millis(10),
                parked_check: PARKED_CHECK,
                max_send_wait: Duration::from_millis(500),
            },
        ));
        Parking {
            records,
            notify,
            parks,
            reads,
            stats,
            rx,
            stop,
            task,
        }
    }

    /// With time paused, a receive that needs no timer: it fails if getting the event
    /// would take the drain's parked check (200 ms) rather than its wakeup.
    async fn received_at_once(rx: &mut mpsc::Receiver<CollectionEvent>) -> Option<u32> {
        tokio::time::timeout(Duration::from_millis(1), rx.recv())
            .await
            .ok()
            .flatten()
            .map(|e| e.pid())
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_reader_parks_and_the_next_record_wakes_it() {
        let mut p = parking_drain(None);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            *p.parks.lock().unwrap(),
            [true],
            "parked after 10 empty ticks"
        );
        assert_eq!(p.stats.parks.load(Ordering::Relaxed), 1);
        // Parked, it no longer polls every 10 ms: it looks once per parked check.
        let reads = p.reads.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let polled = p.reads.load(Ordering::Relaxed) - reads;
        assert!(
            (4..=6).contains(&polled),
            "{polled} reads in a parked second"
        );
        assert_eq!(
            *p.parks.lock().unwrap(),
            [true],
            "still parked: nothing came"
        );

        p.records
            .lock()
            .unwrap()
            .push_back(42u32.to_le_bytes().to_vec());
        p.notify.notify_one();
        assert_eq!(received_at_once(&mut p.rx).await, Some(42));
        assert_eq!(
            *p.parks.lock().unwrap(),
            [true, false],
            "unparked by the record"
        );
        assert_eq!(p.stats.parked_wakeups.load(Ordering::Relaxed), 1);
        // Polling again, and parked again once idle.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(*p.parks.lock().unwrap(), [true, false, true]);
        p.stop.cancel();
        p.task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_that_races_the_park_is_read_at_once_and_a_missed_wakeup_waits_one_check() {
        // Submitted as the reader parks, before the producer could see the flag: its
        // wakeup never comes, so the read that follows the park must find it.
        let mut p = parking_drain(Some(7u32.to_le_bytes().to_vec()));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(received_at_once(&mut p.rx).await, Some(7));
        assert_eq!(*p.parks.lock().unwrap(), [true, false]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(*p.parks.lock().unwrap(), [true, false, true]);
        assert_eq!(p.stats.parked_wakeups.load(Ordering::Relaxed), 0);

        // Parked again; a record whose wakeup is lost is found by the parked check.
        p.records
            .lock()
            .unwrap()
            .push_back(8u32.to_le_bytes().to_vec());
        let started = tokio::time::Instant::now();
        assert_eq!(p.rx.recv().await.map(|e| e.pid()), Some(8));
        assert!(started.elapsed() <= PARKED_CHECK, "{:?}", started.elapsed());
        assert_eq!(*p.parks.lock().unwrap(), [true, false, true, false]);
        assert_eq!(p.stats.parked_wakeups.load(Ordering::Relaxed), 0);
        p.stop.cancel();
        p.task.await.unwrap().unwrap();
    }
}
