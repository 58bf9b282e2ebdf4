//! Byte-level tests of the IPC frame codec: bad input, partial input, many frames at once.

use bytes::{BufMut, BytesMut};
use collector_core::ipc::codec::{encode_frame, EnvelopeCodec, FrameCodec, FrameError};
use collector_core::ipc::proto::{envelope::Body, Envelope, Lagged, StatusRequest};
use tokio_util::codec::{Decoder, Encoder};

fn lagged(n: u64) -> Envelope {
    Envelope {
        request_id: n,
        body: Some(Body::Lagged(Lagged { missed_events: n })),
    }
}

fn raw_frame(len: u32, crc: u32, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32_le(len);
    b.put_u32_le(crc);
    b.put_slice(payload);
    b
}

#[test]
fn incomplete_header_and_payload_wait_for_more() {
    let full = encode_frame(&lagged(7)).unwrap();
    let mut codec = EnvelopeCodec::default();
    for cut in 0..full.len() {
        let mut src = BytesMut::from(&full[..cut]);
        assert!(codec.decode(&mut src).unwrap().is_none(), "cut at {cut}");
        assert_eq!(src.len(), cut, "decoder consumed a partial frame");
    }
}

#[test]
fn split_reads_reassemble_byte_by_byte() {
    let full = encode_frame(&lagged(42)).unwrap();
    let mut codec = EnvelopeCodec::default();
    let mut src = BytesMut::new();
    let mut out = Vec::new();
    for &b in full.iter() {
        src.put_u8(b);
        if let Some(msg) = codec.decode(&mut src).unwrap() {
            out.push(msg);
        }
    }
    assert_eq!(out, vec![lagged(42)]);
    assert!(src.is_empty());
}

#[test]
fn many_frames_in_one_read() {
    let mut codec = EnvelopeCodec::default();
    let mut src = BytesMut::new();
    for i in 1..=100 {
        codec.encode(&lagged(i), &mut src).unwrap();
    }
    // Plus half of one more.
    let extra = encode_frame(&lagged(101)).unwrap();
    src.put_slice(&extra[..extra.len() / 2]);
    let mut got = Vec::new();
    while let Some(msg) = codec.decode(&mut src).unwrap() {
        got.push(msg.request_id);
    }
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
    src.put_slice(&extra[extra.len() / 2..]);
    assert_eq!(codec.decode(&mut src).unwrap(), Some(lagged(101)));
}

#[test]
fn bad_crc_is_reported_with_both_values() {
    let mut frame = encode_frame(&lagged(1)).unwrap();
    let last = frame.len() - 1;
    frame[last] ^= 0xff;
    let err = EnvelopeCodec::default().decode(&mut frame).unwrap_err();
    match err {
        FrameError::CrcMismatch { expected, actual } => assert_ne!(expected, actual),
        other => panic!("expected CrcMismatch, got {other:?}"),
    }
}

#[test]
fn zero_length_is_rejected() {
    let mut src = raw_frame(0, 0, &[]);
    assert!(matches!(
        FrameCodec::default().decode(&mut src),
        Err(FrameError::ZeroLength)
    ));
}

#[test]
fn oversize_is_rejected_before_the_payload_arrives() {
    let mut codec = FrameCodec::new(1024);
    // Only the header: the decoder must refuse without waiting for 1025 bytes.
    let mut src = raw_frame(1025, 0, &[]);
    assert!(matches!(
        codec.decode(&mut src),
        Err(FrameError::TooLarge {
            len: 1025,
            max: 1024
        })
    ));
    // Exactly at the cap is fine.
    let payload = vec![7u8; 1024];
    let mut ok = raw_frame(1024, crc32fast::hash(&payload), &payload);
    assert_eq!(codec.decode(&mut ok).unwrap().unwrap().len(), 1024);
}

#[test]
fn default_cap_is_one_mebibyte() {
    let mut src = raw_frame(1024 * 1024 + 1, 0, &[]);
    assert!(matches!(
        FrameCodec::default().decode(&mut src),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn valid_crc_but_garbage_protobuf_is_a_decode_error() {
    let payload = [0xffu8; 9];
    let mut src = raw_frame(9, crc32fast::hash(&payload), &payload);
    assert!(matches!(
        EnvelopeCodec::default().decode(&mut src),
        Err(FrameError::Decode(_))
    ));
}

#[test]
fn empty_envelope_cannot_be_sent_as_a_frame() {
    // An Envelope with nothing set encodes to zero bytes, which the protocol forbids.
    let mut dst = BytesMut::new();
    assert!(matches!(
        EnvelopeCodec::default().encode(&Envelope::default(), &mut dst),
        Err(FrameError::ZeroLength)
    ));
    let status = Envelope {
        request_id: 0,
        body: Some(Body::StatusRequest(StatusRequest {})),
    };
    EnvelopeCodec::default().encode(&status, &mut dst).unwrap();
    assert_eq!(
        EnvelopeCodec::default().decode(&mut dst).unwrap(),
        Some(status)
    );
}
