//! A sink that prints every event as one JSON line on stdout (the contract in
//! `docs/events.md`). A writer thread does the printing; when it falls behind, whole
//! batches are dropped and counted, never blocking the pipeline.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use collector_core::{Delivery, EventBatch, EventSink};

/// Batches queued for the writer before dropping.
const QUEUE_BATCHES: usize = 1024;

/// Prints events as JSON lines.
pub struct StdoutSink {
    /// `None` once [`finish`](Self::finish) closed the queue.
    tx: Mutex<Option<SyncSender<EventBatch>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    dropped: Arc<AtomicU64>,
}

impl StdoutSink {
    /// Starts the writer thread over `out`.
    pub fn new<W: Write + Send + 'static>(mut out: W) -> Self {
        let (tx, rx) = sync_channel::<EventBatch>(QUEUE_BATCHES);
        let writer = std::thread::Builder::new()
            .name("stdout-sink".into())
            .spawn(move || {
                // One reused buffer: no allocation per event, one write per batch.
                let mut buf = Vec::with_capacity(64 << 10);
                while let Ok(batch) = rx.recv() {
                    buf.clear();
                    for event in batch.iter() {
                        event.write_json_line(&mut buf);
                    }
                    if out.write_all(&buf).is_err() || out.flush().is_err() {
                        return; // stdout closed (e.g. `| head`): stop printing
                    }
                }
                let _ = out.flush();
            })
            .expect("spawn stdout writer thread");
        Self {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            dropped: Arc::default(),
        }
    }

    /// Closes the queue and waits until the writer thread has printed and flushed
    /// every batch already queued. Batches offered afterwards are dropped and counted.
    pub fn finish(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            if writer.join().is_err() {
                tracing::error!("the stdout writer thread panicked");
            }
        }
    }

    /// Events dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl EventSink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }

    fn deliver(&self, batch: &EventBatch) -> Delivery {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let sent = match tx.as_ref() {
            Some(tx) => tx.try_send(batch.clone()),
            None => Err(TrySendError::Disconnected(batch.clone())),
        };
        match sent {
            Ok(()) => Delivery::Accepted,
            Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => {
                self.dropped.fetch_add(b.len() as u64, Ordering::Relaxed);
                Delivery::Dropped(b.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use collector_core::event::{ProcessEvent, ProcessEventKind};
    use collector_core::CollectionEvent;

    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn prints_one_json_line_per_event() {
        let out = Shared::default();
        let sink = StdoutSink::new(out.clone());
        let ev = |pid| {
            CollectionEvent::from(ProcessEvent::new(
                ProcessEventKind::Exec,
                Utc::now(),
                pid,
                "t",
            ))
        };
        let batch: EventBatch = vec![ev(1), ev(2)].into();
        assert_eq!(sink.deliver(&batch), Delivery::Accepted);
        // `finish` returns only once the writer printed everything queued.
        sink.finish();
        assert_eq!(sink.deliver(&batch), Delivery::Dropped(2));
        assert_eq!(sink.dropped(), 2);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let pids: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["pid"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(pids, [1, 2]);
    }
}
