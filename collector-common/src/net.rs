//! Network-domain records.

use crate::RecordHeader;

/// Bytes of a unix socket path kept (`sizeof(sun_path)`; abstract names start with NUL).
pub const UNIX_PATH_LEN: usize = 108;

/// Bits of [`NetRecord::net_flags`] and [`UnixRecord::net_flags`].
pub mod net_flags {
    /// Issued through io_uring (`IORING_OP_CONNECT`/`ACCEPT`), not a syscall of its own.
    pub const IO_URING: u32 = 1 << 0;
    /// Issued through the 32-bit syscall entry (`int $0x80`, `TS_COMPAT`).
    pub const COMPAT: u32 = 1 << 1;
    /// A UDP send-count update for a destination already reported (not a new one).
    pub const UPDATE: u32 = 1 << 2;
    /// The remote address comes from the caller's sockaddr, not from the socket (the
    /// connect failed before the kernel recorded a destination).
    pub const REMOTE_FROM_SOCKADDR: u32 = 1 << 3;
    /// An accept's new descriptor held a socket file held more than once, or not the
    /// one read first, when the record was written: another thread replaced (`dup2`)
    /// or duplicated the descriptor after the kernel installed it, so the addresses may
    /// be another socket's.
    pub const FD_RACED: u32 = 1 << 4;
}

/// An inet (IPv4/IPv6) socket event: connect, accept, listen, close, bind, UDP send.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NetRecord {
    /// Common fields of the task the event is attributed to.
    pub header: RecordHeader,
    /// Connection id: a keyed hash of the socket and its birth, never a kernel address.
    pub conn_id: u64,
    /// UDP sends to this destination so far ([`crate::RecordKind::UdpSend`]), else 0.
    pub send_count: u64,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// `sk->sk_protocol` (`IPPROTO_TCP` 6, `IPPROTO_UDP` 17, `IPPROTO_MPTCP` 262, ...).
    pub protocol: u16,
    /// `sk->sk_type` (`SOCK_STREAM` 1, `SOCK_DGRAM` 2, `SOCK_RAW` 3, ...).
    pub sock_type: u16,
    /// Local port (host order).
    pub local_port: u16,
    /// Remote port (host order).
    pub remote_port: u16,
    /// Padding.
    pub _pad: u16,
    /// Local address; IPv4 uses the first four bytes.
    pub local_addr: [u8; 16],
    /// Remote address; IPv4 uses the first four bytes.
    pub remote_addr: [u8; 16],
    /// Kernel TCP state at the event (`TCP_*`), or 0.
    pub state: u32,
    /// TCP state before the event (close: the state the connection closed from), or 0.
    pub prev_state: u32,
    /// Syscall result where there is one (0, a new fd, or a negative errno), else 0.
    pub result: i32,
    /// `sk->sk_err` (positive errno of the last socket error), or 0.
    pub sk_err: i32,
    /// Bits from [`net_flags`].
    pub net_flags: u32,
    /// Padding to a multiple of 8.
    pub _pad2: [u32; 2],
}

/// A unix-socket event (connect or bind) with the socket path.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct UnixRecord {
    /// Common fields of the calling task.
    pub header: RecordHeader,
    /// Socket id: a keyed hash of the socket, never a kernel address.
    pub conn_id: u64,
    /// Syscall result (0 or a negative errno).
    pub result: i32,
    /// Bits from [`net_flags`].
    pub net_flags: u32,
    /// `sk->sk_type` (`SOCK_STREAM` 1, `SOCK_DGRAM` 2, `SOCK_SEQPACKET` 5).
    pub sock_type: u16,
    /// Bytes of `path` the caller passed (an abstract name starts with a NUL byte).
    pub path_len: u16,
    /// Padding.
    pub _pad: u32,
    /// `sun_path` as passed by the caller, read at syscall entry like the kernel does.
    pub path: [u8; UNIX_PATH_LEN],
    /// Padding to a multiple of 8.
    pub _pad2: [u8; 4],
}
