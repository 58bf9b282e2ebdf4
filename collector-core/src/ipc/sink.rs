//! [`IpcSink`]: the pipeline sink that fans batches out to IPC subscribers.
//!
//! Each subscriber has its own bounded queue of batches. `deliver` only clones the batch's
//! `Arc` into each queue with `try_send`; when a queue is full the batch is dropped for
//! that subscriber alone, and the events it would have received are counted so its
//! connection can send a `Lagged` notice. A slow subscriber therefore never slows the
//! pipeline or the other subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::ipc::filter::EventFilter;
use crate::sink::{Delivery, EventBatch, EventSink};

/// Default per-subscriber queue length, in batches.
pub const DEFAULT_SUBSCRIBER_QUEUE_BATCHES: usize = 1024;

/// The IPC sink. Cheap to clone; clones share the subscriber set.
///
/// Register it with the collector (`collector.add_sink(Arc::new(sink.clone()))`) and hand
/// the same sink to [`CollectorIpcServer::bind`](crate::ipc::CollectorIpcServer::bind).
#[derive(Clone)]
pub struct IpcSink {
    shared: Arc<Shared>,
}

struct Shared {
    subscribers: RwLock<HashMap<u64, Subscriber>>,
    next_id: AtomicU64,
    queue_batches: usize,
    dropped_events: AtomicU64,
}

struct Subscriber {
    filter: EventFilter,
    tx: mpsc::Sender<EventBatch>,
    missed: Arc<AtomicU64>,
    queued: Arc<AtomicU64>,
}

impl IpcSink {
    /// A sink whose subscribers each queue up to `queue_batches` batches (at least 1).
    pub fn new(queue_batches: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                subscribers: RwLock::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                queue_batches: queue_batches.max(1),
                dropped_events: AtomicU64::new(0),
            }),
        }
    }

    /// Subscribers connected now.
    pub fn subscriber_count(&self) -> usize {
        self.read().len()
    }

    /// Events dropped so far because a subscriber's queue was full, over all subscribers.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped_events.load(Ordering::Relaxed)
    }

    /// Registers a subscriber; it receives batches until the returned handle is dropped.
    pub fn subscribe(&self, filter: EventFilter) -> Subscription {
        let (tx, rx) = mpsc::channel(self.shared.queue_batches);
        let missed = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicU64::new(0));
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let sub = Subscriber {
            filter,
            tx,
            missed: missed.clone(),
            queued: queued.clone(),
        };
        self.write().insert(id, sub);
        Subscription {
            id,
            filter,
            rx,
            missed,
            queued,
            sink: self.clone(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Subscriber>> {
        // A panic while holding the lock cannot leave the map inconsistent (single
        // insert/remove calls), so a poisoned lock is still usable.
        self.shared
            .subscribers
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Subscriber>> {
        self.shared
            .subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for IpcSink {
    fn default() -> Self {
        Self::new(DEFAULT_SUBSCRIBER_QUEUE_BATCHES)
    }
}

impl std::fmt::Debug for IpcSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcSink")
            .field("subscribers", &self.subscriber_count())
            .field("queue_batches", &self.shared.queue_batches)
            .finish()
    }
}

impl EventSink for IpcSink {
    fn name(&self) -> &str {
        "ipc"
    }

    /// Returns `Dropped(n)` with `n` the events lost, added up over the subscribers that
    /// could not take the batch.
    fn deliver(&self, batch: &EventBatch) -> Delivery {
        let mut dropped = 0usize;
        for sub in self.read().values() {
            // One pass over the batch per subscriber (none when it takes everything);
            // the connection selects the same events again only as it encodes them.
            let matching = if sub.filter.is_all() {
                batch.len()
            } else {
                batch.iter().filter(|e| sub.filter.matches(e)).count()
            };
            if matching == 0 {
                continue;
            }
            match sub.tx.try_send(batch.clone()) {
                Ok(()) => {
                    sub.queued.fetch_add(matching as u64, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_)) => {
                    sub.missed.fetch_add(matching as u64, Ordering::Relaxed);
                    dropped += matching;
                }
                // The connection is closing; its Subscription unregisters on drop.
                Err(TrySendError::Closed(_)) => {}
            }
        }
        if dropped == 0 {
            Delivery::Accepted
        } else {
            self.shared
                .dropped_events
                .fetch_add(dropped as u64, Ordering::Relaxed);
            Delivery::Dropped(dropped)
        }
    }
}

/// One subscriber's end: its queue and its count of missed events. Unregisters on drop.
pub struct Subscription {
    id: u64,
    filter: EventFilter,
    rx: mpsc::Receiver<EventBatch>,
    missed: Arc<AtomicU64>,
    queued: Arc<AtomicU64>,
    sink: IpcSink,
}

impl Subscription {
    /// The next queued batch (the whole batch: apply [`Self::filter`] to its events).
    pub async fn recv(&mut self) -> Option<EventBatch> {
        self.rx.recv().await
    }

    /// The next queued batch if there is one, without waiting (for the final drain).
    pub fn try_recv(&mut self) -> Option<EventBatch> {
        self.rx.try_recv().ok()
    }

    /// The current filter.
    pub fn filter(&self) -> EventFilter {
        self.filter
    }

    /// Replaces the filter for batches delivered from now on.
    pub fn set_filter(&mut self, filter: EventFilter) {
        self.filter = filter;
        if let Some(sub) = self.sink.write().get_mut(&self.id) {
            sub.filter = filter;
        }
    }

    /// Events matching the filter that were put in this subscriber's queue, over its
    /// life (what the collector counts as delivered to it).
    pub fn queued_events(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Events dropped since the last call (and resets the count).
    pub fn take_missed(&self) -> u64 {
        self.missed.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.sink.write().remove(&self.id);
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("filter", &self.filter)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CollectionEvent, Domain, ProcessEvent, ProcessEventKind};
    use chrono::Utc;

    fn batch(n: usize) -> EventBatch {
        (0..n)
            .map(|i| {
                CollectionEvent::Process(
                    ProcessEvent::new(ProcessEventKind::Exec, Utc::now(), i as u32, "t").into(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn full_queue_drops_and_counts_for_that_subscriber_only() {
        let sink = IpcSink::new(1);
        let slow = sink.subscribe(EventFilter::all());
        let mut fast = sink.subscribe(EventFilter::all());
        let net_only = sink.subscribe(EventFilter::new::<&str>(&[Domain::Network], &[]).unwrap());

        assert_eq!(sink.deliver(&batch(3)), Delivery::Accepted);
        assert_eq!(fast.recv().await.unwrap().len(), 3);
        // `slow` still holds the first batch, so the second is dropped for it alone.
        assert_eq!(sink.deliver(&batch(2)), Delivery::Dropped(2));
        assert_eq!(fast.recv().await.unwrap().len(), 2);
        assert_eq!(slow.take_missed(), 2);
        assert_eq!(slow.take_missed(), 0);
        assert_eq!(net_only.take_missed(), 0);
        assert_eq!(sink.dropped_events(), 2);

        drop(slow);
        assert_eq!(sink.subscriber_count(), 2);
    }
}
