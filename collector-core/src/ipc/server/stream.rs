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
use crate::ipc::wire::{EventBatchFrame, SizedEvent};
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
/// the size cap, then a `Lagged` notice if the subscriber's queue overflowed.
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
    let mut oversize = 0u64;
    let events: Vec<SizedEvent<'_>> = batch
        .iter()
        .filter(|e| all || filter.matches(e))
        .map(SizedEvent::new)
        .filter(|e| {
            // Cannot happen with the collector's own caps; count it as missed.
            let fits = e.entry_len() <= budget;
            oversize += u64::from(!fits);
            fits
        })
        .collect();
    let work = async {
        let (mut first, mut size) = (0, 0);
        for (i, ev) in events.iter().enumerate() {
            let len = ev.entry_len();
            if size + len > budget {
                writer.feed(EventBatchFrame::new(&events[first..i])).await?;
                (first, size) = (i, 0);
            }
            size += len;
        }
        if first < events.len() {
            writer.feed(EventBatchFrame::new(&events[first..])).await?;
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
    timed(write_timeout, work).await
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
