//! The publisher task: connects to NATS, makes sure the JetStream stream exists, then
//! publishes the spool in order, many messages in flight, acknowledgements awaited in
//! batches, and moves the spool's ack cursor. Any failure (connection lost, ack timeout)
//! rewinds to the first unacknowledged event and starts again after a backoff;
//! JetStream's duplicate window drops the resent messages it already has.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::context::{Publish, PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, stream};
use async_nats::{ConnectErrorKind, ConnectOptions, Event};
use collector_core::config::ExportConfig;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::nats_error::NatsError;
use crate::spool::{Spool, SpoolError, SpoolReader};

/// Why the exporter is not publishing. Each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The server refused the credentials.
    #[error("NATS server {servers} refused the credentials (check export.creds_file, export.nkey_seed_file or export.user/password)")]
    Credentials {
        /// The configured servers.
        servers: String,
        /// The client's error.
        #[source]
        source: NatsError<ConnectErrorKind>,
    },
    /// The TLS handshake failed or TLS is required on one side only.
    #[error("TLS with NATS server {servers} failed (check export.tls_ca_file, export.tls_cert_file/tls_key_file and whether the server requires TLS)")]
    Tls {
        /// The configured servers.
        servers: String,
        /// The client's error.
        #[source]
        source: NatsError<ConnectErrorKind>,
    },
    /// No server could be reached.
    #[error("cannot connect to NATS server {servers} (is it running and reachable?)")]
    Unreachable {
        /// The configured servers.
        servers: String,
        /// The client's error.
        #[source]
        source: NatsError<ConnectErrorKind>,
    },
    /// A credentials file could not be read.
    #[error("cannot use the NATS credentials in {} (export.creds_file or export.nkey_seed_file)", path.display())]
    CredentialsFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server answers, but not to JetStream requests.
    #[error("NATS server {servers} has no JetStream: start nats-server with --jetstream (-js) or add `jetstream {{}}` to its configuration")]
    NoJetStream {
        /// The configured servers.
        servers: String,
    },
    /// The stream could not be created or read.
    #[error("cannot create or read JetStream stream `{stream}`")]
    Stream {
        /// The stream name.
        stream: String,
        /// The client's error.
        #[source]
        source: NatsError<async_nats::jetstream::context::CreateStreamErrorKind>,
    },
    /// The stream exists but would not store our messages.
    #[error("JetStream stream `{stream}` exists with subjects {subjects:?}, which do not cover `{subject}`; widen its subjects or change export.subject_template / export.stream")]
    StreamSubjects {
        /// The stream name.
        stream: String,
        /// A subject we publish on.
        subject: String,
        /// The stream's subjects.
        subjects: Vec<String>,
    },
    /// The connection was lost with messages in flight.
    #[error(
        "connection to NATS lost; resending from the first unacknowledged event after reconnecting"
    )]
    Disconnected,
    /// A publish or its acknowledgement failed.
    #[error("publish to JetStream failed (resending from the first unacknowledged event)")]
    Publish {
        /// The client's error.
        #[source]
        source: NatsError<async_nats::jetstream::context::PublishErrorKind>,
    },
    /// The spool could not be read.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Counters and state the publisher shares with status.
#[derive(Debug, Default)]
pub struct PublishState {
    /// Connected, with the stream ready.
    pub connected: AtomicBool,
    /// Messages published (resends included).
    pub published: AtomicU64,
    /// Events in the messages published.
    pub published_events: AtomicU64,
    /// Acknowledgements received.
    pub acked: AtomicU64,
    /// Events in the messages acknowledged.
    pub acked_events: AtomicU64,
    /// Acknowledgements flagged duplicate.
    pub duplicates: AtomicU64,
    /// The last error, cleared on success.
    pub last_error: Mutex<Option<String>>,
}

impl PublishState {
    fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }
}

/// What the publisher needs to run.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The `[export]` section.
    pub export: ExportConfig,
    /// This host's id, the first part of every message id.
    pub host_id: String,
    /// A subject we publish on, to check that the stream covers it.
    pub sample_subject: String,
}

/// Bytes read from the spool at a time.
const READ_BYTES: usize = 1 << 20;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Connects with everything the configuration asks for; `lost` is told when the
/// connection drops.
pub async fn connect(
    export: &ExportConfig,
    lost: Arc<Notify>,
) -> Result<async_nats::Client, ExportError> {
    let servers = export.nats_servers.join(",");
    let mut options = ConnectOptions::new()
        .name("collector-export")
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let lost = Arc::clone(&lost);
            async move {
                match event {
                    Event::Disconnected | Event::Closed => lost.notify_one(),
                    Event::ServerError(e) => tracing::warn!("NATS server error: {e}"),
                    _ => {}
                }
            }
        });
    if let Some(path) = &export.creds_file {
        options = options.credentials_file(path).await.map_err(|source| {
            ExportError::CredentialsFile {
                path: path.clone(),
                source,
            }
        })?;
    }
    if let Some(path) = &export.nkey_seed_file {
        let seed =
            std::fs::read_to_string(path).map_err(|source| ExportError::CredentialsFile {
                path: path.clone(),
                source,
            })?;
        options = options.nkey(seed.trim().to_owned());
    }
    if let (Some(user), Some(password)) = (&export.user, &export.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(ca) = &export.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&export.tls_cert_file, &export.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if export.tls_required {
        options = options.require_tls(true);
    }
    options
        .connect(export.nats_servers.as_slice())
        .await
        .map_err(|source| match source.kind() {
            ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
                ExportError::Credentials {
                    servers,
                    source: NatsError(source),
                }
            }
            ConnectErrorKind::Tls => ExportError::Tls {
                servers,
                source: NatsError(source),
            },
            // A TLS handshake with a server that does not speak TLS (or the reverse)
            // fails as an I/O error of rustls.
            _ if looks_like_tls(&source) => ExportError::Tls {
                servers,
                source: NatsError(source),
            },
            _ => ExportError::Unreachable {
                servers,
                source: NatsError(source),
            },
        })
}

/// Whether a connection error came from TLS (rustls reports handshake failures as I/O
/// errors with messages such as `received corrupt message of type InvalidContentType`).
fn looks_like_tls(error: &async_nats::ConnectError) -> bool {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    let text = text.to_ascii_lowercase();
    [
        "tls",
        "certificate",
        "invalidcontenttype",
        "handshake",
        "corrupt message",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// Whether NATS subject `pattern` (with `*` and `>`) matches `subject`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Creates the stream, or checks that the existing one stores `sample_subject`.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &PublisherConfig,
) -> Result<(), ExportError> {
    let export = &config.export;
    let wanted = stream::Config {
        name: export.stream.clone(),
        subjects: export.stream_subjects.clone(),
        duplicate_window: export.duplicate_window,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let mut stream = js.get_or_create_stream(wanted).await.map_err(|source| {
        use async_nats::jetstream::context::CreateStreamErrorKind as Kind;
        match source.kind() {
            Kind::JetStreamUnavailable => ExportError::NoJetStream {
                servers: export.nats_servers.join(","),
            },
            _ => ExportError::Stream {
                stream: export.stream.clone(),
                source: NatsError(source),
            },
        }
    })?;
    let subjects = stream.cached_info().config.subjects.clone();
    if !subjects
        .iter()
        .any(|p| subject_matches(p, &config.sample_subject))
    {
        return Err(ExportError::StreamSubjects {
            stream: export.stream.clone(),
            subject: config.sample_subject.clone(),
            subjects,
        });
    }
    let _ = stream.info().await;
    Ok(())
}

struct InFlight {
    acks_through: Option<u64>,
    spooled_at_ns: i64,
    events: usize,
    ack: PublishAckFuture,
}

/// How long shutdown waits for the acknowledgements of what is in flight, so that the
/// next start does not resend what was already stored.
const SHUTDOWN_SETTLE: Duration = Duration::from_secs(2);

/// The publishing loop of one connection: returns `Ok` at shutdown (after a bounded wait
/// for the acknowledgements in flight), `Err` when the connection must be made again.
async fn pump(
    js: &jetstream::Context,
    reader: &mut SpoolReader,
    spool: &Spool,
    config: &PublisherConfig,
    state: &PublishState,
    lost: &Notify,
    shutdown: &CancellationToken,
) -> Result<(), ExportError> {
    let mut inflight = VecDeque::with_capacity(config.export.max_in_flight);
    let result = publish_loop(
        js,
        reader,
        spool,
        config,
        state,
        lost,
        shutdown,
        &mut inflight,
    )
    .await;
    if result.is_ok() && !inflight.is_empty() {
        let _ = tokio::time::timeout(
            SHUTDOWN_SETTLE,
            settle(&mut inflight, 0, spool, state, lost),
        )
        .await;
    }
    result
}

#[allow(clippy::too_many_arguments)] // the loop's whole context, passed once
async fn publish_loop(
    js: &jetstream::Context,
    reader: &mut SpoolReader,
    spool: &Spool,
    config: &PublisherConfig,
    state: &PublishState,
    lost: &Notify,
    shutdown: &CancellationToken,
    inflight: &mut VecDeque<InFlight>,
) -> Result<(), ExportError> {
    let max_in_flight = config.export.max_in_flight;
    let id_prefix = format!("{}-{}-", config.host_id, spool.epoch_id());
    let mut packer = Packer::new(config.export.max_events_per_message, config.export.payload);
    loop {
        let records = reader.read(READ_BYTES)?;
        if records.is_empty() {
            settle(inflight, 0, spool, state, lost).await?;
            tokio::select! {
                _ = spool.wait_for_append() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = lost.notified() => return Err(ExportError::Disconnected),
                _ = shutdown.cancelled() => return Ok(()),
            }
            continue;
        }
        let last = records.len() - 1;
        for (i, record) in records.into_iter().enumerate() {
            // A read ends on an append boundary; should it not (a damaged segment),
            // what was read is sent as if the append ended there.
            let flush = record.ends_append || i == last;
            packer.add(record);
            if !flush {
                continue;
            }
            for message in packer.drain() {
                let mut publish = Publish::build()
                    .payload(message.payload)
                    .message_id(format!("{id_prefix}{}", message.first_seq));
                if message.events > 1 {
                    publish =
                        publish.header(crate::message::EVENTS_HEADER, message.events.to_string());
                }
                let ack = tokio::select! {
                    r = js.send_publish(message.subject, publish) => r.map_err(|source| ExportError::Publish { source: NatsError(source) })?,
                    _ = lost.notified() => return Err(ExportError::Disconnected),
                    _ = shutdown.cancelled() => return Ok(()),
                };
                state.published.fetch_add(1, Ordering::Relaxed);
                state
                    .published_events
                    .fetch_add(message.events as u64, Ordering::Relaxed);
                inflight.push_back(InFlight {
                    acks_through: message.acks_through,
                    spooled_at_ns: message.spooled_at_ns,
                    events: message.events,
                    ack,
                });
                if inflight.len() >= max_in_flight {
                    // Await the older half; the newer half stays in flight meanwhile.
                    settle(inflight, max_in_flight / 2, spool, state, lost).await?;
                }
            }
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

/// One NATS message: one event, or several of one append with the same subject.
struct Packed {
    subject: String,
    payload: bytes::Bytes,
    events: usize,
    /// Its id: the sequence of its first event (unique: each event is in one message).
    first_seq: u64,
    spooled_at_ns: i64,
    /// Set on the last message of an append: once it is acknowledged (and, being
    /// awaited in order, all before it), the ack cursor moves to this sequence.
    acks_through: Option<u64>,
}

/// Groups the records of one append by subject, up to `per_message` per message, in
/// the order subjects first appear. The grouping depends only on the spool's content,
/// so a resend after a crash produces the same messages with the same ids, and
/// JetStream's duplicate window recognises them.
struct Packer {
    per_message: usize,
    format: collector_core::config::ExportPayload,
    groups: Vec<(bytes::Bytes, Vec<crate::spool::SpoolRecord>)>,
    last_seq: u64,
}

impl Packer {
    fn new(per_message: usize, format: collector_core::config::ExportPayload) -> Self {
        Self {
            per_message: per_message.max(1),
            format,
            groups: Vec::new(),
            last_seq: 0,
        }
    }

    fn add(&mut self, record: crate::spool::SpoolRecord) {
        self.last_seq = record.seq;
        if self.per_message == 1 {
            self.groups.push((record.subject.clone(), vec![record]));
            return;
        }
        let open = self.groups.iter().rposition(|(subject, records)| {
            *subject == record.subject && records.len() < self.per_message
        });
        match open {
            Some(i) => self.groups[i].1.push(record),
            None => self.groups.push((record.subject.clone(), vec![record])),
        }
    }

    fn drain(&mut self) -> Vec<Packed> {
        let count = self.groups.len();
        let last_seq = self.last_seq;
        let format = self.format;
        self.groups
            .drain(..)
            .enumerate()
            .map(|(i, (subject, records))| {
                let events = records.len();
                let first = &records[0];
                let (first_seq, spooled_at_ns) = (first.seq, first.spooled_at_ns);
                let payload = if events == 1 {
                    records.into_iter().next().expect("one record").payload
                } else {
                    crate::message::pack_payloads(format, records.iter().map(|r| &r.payload[..]))
                };
                Packed {
                    // Subjects are written by the sink from a `String`.
                    subject: String::from_utf8_lossy(&subject).into_owned(),
                    payload,
                    events,
                    first_seq,
                    spooled_at_ns,
                    acks_through: (i + 1 == count).then_some(last_seq),
                }
            })
            .collect()
    }
}

/// Awaits acknowledgements, oldest first, until `keep` remain in flight, and moves the
/// spool's ack cursor past the acknowledged ones.
async fn settle(
    inflight: &mut VecDeque<InFlight>,
    keep: usize,
    spool: &Spool,
    state: &PublishState,
    lost: &Notify,
) -> Result<(), ExportError> {
    let mut last = None;
    let mut result = Ok(());
    while inflight.len() > keep {
        let next = inflight.pop_front().expect("more than `keep`");
        let ack = tokio::select! {
            r = next.ack => r.map_err(|source| match source.kind() {
                PublishErrorKind::BrokenPipe => ExportError::Disconnected,
                _ => ExportError::Publish {
                    source: NatsError(source),
                },
            }),
            _ = lost.notified() => Err(ExportError::Disconnected),
        };
        match ack {
            Ok(ack) => {
                state.acked.fetch_add(1, Ordering::Relaxed);
                state
                    .acked_events
                    .fetch_add(next.events as u64, Ordering::Relaxed);
                if ack.duplicate {
                    state.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(seq) = next.acks_through {
                    last = Some(seq);
                }
            }
            Err(e) => {
                // The connection is made again and everything after the ack cursor is
                // resent, so what is still in flight is abandoned.
                result = Err(e);
                break;
            }
        }
    }
    if let Some(seq) = last {
        spool.ack_through(seq, inflight.front().map(|f| f.spooled_at_ns));
    }
    result
}

/// Runs until `shutdown`: connect, ensure the stream, publish; on failure, log the
/// reason (once per distinct reason), back off and start over from the ack cursor.
pub async fn run(
    spool: Arc<Spool>,
    config: PublisherConfig,
    state: Arc<PublishState>,
    shutdown: CancellationToken,
) {
    let mut reader = spool.reader();
    let mut backoff = Duration::from_millis(100);
    let mut last_logged: Option<String> = None;
    while !shutdown.is_cancelled() {
        let lost = Arc::new(Notify::new());
        let outcome = async {
            let client = connect(&config.export, Arc::clone(&lost)).await?;
            let mut js = jetstream::new(client.clone());
            js.set_timeout(config.export.ack_timeout);
            ensure_stream(&js, &config).await?;
            state.connected.store(true, Ordering::Relaxed);
            state.set_error(None);
            if last_logged.take().is_some() {
                tracing::info!(servers = ?config.export.nats_servers, "export: connected to NATS JetStream; draining the spool");
            }
            reader.rewind();
            let result = pump(&js, &mut reader, &spool, &config, &state, &lost, &shutdown).await;
            state.connected.store(false, Ordering::Relaxed);
            // Flushes what the client still buffers before the connection is dropped.
            let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
            result
        }
        .await;
        state.connected.store(false, Ordering::Relaxed);
        match outcome {
            Ok(()) => return,
            Err(e) => {
                // The whole chain, each cause once: status shows it as `last_error`.
                let message = collector_core::report(&e);
                if last_logged.as_deref() != Some(message.as_str()) {
                    tracing::warn!("export: {message}; events keep going to the spool");
                    last_logged = Some(message.clone());
                }
                state.set_error(Some(message));
                if matches!(e, ExportError::Disconnected | ExportError::Publish { .. }) {
                    backoff = Duration::from_millis(100);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn nats_wildcards_match_like_the_server() {
        assert!(subject_matches("collector.>", "collector.h.process.exec"));
        assert!(!subject_matches("collector.>", "collector"));
        assert!(subject_matches(
            "collector.*.process.*",
            "collector.h.process.exec"
        ));
        assert!(!subject_matches(
            "collector.*.network.*",
            "collector.h.process.exec"
        ));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }
}
