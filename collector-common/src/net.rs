//! Network-domain records.

use crate::RecordHeader;

/// A TCP (or UDP) connection event.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NetRecord {
    /// Common fields of the task the event is attributed to.
    pub header: RecordHeader,
    /// Kernel socket address: stable for the socket's life, used as connection id.
    pub sock_id: u64,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// `IPPROTO_TCP` (6) or `IPPROTO_UDP` (17).
    pub protocol: u16,
    /// Local port (host order).
    pub local_port: u16,
    /// Remote port (host order).
    pub remote_port: u16,
    /// Local address; IPv4 uses the first four bytes.
    pub local_addr: [u8; 16],
    /// Remote address; IPv4 uses the first four bytes.
    pub remote_addr: [u8; 16],
    /// Kernel TCP state at the event (`TCP_*`), or 0.
    pub state: u32,
    /// Syscall result where there is one (0 or a negative errno), else 0.
    pub result: i32,
}
