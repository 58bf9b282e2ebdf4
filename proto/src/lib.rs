//! The collector's IPC schema (`proto/collector.proto`), compiled by prost.
//!
//! The schema is compiled at build time with protox, a pure-Rust protobuf compiler, so no
//! system `protoc` is needed. Everything lives in [`v1`]; a client talks by sending
//! [`v1::Envelope`]s inside CRC32 frames (see `collector_core::ipc::codec`).
//!
//! ```
//! use collector_proto::v1::{envelope::Body, Envelope, StatusRequest};
//! use prost::Message;
//!
//! let request = Envelope { request_id: 7, body: Some(Body::StatusRequest(StatusRequest {})) };
//! let bytes = request.encode_to_vec();
//! assert_eq!(Envelope::decode(bytes.as_slice()).unwrap(), request);
//! ```

pub use prost;

/// Version 1 of the protocol (package `collector.v1`).
pub mod v1 {
    // Generated code: prost emits no docs for fields the schema leaves uncommented, and
    // its derives trip pedantic lints we do not control.
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/collector.v1.rs"));
}

/// The protocol version this schema describes; sent in `CapabilityRequest`/`Response`.
pub const PROTOCOL_VERSION: u32 = 1;
