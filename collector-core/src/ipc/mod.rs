//! IPC between the collector and its clients (agents, security tooling, the CLI).
//!
//! Layout, in the order bytes flow:
//! - [`codec`]: frames on the socket (`u32 LE length | u32 LE CRC32 | payload`), each
//!   payload one protobuf [`proto::Envelope`] (schema: the `collector-proto` crate).
//! - [`frame_limit`]: the frame size each end accepts, negotiated in the handshake.
//! - [`convert`]: collector types <-> protobuf messages.
//! - [`wire`]: the hot path, event batches encoded from and decoded into collector events
//!   directly (same bytes as going through [`convert`] and prost).
//! - [`sink`]: [`IpcSink`], the pipeline sink that fans batches out to per-subscriber
//!   bounded queues ([`filter`] selects what each subscriber asked for).
//! - [`server`]: [`CollectorIpcServer`] on a Unix socket: its configuration, the listener
//!   (admission by peer credentials, connection caps), each connection's requests
//!   (negotiation, status, [`task`] routing) and the framing of streamed batches; the
//!   socket file's mode and group are set by the private `access` module, and both
//!   return the private `error` module's [`ServerError`].
//! - [`client`]: [`CollectorIpcClient`], with reconnection and a `Stream` of events.
//!
//! ```no_run
//! # async fn demo() -> Result<(), collector_core::ipc::ClientError> {
//! use collector_core::event::Domain;
//! use collector_core::ipc::{CollectorIpcClient, SubscriptionItem};
//! use futures::StreamExt;
//!
//! let client = CollectorIpcClient::connect("/run/collector/collector.sock").await?;
//! let events = client.subscribe(&[Domain::Process], &["exec"]).await?;
//! futures::pin_mut!(events);
//! while let Some(item) = events.next().await {
//!     match item? {
//!         SubscriptionItem::Event(ev) => println!("{}", ev.to_json_line()),
//!         SubscriptionItem::Lagged { missed_events } => eprintln!("missed {missed_events}"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

mod access;
pub mod client;
pub mod codec;
pub mod convert;
mod error;
pub mod filter;
pub mod frame_limit;
pub mod provider;
pub mod server;
pub mod sink;
pub mod task;
pub mod wire;

/// The generated protobuf types (`collector.v1`).
pub use collector_proto::v1 as proto;
pub use collector_proto::PROTOCOL_VERSION;

pub use client::{Backoff, ClientConfig, ClientError, CollectorIpcClient, SubscriptionItem};
pub use codec::{
    ClientCodec, DecodedBatch, EnvelopeCodec, FrameCodec, FrameError, Inbound,
    DEFAULT_MAX_FRAME_BYTES,
};
pub use filter::EventFilter;
pub use provider::{ManualStatus, StatusProvider};
pub use server::{CollectorIpcServer, IpcServerConfig, PeerPolicy, ServerError};
pub use sink::{IpcSink, Subscription, DEFAULT_SUBSCRIBER_QUEUE_BATCHES};
pub use task::{Peer, TaskHandler};

/// Where the collector listens unless configured otherwise.
pub const DEFAULT_SOCKET_PATH: &str = "/run/collector/collector.sock";
