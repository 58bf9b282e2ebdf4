//! Feeds arbitrary bytes, split at arbitrary points, to the envelope decoder.
//!
//! Properties: the decoder never panics, consumes only whole frames, and stops at the
//! first error (as the server does).
#![no_main]

use bytes::BytesMut;
use collector_core::ipc::codec::{EnvelopeCodec, HEADER_BYTES};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const MAX_FRAME_BYTES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // First byte picks the read size, so partial reads are exercised too.
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
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
