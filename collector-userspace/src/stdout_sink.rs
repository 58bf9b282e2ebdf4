//! A sink that prints every event as one JSON line on stdout (the contract in
//! `docs/events.md`). A writer thread does the printing; when it falls behind, whole
//! batches are dropped and counted, never blocking the pipeline.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use collector_core::{Delivery, EventBatch, EventSink};

/// Batches queued for the writer before dropping.
const QUEUE_BATCHES: usize = 1024;

/// Prints events as JSON lines.
pub struct StdoutSink {
    tx: SyncSender<EventBatch>,
    dropped: Arc<AtomicU64>,
}

impl StdoutSink {
    /// Starts the writer thread over `out`.
    pub fn new<W: Write + Send + 'static>(mut out: W) -> Self {
        let (tx, rx) = sync_channel::<EventBatch>(QUEUE_BATCHES);
        std::thread::Builder::new()
            .name("stdout-sink".into())
            .spawn(move || {
                while let Ok(batch) = rx.recv() {
                    for event in batch.iter() {
                        if writeln!(out, "{}", event.to_json_line()).is_err() {
                            return; // stdout closed (e.g. `| head`): stop printing
                        }
                    }
                    if out.flush().is_err() {
                        return;
                    }
                }
            })
            .expect("spawn stdout writer thread");
        Self {
            tx,
            dropped: Arc::default(),
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
        match self.tx.try_send(batch.clone()) {
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
        for _ in 0..100 {
            if out
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                == 2
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
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
