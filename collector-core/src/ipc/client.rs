//! [`CollectorIpcClient`]: connect, negotiate, query, subscribe; reconnects with backoff.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, Stream, StreamExt};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

use collector_proto::v1 as pb;
use collector_proto::v1::envelope::Body;
use collector_proto::PROTOCOL_VERSION;

use crate::caps::SourceCaps;
use crate::config::MAX_FRAME_BYTES;
use crate::event::{CollectionEvent, Domain};
use crate::ipc::codec::{ClientCodec, FrameError, Inbound, DEFAULT_MAX_FRAME_BYTES};
use crate::ipc::convert::{caps_from_proto, domain_to_proto, status_from_proto, ConvertError};
use crate::ipc::filter::{EventFilter, FilterError};
use crate::ipc::frame_limit;
use crate::ipc::DEFAULT_SOCKET_PATH;
use crate::status::StatusSnapshot;

/// Retry schedule for (re)connecting: `initial`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Attempts before giving up (`None`: never give up).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_attempts: Some(5),
        }
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Socket path.
    pub socket_path: PathBuf,
    /// Name sent in `CapabilityRequest`, for the server's logs.
    pub client_id: String,
    /// Domains the client means to use (empty: all).
    pub requested_domains: Vec<Domain>,
    /// Largest frame payload this client accepts, declared to the collector in the
    /// handshake; the collector pages what it sends to the smaller of this and its own
    /// `max_frame_bytes` (see [`frame_limit`](crate::ipc::frame_limit)). Default: the
    /// hard cap ([`MAX_FRAME_BYTES`]), so a collector configured with a larger limit
    /// than 1 MiB is followed. Until the collector has answered, and with a collector
    /// that declares no limit, at most 1 MiB is accepted.
    pub max_frame_bytes: usize,
    /// Longest wait for a response.
    pub request_timeout: Duration,
    /// Reconnection schedule.
    pub backoff: Backoff,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from(DEFAULT_SOCKET_PATH),
            client_id: format!("collector-client/{}", std::process::id()),
            requested_domains: Vec::new(),
            max_frame_bytes: MAX_FRAME_BYTES,
            request_timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
        }
    }
}

/// What went wrong talking to the collector.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error(
        "cannot connect to the collector at {path} (is `collector run` up, and is --socket right?)"
    )]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A frame could not be read or written.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The server answered with an Error.
    #[error("collector refused the request ({code:?}): {message}")]
    Server {
        /// Error code.
        code: pb::ErrorCode,
        /// Server's explanation.
        message: String,
    },
    /// A request is larger than the collector accepts: it would refuse the frame.
    #[error(
        "the request is {len} bytes but the collector accepts frames of at most {server_max} \
         bytes; raise max_frame_bytes in the collector's configuration"
    )]
    RequestTooLarge {
        /// Encoded size of the request.
        len: usize,
        /// The collector's declared frame limit.
        server_max: usize,
    },
    /// The server sent something this client does not expect.
    #[error("unexpected reply from the collector: {0}")]
    Protocol(String),
    /// A message did not convert to a collector value.
    #[error("malformed message from the collector")]
    Convert(#[from] ConvertError),
    /// The subscription filter is invalid.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The connection closed.
    #[error("the collector closed the connection")]
    Closed,
    /// No response within the request timeout.
    #[error("the collector did not answer within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// Whether reconnecting may help (the connection broke, or the server was busy).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Closed | ClientError::Timeout(_) => true,
            ClientError::Frame(FrameError::Io(_)) => true,
            ClientError::Server { code, .. } => *code == pb::ErrorCode::TooManyConnections,
            _ => false,
        }
    }
}

/// One item of a subscription stream.
#[derive(Debug, Clone, PartialEq)]
// Events are nearly every item; boxing them would add an allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum SubscriptionItem {
    /// An event.
    Event(CollectionEvent),
    /// The subscriber fell behind and this many events were dropped for it.
    Lagged {
        /// Events missed.
        missed_events: u64,
    },
    /// The collector's capabilities changed (a source registered or unregistered).
    CapabilitiesChanged(SourceCaps),
    /// The connection broke and was re-established; events in between were not seen.
    Reconnected,
    /// The collector shut down after sending everything queued for this subscriber.
    /// Polling on tries to reconnect, as after a broken connection.
    EndOfStream {
        /// Events the collector queued for this connection over its life (those it
        /// reported in `Lagged` are not among them).
        events_queued: u64,
    },
}

/// A negotiated connection to the collector.
pub struct CollectorIpcClient {
    config: ClientConfig,
    framed: Framed<UnixStream, ClientCodec>,
    negotiated: pb::CapabilityResponse,
    next_request_id: u64,
}

impl std::fmt::Debug for CollectorIpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorIpcClient")
            .field("socket_path", &self.config.socket_path)
            .field("capabilities", &self.capabilities())
            .finish()
    }
}

impl CollectorIpcClient {
    /// Connects to `socket_path` with default settings.
    pub async fn connect(socket_path: impl AsRef<Path>) -> Result<Self, ClientError> {
        Self::connect_with(ClientConfig {
            socket_path: socket_path.as_ref().to_path_buf(),
            ..ClientConfig::default()
        })
        .await
    }

    /// Connects and negotiates, retrying transient failures per `config.backoff`.
    pub async fn connect_with(config: ClientConfig) -> Result<Self, ClientError> {
        let mut delay = config.backoff.initial;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match Self::connect_once(config.clone()).await {
                Ok(client) => return Ok(client),
                Err(e)
                    if e.is_transient()
                        && config.backoff.max_attempts.is_none_or(|max| attempt < max) =>
                {
                    tracing::debug!(error = %crate::Report(&e), attempt, "collector connection failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(config.backoff.max);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn connect_once(config: ClientConfig) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(&config.socket_path)
            .await
            .map_err(|source| ClientError::Connect {
                path: config.socket_path.clone(),
                source,
            })?;
        // The handshake's replies are small: until the collector says how large its frames
        // may be, accept what every version accepted.
        let before = frame_limit::clamp(config.max_frame_bytes).min(DEFAULT_MAX_FRAME_BYTES);
        let framed = Framed::new(stream, ClientCodec::new(before));
        let mut client = Self {
            config,
            framed,
            negotiated: pb::CapabilityResponse::default(),
            next_request_id: 1,
        };
        let request = Body::CapabilityRequest(pb::CapabilityRequest {
            protocol_version: PROTOCOL_VERSION,
            client_id: client.config.client_id.clone(),
            requested_domains: client
                .config
                .requested_domains
                .iter()
                .map(|d| domain_to_proto(*d) as i32)
                .collect(),
            max_frame_bytes: frame_limit::to_wire(client.config.max_frame_bytes),
        });
        match client.exchange(request).await? {
            Body::CapabilityResponse(resp) => {
                client.framed.codec_mut().set_limits(
                    frame_limit::client_receive_limit(
                        client.config.max_frame_bytes,
                        resp.max_frame_bytes,
                    ),
                    frame_limit::client_send_limit(resp.max_frame_bytes),
                );
                client.negotiated = resp;
                Ok(client)
            }
            other => Err(unexpected("CapabilityResponse", &other)),
        }
    }

    /// The collector's capabilities as negotiated.
    pub fn capabilities(&self) -> SourceCaps {
        caps_from_proto(&self.negotiated.capabilities.clone().unwrap_or_default())
    }

    /// The full negotiation answer (granted domains, server version).
    pub fn negotiated(&self) -> &pb::CapabilityResponse {
        &self.negotiated
    }

    /// The frame limits of this connection, as negotiated: the largest payload this
    /// client accepts, and the largest it sends.
    pub fn frame_limits(&self) -> (usize, usize) {
        let codec = self.framed.codec();
        (codec.max_frame_bytes(), codec.max_send_bytes())
    }

    /// The collector's status.
    pub async fn status(&mut self) -> Result<StatusSnapshot, ClientError> {
        match self
            .request(Body::StatusRequest(pb::StatusRequest {}))
            .await?
        {
            Body::StatusResponse(s) => Ok(status_from_proto(s)?),
            other => Err(unexpected("StatusResponse", &other)),
        }
    }

    /// Runs a detection task. A task the collector cannot answer comes back as
    /// `Ok(result)` with `result.result = Some(Error(..))`.
    pub async fn run_task(
        &mut self,
        task: pb::DetectionTask,
    ) -> Result<pb::DetectionResult, ClientError> {
        match self.request(Body::DetectionTask(task)).await? {
            Body::DetectionResult(r) => Ok(r),
            other => Err(unexpected("DetectionResult", &other)),
        }
    }

    /// Subscribes to events of `domains` and `kinds` (each empty: all). The subscription
    /// is live when this returns.
    ///
    /// The stream reconnects (per the backoff) when the connection breaks, yielding
    /// [`SubscriptionItem::Reconnected`]; it ends with an error when reconnecting fails
    /// or the server refuses the subscription.
    pub async fn subscribe<S: AsRef<str>>(
        mut self,
        domains: &[Domain],
        kinds: &[S],
    ) -> Result<
        impl Stream<Item = Result<SubscriptionItem, ClientError>> + Send + 'static,
        ClientError,
    > {
        let subscribe = EventFilter::new(domains, kinds)?.to_proto();
        match self.exchange(Body::Subscribe(subscribe.clone())).await? {
            Body::SubscribeAck(_) => {}
            other => return Err(unexpected("SubscribeAck", &other)),
        }
        let state = SubscriptionState {
            config: self.config.clone(),
            client: Some(self),
            subscribe,
            live: true,
            pending: VecDeque::new(),
            done: false,
        };
        Ok(EventStream {
            state: Some(Box::new(state)),
            reading: None,
        })
    }

    /// Sends a request, reconnecting once if the connection turns out to be broken.
    async fn request(&mut self, body: Body) -> Result<Body, ClientError> {
        match self.exchange(body.clone()).await {
            Err(e) if e.is_transient() => {
                let fresh = Self::connect_with(self.config.clone()).await?;
                *self = fresh;
                self.exchange(body).await
            }
            other => other,
        }
    }

    /// Sends one request and waits for the reply with its id (server pushes in between
    /// are skipped: a client that subscribed uses the stream instead).
    async fn exchange(&mut self, body: Body) -> Result<Body, ClientError> {
        let id = self.next_request_id;
        self.next_request_id += 1;
        let timeout = self.config.request_timeout;
        let env = pb::Envelope {
            request_id: id,
            body: Some(body),
        };
        // Checked here rather than left to the codec so the error names the collector's
        // limit as such: the request is refused before anything is written.
        let (len, server_max) = (
            prost::Message::encoded_len(&env),
            self.framed.codec().max_send_bytes(),
        );
        if len > server_max {
            return Err(ClientError::RequestTooLarge { len, server_max });
        }
        let wait = async {
            self.framed.send(env).await?;
            loop {
                let Inbound::Envelope(reply) =
                    self.framed.next().await.ok_or(ClientError::Closed)??
                else {
                    continue; // events, for a subscription this request is not part of
                };
                match reply.body {
                    Some(Body::Error(e)) if reply.request_id == id || reply.request_id == 0 => {
                        return Err(server_error(e))
                    }
                    Some(body) if reply.request_id == id => return Ok(body),
                    _ => continue,
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }
}

fn server_error(e: pb::Error) -> ClientError {
    ClientError::Server {
        code: pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified),
        message: e.message,
    }
}

fn unexpected(wanted: &str, got: &Body) -> ClientError {
    let name = match got {
        Body::CapabilityRequest(_) => "CapabilityRequest",
        Body::CapabilityResponse(_) => "CapabilityResponse",
        Body::CapabilityUpdate(_) => "CapabilityUpdate",
        Body::DetectionTask(_) => "DetectionTask",
        Body::DetectionResult(_) => "DetectionResult",
        Body::Subscribe(_) => "Subscribe",
        Body::SubscribeAck(_) => "SubscribeAck",
        Body::EventBatch(_) => "EventBatch",
        Body::Lagged(_) => "Lagged",
        Body::StatusRequest(_) => "StatusRequest",
        Body::StatusResponse(_) => "StatusResponse",
        Body::Error(_) => "Error",
        Body::EndOfStream(_) => "EndOfStream",
    };
    ClientError::Protocol(format!("expected {wanted}, got {name}"))
}

struct SubscriptionState {
    config: ClientConfig,
    client: Option<CollectorIpcClient>,
    subscribe: pb::Subscribe,
    /// Whether the current connection carries the subscription.
    live: bool,
    /// Events of the last batch not yet handed out.
    pending: VecDeque<CollectionEvent>,
    done: bool,
}

type Item = Result<SubscriptionItem, ClientError>;
type ReadNext = Pin<Box<dyn Future<Output = (Box<SubscriptionState>, Option<Item>)> + Send>>;

/// The subscription stream. Events already decoded are handed out synchronously, one
/// move each; only when they run out does it build the future that reads (and, when
/// needed, reconnects), which then owns the state until it completes.
struct EventStream {
    state: Option<Box<SubscriptionState>>,
    reading: Option<ReadNext>,
}

impl Stream for EventStream {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = &mut *self;
        if let Some(mut st) = this.state.take() {
            if let Some(ev) = st.pending.pop_front() {
                this.state = Some(st);
                return Poll::Ready(Some(Ok(SubscriptionItem::Event(ev))));
            }
            this.reading = Some(Box::pin(async move {
                let item = st.next_item().await;
                (st, item)
            }));
        }
        let reading = this
            .reading
            .as_mut()
            .expect("the stream holds either its state or the future that owns it");
        match reading.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready((st, item)) => {
                this.reading = None;
                this.state = Some(st);
                Poll::Ready(item)
            }
        }
    }
}

impl SubscriptionState {
    fn drop_client(&mut self) {
        self.client = None;
        self.live = false;
    }

    async fn next_item(&mut self) -> Option<Result<SubscriptionItem, ClientError>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(Ok(SubscriptionItem::Event(ev)));
            }
            if self.done {
                return None;
            }
            let client = match self.client.as_mut() {
                Some(c) => c,
                None => match CollectorIpcClient::connect_with(self.config.clone()).await {
                    Ok(c) => self.client.insert(c),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
            };
            if !self.live {
                // A fresh connection: subscribe on it.
                match client
                    .exchange(Body::Subscribe(self.subscribe.clone()))
                    .await
                {
                    Ok(Body::SubscribeAck(_)) => {
                        self.live = true;
                        return Some(Ok(SubscriptionItem::Reconnected));
                    }
                    Ok(other) => {
                        self.done = true;
                        return Some(Err(unexpected("SubscribeAck", &other)));
                    }
                    Err(e) if e.is_transient() => {
                        self.drop_client();
                        continue;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            // The drained queue's buffer goes back to the codec for the next batch (an
            // empty VecDeque converts to a Vec without moving anything).
            let drained = Vec::from(std::mem::take(&mut self.pending));
            client.framed.codec_mut().recycle(drained);
            match client.framed.next().await {
                Some(Ok(Inbound::Events(batch))) => {
                    // O(1): the deque takes over the vector's buffer.
                    self.pending = VecDeque::from(batch.events);
                    if let Some(e) = batch.invalid {
                        // The events that did convert still follow.
                        return Some(Err(e.into()));
                    }
                }
                Some(Ok(Inbound::Envelope(env))) => match env.body {
                    Some(Body::Lagged(l)) => {
                        return Some(Ok(SubscriptionItem::Lagged {
                            missed_events: l.missed_events,
                        }))
                    }
                    Some(Body::EndOfStream(end)) => {
                        // The server closes now. A consumer that wants to follow a
                        // restarted collector keeps polling (the stream reconnects);
                        // `collector events` stops here.
                        self.drop_client();
                        return Some(Ok(SubscriptionItem::EndOfStream {
                            events_queued: end.events_queued,
                        }));
                    }
                    Some(Body::CapabilityUpdate(u)) => {
                        return Some(Ok(SubscriptionItem::CapabilitiesChanged(caps_from_proto(
                            &u.capabilities.unwrap_or_default(),
                        ))))
                    }
                    Some(Body::Error(e)) => {
                        // The server closes after an unsolicited error; reconnect.
                        self.drop_client();
                        let err = server_error(e);
                        if !err.is_transient() {
                            self.done = true;
                        }
                        return Some(Err(err));
                    }
                    _ => {}
                },
                Some(Err(FrameError::Io(_))) | None => {
                    self.drop_client();
                }
                Some(Err(e)) => {
                    self.drop_client();
                    return Some(Err(e.into()));
                }
            }
        }
    }
}
