//! Feeds arbitrary bytes, split at arbitrary points, to the envelope decoder, and the
//! payloads to the direct event-batch decoder.
//!
//! Properties: the decoder never panics, consumes only whole frames, and stops at the
//! first error (as the server does); the direct decoder (`ipc::wire`) never accepts a
//! payload that prost + `event_from_proto` read differently.
#![no_main]

use bytes::BytesMut;
use collector_core::ipc::codec::{EnvelopeCodec, HEADER_BYTES};
use collector_core::ipc::convert::event_from_proto;
use collector_core::ipc::proto::{envelope::Body, Envelope};
use collector_core::ipc::wire::{decode_event_batch, SourceNames};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokio_util::codec::Decoder;

const MAX_FRAME_BYTES: usize = 4096;

/// The direct decoder either steps aside or agrees with prost, the reference.
fn check_direct_decoder(payload: &[u8]) {
    let mut fast = Vec::new();
    let Some(request_id) = decode_event_batch(payload, &mut SourceNames::new(), &mut fast) else {
        assert!(fast.is_empty(), "a refused payload left events behind");
        return;
    };
    let env = Envelope::decode(payload).expect("fast path accepted what prost rejects");
    assert_eq!(env.request_id, request_id);
    let Some(Body::EventBatch(batch)) = env.body else {
        panic!("fast path read an event batch where prost did not");
    };
    let reference = batch
        .events
        .into_iter()
        .map(event_from_proto)
        .collect::<Result<Vec<_>, _>>()
        .expect("fast path accepted events that do not convert");
    // Debug, not PartialEq: NaN metrics must compare equal to themselves.
    assert_eq!(format!("{fast:?}"), format!("{reference:?}"));
}

fuzz_target!(|data: &[u8]| {
    // First byte picks the read size, so partial reads are exercised too.
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    check_direct_decoder(data);
    let chunk = usize::from(chunk).max(1);
    let mut codec = EnvelopeCodec::new(MAX_FRAME_BYTES);
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_envelope)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // Anything left over is a frame still arriving, so no larger than one frame.
        assert!(buf.len() < HEADER_BYTES + MAX_FRAME_BYTES + chunk);
    }
});
