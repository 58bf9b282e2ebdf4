//! Streaming to a subscriber: each batch's matching events encoded into frames that fit
//! the frame budget, then a `Lagged` notice for what the subscriber's queue dropped; at
//! shutdown, the rest of its queue and an end-of-stream message.

use std::future::Future;
use std::time::Duration;

use futures::SinkExt;
use tokio_util::codec::FramedWrite;
use tracing::debug;

use collector_proto::v1 as pb;
use collector_proto::v1::envelope::Body;

use crate::ipc::codec::{EnvelopeCodec, FrameError, HEADER_BYTES};
use crate::ipc::sink::Subscription;
use crate::ipc::wire::{BatchEntries, EventBatchFrame};
use crate::sink::EventBatch;

/// The writing half of a connection.
pub(super) type Writer = FramedWrite<tokio::net::unix::OwnedWriteHalf, EnvelopeCodec>;

/// At server shutdown (run after the collector's final flush): sends every batch
/// still queued for this subscriber, then an end-of-stream message, so nothing the
/// pipeline counted as delivered to the subscriber's queue is lost silently.
pub(super) async fn end_stream(
    writer: &mut Writer,
    sub: &mut Subscription,
    max_frame_bytes: usize,
    write_timeout: Duration,
) {
    while let Some(batch) = sub.try_recv() {
        if let Err(e) = write_batch(writer, &batch, sub, max_frame_bytes, write_timeout).await {
            debug!(error = %crate::Report(&e), "IPC write failed during the final drain");
            return;
        }
    }
    let end = pb::Envelope {
        request_id: 0,
        body: Some(Body::EndOfStream(pb::EndOfStream {
            reason: "collector shutting down".into(),
            events_queued: sub.queued_events(),
        })),
    };
    if let Err(e) = send(writer, end, write_timeout).await {
        debug!(error = %crate::Report(&e), "IPC end-of-stream not sent");
    }
}

/// Sends the events of `batch` that match the subscription, split into frames under
/// the size cap, then a `Lagged` notice if the subscriber's queue overflowed. Each event
/// is encoded once, into this thread's entry buffer, and each frame is written from it.
pub(super) async fn write_batch(
    writer: &mut Writer,
    batch: &EventBatch,
    sub: &Subscription,
    max_frame_bytes: usize,
    write_timeout: Duration,
) -> Result<(), FrameError> {
    let filter = sub.filter();
    let all = filter.is_all();
    // Room for the envelope's own tag and length prefix.
    let budget = max_frame_bytes - HEADER_BYTES - 16;
    let mut entries = SPARE_ENTRIES.take();
    entries.clear();
    let work = async {
        let mut oversize = 0u64;
        for ev in batch.iter().filter(|e| all || filter.matches(e)) {
            let before = entries.len();
            if entries.push(ev) > budget {
                // Cannot happen with the collector's own caps; count it as missed.
                entries.truncate(before);
                oversize += 1;
            } else if entries.len() > budget {
                // The frame so far goes out; the entry just written starts the next.
                writer
                    .feed(EventBatchFrame::new(&entries.as_bytes()[..before]))
                    .await?;
                entries.consume(before);
            }
        }
        if !entries.is_empty() {
            writer
                .feed(EventBatchFrame::new(entries.as_bytes()))
                .await?;
        }
        let missed = sub.take_missed() + oversize;
        if missed > 0 {
            let lagged = pb::Envelope {
                request_id: 0,
                body: Some(Body::Lagged(pb::Lagged {
                    missed_events: missed,
                })),
            };
            writer.feed(lagged).await?;
        }
        SinkExt::<pb::Envelope>::flush(writer).await
    };
    let result = timed(write_timeout, work).await;
    SPARE_ENTRIES.set(entries);
    result
}

thread_local! {
    /// The entry buffer of the batch written last on this worker thread, emptied and
    /// reused by the next: a batch's encoding is tens of KiB, and an allocation that
    /// large costs more than the encoding of a few events.
    static SPARE_ENTRIES: std::cell::Cell<BatchEntries> =
        const { std::cell::Cell::new(BatchEntries::new()) };
}

pub(super) async fn recv_batch(sub: &mut Option<Subscription>) -> Option<EventBatch> {
    match sub {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

pub(super) async fn send(
    writer: &mut Writer,
    env: pb::Envelope,
    write_timeout: Duration,
) -> Result<(), FrameError> {
    timed(write_timeout, writer.send(env)).await
}

/// Sends a reply, or, when it is larger than the connection's frame limit (a status of a
/// collector with very many sources, say), an error that says so: the client would refuse
/// the frame and close the connection without knowing why.
pub(super) async fn send_reply(
    writer: &mut Writer,
    env: pb::Envelope,
    max_frame_bytes: usize,
    write_timeout: Duration,
) -> Result<(), FrameError> {
    let len = prost::Message::encoded_len(&env);
    let env = if len > max_frame_bytes {
        debug!(
            len,
            max_frame_bytes, "IPC reply above the frame limit; answering with an error"
        );
        let message = format!(
            "the reply is {len} bytes, above this connection's frame limit of \
             {max_frame_bytes} bytes (the smaller of the collector's and the client's \
             max_frame_bytes); raise both"
        );
        pb::Envelope {
            request_id: env.request_id,
            body: Some(Body::Error(pb::Error {
                code: pb::ErrorCode::Internal as i32,
                message,
            })),
        }
    } else {
        env
    };
    send(writer, env, write_timeout).await
}

async fn timed(
    limit: Duration,
    fut: impl Future<Output = Result<(), FrameError>>,
) -> Result<(), FrameError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(FrameError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "IPC write timed out",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{PerformanceEvent, PerformanceEventKind};
    use crate::CollectionEvent;

    #[test]
    fn a_batch_entry_buffer_is_reused_by_the_next_batch_on_the_thread() {
        let event = CollectionEvent::Performance(PerformanceEvent {
            kind: PerformanceEventKind::Metric,
            timestamp: chrono::DateTime::UNIX_EPOCH,
            pid: 1,
            source: "t".into(),
            metric_name: String::new(),
            value: 0.0,
            unit: String::new(),
            component: String::new(),
        });
        let mut entries = SPARE_ENTRIES.take();
        for _ in 0..500 {
            entries.push(&event);
        }
        let at = entries.as_bytes().as_ptr() as usize;
        SPARE_ENTRIES.set(entries);
        // The same allocation for the next batch, once emptied.
        let mut again = SPARE_ENTRIES.take();
        again.clear();
        again.push(&event);
        assert_eq!(again.as_bytes().as_ptr() as usize, at);
        // Taken: the next caller on this thread starts without one.
        assert!(SPARE_ENTRIES.take().as_bytes().is_empty());
    }
}
