//! TCP connection owners and closes, from the kernel's state machine.
//!
//! Hook: BTF tracepoint `inet_sock_set_state` (Linux >= 4.16), every TCP state change.
//!
//! `SOCKS` maps a live `struct sock *` (kernel-only key, never sent out) to who owns the
//! connection, its connection id and the local port seen while the port was still bound
//! (`tcp_set_state(TCP_CLOSE)` runs `inet_put_port()` before the tracepoint, so
//! `inet_num` is 0 at close). A freed sock's address is reused by the next sock, so
//! every birth of a TCP sock (any transition out of CLOSE, and a child's LISTEN ->
//! SYN_RECV) drops what the map held for that address first: a close is never
//! attributed to a previous owner. The map is a plain hash map, not an LRU: nothing is
//! evicted silently; an insert into a full map is counted (`NET_OWNER_MAP_FULL`), and
//! so is a stale entry dropped at a birth (`NET_OWNER_STALE`).

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_current_task, bpf_get_current_task_btf, bpf_ktime_get_boot_ns, bpf_task_pt_regs,
        },
    },
    macros::{btf_tracepoint, map},
    maps::{HashMap, PerCpuArray},
    programs::BtfTracePointContext,
    EbpfContext,
};
use collector_common::{net_flags, NetRecord, RecordHeader, RecordKind};

use crate::{
    common::{
        copy_header, count_emitted, count_lost, excluded, fill_header, net_wakeup_flags,
        read_kernel, NET_EVENTS,
    },
    net::{fill_tuple, PENDING_SOCK, TCP_CLOSE},
    offsets::get,
};

use collector_common::abi::tcp_state::{
    ESTABLISHED as TCP_ESTABLISHED, LISTEN as TCP_LISTEN, SYN_RECV as TCP_SYN_RECV,
    SYN_SENT as TCP_SYN_SENT,
};
/// `PF_IO_WORKER`: an io_uring worker thread (io-wq).
const PF_IO_WORKER: u32 = 0x10;
/// x86_64 `__NR_io_uring_enter`: inline io_uring issue runs inside it.
const NR_IO_URING_ENTER: u64 = 426;

/// Indices of `NET_COUNTERS` (per CPU; read by the loader, shown in status).
pub(crate) const NET_OWNER_MAP_FULL: u32 = 0;
/// A stale owner entry dropped when a new sock was born at its address.
pub(crate) const NET_OWNER_STALE: u32 = 1;
/// A socket call could not be remembered between entry and exit (map full).
pub(crate) const NET_PENDING_FULL: u32 = 2;

/// Network-domain counters that are not per record kind.
#[map]
static NET_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(4, 0);

#[inline(always)]
pub(crate) fn net_count(index: u32) {
    if let Some(c) = NET_COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot; tracepoint programs do not nest on one CPU for one slot.
        unsafe { *c += 1 };
    }
}

/// Who owns a tracked TCP connection.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SockOwner {
    /// The owning task at connect/accept.
    pub header: RecordHeader,
    /// Connection id reported for this connection.
    pub id: u64,
    /// `net_flags` of the connect/accept (io_uring, compat).
    pub flags: u32,
    /// Local port while it was bound (0 until known).
    pub local_port: u16,
    /// 1 while the connect event is still to be emitted (no syscall exit will: io_uring).
    pub connect_unreported: u16,
}

#[map]
static SOCKS: HashMap<u64, SockOwner> = HashMap::with_max_entries(65536, 0);

/// SipHash-1-3 key, random per load (set by the loader).
#[unsafe(no_mangle)]
static CONN_ID_KEY: [u64; 2] = [0; 2];

#[inline(always)]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// Connection id: SipHash-1-3 of (sock address, birth time) under a random per-load key.
/// Without the key the id says nothing about the address (no KASLR leak).
#[inline(always)]
pub(crate) fn conn_id(sk: u64, birth_ns: u64) -> u64 {
    let k0 = unsafe { core::ptr::read_volatile(&CONN_ID_KEY[0]) };
    let k1 = unsafe { core::ptr::read_volatile(&CONN_ID_KEY[1]) };
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    for m in [sk, birth_ns, 16u64 << 56] {
        v[3] ^= m;
        sipround(&mut v);
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    sipround(&mut v);
    sipround(&mut v);
    sipround(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The id of a tracked connection.
#[inline(always)]
pub(crate) fn owner_id(sk: u64) -> Option<u64> {
    unsafe { SOCKS.get(sk) }.map(|o| o.id)
}

/// Remembers the local port of a tracked connection while it is bound.
#[inline(always)]
pub(crate) fn capture_local_port(sk: u64, port: u16) {
    if port == 0 {
        return;
    }
    if let Some(o) = SOCKS.get_ptr_mut(sk) {
        unsafe { (*o).local_port = port };
    }
}

/// Makes `header`'s task the owner of `sk` (accept); returns the connection id.
#[inline(always)]
pub(crate) fn track_owner(sk: u64, header: &RecordHeader, local_port: u16, flags: u32) -> u64 {
    let id = conn_id(sk, header.ktime_ns);
    let owner = SockOwner {
        header: *header,
        id,
        flags,
        local_port,
        connect_unreported: 0,
    };
    if SOCKS.insert(sk, owner, 0).is_err() {
        net_count(NET_OWNER_MAP_FULL);
    }
    id
}

/// A new sock at `sk`: whatever the map held there belonged to a freed sock.
#[inline(always)]
fn drop_stale(sk: u64) {
    if SOCKS.remove(sk).is_ok() {
        net_count(NET_OWNER_STALE);
    }
}

/// True when the current task issues the connect through io_uring: an io-wq worker,
/// or inline issue inside `io_uring_enter`.
#[inline(always)]
fn in_io_uring() -> bool {
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let flags: u32 = read_kernel(task, get::OFF_NET_TASK_FLAGS()).unwrap_or(0);
        if flags & PF_IO_WORKER != 0 {
            return true;
        }
        // The syscall the task is in: orig_ax of its saved user registers.
        let current = bpf_get_current_task_btf();
        let regs = bpf_task_pt_regs(current) as *const u8;
        if regs.is_null() {
            return false;
        }
        let nr: u64 = read_kernel(regs, get::OFF_REGS_ORIG_AX()).unwrap_or(u64::MAX);
        nr == NR_IO_URING_ENTER
    }
}

/// CLOSE -> SYN_SENT, in the connecting task inside `tcp_v{4,6}_connect`.
#[inline(always)]
fn active_birth(sk: u64) {
    drop_stale(sk);
    let pid_tgid = bpf_get_current_pid_tgid();
    if excluded(pid_tgid) {
        return;
    }
    let tid = pid_tgid as u32;
    let mut owner = SockOwner {
        header: unsafe { core::mem::zeroed() },
        id: 0,
        flags: 0,
        local_port: 0,
        connect_unreported: 0,
    };
    unsafe { fill_header(&raw mut owner.header, RecordKind::Connect, pid_tgid) };
    owner.id = conn_id(sk, owner.header.ktime_ns);
    match PENDING_SOCK.get_ptr_mut(tid) {
        // The kernel's own connecting sock, whatever the fd points at by now.
        Some(p) if unsafe { (*p).kind } == RecordKind::Connect as u32 => unsafe {
            (*p).sk = sk;
            (*p).conn_id = owner.id;
            owner.flags = (*p).flags;
        },
        _ => {
            // No connect syscall of ours in flight: io_uring (or a kernel socket).
            if in_io_uring() {
                owner.flags = net_flags::IO_URING;
            }
            owner.connect_unreported = 1;
        }
    }
    if SOCKS.insert(sk, owner, 0).is_err() {
        net_count(NET_OWNER_MAP_FULL);
    }
}

/// Emits the connect of a connection that no syscall exit reported (io_uring), once
/// its port is known.
#[inline(always)]
fn late_connect(sk: *const u8, owner: *mut SockOwner) {
    let Some(mut entry) = NET_EVENTS.reserve::<NetRecord>(0) else {
        count_lost(RecordKind::Connect);
        return;
    };
    let rec = entry.as_mut_ptr();
    let inet = unsafe {
        copy_header(&raw mut (*rec).header, &raw const (*owner).header);
        (*rec).result = 0;
        fill_tuple(rec, sk)
    };
    if !inet {
        entry.discard(0);
        return;
    }
    unsafe {
        (*rec).conn_id = (*owner).id;
        (*rec).net_flags = (*owner).flags;
        (*rec).state = TCP_ESTABLISHED;
        (*rec).prev_state = TCP_SYN_SENT;
        (*owner).connect_unreported = 0;
        if (*owner).local_port == 0 {
            (*owner).local_port = (*rec).local_port;
        }
    }
    entry.submit(net_wakeup_flags(size_of::<NetRecord>() as u64));
    count_emitted(RecordKind::Connect);
}

#[inline(always)]
fn close(sk: *const u8, old_state: u32) {
    let key = sk as u64;
    let Some(owner) = (unsafe { SOCKS.get(key) }).copied() else {
        return;
    };
    let _ = SOCKS.remove(key);
    let Some(mut entry) = NET_EVENTS.reserve::<NetRecord>(0) else {
        count_lost(RecordKind::Close);
        return;
    };
    let rec = entry.as_mut_ptr();
    let inet = unsafe {
        copy_header(&raw mut (*rec).header, &raw const owner.header);
        (*rec).header.kind = RecordKind::Close as u32;
        (*rec).header.flags = 0;
        (*rec).header.ktime_ns = bpf_ktime_get_boot_ns();
        (*rec).result = 0;
        fill_tuple(rec, sk)
    };
    if !inet {
        entry.discard(0);
        return;
    }
    unsafe {
        (*rec).state = TCP_CLOSE;
        (*rec).prev_state = old_state;
        (*rec).conn_id = owner.id;
        (*rec).net_flags = owner.flags;
        (*rec).local_port = if owner.local_port != 0 {
            owner.local_port
        } else {
            // Not seen while bound (closed during the connect call): inet_sport is
            // left alone by inet_put_port().
            u16::from_be(read_kernel(sk, get::OFF_NET_INET_SPORT()).unwrap_or(0))
        };
    }
    entry.submit(net_wakeup_flags(size_of::<NetRecord>() as u64));
    count_emitted(RecordKind::Close);
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    // The sock as a plain number: the verifier forbids arithmetic (the connection-id
    // hash) on the trusted BTF pointer that `ctx.arg(0)` would give.
    let Ok(sk_addr) = (unsafe { read_kernel::<u64>(ctx.as_ptr() as *const u8, 0) }) else {
        return 0;
    };
    let sk = sk_addr as *const u8;
    let old_state = ctx.arg::<u64>(1) as u32;
    let new_state = ctx.arg::<u64>(2) as u32;
    if new_state == TCP_CLOSE {
        close(sk, old_state);
    } else if old_state == TCP_CLOSE {
        if new_state == TCP_SYN_SENT {
            active_birth(sk as u64);
        } else {
            drop_stale(sk as u64);
        }
    } else if old_state == TCP_LISTEN && new_state == TCP_SYN_RECV {
        drop_stale(sk as u64);
    } else if old_state == TCP_SYN_SENT && new_state == TCP_ESTABLISHED {
        if let Some(owner) = SOCKS.get_ptr_mut(sk as u64) {
            if unsafe { (*owner).connect_unreported } != 0 {
                late_connect(sk, owner);
            } else if unsafe { (*owner).local_port } == 0 {
                let port: u16 = unsafe { read_kernel(sk, get::OFF_SK_NUM()) }.unwrap_or(0);
                unsafe { (*owner).local_port = port };
            }
        }
    }
    0
}

/// `IORING_OP_ACCEPT`.
const IORING_OP_ACCEPT: u8 = 13;

/// An io_uring accept's completion, in the task (or io-wq worker of the process) that
/// owns the ring: the new fd is in `cqe->res` and already installed, so it resolves to
/// the accepted sock like an `accept(2)` exit. Fixed-file accepts (a direct descriptor
/// index in `res`) resolve to whatever regular fd has that number, if any: not covered.
///
/// Hook: BTF tracepoint `io_uring:io_uring_complete` (Linux >= 5.19 for this argument
/// list: ctx, req, cqe).
#[btf_tracepoint(function = "io_uring_complete")]
pub fn io_uring_complete_net(ctx: BtfTracePointContext) -> i32 {
    // Plain numbers (as in `inet_sock_set_state`): probe reads of the argument slots.
    let base = ctx.as_ptr() as *const u8;
    let Ok(req) = (unsafe { read_kernel::<u64>(base, 8) }) else {
        return 0;
    };
    let opcode: u8 =
        unsafe { read_kernel(req as *const u8, get::OFF_NET_IO_KIOCB_OPCODE()) }.unwrap_or(0);
    if opcode != IORING_OP_ACCEPT {
        return 0;
    }
    let Ok(cqe) = (unsafe { read_kernel::<u64>(base, 16) }) else {
        return 0;
    };
    // struct io_uring_cqe { u64 user_data; s32 res; u32 flags; }
    let res: i32 = unsafe { read_kernel(cqe as *const u8, 8) }.unwrap_or(-1);
    crate::net::exit_accept(res as i64, net_flags::IO_URING);
    0
}
