//! The frame limit each side of a connection works with, negotiated in the handshake.
//!
//! Each side declares the largest frame payload it accepts (`max_frame_bytes` in
//! `CapabilityRequest` and `CapabilityResponse`). Then:
//! - the server sends nothing larger than [`send_budget`]: the smaller of its own limit
//!   and the client's, so it pages event batches and detection results to it;
//! - the client accepts up to [`client_receive_limit`] (the same number, computed from
//!   the other end) and refuses to send a request above [`client_send_limit`], the
//!   server's limit, with an error naming both sizes.
//!
//! A peer from before the field declares 0, which counts as the 1 MiB every version
//! accepted ([`DEFAULT_MAX_FRAME_BYTES`]). Declared values are clamped to
//! [`MIN_FRAME_BYTES`]`..=`[`MAX_FRAME_BYTES`]: no peer can make the other buffer more
//! than the hard cap per frame, or page into frames too small for a status reply.

use crate::config::{MAX_FRAME_BYTES, MIN_FRAME_BYTES};
use crate::ipc::codec::DEFAULT_MAX_FRAME_BYTES;

/// The limit a peer declared, as the other side counts it: 0 (not declared) is the
/// 1 MiB default, anything else is clamped to the accepted range.
pub fn declared(max_frame_bytes: u32) -> usize {
    match max_frame_bytes {
        0 => DEFAULT_MAX_FRAME_BYTES,
        n => clamp(n as usize),
    }
}

/// A local limit (configuration) clamped to the accepted range, as it is declared.
pub fn clamp(max_frame_bytes: usize) -> usize {
    max_frame_bytes.clamp(MIN_FRAME_BYTES, MAX_FRAME_BYTES)
}

/// The value to put in a `max_frame_bytes` field for a local limit.
pub fn to_wire(max_frame_bytes: usize) -> u32 {
    // The clamp keeps it well below u32::MAX (64 MiB).
    clamp(max_frame_bytes) as u32
}

/// The largest frame a server with limit `server_max` sends to a client that declared
/// `client_declared`.
pub fn send_budget(server_max: usize, client_declared: u32) -> usize {
    clamp(server_max).min(declared(client_declared))
}

/// The largest frame a client with limit `client_max` accepts once the server declared
/// `server_declared`: the server sends no more than that, so there is no reason to
/// accept more, and a server with a larger limit than the client's default (1 MiB) is
/// followed up to the client's own limit.
pub fn client_receive_limit(client_max: usize, server_declared: u32) -> usize {
    send_budget(declared(server_declared), to_wire(client_max))
}

/// The largest request a client sends to a server that declared `server_declared`.
pub fn client_send_limit(server_declared: u32) -> usize {
    declared(server_declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn undeclared_is_the_old_default_and_extremes_are_clamped() {
        assert_eq!(declared(0), MIB, "a client or server from before the field");
        assert_eq!(declared(1), MIN_FRAME_BYTES);
        assert_eq!(declared((MIN_FRAME_BYTES - 1) as u32), MIN_FRAME_BYTES);
        assert_eq!(declared(MIN_FRAME_BYTES as u32), MIN_FRAME_BYTES);
        assert_eq!(declared(8 * MIB as u32), 8 * MIB);
        assert_eq!(declared(MAX_FRAME_BYTES as u32), MAX_FRAME_BYTES);
        assert_eq!(declared(MAX_FRAME_BYTES as u32 + 1), MAX_FRAME_BYTES);
        assert_eq!(declared(u32::MAX), MAX_FRAME_BYTES);
        assert_eq!(to_wire(usize::MAX), MAX_FRAME_BYTES as u32);
        assert_eq!(to_wire(0), MIN_FRAME_BYTES as u32);
    }

    #[test]
    fn the_server_sends_at_most_the_smaller_limit() {
        // A CLI with defaults (declares the hard cap) and an 8 MiB daemon: 8 MiB frames.
        assert_eq!(send_budget(8 * MIB, MAX_FRAME_BYTES as u32), 8 * MIB);
        // An old client: what it always accepted, whatever the daemon's limit.
        assert_eq!(send_budget(8 * MIB, 0), MIB);
        // A small daemon limit wins over a large client one.
        assert_eq!(send_budget(64 * 1024, MAX_FRAME_BYTES as u32), 64 * 1024);
        // A client asking for tiny frames still gets frames that hold a status reply.
        assert_eq!(send_budget(MIB, 10), MIN_FRAME_BYTES);
        // A server configured beyond the hard cap (not through CollectorConfig, which
        // refuses it) still sends no more than the cap.
        assert_eq!(
            send_budget(usize::MAX, MAX_FRAME_BYTES as u32),
            MAX_FRAME_BYTES
        );
    }

    #[test]
    fn both_ends_agree_on_the_limit() {
        for client in [
            0,
            1,
            1000,
            64 * 1024,
            MIB,
            8 * MIB,
            MAX_FRAME_BYTES,
            usize::MAX,
        ] {
            for server in [
                1,
                1000,
                64 * 1024,
                MIB,
                8 * MIB,
                MAX_FRAME_BYTES,
                usize::MAX,
            ] {
                assert_eq!(
                    client_receive_limit(client, to_wire(server)),
                    send_budget(server, to_wire(client)),
                    "client {client}, server {server}"
                );
            }
        }
        // An old server: the client accepts the 1 MiB it always did.
        assert_eq!(client_receive_limit(MAX_FRAME_BYTES, 0), MIB);
        assert_eq!(client_send_limit(0), MIB);
        assert_eq!(client_send_limit(8 * MIB as u32), 8 * MIB);
    }
}
