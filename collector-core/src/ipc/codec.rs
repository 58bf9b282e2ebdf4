//! Frames on the IPC socket.
//!
//! ```text
//! +----------------+----------------+-------------------+
//! | len: u32 LE    | crc: u32 LE    | payload: len bytes|
//! +----------------+----------------+-------------------+
//! ```
//!
//! `crc` is the CRC32 (IEEE) of the payload. A length of zero or above the configured
//! maximum is rejected from the 8-byte header alone, before anything is allocated for the
//! payload; a CRC mismatch is reported once the payload is in. The codecs plug into
//! `tokio_util::codec::Framed`, which handles partial reads and many frames per read:
//! [`FrameCodec`] for raw payloads, [`EnvelopeCodec`] for envelopes (and, on the server,
//! event batches written straight from events), [`ClientCodec`] for a client's reads.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

use collector_proto::v1::envelope::Body;
use collector_proto::v1::Envelope;

use crate::event::CollectionEvent;
use crate::ipc::convert::{event_from_proto, ConvertError};
use crate::ipc::wire::{decode_event_batch, EventBatchFrame, SourceNames};

/// Bytes before the payload: length and CRC.
pub const HEADER_BYTES: usize = 8;

/// Default cap on a payload: 1 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Why a frame could not be read or written.
///
/// Small and unboxed on purpose: the hot decode path returns it by value.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header announced an empty payload, which no valid message produces.
    #[error("frame announces a zero-length payload")]
    ZeroLength,
    /// The header announced (or the encoder produced) more than the maximum.
    #[error("frame payload of {len} bytes exceeds the {max}-byte maximum")]
    TooLarge {
        /// Announced or produced payload length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The payload does not match its checksum: the stream is corrupt or not ours.
    #[error("frame checksum mismatch (header {expected:#010x}, payload {actual:#010x})")]
    CrcMismatch {
        /// CRC from the header.
        expected: u32,
        /// CRC of the received payload.
        actual: u32,
    },
    /// The payload is not a valid `Envelope`.
    #[error("frame payload is not a valid protobuf Envelope")]
    Decode(#[from] prost::DecodeError),
    /// The socket failed.
    #[error("socket I/O failed")]
    Io(#[from] std::io::Error),
}

/// Raw frames: payloads as [`BytesMut`], no protobuf involved.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec that accepts payloads of `1..=max_frame_bytes` bytes.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }

    /// The payload cap.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    fn check_len(&self, len: usize) -> Result<(), FrameError> {
        if len == 0 {
            Err(FrameError::ZeroLength)
        } else if len > self.max_frame_bytes {
            Err(FrameError::TooLarge {
                len,
                max: self.max_frame_bytes,
            })
        } else {
            Ok(())
        }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        if src.len() < HEADER_BYTES {
            return Ok(None);
        }
        let len = u32::from_le_bytes([src[0], src[1], src[2], src[3]]) as usize;
        let expected = u32::from_le_bytes([src[4], src[5], src[6], src[7]]);
        self.check_len(len)?;
        let total = HEADER_BYTES + len;
        if src.len() < total {
            // The length is validated, so reserving for the rest is bounded by the cap.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(HEADER_BYTES);
        let payload = src.split_to(len);
        let actual = crc32fast::hash(&payload);
        if actual != expected {
            return Err(FrameError::CrcMismatch { expected, actual });
        }
        Ok(Some(payload))
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        self.check_len(payload.len())?;
        dst.reserve(HEADER_BYTES + payload.len());
        dst.put_u32_le(payload.len() as u32);
        dst.put_u32_le(crc32fast::hash(payload));
        dst.put_slice(payload);
        Ok(())
    }
}

/// Frames carrying one protobuf [`Envelope`] each.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvelopeCodec {
    frames: FrameCodec,
}

impl EnvelopeCodec {
    /// A codec that accepts payloads of `1..=max_frame_bytes` bytes.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            frames: FrameCodec::new(max_frame_bytes),
        }
    }

    /// The payload cap.
    pub fn max_frame_bytes(&self) -> usize {
        self.frames.max_frame_bytes
    }

    /// Changes the payload cap (a connection's, once its frame limit is negotiated).
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.frames.max_frame_bytes = max_frame_bytes;
    }
}

impl Decoder for EnvelopeCodec {
    type Item = Envelope;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Envelope>, FrameError> {
        match self.frames.decode(src)? {
            Some(payload) => Ok(Some(Envelope::decode(payload.freeze())?)),
            None => Ok(None),
        }
    }
}

impl Encoder<&Envelope> for EnvelopeCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: &Envelope, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = msg.encoded_len();
        self.frames.check_len(len)?;
        write_envelope(msg, len, dst);
        Ok(())
    }
}

/// Writes `msg` (`len` bytes encoded) as one frame.
fn write_envelope(msg: &Envelope, len: usize, dst: &mut BytesMut) {
    write_frame(len, dst, |dst| msg.encode_raw(dst));
}

/// Writes one frame whose payload `write` appends (exactly `len` bytes), straight into
/// the output buffer with the header patched afterwards, so the payload is never copied.
fn write_frame(len: usize, dst: &mut BytesMut, write: impl FnOnce(&mut BytesMut)) {
    dst.reserve(HEADER_BYTES + len);
    let start = dst.len();
    dst.put_bytes(0, HEADER_BYTES);
    write(dst);
    debug_assert_eq!(dst.len() - start - HEADER_BYTES, len);
    let crc = crc32fast::hash(&dst[start + HEADER_BYTES..]);
    dst[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    dst[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

impl Encoder<Envelope> for EnvelopeCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: Envelope, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&msg, dst)
    }
}

impl Encoder<EventBatchFrame<'_>> for EnvelopeCodec {
    type Error = FrameError;

    /// Writes the batch's entries, already encoded (see [`crate::ipc::wire`]), behind
    /// the envelope's tag and length; the bytes are those of the equivalent `Envelope`.
    fn encode(&mut self, frame: EventBatchFrame<'_>, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = frame.payload_len();
        self.frames.check_len(len)?;
        write_frame(len, dst, |dst| frame.write_payload(dst));
        Ok(())
    }
}

/// What a client reads: event batches already converted, everything else as an envelope.
#[derive(Debug, Clone, PartialEq)]
// One value per frame, moved once: boxing the envelope would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Inbound {
    /// An `EventBatch` push.
    Events(DecodedBatch),
    /// Any other envelope.
    Envelope(Envelope),
}

/// The events of one `EventBatch` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedBatch {
    /// The envelope's `request_id` (0 on pushes).
    pub request_id: u64,
    /// The events that converted, in order.
    pub events: Vec<CollectionEvent>,
    /// Why the last of the events that did not convert was rejected, if any did not.
    pub invalid: Option<ConvertError>,
}

/// The client side of the socket: encodes requests as [`Envelope`]s, decodes frames as
/// [`Inbound`], event batches without an intermediate prost message tree.
#[derive(Debug)]
pub struct ClientCodec {
    /// Frames read: the limit the client accepts.
    envelopes: EnvelopeCodec,
    /// Frames written: the server's limit once negotiated.
    send: FrameCodec,
    names: SourceNames,
    /// An emptied event vector handed back with [`recycle`](Self::recycle), decoded into
    /// next: a batch's vector is tens of KiB, and allocating one per frame was a
    /// measurable cost (glibc consolidates its free lists on each large request).
    spare: Vec<CollectionEvent>,
}

impl ClientCodec {
    /// A codec that accepts payloads of `1..=max_frame_bytes` bytes.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            envelopes: EnvelopeCodec::new(max_frame_bytes),
            send: FrameCodec::new(max_frame_bytes),
            names: SourceNames::new(),
            spare: Vec::new(),
        }
    }

    /// Sets the largest payload read (`receive`) and written (`send`), once the
    /// connection's frame limits are negotiated (see [`crate::ipc::frame_limit`]).
    pub fn set_limits(&mut self, receive: usize, send: usize) {
        self.envelopes.set_max_frame_bytes(receive);
        self.send = FrameCodec::new(send);
    }

    /// The largest payload read.
    pub fn max_frame_bytes(&self) -> usize {
        self.envelopes.max_frame_bytes()
    }

    /// The largest payload written.
    pub fn max_send_bytes(&self) -> usize {
        self.send.max_frame_bytes
    }

    /// Hands back the vector of a batch whose events have all been taken, for reuse.
    pub fn recycle(&mut self, mut events: Vec<CollectionEvent>) {
        events.clear();
        if events.capacity() > self.spare.capacity() {
            self.spare = events;
        }
    }

    /// Decodes one payload (a frame's contents).
    pub fn decode_payload(&mut self, payload: Bytes) -> Result<Inbound, FrameError> {
        let mut events = std::mem::take(&mut self.spare);
        if let Some(request_id) = decode_event_batch(&payload, &mut self.names, &mut events) {
            return Ok(Inbound::Events(DecodedBatch {
                request_id,
                events,
                invalid: None,
            }));
        }
        // Not in the layout the fast path takes (or invalid): prost is the reference.
        self.spare = events;
        let env = Envelope::decode(payload)?;
        Ok(match env.body {
            Some(Body::EventBatch(batch)) => {
                let mut events = Vec::with_capacity(batch.events.len());
                let mut invalid = None;
                for ev in batch.events {
                    match event_from_proto(ev) {
                        Ok(ev) => events.push(ev),
                        Err(e) => invalid = Some(e),
                    }
                }
                Inbound::Events(DecodedBatch {
                    request_id: env.request_id,
                    events,
                    invalid,
                })
            }
            body => Inbound::Envelope(Envelope {
                request_id: env.request_id,
                body,
            }),
        })
    }
}

impl Decoder for ClientCodec {
    type Item = Inbound;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, FrameError> {
        match self.envelopes.frames.decode(src)? {
            Some(payload) => self.decode_payload(payload.freeze()).map(Some),
            None => Ok(None),
        }
    }
}

impl Encoder<Envelope> for ClientCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: Envelope, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = msg.encoded_len();
        self.send.check_len(len)?;
        write_envelope(&msg, len, dst);
        Ok(())
    }
}

impl Default for ClientCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

/// Encodes one envelope as a complete frame (for tests, benchmarks and one-shot writes).
pub fn encode_frame(msg: &Envelope) -> Result<BytesMut, FrameError> {
    let mut buf = BytesMut::new();
    EnvelopeCodec::default().encode(msg, &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(payload, &mut buf).unwrap();
        buf
    }

    #[test]
    fn header_layout_is_len_then_crc_little_endian() {
        let buf = frame(b"abc");
        assert_eq!(&buf[0..4], &3u32.to_le_bytes());
        assert_eq!(&buf[4..8], &crc32fast::hash(b"abc").to_le_bytes());
        assert_eq!(&buf[8..], b"abc");
    }

    #[test]
    fn oversize_is_rejected_from_the_header_without_reserving() {
        let mut codec = FrameCodec::new(16);
        let mut src = BytesMut::with_capacity(8);
        src.put_u32_le(u32::MAX);
        src.put_u32_le(0);
        let err = codec.decode(&mut src).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, max: 16 } if len == u32::MAX as usize));
        assert!(
            src.capacity() < 1024,
            "decoder reserved for a rejected frame"
        );
    }

    #[test]
    fn encoder_refuses_oversize_payload() {
        let mut codec = FrameCodec::new(2);
        let mut dst = BytesMut::new();
        assert!(matches!(
            codec.encode(&b"abc"[..], &mut dst),
            Err(FrameError::TooLarge { len: 3, max: 2 })
        ));
        assert!(dst.is_empty());
    }
}
