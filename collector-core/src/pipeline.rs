//! The event pipeline: source channels -> forwarders -> shared queue -> batcher -> sinks.
//!
//! ```text
//!  source A --mpsc(event_buffer_size)--> forwarder A --\
//!                                                        >-- shared queue --> batcher --> sinks
//!  source B --mpsc(event_buffer_size)--> forwarder B --/   (event_buffer_size events)
//! ```
//!
//! * A [`BatchSource`](crate::BatchSource) (the kernel drain) skips the channel and the
//!   forwarder: its [`BatchSender`](crate::BatchSender) pushes whole batches into the
//!   shared queue itself, with one bounded wait per batch (`push_until`).
//! * Each source sends into its own bounded channel, so it can read its pressure with
//!   [`crate::pressure`] and the pipeline can count received and dropped events per source
//!   without any shared state on the per-event path.
//! * A forwarder gathers events from its channel (`recv_many`) into chunks of at most
//!   `max_batch_size` and pushes each as one piece into the shared queue, whose capacity
//!   is counted in events by a semaphore. It hands a chunk on as soon as it is full or
//!   the channel runs dry (after giving the source one turn to add more), so an event
//!   that nothing follows is not held back; `batch_timeout` bounds a chunk's age only
//!   while events keep arriving. If the queue lacks room, the forwarder waits at most
//!   `max_backpressure_wait`, then drops the chunk and counts it with reason
//!   `backpressure`. While it waits, the source's channel fills, which is the pressure
//!   the source sees.
//! * The single batcher turns each full chunk straight into a batch and merges partial
//!   ones into batches of `max_batch_size`; it delivers a partial batch as soon as the
//!   queue runs dry (or when its first event is `batch_timeout` old while chunks keep
//!   coming), and offers every batch to every sink.
//!   Sinks never block (see [`EventSink`]); their drops are counted per sink, and a
//!   panicking sink is caught and counted, not fatal.
//!
//! Under a storm chunks are full and batching costs nothing in latency; when idle, an
//! event reaches the sinks in the time of a few task wakeups instead of `batch_timeout`.
//!
//! Counters are updated once per chunk or batch, never per event.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;

use crate::event::CollectionEvent;
use crate::sink::{Delivery, EventBatch, EventSink};
use crate::telemetry::{DropCounters, DropReason, PipelineTelemetry, SourceCounters};

/// Events a forwarder hands to the batcher in one piece.
pub(crate) struct Chunk {
    events: Vec<CollectionEvent>,
    received_at: Instant,
}

/// The sending side of the shared queue, held by every forwarder.
pub(crate) struct SharedQueue {
    permits: Arc<Semaphore>,
    capacity: usize,
    /// `backpressure_threshold` in events: up to this fill level a push never waits.
    threshold: usize,
    /// Signalled by the batcher each time it takes events out of the queue.
    drained: Arc<Notify>,
    chunks: mpsc::Sender<Chunk>,
    max_wait: Duration,
    telemetry: Arc<PipelineTelemetry>,
}

/// The receiving side of the shared queue, owned by the batcher.
pub(crate) struct QueueReceiver {
    permits: Arc<Semaphore>,
    drained: Arc<Notify>,
    chunks: mpsc::Receiver<Chunk>,
}

impl SharedQueue {
    /// A queue holding at most `capacity` events, under backpressure above `threshold`.
    pub(crate) fn new(
        capacity: usize,
        threshold: usize,
        max_wait: Duration,
        telemetry: Arc<PipelineTelemetry>,
    ) -> (Arc<Self>, QueueReceiver) {
        let permits = Arc::new(Semaphore::new(capacity));
        let drained = Arc::new(Notify::new());
        // Every queued chunk holds at least one permit, so at most `capacity` chunks are
        // ever queued and `send` below never waits.
        let (tx, rx) = mpsc::channel(capacity);
        let queue = Arc::new(Self {
            permits: permits.clone(),
            capacity,
            threshold: threshold.min(capacity),
            drained: drained.clone(),
            chunks: tx,
            max_wait,
            telemetry,
        });
        (
            queue,
            QueueReceiver {
                permits,
                drained,
                chunks: rx,
            },
        )
    }

    /// Events in the queue now.
    pub(crate) fn depth(&self) -> usize {
        self.capacity
            .saturating_sub(self.permits.available_permits())
    }

    /// Whether the queue is above `backpressure_threshold` now.
    pub(crate) fn under_backpressure(&self) -> bool {
        self.depth() > self.threshold
    }

    /// Queues `events` (at most the queue's capacity).
    ///
    /// Up to `backpressure_threshold` this never waits. Above it the collector is under
    /// backpressure: the push waits, at most `max_wait`, for the batcher to bring the
    /// queue back to the threshold, which slows the source before anything is lost.
    /// When the wait ends the events are queued if they fit in the whole capacity, else
    /// dropped and counted for `source`. Returns whether they were queued.
    pub(crate) async fn push(
        &self,
        events: Vec<CollectionEvent>,
        received_at: Instant,
        source: &SourceCounters,
    ) -> bool {
        let deadline = Instant::now() + self.max_wait;
        self.push_until(events, received_at, source, deadline).await
    }

    /// [`push`](Self::push) with the end of the wait given: the chunks of one batch
    /// share one deadline, so a batch waits at most `max_wait` in all.
    pub(crate) async fn push_until(
        &self,
        events: Vec<CollectionEvent>,
        received_at: Instant,
        source: &SourceCounters,
        deadline: Instant,
    ) -> bool {
        let n = events.len();
        debug_assert!(n > 0 && n <= self.capacity);
        // A chunk larger than the threshold fits once the queue is empty enough for it.
        let limit = self.threshold.max(n);
        if self.depth() + n > limit {
            self.wait_below_threshold(n, limit, deadline).await;
        }
        let wanted = u32::try_from(n).unwrap_or(u32::MAX);
        // No room after the wait (or the queue is closed): drop and count.
        let Ok(permit) = self.permits.try_acquire_many(wanted) else {
            source.dropped.add(DropReason::Backpressure, n as u64);
            self.telemetry
                .dropped
                .add(DropReason::Backpressure, n as u64);
            return false;
        };
        // The batcher returns the permits when it takes the events out of the queue.
        permit.forget();
        self.telemetry
            .queue_high_water
            .fetch_max(self.depth() as u64, Relaxed);
        let chunk = Chunk {
            events,
            received_at,
        };
        if let Err(mpsc::error::SendError(chunk)) = self.chunks.send(chunk).await {
            // The batcher is gone (only after it crashed): the events cannot be delivered.
            let lost = chunk.events.len() as u64;
            source.dropped.add(DropReason::PipelineClosed, lost);
            self.telemetry.dropped.add(DropReason::PipelineClosed, lost);
            return false;
        }
        true
    }
    /// Waits, at most `max_wait`, until `n` more events keep the queue within `limit`.
    async fn wait_below_threshold(&self, n: usize, limit: usize, deadline: Instant) {
        let t = &self.telemetry;
        t.backpressure_waits.fetch_add(1, Relaxed);
        t.backpressure_waiting.fetch_add(1, Relaxed);
        let started = Instant::now();
        loop {
            // Registered before the check, so a drain between the check and the wait
            // still wakes this push.
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.depth() + n <= limit {
                break;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                break;
            }
        }
        t.backpressure_waiting.fetch_sub(1, Relaxed);
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        t.backpressure_wait_ns.fetch_add(waited, Relaxed);
    }
}

/// What a [`crate::source::BatchSender`] holds: the shared queue and its source's
/// counters, so a batch source reaches the batcher in one hop.
pub(crate) struct BatchSenderInner {
    pub queue: Arc<SharedQueue>,
    pub counters: Arc<SourceCounters>,
    pub max_chunk: usize,
    pub started: std::sync::atomic::AtomicBool,
    /// Called once, on the first batch (marks the source up).
    pub on_first_batch: Box<dyn Fn() + Send + Sync>,
}

impl BatchSenderInner {
    /// Marks the source up, once (on its first batch, or when it says it is ready).
    pub(crate) fn mark_started(&self) {
        if !self
            .started
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            (self.on_first_batch)();
        }
    }

    pub(crate) async fn send_batch(&self, events: &mut Vec<CollectionEvent>) -> usize {
        let total = events.len();
        if total == 0 {
            return 0;
        }
        let received_at = Instant::now();
        let deadline = received_at + self.queue.max_wait;
        self.counters.received.fetch_add(total as u64, Relaxed);
        self.counters.count_kinds(events);
        self.queue
            .telemetry
            .received
            .fetch_add(total as u64, Relaxed);
        if !self.started.load(Relaxed) {
            self.mark_started();
        }
        let capacity = events.capacity();
        let batch = std::mem::replace(events, Vec::with_capacity(capacity));
        let mut dropped = 0;
        if total <= self.max_chunk {
            if !self
                .queue
                .push_until(batch, received_at, &self.counters, deadline)
                .await
            {
                dropped = total;
            }
            return dropped;
        }
        // Larger than one chunk: split, every piece under the same deadline.
        let mut rest = batch.into_iter();
        while rest.len() > 0 {
            let chunk: Vec<CollectionEvent> = rest.by_ref().take(self.max_chunk).collect();
            let n = chunk.len();
            if !self
                .queue
                .push_until(chunk, received_at, &self.counters, deadline)
                .await
            {
                dropped += n;
            }
        }
        dropped
    }

    pub(crate) fn is_pressured(&self) -> bool {
        self.queue.under_backpressure()
    }

    pub(crate) fn max_batch_size(&self) -> usize {
        self.max_chunk
    }
}

/// Drains one source's channel into the shared queue until every sender is gone.
///
/// Events are gathered into chunks of `max_chunk` before they are queued, so under load
/// the batcher receives full chunks it can hand on without moving a single event, and the
/// queue, its semaphore and the batcher's wakeups are paid once per `max_chunk` events.
/// A partial chunk is queued as soon as the channel runs dry, or when its first event is
/// `batch_timeout` old while more keep arriving, stamped with that first arrival.
pub(crate) async fn forward(
    mut rx: mpsc::Receiver<CollectionEvent>,
    queue: Arc<SharedQueue>,
    counters: Arc<SourceCounters>,
    settings: BatchSettings,
    on_first_event: impl FnOnce(),
) {
    let max_chunk = settings.max_batch_size;
    let mut on_first_event = Some(on_first_event);
    let mut buf = Vec::with_capacity(max_chunk);
    let mut first_at = Instant::now();
    loop {
        // A partial chunk is only ever kept while more events are already waiting (see
        // below), so this never sleeps on a chunk that someone is waiting for.
        let room = max_chunk - buf.len();
        let n = rx.recv_many(&mut buf, room).await;
        if n == 0 {
            if !buf.is_empty() {
                queue.push(buf, first_at, &counters).await;
            }
            return;
        }
        if n == buf.len() {
            first_at = Instant::now();
        }
        let waiting = rx.len() as u64;
        counters.received.fetch_add(n as u64, Relaxed);
        counters.count_kinds(&buf[buf.len() - n..]);
        counters
            .channel_high_water
            .fetch_max(n as u64 + waiting, Relaxed);
        queue.telemetry.received.fetch_add(n as u64, Relaxed);
        if let Some(first) = on_first_event.take() {
            first();
        }
        if buf.len() < max_chunk && rx.is_empty() {
            // The input looks dry. Give the producer one turn first, so a source that is
            // mid-burst on another worker can add to this chunk instead of paying a
            // queue push and a batch per handful of events.
            tokio::task::yield_now().await;
            if !rx.is_empty() {
                continue;
            }
        }
        // `batch_timeout` bounds the wait while events keep coming (the channel never
        // runs dry, but the chunk does not fill either).
        if buf.len() == max_chunk || rx.is_empty() || first_at.elapsed() >= settings.batch_timeout {
            // Full, or nothing else is coming now: hand it on at once. Waiting for
            // `batch_timeout` here would only add latency, since no event would join.
            let chunk = std::mem::replace(&mut buf, Vec::with_capacity(max_chunk));
            queue.push(chunk, first_at, &counters).await;
        }
    }
}

/// One sink and what it could not take.
pub(crate) struct SinkEntry {
    pub sink: Arc<dyn EventSink>,
    pub dropped: DropCounters,
}

/// The sinks batches go to; may change while running (the batcher picks up changes at
/// the next batch via `generation`).
#[derive(Default)]
pub(crate) struct SinkSet {
    generation: AtomicU64,
    entries: Mutex<Arc<[Arc<SinkEntry>]>>,
}

impl SinkSet {
    pub(crate) fn add(&self, sink: Arc<dyn EventSink>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut next: Vec<Arc<SinkEntry>> = entries.iter().cloned().collect();
        next.push(Arc::new(SinkEntry {
            sink,
            dropped: DropCounters::default(),
        }));
        *entries = next.into();
        self.generation.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Arc<[Arc<SinkEntry>]> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Batching settings, shared by the forwarders (chunks) and the batcher (batches).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchSettings {
    pub max_batch_size: usize,
    pub batch_timeout: Duration,
}

/// Runs until every forwarder has dropped its queue handle, then flushes the last batch.
pub(crate) async fn run_batcher(
    mut queue: QueueReceiver,
    sinks: Arc<SinkSet>,
    telemetry: Arc<PipelineTelemetry>,
    settings: BatchSettings,
) {
    let max = settings.max_batch_size;
    let mut batcher = Batcher {
        pending: Vec::with_capacity(max),
        oldest: None,
        max,
        sinks_generation: u64::MAX,
        sinks: Arc::from(Vec::new()),
        sink_set: sinks,
        telemetry,
    };
    let mut chunks: Vec<Chunk> = Vec::with_capacity(64);
    loop {
        // A partial batch is only kept while more chunks are already queued (see below),
        // so this never sleeps on a batch that someone is waiting for.
        let n = queue.chunks.recv_many(&mut chunks, 64).await;
        if n == 0 {
            batcher.flush();
            return;
        }
        let mut released = 0;
        for chunk in chunks.drain(..) {
            released += chunk.events.len();
            if batcher.pending.is_empty() && chunk.events.len() == max {
                // Under load forwarders send full chunks: hand them on as they are,
                // saving a move of every event.
                batcher.oldest = Some(chunk.received_at);
                batcher.flush_events(chunk.events);
                continue;
            }
            let mut events = chunk.events.into_iter();
            while events.len() > 0 {
                if batcher.pending.is_empty() {
                    // The timeout runs from the first event's arrival at its forwarder,
                    // which may already have held it for a while.
                    batcher.oldest = Some(chunk.received_at);
                }
                let room = max - batcher.pending.len();
                batcher.pending.extend(events.by_ref().take(room));
                if batcher.pending.len() == max {
                    batcher.flush();
                }
            }
        }
        queue.permits.add_permits(released);
        queue.drained.notify_waiters();
        let overdue = batcher
            .oldest
            .is_some_and(|t| t.elapsed() >= settings.batch_timeout);
        if queue.chunks.is_empty() || overdue {
            // The queue ran dry: nothing would join the pending batch before more events
            // arrive, so deliver it now instead of at `batch_timeout`. While chunks keep
            // coming, `batch_timeout` bounds how long the first event waits.
            batcher.flush();
        }
    }
}

struct Batcher {
    pending: Vec<CollectionEvent>,
    oldest: Option<Instant>,
    max: usize,
    sinks_generation: u64,
    sinks: Arc<[Arc<SinkEntry>]>,
    sink_set: Arc<SinkSet>,
    telemetry: Arc<PipelineTelemetry>,
}

impl Batcher {
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let events = std::mem::replace(&mut self.pending, Vec::with_capacity(self.max));
        self.flush_events(events);
    }

    /// Offers `events` as one batch to every sink; `self.oldest` is when the first arrived.
    fn flush_events(&mut self, events: Vec<CollectionEvent>) {
        let generation = self.sink_set.generation.load(Relaxed);
        if generation != self.sinks_generation {
            self.sinks = self.sink_set.snapshot();
            self.sinks_generation = generation;
        }
        let batch: EventBatch = Arc::from(events);
        for entry in self.sinks.iter() {
            match std::panic::catch_unwind(AssertUnwindSafe(|| entry.sink.deliver(&batch))) {
                Ok(Delivery::Accepted) => {}
                Ok(Delivery::Dropped(n)) => {
                    entry.dropped.add(DropReason::SinkFull, n as u64);
                }
                Err(_) => {
                    entry
                        .dropped
                        .add(DropReason::SinkPanicked, batch.len() as u64);
                    tracing::error!(
                        sink = entry.sink.name(),
                        events = batch.len(),
                        "sink panicked in deliver; batch counted as dropped for it"
                    );
                }
            }
        }
        let latency = self.oldest.take().map(|t| t.elapsed()).unwrap_or_default();
        self.telemetry.record_batch(batch.len(), latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{PerformanceEvent, PerformanceEventKind};

    pub(crate) fn metric(i: u32) -> CollectionEvent {
        CollectionEvent::Performance(PerformanceEvent {
            kind: PerformanceEventKind::Metric,
            timestamp: chrono::DateTime::UNIX_EPOCH,
            pid: i,
            source: "test".into(),
            metric_name: String::new(),
            value: 0.0,
            unit: String::new(),
            component: String::new(),
        })
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Vec<u32>>>);
    impl EventSink for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn deliver(&self, batch: &EventBatch) -> Delivery {
            self.0
                .lock()
                .unwrap()
                .push(batch.iter().map(|e| e.pid()).collect());
            Delivery::Accepted
        }
    }

    struct Panicker;
    impl EventSink for Panicker {
        fn name(&self) -> &str {
            "panicker"
        }
        fn deliver(&self, _: &EventBatch) -> Delivery {
            panic!("sink bug");
        }
    }

    fn setup(
        capacity: usize,
        max_batch_size: usize,
        batch_timeout: Duration,
    ) -> (
        Arc<SharedQueue>,
        Arc<Recorder>,
        Arc<PipelineTelemetry>,
        tokio::task::JoinHandle<()>,
    ) {
        let telemetry = Arc::new(PipelineTelemetry::default());
        let (queue, rx) = SharedQueue::new(
            capacity,
            capacity,
            Duration::from_millis(500),
            telemetry.clone(),
        );
        let recorder = Arc::new(Recorder::default());
        let sinks = Arc::new(SinkSet::default());
        sinks.add(Arc::new(Panicker));
        sinks.add(recorder.clone());
        let batcher = tokio::spawn(run_batcher(
            rx,
            sinks,
            telemetry.clone(),
            BatchSettings {
                max_batch_size,
                batch_timeout,
            },
        ));
        (queue, recorder, telemetry, batcher)
    }

    #[tokio::test(start_paused = true)]
    async fn batches_by_size_and_flushes_the_rest_as_soon_as_the_queue_runs_dry() {
        let (queue, recorder, telemetry, batcher) = setup(100, 4, Duration::from_millis(100));
        let counters = SourceCounters::default();
        assert!(
            queue
                .push((0..3).map(metric).collect(), Instant::now(), &counters)
                .await
        );
        assert!(
            queue
                .push((3..10).map(metric).collect(), Instant::now(), &counters)
                .await
        );
        tokio::task::yield_now().await;
        // Two full batches, then the two left over at once: nothing else is queued, so
        // waiting for the timeout would only add latency. No time has passed.
        assert_eq!(
            *recorder.0.lock().unwrap(),
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );
        assert_eq!(telemetry.counters().latency_max_us, 0);

        // A lone event later is delivered without waiting either.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            queue
                .push(vec![metric(10)], Instant::now(), &counters)
                .await
        );
        tokio::task::yield_now().await;
        assert_eq!(recorder.0.lock().unwrap()[3], vec![10]);

        let counters = telemetry.counters();
        assert_eq!(counters.batches, 4);
        assert_eq!(counters.events_delivered, 11);
        assert_eq!(counters.batch_size_max, 4);
        assert_eq!(counters.latency_max_us, 0, "{counters:?}");

        // Closing the queue flushes what is pending and ends the batcher.
        assert!(
            queue
                .push(vec![metric(11)], Instant::now(), &counters_default())
                .await
        );
        drop(queue);
        batcher.await.unwrap();
        assert_eq!(recorder.0.lock().unwrap()[4], vec![11]);
    }

    fn counters_default() -> SourceCounters {
        SourceCounters::default()
    }

    #[tokio::test(start_paused = true)]
    async fn forwarder_hands_on_full_chunks_and_a_partial_one_when_the_source_pauses() {
        let timeout = Duration::from_millis(100);
        let (queue, recorder, telemetry, batcher) = setup(100, 4, timeout);
        let counters = Arc::new(SourceCounters::default());
        let (tx, rx) = mpsc::channel(100);
        let settings = BatchSettings {
            max_batch_size: 4,
            batch_timeout: timeout,
        };
        let forwarder = tokio::spawn(forward(
            rx,
            queue.clone(),
            counters.clone(),
            settings,
            || {},
        ));
        for i in 0..6 {
            tx.send(metric(i)).await.unwrap();
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // No time passed: the partial chunk went as soon as the source paused.
        assert_eq!(
            *recorder.0.lock().unwrap(),
            vec![vec![0, 1, 2, 3], vec![4, 5]]
        );
        assert_eq!(telemetry.counters().latency_max_us, 0);

        // A closing channel queues what is left.
        tx.send(metric(6)).await.unwrap();
        drop(tx);
        forwarder.await.unwrap();
        drop(queue);
        batcher.await.unwrap();
        assert_eq!(recorder.0.lock().unwrap()[2], vec![6]);
        assert_eq!(counters.received.load(Relaxed), 7);
        assert_eq!(telemetry.counters().events_delivered, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_waits_max_wait_then_drops_and_counts() {
        let telemetry = Arc::new(PipelineTelemetry::default());
        // No batcher: nothing drains the queue.
        let (queue, _rx) = SharedQueue::new(10, 10, Duration::from_millis(500), telemetry.clone());
        let counters = SourceCounters::default();
        assert!(
            queue
                .push((0..6).map(metric).collect(), Instant::now(), &counters)
                .await
        );
        assert_eq!(queue.depth(), 6);
        let started = Instant::now();
        assert!(
            !queue
                .push((0..5).map(metric).collect(), Instant::now(), &counters)
                .await
        );
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        assert_eq!(counters.dropped.get(DropReason::Backpressure), 5);
        assert_eq!(telemetry.counters().dropped["backpressure"], 5);
        assert_eq!(telemetry.counters().queue_high_water, 6);
        assert!(
            queue
                .push((0..4).map(metric).collect(), Instant::now(), &counters)
                .await
        );
        assert_eq!(queue.depth(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn below_the_threshold_pushes_never_wait_above_it_they_wait_at_most_max_wait() {
        let telemetry = Arc::new(PipelineTelemetry::default());
        // Capacity 10, threshold 8 (80%), no batcher: the test drains by hand.
        let (queue, mut rx) =
            SharedQueue::new(10, 8, Duration::from_millis(500), telemetry.clone());
        let counters = Arc::new(SourceCounters::default());
        let started = Instant::now();
        for i in 0..8 {
            assert!(queue.push(vec![metric(i)], Instant::now(), &counters).await);
        }
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "a push below the threshold waited"
        );
        assert!(!queue.under_backpressure());
        assert_eq!(telemetry.counters().backpressure_waits, 0);

        // Above the threshold with room left: the push waits the whole bound (nothing
        // drains), then uses the headroom; nothing is lost.
        let started = Instant::now();
        assert!(queue.push(vec![metric(8)], Instant::now(), &counters).await);
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        assert!(queue.under_backpressure());
        let c = telemetry.counters();
        assert_eq!(c.backpressure_waits, 1);
        assert_eq!(c.backpressure_wait_us, 500_000);
        assert_eq!(c.dropped["backpressure"], 0);

        // Above the threshold and no room at the end of the wait: dropped and counted.
        assert!(
            !queue
                .push((0..2).map(metric).collect(), Instant::now(), &counters)
                .await
        );
        assert_eq!(counters.dropped.get(DropReason::Backpressure), 2);
        assert_eq!(telemetry.counters().dropped["backpressure"], 2);

        // A waiting push resumes as soon as the batcher brings the queue back to the
        // threshold, and status shows the collector under backpressure meanwhile.
        let waiter = {
            let (queue, counters) = (queue.clone(), counters.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let queued = queue
                    .push(vec![metric(99)], Instant::now(), &counters)
                    .await;
                (queued, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(telemetry.counters().under_backpressure);
        let mut taken = 0;
        while queue.depth() - taken > 7 {
            let chunk = rx.chunks.recv().await.unwrap();
            taken += chunk.events.len();
        }
        rx.permits.add_permits(taken);
        rx.drained.notify_waiters();
        let (queued, waited) = waiter.await.unwrap();
        assert!(queued);
        assert_eq!(waited, Duration::from_millis(100));
        assert!(!telemetry.counters().under_backpressure);
        assert_eq!(telemetry.counters().backpressure_waits, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_push_succeeds_when_batcher_frees_room() {
        let (queue, recorder, _telemetry, _batcher) = setup(10, 10, Duration::from_millis(100));
        let counters = SourceCounters::default();
        // 10 fill the queue and form a full batch, which the batcher delivers at once,
        // freeing the room before the wait bound.
        assert!(
            queue
                .push((0..10).map(metric).collect(), Instant::now(), &counters)
                .await
        );
        assert!(
            queue
                .push((10..20).map(metric).collect(), Instant::now(), &counters)
                .await
        );
        tokio::task::yield_now().await;
        assert_eq!(recorder.0.lock().unwrap().len(), 2);
        assert_eq!(counters.dropped.get(DropReason::Backpressure), 0);
    }
}
