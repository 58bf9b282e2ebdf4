//! Network: connect, accept, listen, bind and UDP sends, from the syscalls (native entry
//! here, 32-bit entry in `net_compat.rs`), and TCP connection births and closes from the
//! kernel's own state machine (`net_state.rs`).
//!
//! Hooks: the network parts of the shared BTF `sys_enter`/`sys_exit` programs
//! (`native_enter`, `native_exit`: connect, bind, listen, accept, accept4, sendto,
//! sendmsg, sendmmsg, arguments from the saved registers); classic syscall tracepoints
//! `syscalls/sys_{enter,exit}_*` of the same calls in the portable set; and the BTF
//! tracepoint `inet_sock_set_state` (Linux >= 4.16).
//!
//! The socket is resolved at syscall ENTRY (fd -> file -> socket -> sock), as the kernel
//! does, so a `dup2` onto the fd during a blocking connect does not change what is
//! reported; for TCP the connecting `struct sock` is then taken from the kernel's own
//! CLOSE -> SYN_SENT transition, which runs in the connecting task inside
//! `tcp_v4_connect`/`tcp_v6_connect`. The caller's sockaddr is read at entry too (the
//! kernel copies it at the start of the call) and kept for unix paths and for connects
//! that fail before the socket has a destination.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::bpf_probe_read_user as read_user_raw,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};
use collector_common::{
    net_flags, NetRecord, RecordKind, UnixRecord, COUNTER_FD_GONE, UNIX_PATH_LEN,
};

use crate::{
    common::{
        count_emitted, count_loss, count_lost, excluded, fd_to_file, fill_header, load_btf,
        net_wakeup_flags, read_kernel, syscall_arg, syscall_arg_btf, NET_EVENTS,
    },
    net_state::{capture_local_port, conn_id, net_count, owner_id, track_owner, NET_PENDING_FULL},
    offsets::get,
};

pub(crate) use collector_common::abi::{AF_INET, AF_INET6, AF_UNIX};
pub(crate) const IPPROTO_TCP: u16 = 6;
pub(crate) const IPPROTO_UDP: u16 = 17;
pub(crate) const IPPROTO_UDPLITE: u16 = 136;
const IPPROTO_ICMP: u16 = 1;
const IPPROTO_ICMPV6: u16 = 58;
const SOCK_RAW: u16 = 3;

/// Whether a send on `sk` to an explicit address is reported: UDP and UDP-Lite, ICMP
/// ping sockets, and raw sockets of any protocol (`SOCK_RAW`: what a process with
/// `CAP_NET_RAW`, a container's root by default, sends past the transport layer).
#[inline(always)]
unsafe fn datagram_watched(sk: *const u8) -> bool {
    let protocol: u16 = unsafe { read_kernel(sk, get::OFF_SK_PROTOCOL()) }.unwrap_or(0);
    if matches!(
        protocol,
        IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_ICMP | IPPROTO_ICMPV6
    ) {
        return true;
    }
    let sk_type: u16 = unsafe { read_kernel(sk, get::OFF_NET_SK_TYPE()) }.unwrap_or(0);
    sk_type == SOCK_RAW
}
const EINPROGRESS: i64 = 115;
pub(crate) use collector_common::abi::tcp_state::CLOSE as TCP_CLOSE;

/// Bytes of the caller's sockaddr kept (`sizeof(struct sockaddr_un)` rounded up).
pub(crate) const SOCKADDR_LEN: usize = 112;

/// A socket call between its entry and its exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct PendingSock {
    /// The `struct sock *` resolved at entry (for TCP connect: the one that connected).
    pub sk: u64,
    /// Connection id given at the TCP connect's birth (0 until then): the connection
    /// may be closed and forgotten before the syscall exits (a refused connect).
    pub conn_id: u64,
    /// Record kind to emit at exit.
    pub kind: u32,
    /// `net_flags` bits (compat entry).
    pub flags: u32,
    /// Bytes of `addr` that are valid.
    pub addr_len: u32,
    pub _pad: u32,
    /// The caller's sockaddr, as read at entry.
    pub addr: [u8; SOCKADDR_LEN],
}

/// Socket calls in flight, by thread id.
#[map]
pub(crate) static PENDING_SOCK: HashMap<u32, PendingSock> = HashMap::with_max_entries(16384, 0);

/// Per-CPU scratch to build a `PendingSock` (too big for the stack next to the rest).
#[map]
static PENDING_SCRATCH: PerCpuArray<PendingSock> = PerCpuArray::with_max_entries(1, 0);

/// A UDP destination a socket sent to.
#[repr(C)]
#[derive(Clone, Copy)]
struct UdpFlowKey {
    sk: u64,
    family: u16,
    port: u16,
    _pad: u32,
    /// The address's bytes as four native-order words (see [`set_addr`]).
    addr: [u32; 4],
}

/// Sends counted for a [`UdpFlowKey`], and when the count was last reported.
#[repr(C)]
#[derive(Clone, Copy)]
struct UdpFlow {
    count: u64,
    last_report_ns: u64,
}

/// UDP destinations already reported, per socket. LRU: a flow pushed out is reported
/// again as new at its next send (never lost, possibly repeated).
#[map]
static UDP_FLOWS: LruHashMap<UdpFlowKey, UdpFlow> = LruHashMap::with_max_entries(65536, 0);

/// Minimum time between two send-count updates of one UDP flow; set by the loader.
/// Sends are counted in the kernel; a send at least this long after the flow's last
/// report emits an update carrying the total count.
#[unsafe(no_mangle)]
static UDP_REPORT_INTERVAL_NS: u64 = 10_000_000_000;

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    unsafe { ctx.read_at::<u64>(16 + 8 * n) }.unwrap_or(0)
}

#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    unsafe { ctx.read_at::<i64>(16) }.unwrap_or(-1)
}

/// `struct sock *` behind a socket descriptor of the current task.
#[inline(always)]
pub(crate) unsafe fn fd_to_sock(fd: u64) -> Result<*const u8, i64> {
    unsafe { file_to_sock(fd_to_file(fd)?) }
}

/// The `struct sock *` behind a socket's `struct file`.
#[inline(always)]
unsafe fn file_to_sock(file: *const u8) -> Result<*const u8, i64> {
    unsafe {
        let socket: u64 = read_kernel(file, get::OFF_FILE_PRIVATE_DATA())?;
        let sk: u64 = read_kernel(socket as *const u8, get::OFF_SOCKET_SK())?;
        if sk == 0 {
            return Err(-9);
        }
        Ok(sk as *const u8)
    }
}

/// Writes a 16-byte address field of a record (4-byte aligned, as in `NetRecord`) as
/// four `u32` stores. Why: assigning a `[u8; 16]` (or zeroing one) makes the BPF backend
/// call a byte-wise `memset`/copy subprogram.
#[inline(always)]
pub(crate) unsafe fn set_addr(dst: *mut [u8; 16], words: [u32; 4]) {
    let p = dst.cast::<u32>();
    unsafe {
        core::ptr::write_volatile(p, words[0]);
        core::ptr::write_volatile(p.add(1), words[1]);
        core::ptr::write_volatile(p.add(2), words[2]);
        core::ptr::write_volatile(p.add(3), words[3]);
    }
}

/// Whether a 16-byte address field (4-byte aligned) is all zero, in four loads.
#[inline(always)]
unsafe fn addr_is_zero(src: *const [u8; 16]) -> bool {
    let p = src.cast::<u32>();
    unsafe {
        (core::ptr::read_volatile(p)
            | core::ptr::read_volatile(p.add(1))
            | core::ptr::read_volatile(p.add(2))
            | core::ptr::read_volatile(p.add(3)))
            == 0
    }
}

/// Reads a 16-byte kernel address straight into a record field (the helper zeroes it
/// when the read fails).
#[inline(always)]
unsafe fn read_addr(dst: *mut [u8; 16], base: *const u8, offset: u64) {
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            dst.cast(),
            16,
            base.wrapping_add(offset as usize).cast(),
        );
    }
}

/// Fills the 4-tuple, protocol, type, state and error from `sk`; false for non-inet
/// sockets.
#[inline(always)]
pub(crate) unsafe fn fill_tuple(rec: *mut NetRecord, sk: *const u8) -> bool {
    if packed_sock_common() {
        return unsafe { fill_tuple_packed(rec, sk) };
    }
    unsafe {
        let family: u16 = read_kernel(sk, get::OFF_SK_FAMILY()).unwrap_or(0);
        if family != AF_INET && family != AF_INET6 {
            return false;
        }
        (*rec).family = family;
        (*rec).protocol = read_kernel(sk, get::OFF_SK_PROTOCOL()).unwrap_or(0);
        (*rec).sock_type = read_kernel(sk, get::OFF_NET_SK_TYPE()).unwrap_or(0);
        (*rec).local_port = read_kernel(sk, get::OFF_SK_NUM()).unwrap_or(0);
        (*rec).remote_port = u16::from_be(read_kernel(sk, get::OFF_SK_DPORT()).unwrap_or(0));
        (*rec).sk_err = read_kernel(sk, get::OFF_NET_SK_ERR()).unwrap_or(0);
        (*rec).state = read_kernel::<u8>(sk, get::OFF_NET_SK_STATE()).unwrap_or(0) as u32;
        clear_tuple_rest(rec);
        if family == AF_INET {
            // Network byte order, as stored: the first four bytes of the field.
            let local: u32 = read_kernel(sk, get::OFF_SK_RCV_SADDR()).unwrap_or(0);
            let remote: u32 = read_kernel(sk, get::OFF_SK_DADDR()).unwrap_or(0);
            set_addr(&raw mut (*rec).local_addr, [local, 0, 0, 0]);
            set_addr(&raw mut (*rec).remote_addr, [remote, 0, 0, 0]);
        } else {
            read_addr(&raw mut (*rec).local_addr, sk, get::OFF_SK_V6_RCV_SADDR());
            read_addr(&raw mut (*rec).remote_addr, sk, get::OFF_SK_V6_DADDR());
        }
        true
    }
}

/// The fields of a `NetRecord` after the tuple that `fill_tuple` does not read from the
/// socket: zero. Volatile for the padding: adjacent zero stores are otherwise merged into
/// a call of the byte-wise `memset` subprogram.
#[inline(always)]
unsafe fn clear_tuple_rest(rec: *mut NetRecord) {
    unsafe {
        (*rec).prev_state = 0;
        (*rec).send_count = 0;
        (*rec).net_flags = 0;
        (*rec)._pad = 0;
        core::ptr::write_volatile(&raw mut (*rec)._pad2[0], 0);
        core::ptr::write_volatile(&raw mut (*rec)._pad2[1], 0);
    }
}

/// Whether `sock_common` starts as it has for a long time: `skc_daddr`,
/// `skc_rcv_saddr` (0, 4), `skc_dport`, `skc_num` (12, 14), `skc_family`, `skc_state`
/// (16, 18), and `sk_type` follows `sk_protocol`. Then [`fill_tuple_packed`] reads
/// them in two helper calls instead of eight. Frozen globals: the verifier keeps one
/// branch.
#[inline(always)]
fn packed_sock_common() -> bool {
    get::OFF_SK_DADDR() == 0
        && get::OFF_SK_RCV_SADDR() == 4
        && get::OFF_SK_DPORT() == 12
        && get::OFF_SK_NUM() == 14
        && get::OFF_SK_FAMILY() == 16
        && get::OFF_NET_SK_STATE() == 18
        && get::OFF_NET_SK_TYPE() == get::OFF_SK_PROTOCOL() + 2
}

/// [`fill_tuple`] on the layout [`packed_sock_common`] checked: the first 24 bytes of
/// `sock_common` in one read, protocol and type in another, `sk_err` in a third.
#[inline(always)]
unsafe fn fill_tuple_packed(rec: *mut NetRecord, sk: *const u8) -> bool {
    unsafe {
        // Little-endian words: [daddr | rcv_saddr], [hash | dport | num],
        // [family | state | flags | bound_dev_if].
        let Ok(head) = read_kernel::<[u64; 3]>(sk, 0) else {
            return false;
        };
        let family = head[2] as u16;
        if family != AF_INET && family != AF_INET6 {
            return false;
        }
        (*rec).family = family;
        let proto_type: u32 = read_kernel(sk, get::OFF_SK_PROTOCOL()).unwrap_or(0);
        (*rec).protocol = proto_type as u16;
        (*rec).sock_type = (proto_type >> 16) as u16;
        (*rec).local_port = (head[1] >> 48) as u16;
        (*rec).remote_port = u16::from_be((head[1] >> 32) as u16);
        (*rec).sk_err = read_kernel(sk, get::OFF_NET_SK_ERR()).unwrap_or(0);
        (*rec).state = ((head[2] >> 16) as u8) as u32;
        clear_tuple_rest(rec);
        if family == AF_INET {
            // Network byte order, as stored: the first four bytes of the field.
            set_addr(
                &raw mut (*rec).local_addr,
                [(head[0] >> 32) as u32, 0, 0, 0],
            );
            set_addr(&raw mut (*rec).remote_addr, [head[0] as u32, 0, 0, 0]);
        } else {
            read_addr(&raw mut (*rec).local_addr, sk, get::OFF_SK_V6_RCV_SADDR());
            read_addr(&raw mut (*rec).remote_addr, sk, get::OFF_SK_V6_DADDR());
        }
        true
    }
}

/// Port and address (as four native-order words of its bytes) from a
/// sockaddr_in/sockaddr_in6 in `addr` (family checked by caller). Words, not a zeroed
/// byte array: see [`set_addr`].
#[inline(always)]
fn sockaddr_inet(addr: &[u8; SOCKADDR_LEN], family: u16) -> (u16, [u32; 4]) {
    let port = u16::from_be_bytes([addr[2], addr[3]]);
    let word = |at: usize| u32::from_ne_bytes([addr[at], addr[at + 1], addr[at + 2], addr[at + 3]]);
    let ip = if family == AF_INET {
        [word(4), 0, 0, 0]
    } else {
        // sockaddr_in6: port, flowinfo (4), addr (16) at 8.
        [word(8), word(12), word(16), word(20)]
    };
    (port, ip)
}

#[inline(always)]
fn sockaddr_family(addr: &[u8; SOCKADDR_LEN]) -> u16 {
    u16::from_ne_bytes([addr[0], addr[1]])
}

/// Records a socket call at entry: the socket behind `fd` and the caller's sockaddr.
#[inline(always)]
pub(crate) fn enter_sock_call(kind: RecordKind, fd: u64, uaddr: u64, addr_len: u64, flags: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if excluded(pid_tgid) {
        return;
    }
    let Ok(sk) = (unsafe { fd_to_sock(fd) }) else {
        // Not a socket (or no such fd): the call fails with EBADF/ENOTSOCK, nothing to
        // attribute.
        return;
    };
    stash(kind, pid_tgid, sk as u64, uaddr, addr_len, flags);
}

#[inline(always)]
fn stash(kind: RecordKind, pid_tgid: u64, sk: u64, uaddr: u64, addr_len: u64, flags: u32) {
    let Some(p) = PENDING_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    unsafe {
        (*p).sk = sk;
        (*p).conn_id = 0;
        (*p).kind = kind as u32;
        (*p).flags = flags;
        (*p)._pad = 0;
        // Zeroed as words (a `[0; SOCKADDR_LEN]` store is a byte-wise `memset` call):
        // what the read leaves short stays zero.
        let words = (&raw mut (*p).addr).cast::<u64>();
        for i in 0..SOCKADDR_LEN / 8 {
            core::ptr::write_volatile(words.add(i), 0);
        }
        let mut n = addr_len as u32;
        if n > SOCKADDR_LEN as u32 {
            n = SOCKADDR_LEN as u32;
        }
        (*p).addr_len = 0;
        if uaddr != 0
            && n > 0
            && read_user_raw((&raw mut (*p).addr).cast(), n, uaddr as *const _) == 0
        {
            (*p).addr_len = n;
        }
        // By reference: a copy of the value would cost as much stack again.
        let value: &PendingSock = &*p;
        if PENDING_SOCK.insert(pid_tgid as u32, value, 0).is_err() {
            count_lost(kind);
            net_count(NET_PENDING_FULL);
        }
    }
}

/// Emits the record of a socket call at its exit.
#[inline(always)]
pub(crate) fn exit_sock_call(result: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(p) = PENDING_SOCK.get_ptr(tid) else {
        return;
    };
    let p: &PendingSock = unsafe { &*p };
    let family = sockaddr_family(&p.addr);
    let kind = p.kind;
    if family == AF_UNIX && (kind == RecordKind::Connect as u32 || kind == RecordKind::Bind as u32)
    {
        let unix_kind = if kind == RecordKind::Connect as u32 {
            RecordKind::UnixConnect
        } else {
            RecordKind::UnixBind
        };
        emit_unix(unix_kind, pid_tgid, p, result);
    } else if kind == RecordKind::Connect as u32 {
        emit_inet(RecordKind::Connect, pid_tgid, p, result);
    } else if kind == RecordKind::Bind as u32 {
        emit_inet(RecordKind::Bind, pid_tgid, p, result);
    } else if kind == RecordKind::Listen as u32 {
        emit_inet(RecordKind::Listen, pid_tgid, p, result);
    } else if kind == RecordKind::UdpSend as u32 {
        udp_flow(pid_tgid, p, result);
    }
    let _ = PENDING_SOCK.remove(tid);
}

#[inline(always)]
fn emit_unix(kind: RecordKind, pid_tgid: u64, p: &PendingSock, result: i64) {
    let Some(mut entry) = NET_EVENTS.reserve::<UnixRecord>(0) else {
        count_lost(kind);
        return;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*rec).header, kind, pid_tgid);
        (*rec).conn_id = conn_id(p.sk, 0);
        (*rec).result = result as i32;
        (*rec).net_flags = p.flags;
        (*rec).sock_type = read_kernel(p.sk as *const u8, get::OFF_NET_SK_TYPE()).unwrap_or(0);
        (*rec)._pad = 0;
        (*rec)._pad2 = [0; 4];
        // sun_path follows the 2-byte family.
        let mut len = p.addr_len;
        len = len.saturating_sub(2);
        if len > UNIX_PATH_LEN as u32 {
            len = UNIX_PATH_LEN as u32;
        }
        (*rec).path_len = len as u16;
        let mut i = 0;
        while i < UNIX_PATH_LEN {
            (*rec).path[i] = p.addr[2 + i];
            i += 1;
        }
    }
    entry.submit(net_wakeup_flags(size_of::<UnixRecord>() as u64));
    count_emitted(kind);
}

#[inline(always)]
fn emit_inet(kind: RecordKind, pid_tgid: u64, p: &PendingSock, result: i64) {
    let sk = p.sk as *const u8;
    let Some(mut entry) = NET_EVENTS.reserve::<NetRecord>(0) else {
        count_lost(kind);
        return;
    };
    let rec = entry.as_mut_ptr();
    let inet = unsafe {
        fill_header(&raw mut (*rec).header, kind, pid_tgid);
        (*rec).result = result as i32;
        fill_tuple(rec, sk)
    };
    if !inet {
        entry.discard(0);
        return;
    }
    unsafe {
        (*rec).net_flags = p.flags;
        (*rec).conn_id = if p.conn_id != 0 {
            p.conn_id
        } else {
            owner_id(p.sk).unwrap_or_else(|| conn_id(p.sk, 0))
        };
        let family = sockaddr_family(&p.addr);
        if (family == AF_INET || family == AF_INET6) && p.addr_len >= 8 {
            let (port, ip) = sockaddr_inet(&p.addr, family);
            if kind == RecordKind::Connect
                && ((result < 0 && result != -EINPROGRESS)
                    || ((*rec).remote_port == 0 && addr_is_zero(&raw const (*rec).remote_addr)))
            {
                // A failed connect: the kernel resets the destination on the way out
                // (tcp_disconnect), so report what was asked.
                (*rec).family = family;
                (*rec).remote_port = port;
                set_addr(&raw mut (*rec).remote_addr, ip);
                (*rec).net_flags |= net_flags::REMOTE_FROM_SOCKADDR;
            } else if kind == RecordKind::Bind && result < 0 {
                (*rec).family = family;
                (*rec).local_port = port;
                set_addr(&raw mut (*rec).local_addr, ip);
                (*rec).net_flags |= net_flags::REMOTE_FROM_SOCKADDR;
            }
        }
        if (*rec).local_port == 0 {
            // Unbound by now (a failed connect releases its port): inet_sport keeps it.
            (*rec).local_port =
                u16::from_be(read_kernel(sk, get::OFF_NET_INET_SPORT()).unwrap_or(0));
        }
        if kind == RecordKind::Connect
            && (result == 0 || result == -EINPROGRESS)
            && (*rec).protocol == IPPROTO_TCP
        {
            capture_local_port(p.sk, (*rec).local_port);
        }
    }
    entry.submit(net_wakeup_flags(size_of::<NetRecord>() as u64));
    count_emitted(kind);
}

/// An accepted connection: the new fd's socket, now owned by the caller.
#[inline(always)]
pub(crate) fn exit_accept(result: i64, flags: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if result < 0 || excluded(pid_tgid) {
        return;
    }
    // The new fd's file, and whether it is still the call's own: as for an open's new
    // fd (`path::resolve_new_fd`), another thread can `dup2` a socket of its choice over
    // the descriptor between the kernel's `fd_install` and this read, and the record
    // would carry that socket's addresses. A just-accepted socket's file is held once
    // (by the table); one `dup2`ed there at least twice.
    let Some(new) = (unsafe { crate::path::NewFd::read(result as u64) }) else {
        // Accepted, but another thread closed the descriptor first: no socket left to
        // describe. Counted, so the hole shows in `status`.
        count_loss(RecordKind::Accept, COUNTER_FD_GONE);
        return;
    };
    let Ok(sk) = (unsafe { file_to_sock(new.file) }) else {
        return;
    };
    let Some(mut entry) = NET_EVENTS.reserve::<NetRecord>(0) else {
        count_lost(RecordKind::Accept);
        return;
    };
    let rec = entry.as_mut_ptr();
    let inet = unsafe {
        fill_header(&raw mut (*rec).header, RecordKind::Accept, pid_tgid);
        (*rec).result = result as i32;
        fill_tuple(rec, sk)
    };
    if !inet {
        entry.discard(0);
        return;
    }
    let raced = unsafe { new.raced() };
    unsafe {
        (*rec).net_flags = if raced {
            flags | net_flags::FD_RACED
        } else {
            flags
        };
        (*rec).conn_id = if (*rec).protocol == IPPROTO_TCP && (*rec).state != TCP_CLOSE {
            track_owner(sk as u64, &(*rec).header, (*rec).local_port, flags)
        } else {
            conn_id(sk as u64, 0)
        };
    }
    entry.submit(net_wakeup_flags(size_of::<NetRecord>() as u64));
    count_emitted(RecordKind::Accept);
}

/// A UDP send to an explicit address, at entry: remembered for its exit, where the
/// socket has its local port (an unbound socket is bound by the send itself).
#[inline(always)]
pub(crate) fn udp_send(fd: u64, uaddr: u64, addr_len: u64, flags: u32) {
    if uaddr == 0 || addr_len < 8 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if excluded(pid_tgid) {
        return;
    }
    let Ok(sk) = (unsafe { fd_to_sock(fd) }) else {
        return;
    };
    if !unsafe { datagram_watched(sk) } {
        return;
    }
    stash(
        RecordKind::UdpSend,
        pid_tgid,
        sk as u64,
        uaddr,
        addr_len,
        flags,
    );
}

/// A UDP send at exit: reported once per (socket, destination), counted in the kernel
/// after that, with an update at most every `UDP_REPORT_INTERVAL_NS`.
#[inline(always)]
fn udp_flow(pid_tgid: u64, p: &PendingSock, result: i64) {
    let family = sockaddr_family(&p.addr);
    if (family != AF_INET && family != AF_INET6) || p.addr_len < 8 {
        return;
    }
    let (port, addr) = sockaddr_inet(&p.addr, family);
    let key = UdpFlowKey {
        sk: p.sk,
        family,
        port,
        _pad: 0,
        addr,
    };
    udp_flow_key(pid_tgid, key, p.flags, result);
}

/// Dedup and count one UDP (socket, destination) send; report it when new or due.
#[inline(always)]
fn udp_flow_key(pid_tgid: u64, key: UdpFlowKey, flags: u32, result: i64) {
    let sk = key.sk as *const u8;
    let family = key.family;
    let now = unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns() };
    let (count, update) = match UDP_FLOWS.get_ptr_mut(key) {
        Some(flow) => unsafe {
            // Not atomic (the BPF target has no Rust atomics): two threads sending on
            // one socket at the same instant can lose an increment of the count, never
            // a new-destination event (those are decided by BPF_NOEXIST below).
            (*flow).count += 1;
            let count = (*flow).count;
            let interval = core::ptr::read_volatile(&UDP_REPORT_INTERVAL_NS);
            if now.wrapping_sub((*flow).last_report_ns) < interval {
                return;
            }
            (*flow).last_report_ns = now;
            (count, true)
        },
        None => {
            let flow = UdpFlow {
                count: 1,
                last_report_ns: now,
            };
            // BPF_NOEXIST: of two threads racing on a new flow, one reports it.
            if UDP_FLOWS.insert(key, flow, 1).is_err() {
                return;
            }
            (1, false)
        }
    };
    let Some(mut entry) = NET_EVENTS.reserve::<NetRecord>(0) else {
        count_lost(RecordKind::UdpSend);
        return;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*rec).header, RecordKind::UdpSend, pid_tgid);
        (*rec).result = result as i32;
        fill_tuple(rec, sk);
        (*rec).family = family;
        (*rec).remote_port = key.port;
        set_addr(&raw mut (*rec).remote_addr, key.addr);
        (*rec).send_count = count;
        (*rec).net_flags = flags | if update { net_flags::UPDATE } else { 0 };
        (*rec).conn_id = conn_id(sk as u64, 0);
    }
    entry.submit(net_wakeup_flags(size_of::<NetRecord>() as u64));
    count_emitted(RecordKind::UdpSend);
}

/// `sendmsg(fd, msg, ..)`: the destination is `msg->msg_name` (`msg_namelen` bytes).
#[inline(always)]
fn udp_sendmsg(fd: u64, msg: u64) {
    if msg == 0 {
        return;
    }
    // struct user_msghdr: void *msg_name; int msg_namelen; (x86_64 UAPI layout)
    let Ok(hdr) = (unsafe { bpf_probe_read_user(msg as *const [u64; 2]) }) else {
        return;
    };
    udp_send(fd, hdr[0], hdr[1] & 0xffff_ffff, 0);
}

/// Destinations of one `sendmmsg` call kept from entry to exit.
const MMSG_MAX: usize = 8;

#[repr(C)]
#[derive(Clone, Copy)]
struct PendingMmsg {
    sk: u64,
    /// Destinations read (at most `MMSG_MAX`).
    n: u32,
    _pad: u32,
    dests: [UdpFlowKey; MMSG_MAX],
}

#[map]
static PENDING_MMSG: HashMap<u32, PendingMmsg> = HashMap::with_max_entries(4096, 0);

#[map]
static MMSG_SCRATCH: PerCpuArray<PendingMmsg> = PerCpuArray::with_max_entries(1, 0);

/// `sendmmsg(fd, msgvec, vlen, ..)`: the destinations of the first `MMSG_MAX`
/// messages (`struct mmsghdr` is 64 bytes: a `user_msghdr` and `msg_len`), read at
/// entry as the kernel reads them.
#[inline(always)]
fn udp_sendmmsg_enter(fd: u64, msgvec: u64, vlen: u64) {
    if msgvec == 0 || vlen == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if excluded(pid_tgid) {
        return;
    }
    let Ok(sk) = (unsafe { fd_to_sock(fd) }) else {
        return;
    };
    if !unsafe { datagram_watched(sk) } {
        return;
    }
    let Some(m) = MMSG_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let m = unsafe { &mut *m };
    m.sk = sk as u64;
    m.n = 0;
    m._pad = 0;
    for i in 0..MMSG_MAX {
        let d = &mut m.dests[i];
        d.sk = sk as u64;
        d.family = 0;
        if (i as u64) >= vlen {
            continue;
        }
        let hdr = msgvec + 64 * i as u64;
        let Ok(name) = (unsafe { bpf_probe_read_user(hdr as *const [u64; 2]) }) else {
            continue;
        };
        if name[0] == 0 || (name[1] & 0xffff_ffff) < 8 {
            continue;
        }
        let Ok(head) = (unsafe { bpf_probe_read_user(name[0] as *const [u8; 24]) }) else {
            continue;
        };
        let family = u16::from_ne_bytes([head[0], head[1]]);
        if family != AF_INET && family != AF_INET6 {
            continue;
        }
        d.family = family;
        d.port = u16::from_be_bytes([head[2], head[3]]);
        d._pad = 0;
        let word =
            |at: usize| u32::from_ne_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        d.addr = if family == AF_INET {
            [word(4), 0, 0, 0]
        } else {
            [word(8), word(12), word(16), word(20)]
        };
        m.n += 1;
    }
    if m.n == 0 {
        return;
    }
    let value: &PendingMmsg = m;
    if PENDING_MMSG.insert(pid_tgid as u32, value, 0).is_err() {
        count_lost(RecordKind::UdpSend);
        net_count(NET_PENDING_FULL);
    }
}

/// `sendmmsg` exit: `result` messages went out; each destination among them counts.
#[inline(always)]
fn udp_sendmmsg_exit(result: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(m) = PENDING_MMSG.get_ptr(tid) else {
        return;
    };
    let m: &PendingMmsg = unsafe { &*m };
    for i in 0..MMSG_MAX {
        if (i as i64) < result && m.dests[i].family != 0 {
            udp_flow_key(pid_tgid, m.dests[i], 0, 1);
        }
    }
    let _ = PENDING_MMSG.remove(tid);
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendmmsg")]
pub fn sys_enter_sendmmsg(ctx: TracePointContext) -> u32 {
    udp_sendmmsg_enter(arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_sendmmsg")]
pub fn sys_exit_sendmmsg(ctx: TracePointContext) -> u32 {
    udp_sendmmsg_exit(ret(&ctx));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    enter_sock_call(
        RecordKind::Connect,
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        0,
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    exit_sock_call(ret(&ctx));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_bind")]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    enter_sock_call(
        RecordKind::Bind,
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        0,
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_bind")]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    exit_sock_call(ret(&ctx));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_listen")]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    enter_sock_call(RecordKind::Listen, arg(&ctx, 0), 0, 0, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_listen")]
pub fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    exit_sock_call(ret(&ctx));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    exit_accept(ret(&ctx), 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    exit_accept(ret(&ctx), 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    udp_send(arg(&ctx, 0), arg(&ctx, 4), arg(&ctx, 5), 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_sendto")]
pub fn sys_exit_sendto(ctx: TracePointContext) -> u32 {
    exit_sock_call(ret(&ctx));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendmsg")]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    udp_sendmsg(arg(&ctx, 0), arg(&ctx, 1));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_sendmsg")]
pub fn sys_exit_sendmsg(ctx: TracePointContext) -> u32 {
    exit_sock_call(ret(&ctx));
    0
}

// Fallback without tracefs: raw `sys_enter`/`sys_exit` (see file.rs). x86_64 numbers;
// 32-bit (compat) calls are left to `net_compat.rs`, which knows the i386 numbers.
const NR_SENDTO: u64 = 44;
const NR_SENDMSG: u64 = 46;
const NR_CONNECT: u64 = 42;
const NR_ACCEPT: u64 = 43;
const NR_BIND: u64 = 49;
const NR_LISTEN: u64 = 50;
const NR_ACCEPT4: u64 = 288;
const NR_SENDMMSG: u64 = 307;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_net_sys_enter(ctx: RawTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    stash_native(
        ctx.arg(1),
        |n| syscall_arg(regs, n),
        || unsafe { read_kernel(regs, get::OFF_NET_REGS_R9()) }.unwrap_or(0),
    );
    0
}

/// The entry of a native socket call, from the `sys_enter` tracepoint's typed `regs`
/// (the network part of `sys_enter_shared`): what the per-syscall `sys_enter_*`
/// programs above do. Only the syscalls `net_compat::enter_wanted` names get here from
/// `sys_enter_shared`.
#[inline(always)]
pub(crate) fn native_enter(regs: *const u8, nr: u64) {
    stash_native(
        nr,
        |n| syscall_arg_btf(regs, n),
        || unsafe { load_btf(regs, get::OFF_NET_REGS_R9()) },
    );
}

/// The entry of the x86_64 socket call `nr`, with its arguments 0-4 read by `arg` and
/// its sixth (r9) by `r9`; shared by the raw fallback and `sys_enter_shared`'s part.
#[inline(always)]
fn stash_native(nr: u64, arg: impl Fn(usize) -> u64, r9: impl FnOnce() -> u64) {
    if !native_enter_wanted(nr) || crate::net_compat::in_compat_syscall() {
        // The i386 numbers mean other calls: the 32-bit entry is `net_compat`'s.
        return;
    }
    match nr {
        NR_CONNECT => enter_sock_call(RecordKind::Connect, arg(0), arg(1), arg(2), 0),
        NR_BIND => enter_sock_call(RecordKind::Bind, arg(0), arg(1), arg(2), 0),
        NR_LISTEN => enter_sock_call(RecordKind::Listen, arg(0), 0, 0, 0),
        // The sixth argument (addrlen) is in r9.
        NR_SENDTO => udp_send(arg(0), arg(4), r9(), 0),
        NR_SENDMSG => udp_sendmsg(arg(0), arg(1)),
        _ => udp_sendmmsg_enter(arg(0), arg(1), arg(2)),
    }
}

/// The exit of a native socket call (the network part of `sys_exit_shared`): what the
/// per-syscall `sys_exit_*` programs above do. The caller has checked that this is not
/// the 32-bit entry.
#[inline(always)]
pub(crate) fn native_exit(nr: u64, result: i64) {
    match nr {
        NR_CONNECT | NR_BIND | NR_LISTEN | NR_SENDTO | NR_SENDMSG => exit_sock_call(result),
        NR_ACCEPT | NR_ACCEPT4 => exit_accept(result, 0),
        NR_SENDMMSG => udp_sendmmsg_exit(result),
        _ => {}
    }
}

/// An x86_64 socket call whose entry `native_enter` stashes.
#[inline(always)]
pub(crate) fn native_enter_wanted(nr: u64) -> bool {
    matches!(
        nr,
        NR_CONNECT | NR_BIND | NR_LISTEN | NR_SENDTO | NR_SENDMSG | NR_SENDMMSG
    )
}

/// An x86_64 socket call `native_exit` handles.
#[inline(always)]
pub(crate) fn is_native_socket_call(nr: u64) -> bool {
    matches!(
        nr,
        NR_CONNECT
            | NR_BIND
            | NR_LISTEN
            | NR_ACCEPT
            | NR_ACCEPT4
            | NR_SENDTO
            | NR_SENDMSG
            | NR_SENDMMSG
    )
}
