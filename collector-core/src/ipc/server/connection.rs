//! One connection: the reader answers requests (negotiation, subscribe, status,
//! detection tasks) and hands replies to the writer, which also streams the
//! subscription's batches and pushes `CapabilityUpdate`s.

use std::sync::Arc;

use futures::StreamExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use collector_proto::v1 as pb;
use collector_proto::v1::envelope::Body;
use collector_proto::PROTOCOL_VERSION;

use super::stream::{self, recv_batch, send, send_reply, Writer};
use super::{error_envelope, Shared};
use crate::caps::SourceCaps;
use crate::event::Domain;
use crate::ipc::codec::{EnvelopeCodec, FrameError};
use crate::ipc::convert::{caps_to_proto, domain_from_proto, domain_to_proto, status_to_proto};
use crate::ipc::filter::EventFilter;
use crate::ipc::frame_limit;
use crate::ipc::sink::Subscription;
use crate::ipc::task::{error_result, task_domain, Peer};

/// What the reader asks the writer to do.
enum Outbound {
    /// Send this.
    Send(pb::Envelope),
    /// Send this, then close the connection.
    Close(pb::Envelope),
    /// Send the handshake's reply, then frame everything to `send_budget` bytes (the
    /// negotiated limit).
    Negotiated {
        reply: pb::Envelope,
        send_budget: usize,
    },
    /// Start (or change) the subscription, then acknowledge request `request_id`.
    Subscribe {
        request_id: u64,
        filter: EventFilter,
    },
}

pub(super) struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) cancel: CancellationToken,
    /// The server's own stop: set only when the whole server shuts down, so a
    /// subscriber then gets what is queued for it and an end-of-stream message.
    pub(super) server_stop: CancellationToken,
    /// Who is on the other end, as the kernel said at connect time.
    pub(super) peer: Arc<Peer>,
}

impl Connection {
    pub(super) async fn serve(self, stream: UnixStream) {
        let max = self.shared.config.max_frame_bytes;
        let (rd, wr) = stream.into_split();
        let reader = FramedRead::new(rd, EnvelopeCodec::new(max));
        let writer = FramedWrite::new(wr, EnvelopeCodec::new(max));
        let (out_tx, out_rx) = mpsc::channel(16);
        tokio::join!(
            self.read_loop(reader, out_tx),
            self.write_loop(writer, out_rx)
        );
        // The subscription (if any) was dropped with the writer.
        self.publish_subscribers();
    }

    fn publish_subscribers(&self) {
        let count = self.shared.sink.subscriber_count() as u64;
        self.shared.status.set_subscribers(count);
    }

    async fn read_loop(
        &self,
        mut reader: FramedRead<tokio::net::unix::OwnedReadHalf, EnvelopeCodec>,
        out: mpsc::Sender<Outbound>,
    ) {
        let mut negotiated = false;
        let mut subscribed = false;
        // The largest frame this client gets, once it said what it accepts.
        let mut send_budget = self.shared.config.max_frame_bytes;
        loop {
            let idle = (!subscribed).then_some(self.shared.config.idle_timeout);
            // A subscriber may stay silent for ever; anyone else must keep talking.
            let read = async {
                match idle {
                    Some(limit) => tokio::time::timeout(limit, reader.next()).await.ok(),
                    None => Some(reader.next().await),
                }
            };
            let next = tokio::select! {
                _ = self.cancel.cancelled() => return,
                next = read => match next {
                    Some(next) => next,
                    None => {
                        let msg = "no request within the idle timeout; closing";
                        let _ = out
                            .send(Outbound::Close(error_envelope(0, pb::ErrorCode::Timeout, msg)))
                            .await;
                        return;
                    }
                },
            };
            let env = match next {
                None => break,
                Some(Ok(env)) => env,
                Some(Err(FrameError::Io(e))) => {
                    debug!(error = %crate::Report(&e), "IPC read failed");
                    break;
                }
                Some(Err(e)) => {
                    debug!(error = %crate::Report(&e), "bad IPC frame; closing connection");
                    let msg = format!("{}; closing the connection", crate::Report(&e));
                    let _ = out
                        .send(Outbound::Close(error_envelope(
                            0,
                            pb::ErrorCode::BadFrame,
                            msg,
                        )))
                        .await;
                    return;
                }
            };
            let id = env.request_id;
            let reply = match env.body {
                Some(Body::CapabilityRequest(req)) => {
                    if req.protocol_version != PROTOCOL_VERSION {
                        let msg = format!(
                            "protocol version {} is not supported (server speaks {PROTOCOL_VERSION}); \
                             upgrade the client or the collector",
                            req.protocol_version
                        );
                        Outbound::Close(error_envelope(id, pb::ErrorCode::UnsupportedVersion, msg))
                    } else {
                        negotiated = true;
                        send_budget = frame_limit::send_budget(
                            self.shared.config.max_frame_bytes,
                            req.max_frame_bytes,
                        );
                        debug!(
                            client = %req.client_id,
                            client_max_frame_bytes = req.max_frame_bytes,
                            send_budget,
                            "IPC client negotiated"
                        );
                        Outbound::Negotiated {
                            reply: self.capability_response(id, &req),
                            send_budget,
                        }
                    }
                }
                _ if !negotiated => Outbound::Close(error_envelope(
                    id,
                    pb::ErrorCode::NotNegotiated,
                    "send CapabilityRequest first",
                )),
                Some(Body::Subscribe(sub)) => match EventFilter::from_proto(&sub) {
                    Ok(filter) => {
                        subscribed = true;
                        Outbound::Subscribe {
                            request_id: id,
                            filter,
                        }
                    }
                    Err(e) => {
                        Outbound::Send(error_envelope(id, pb::ErrorCode::BadRequest, e.to_string()))
                    }
                },
                Some(Body::StatusRequest(_)) => {
                    let mut status = self.shared.status.status();
                    status.counters.subscribers = self.shared.sink.subscriber_count() as u64;
                    Outbound::Send(pb::Envelope {
                        request_id: id,
                        body: Some(Body::StatusResponse(status_to_proto(&status))),
                    })
                }
                Some(Body::DetectionTask(task)) => Outbound::Send(pb::Envelope {
                    request_id: id,
                    body: Some(Body::DetectionResult(
                        self.run_task(task, send_budget).await,
                    )),
                }),
                Some(_) | None => Outbound::Send(error_envelope(
                    id,
                    pb::ErrorCode::BadRequest,
                    "expected CapabilityRequest, Subscribe, StatusRequest or DetectionTask",
                )),
            };
            let closing = matches!(reply, Outbound::Close(_));
            if out.send(reply).await.is_err() || closing {
                return;
            }
        }
        // The client closed its end: nothing more to do for it.
        self.cancel.cancel();
    }

    fn capability_response(&self, id: u64, req: &pb::CapabilityRequest) -> pb::Envelope {
        let caps = *self.shared.status.watch_capabilities().borrow();
        let requested: Vec<Domain> = if req.requested_domains.is_empty() {
            Domain::ALL.to_vec()
        } else {
            req.requested_domains
                .iter()
                .filter_map(|&d| domain_from_proto(d).ok())
                .collect()
        };
        pb::Envelope {
            request_id: id,
            body: Some(Body::CapabilityResponse(pb::CapabilityResponse {
                protocol_version: PROTOCOL_VERSION,
                capabilities: Some(caps_to_proto(caps)),
                granted_domains: requested
                    .into_iter()
                    .filter(|d| caps.contains(d.capability()))
                    .map(|d| domain_to_proto(d) as i32)
                    .collect(),
                server_version: env!("CARGO_PKG_VERSION").to_string(),
                max_frame_bytes: frame_limit::to_wire(self.shared.config.max_frame_bytes),
            })),
        }
    }

    /// Runs `task` for this peer; a paged query that does not say how large its pages
    /// may be gets pages of the connection's `send_budget`.
    async fn run_task(
        &self,
        mut task: pb::DetectionTask,
        send_budget: usize,
    ) -> pb::DetectionResult {
        let task_id = task.task_id.clone();
        if let Some(pb::detection_task::Task::EnumerateProcesses(q)) = task.task.as_mut() {
            if q.max_page_bytes == 0 {
                q.max_page_bytes = frame_limit::to_wire(send_budget);
            }
        }
        let Some(domain) = task_domain(&task) else {
            return error_result(task_id, pb::ErrorCode::BadRequest, "the task has no body");
        };
        let caps: SourceCaps = *self.shared.status.watch_capabilities().borrow();
        if !caps.contains(domain.capability()) {
            return error_result(
                task_id,
                pb::ErrorCode::UnsupportedDomain,
                format!(
                    "no registered source supports the {} domain, so this task cannot run",
                    domain.as_str()
                ),
            );
        }
        let Some(handler) = self.shared.tasks.clone() else {
            return error_result(
                task_id,
                pb::ErrorCode::UnsupportedDomain,
                "this collector has no detection-task handler",
            );
        };
        // Run on its own task so a panicking handler fails only this request.
        let peer = self.peer.clone();
        let run = tokio::spawn(async move { handler.handle_as(task, &peer).await });
        match tokio::time::timeout(self.shared.config.task_timeout, run).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => error_result(task_id, pb::ErrorCode::Internal, "the task handler failed"),
            Err(_) => error_result(
                task_id,
                pb::ErrorCode::Timeout,
                format!(
                    "the task did not finish within {:?}",
                    self.shared.config.task_timeout
                ),
            ),
        }
    }

    async fn write_loop(&self, mut writer: Writer, mut out: mpsc::Receiver<Outbound>) {
        let write_timeout = self.shared.config.write_timeout;
        let mut caps_rx = self.shared.status.watch_capabilities();
        caps_rx.mark_unchanged();
        let mut sub: Option<Subscription> = None;
        let sub_idle = self.shared.config.subscriber_idle_timeout;
        let mut send_budget = self.shared.config.max_frame_bytes;
        let mut last_activity = tokio::time::Instant::now();
        loop {
            let result = tokio::select! {
                biased;
                // A request answered is activity for the idle rule too.
                msg = out.recv() => match msg.inspect(|_| last_activity = tokio::time::Instant::now()) {
                    None => break,
                    Some(Outbound::Send(env)) => {
                        send_reply(&mut writer, env, send_budget, write_timeout).await
                    }
                    Some(Outbound::Negotiated { reply, send_budget: budget }) => {
                        let sent = send(&mut writer, reply, write_timeout).await;
                        send_budget = budget;
                        writer.encoder_mut().set_max_frame_bytes(budget);
                        sent
                    }
                    Some(Outbound::Close(env)) => {
                        let _ = send(&mut writer, env, write_timeout).await;
                        break;
                    }
                    Some(Outbound::Subscribe { request_id, filter }) => {
                        match sub.as_mut() {
                            Some(s) => s.set_filter(filter),
                            None => {
                                sub = Some(self.shared.sink.subscribe(filter));
                                self.publish_subscribers();
                            }
                        }
                        let p = filter.to_proto();
                        let ack = pb::Envelope {
                            request_id,
                            body: Some(Body::SubscribeAck(pb::SubscribeAck {
                                domains: p.domains,
                                kinds: p.kinds,
                            })),
                        };
                        send(&mut writer, ack, write_timeout).await
                    }
                },
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep_until(last_activity + sub_idle), if sub.is_some() => {
                    let msg = "the subscription received no event and no request within the \
                               subscriber idle timeout; closing";
                    let _ = send(
                        &mut writer,
                        error_envelope(0, pb::ErrorCode::Timeout, msg),
                        write_timeout,
                    )
                    .await;
                    break;
                }
                Some(batch) = recv_batch(&mut sub) => {
                    last_activity = tokio::time::Instant::now();
                    let sub = sub.as_ref().expect("a batch implies a subscription");
                    stream::write_batch(&mut writer, &batch, sub, send_budget, write_timeout).await
                }
                Ok(()) = caps_rx.changed(), if sub.is_some() => {
                    let caps = *caps_rx.borrow_and_update();
                    let update = pb::Envelope {
                        request_id: 0,
                        body: Some(Body::CapabilityUpdate(pb::CapabilityUpdate {
                            capabilities: Some(caps_to_proto(caps)),
                        })),
                    };
                    send(&mut writer, update, write_timeout).await
                }
            };
            if let Err(e) = result {
                debug!(error = %crate::Report(&e), "IPC write failed; closing connection");
                sub = None;
                break;
            }
        }
        // The server is stopping (the reader may have ended first, closing `out`):
        // hand the subscriber what is still queued for it, then say it is the end.
        if let (true, Some(sub)) = (self.server_stop.is_cancelled(), sub.as_mut()) {
            stream::end_stream(&mut writer, sub, send_budget, write_timeout).await;
        }
        // Stop the reader too (it may be waiting on a client that is gone).
        self.cancel.cancel();
    }
}
