//! `collector consume`: reads events from a JetStream stream and prints them as JSON
//! lines, the same schema as `collector events` (`docs/events.md`).

use std::io::Write;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;

use crate::message::{decode_message, EVENTS_HEADER};
use crate::nats_error::{NatsError, NatsErrorKind};

/// Options of a consumption.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Server URLs.
    pub servers: Vec<String>,
    /// Subject filter (`collector.>`).
    pub subject: String,
    /// The stream.
    pub stream: String,
    /// Stop after this many events (None: run until interrupted or `idle_exit`).
    pub limit: Option<u64>,
    /// Stop when no message arrived for this long (None: wait forever).
    pub idle_exit: Option<Duration>,
    /// A NATS `.creds` file (user JWT and nkey seed) to log in with.
    pub creds_file: Option<std::path::PathBuf>,
}

/// What a consumption saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeSummary {
    /// Events printed.
    pub events: u64,
    /// Messages that were not events (reported on stderr).
    pub undecodable: u64,
}

/// Why consuming failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// Connecting failed.
    #[error("cannot connect to NATS {servers}")]
    Connect {
        /// Servers.
        servers: String,
        /// Client error.
        #[source]
        source: NatsError<async_nats::ConnectErrorKind>,
    },
    /// The credentials file could not be read or parsed.
    #[error("cannot use the NATS credentials file {}", path.display())]
    CredentialsFile {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The stream or consumer could not be set up.
    #[error("cannot read stream `{stream}` (does it exist, and does the server have JetStream?)")]
    Stream {
        /// Stream name.
        stream: String,
        /// The client's error (a [`NatsError`] of the step that failed).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Writing the output failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

/// Prints every event on `opts.subject` in `opts.stream` from the start of the stream,
/// one JSON line each, acknowledging nothing (an ephemeral ordered consumer).
pub async fn consume(
    opts: &ConsumeOptions,
    out: &mut impl Write,
) -> Result<ConsumeSummary, ConsumeError> {
    let servers = opts.servers.join(",");
    let mut options = async_nats::ConnectOptions::new();
    if let Some(path) = &opts.creds_file {
        options = options.credentials_file(path).await.map_err(|source| {
            ConsumeError::CredentialsFile {
                path: path.clone(),
                source,
            }
        })?;
    }
    let client = options
        .connect(opts.servers.as_slice())
        .await
        .map_err(|source| ConsumeError::Connect {
            servers,
            source: NatsError(source),
        })?;
    let js = jetstream::new(client);
    fn stream_err<K>(stream: &str) -> impl Fn(async_nats::error::Error<K>) -> ConsumeError + '_
    where
        K: NatsErrorKind + Send + Sync + 'static,
    {
        move |e| ConsumeError::Stream {
            stream: stream.to_owned(),
            source: Box::new(NatsError(e)),
        }
    }
    let stream = js
        .get_stream(&opts.stream)
        .await
        .map_err(stream_err(&opts.stream))?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: opts.subject.clone(),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(stream_err(&opts.stream))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(stream_err(&opts.stream))?;
    let mut summary = ConsumeSummary::default();
    loop {
        if opts.limit.is_some_and(|l| summary.events >= l) {
            break;
        }
        let next = match opts.idle_exit {
            Some(idle) => match tokio::time::timeout(idle, messages.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => messages.next().await,
        };
        let Some(message) = next else { break };
        let message = message.map_err(stream_err(&opts.stream))?;
        let packed = message
            .headers
            .as_ref()
            .is_some_and(|h| h.get(EVENTS_HEADER).is_some());
        match decode_message(&message.payload, packed) {
            Ok(events) => {
                for event in events {
                    writeln!(out, "{}", event.to_json_line()).map_err(ConsumeError::Output)?;
                    summary.events += 1;
                }
            }
            Err(e) => {
                summary.undecodable += 1;
                eprintln!(
                    "skipping message on {}: {}",
                    message.subject,
                    collector_core::Report(&e)
                );
            }
        }
    }
    out.flush().map_err(ConsumeError::Output)?;
    Ok(summary)
}
