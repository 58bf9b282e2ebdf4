//! Network: TCP (and UDP) connect, accept, listen, and close of the connections seen.
//!
//! Hooks: classic syscall tracepoints for `connect`, `accept`, `accept4` and `listen`
//! (the event is attributed to the calling process, with the socket's 4-tuple read at
//! syscall exit through fd -> file -> socket -> sock), and the BTF tracepoint
//! `inet_sock_set_state` for closes, attributed to the process that opened or accepted
//! the connection (tracked per socket), since the state change itself often runs in
//! softirq context.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{HashMap, LruHashMap},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use collector_common::{NetRecord, RecordHeader, RecordKind};

use crate::{
    common::{
        count_emitted, count_lost, excluded, fd_to_file, fill_header, net_wakeup_flags,
        read_kernel, syscall_arg, syscall_nr, NET_EVENTS,
    },
    offsets::get,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const EINPROGRESS: i64 = 115;
const TCP_ESTABLISHED: u32 = 1;
const TCP_SYN_SENT: u32 = 2;
const TCP_LISTEN: u32 = 10;
const TCP_CLOSE: u32 = 7;

/// The fd a connect/listen was called with, by thread id.
#[map]
static PENDING_NET: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// Connections we reported, by kernel socket: who owns them, for the close event.
#[map]
static TRACKED_SOCKS: LruHashMap<u64, RecordHeader> = LruHashMap::with_max_entries(65536, 0);

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    unsafe { ctx.read_at::<u64>(16 + 8 * n) }.unwrap_or(0)
}

#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    unsafe { ctx.read_at::<i64>(16) }.unwrap_or(-1)
}

#[inline(always)]
fn stash_fd(kind: RecordKind, fd: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if excluded(pid_tgid) {
        return;
    }
    if PENDING_NET.insert(pid_tgid as u32, fd, 0).is_err() {
        count_lost(kind);
    }
}

#[inline(always)]
fn take_fd() -> Option<(u64, u64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let fd = *unsafe { PENDING_NET.get(tid) }?;
    let _ = PENDING_NET.remove(tid);
    Some((pid_tgid, fd))
}

/// `struct sock *` behind a socket descriptor.
#[inline(always)]
unsafe fn fd_to_sock(fd: u64) -> Result<*const u8, i64> {
    unsafe {
        let file = fd_to_file(fd)?;
        let socket: u64 = read_kernel(file, get::OFF_FILE_PRIVATE_DATA())?;
        let sk: u64 = read_kernel(socket as *const u8, get::OFF_SOCKET_SK())?;
        if sk == 0 {
            return Err(-9);
        }
        Ok(sk as *const u8)
    }
}

/// Fills the 4-tuple and protocol from `sk`; false for non-inet sockets.
#[inline(always)]
unsafe fn fill_tuple(rec: *mut NetRecord, sk: *const u8) -> bool {
    unsafe {
        let family: u16 = read_kernel(sk, get::OFF_SK_FAMILY()).unwrap_or(0);
        if family != AF_INET && family != AF_INET6 {
            return false;
        }
        (*rec).sock_id = sk as u64;
        (*rec).family = family;
        (*rec).protocol = read_kernel(sk, get::OFF_SK_PROTOCOL()).unwrap_or(0);
        (*rec).local_port = read_kernel(sk, get::OFF_SK_NUM()).unwrap_or(0);
        (*rec).remote_port = u16::from_be(read_kernel(sk, get::OFF_SK_DPORT()).unwrap_or(0));
        (*rec).local_addr = [0; 16];
        (*rec).remote_addr = [0; 16];
        if family == AF_INET {
            let local: [u8; 4] = read_kernel(sk, get::OFF_SK_RCV_SADDR()).unwrap_or([0; 4]);
            let remote: [u8; 4] = read_kernel(sk, get::OFF_SK_DADDR()).unwrap_or([0; 4]);
            (*rec).local_addr = [
                local[0], local[1], local[2], local[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ];
            (*rec).remote_addr = [
                remote[0], remote[1], remote[2], remote[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ];
        } else {
            (*rec).local_addr = read_kernel(sk, get::OFF_SK_V6_RCV_SADDR()).unwrap_or([0; 16]);
            (*rec).remote_addr = read_kernel(sk, get::OFF_SK_V6_DADDR()).unwrap_or([0; 16]);
        }
        true
    }
}

#[inline(always)]
fn emit_for_fd(kind: RecordKind, pid_tgid: u64, fd: u64, result: i64, state: u32) {
    let Ok(sk) = (unsafe { fd_to_sock(fd) }) else {
        return;
    };
    let Some(mut entry) = NET_EVENTS.reserve::<NetRecord>(0) else {
        count_lost(kind);
        return;
    };
    let rec = entry.as_mut_ptr();
    let inet = unsafe {
        fill_header(&raw mut (*rec).header, kind, pid_tgid);
        (*rec).state = state;
        (*rec).result = result as i32;
        fill_tuple(rec, sk)
    };
    if !inet {
        entry.discard(0);
        return;
    }
    if kind != RecordKind::Listen && unsafe { (*rec).protocol } == IPPROTO_TCP {
        let _ = TRACKED_SOCKS.insert(sk as u64, unsafe { (*rec).header }, 0);
    }
    entry.submit(net_wakeup_flags());
    count_emitted(kind);
}

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    stash_fd(RecordKind::Connect, arg(&ctx, 0));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    exit_connect(ret(&ctx))
}

#[inline(always)]
fn exit_connect(result: i64) -> u32 {
    let Some((pid_tgid, fd)) = take_fd() else {
        return 0;
    };
    // Report connections that were made or are being made; a refused or invalid
    // connect has no connection behind it.
    if result == 0 || result == -EINPROGRESS {
        let state = if result == 0 {
            TCP_ESTABLISHED
        } else {
            TCP_SYN_SENT
        };
        emit_for_fd(RecordKind::Connect, pid_tgid, fd, result, state);
    }
    0
}

#[inline(always)]
fn exit_accept(ctx: &TracePointContext) -> u32 {
    exit_accept_ret(ret(ctx))
}

#[inline(always)]
fn exit_accept_ret(result: i64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if result < 0 || excluded(pid_tgid) {
        return 0;
    }
    emit_for_fd(
        RecordKind::Accept,
        pid_tgid,
        result as u64,
        0,
        TCP_ESTABLISHED,
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    exit_accept(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    exit_accept(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_listen")]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    stash_fd(RecordKind::Listen, arg(&ctx, 0));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_listen")]
pub fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    exit_listen(ret(&ctx))
}

#[inline(always)]
fn exit_listen(result: i64) -> u32 {
    let Some((pid_tgid, fd)) = take_fd() else {
        return 0;
    };
    if result == 0 {
        emit_for_fd(RecordKind::Listen, pid_tgid, fd, 0, TCP_LISTEN);
    }
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let new_state: u64 = ctx.arg(2);
    if new_state as u32 != TCP_CLOSE {
        return 0;
    }
    let key = sk as u64;
    let Some(owner) = (unsafe { TRACKED_SOCKS.get(key) }).copied() else {
        return 0;
    };
    let _ = TRACKED_SOCKS.remove(key);
    let Some(mut entry) = NET_EVENTS.reserve::<NetRecord>(0) else {
        count_lost(RecordKind::Close);
        return 0;
    };
    let rec = entry.as_mut_ptr();
    let inet = unsafe {
        (*rec).header = owner;
        (*rec).header.kind = RecordKind::Close as u32;
        (*rec).header.flags = 0;
        (*rec).header.ktime_ns = aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns();
        (*rec).state = TCP_CLOSE;
        (*rec).result = 0;
        fill_tuple(rec, sk)
    };
    if !inet {
        entry.discard(0);
        return 0;
    }
    entry.submit(net_wakeup_flags());
    count_emitted(RecordKind::Close);
    0
}

// Fallback without tracefs: raw `sys_enter`/`sys_exit` (see file.rs). x86_64 numbers.
const NR_CONNECT: u64 = 42;
const NR_ACCEPT: u64 = 43;
const NR_LISTEN: u64 = 50;
const NR_ACCEPT4: u64 = 288;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_net_sys_enter(ctx: RawTracePointContext) -> i32 {
    let id: u64 = ctx.arg(1);
    match id {
        NR_CONNECT => stash_fd(RecordKind::Connect, syscall_arg(ctx.arg(0), 0)),
        NR_LISTEN => stash_fd(RecordKind::Listen, syscall_arg(ctx.arg(0), 0)),
        _ => {}
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_net_sys_exit(ctx: RawTracePointContext) -> i32 {
    let id = syscall_nr(ctx.arg(0));
    let result: i64 = ctx.arg(1);
    match id {
        NR_CONNECT => {
            exit_connect(result);
        }
        NR_LISTEN => {
            exit_listen(result);
        }
        NR_ACCEPT | NR_ACCEPT4 => {
            exit_accept_ret(result);
        }
        _ => {}
    }
    0
}
