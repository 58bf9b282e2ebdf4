//! Network calls through the 32-bit syscall entry (`int $0x80`, `CONFIG_IA32_EMULATION`).
//!
//! Hooks: the network parts of the shared BTF `sys_enter`/`sys_exit` programs
//! (`compat_enter`, `on_sys_exit`; no tracefs needed), and `raw_net_compat_enter` on the
//! raw `sys_enter` in the raw set. The per-syscall
//! tracepoints do not fire for compat syscalls on x86, and their numbers are the i386
//! ones, so these programs act only when the task is in a compat syscall
//! (`current->thread_info.status & TS_COMPAT`) and return at once otherwise. Covers
//! `socketcall` (i386 102: the call number in `bx`, its arguments as an array of u32 in
//! user memory at `cx`) and the direct i386 socket syscalls (bind 361, connect 362,
//! listen 363, accept4 364, sendto 369, sendmsg 370). Arguments are in bx, cx, dx, si,
//! di, bp. Events carry `net_flags::COMPAT`.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::raw_tracepoint,
    programs::{BtfTracePointContext, RawTracePointContext},
};
use collector_common::{net_flags::COMPAT, RecordKind};

use crate::{
    common::read_kernel,
    net::{
        enter_sock_call, exit_accept, exit_sock_call, is_native_socket_call, native_exit, udp_send,
    },
    offsets::get,
};

/// `TS_COMPAT` in `thread_info.status` (x86).
const TS_COMPAT: u32 = 0x2;

const NR32_SOCKETCALL: u64 = 102;
const NR32_BIND: u64 = 361;
const NR32_CONNECT: u64 = 362;
const NR32_LISTEN: u64 = 363;
const NR32_ACCEPT4: u64 = 364;
const NR32_SENDTO: u64 = 369;
const NR32_SENDMSG: u64 = 370;

const SYS_BIND: u64 = 2;
const SYS_CONNECT: u64 = 3;
const SYS_LISTEN: u64 = 4;
const SYS_ACCEPT: u64 = 5;
const SYS_SENDTO: u64 = 11;
const SYS_SENDMSG: u64 = 16;
const SYS_ACCEPT4: u64 = 18;

/// Set by the loader when this kernel has `thread_info.status` and i386 `pt_regs`
/// names (x86_64 with BTF); 0 makes every program here return at once.
#[unsafe(no_mangle)]
static HAS_COMPAT_SYSCALLS: u32 = 0;

/// True when the current task is in a 32-bit (compat) syscall.
#[inline(always)]
pub(crate) fn in_compat_syscall() -> bool {
    if unsafe { core::ptr::read_volatile(&HAS_COMPAT_SYSCALLS) } == 0 {
        return false;
    }
    // A typed load from the BTF task pointer: no helper read. The file domain's
    // `sys_exit` program asks this for every syscall whose number is a file call.
    let status: u32 = unsafe {
        crate::common::load_btf(
            crate::common::current_task_btf(),
            get::OFF_NET_TASK_TI_STATUS(),
        )
    };
    status & TS_COMPAT != 0
}

/// An i386 syscall number this file handles.
#[inline(always)]
fn is_socket_call32(id: u64) -> bool {
    matches!(
        id,
        NR32_SOCKETCALL
            | NR32_BIND
            | NR32_CONNECT
            | NR32_LISTEN
            | NR32_ACCEPT4
            | NR32_SENDTO
            | NR32_SENDMSG
    )
}

/// i386 syscall argument `n` (bx, cx, dx, si, di, bp); the file domain's 32-bit
/// programs use it too.
#[inline(always)]
pub(crate) fn arg32(regs: *const u8, n: usize) -> u64 {
    let off = match n {
        0 => get::OFF_NET_REGS_BX(),
        1 => get::OFF_NET_REGS_CX(),
        2 => get::OFF_REGS_DX(),
        3 => get::OFF_REGS_SI(),
        4 => get::OFF_REGS_DI(),
        _ => get::OFF_NET_REGS_BP(),
    };
    // A 32-bit argument: the upper half of the saved register is not the caller's.
    unsafe { read_kernel::<u64>(regs, off) }.unwrap_or(0) & 0xffff_ffff
}

/// `sendmsg` with a `struct compat_msghdr` (`u32 msg_name; s32 msg_namelen; ...`).
#[inline(always)]
fn sendmsg32(fd: u64, msg: u64) {
    if msg == 0 {
        return;
    }
    let Ok(hdr) = (unsafe { bpf_probe_read_user(msg as *const [u32; 2]) }) else {
        return;
    };
    udp_send(fd, hdr[0] as u64, hdr[1] as u64, COMPAT);
}

/// The raw-tracepoint form of [`compat_enter`] (the `syscall_hooks = "raw"` set).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_net_compat_enter(ctx: RawTracePointContext) -> i32 {
    compat_enter(ctx.arg(0), ctx.arg(1));
    0
}

/// Whether syscall `id` (either entry's numbering) may be a socket call this domain
/// records at its exit. `sys_exit_shared` asks it too, before any part runs.
#[inline(always)]
pub(crate) fn exit_wanted(id: u64) -> bool {
    is_native_socket_call(id) || is_socket_call32(id)
}

/// Whether syscall `id` may be a socket call whose entry this domain stashes (native
/// or 32-bit numbering). `sys_enter_shared` asks it before any part runs.
#[inline(always)]
pub(crate) fn enter_wanted(id: u64) -> bool {
    crate::net::native_enter_wanted(id) || is_socket_call32(id)
}

/// The entry of a socket call through the 32-bit entry: stashes what its exit reports.
/// The network part of `sys_enter_shared` runs it for the syscalls `enter_wanted` names.
#[inline(always)]
pub(crate) fn compat_enter(regs: *const u8, id: u64) {
    // The number first (no helper call): of these, only 102 is also an x86_64 syscall
    // (getuid); 361-370 are unassigned there. Every other syscall returns here.
    if !is_socket_call32(id) || !in_compat_syscall() {
        return;
    }
    let a = |n| arg32(regs, n);
    match id {
        NR32_CONNECT => enter_sock_call(RecordKind::Connect, a(0), a(1), a(2), COMPAT),
        NR32_BIND => enter_sock_call(RecordKind::Bind, a(0), a(1), a(2), COMPAT),
        NR32_LISTEN => enter_sock_call(RecordKind::Listen, a(0), 0, 0, COMPAT),
        NR32_SENDTO => udp_send(a(0), a(4), a(5), COMPAT),
        NR32_SENDMSG => sendmsg32(a(0), a(1)),
        NR32_SOCKETCALL => {
            let call = a(0);
            if !matches!(
                call,
                SYS_BIND | SYS_CONNECT | SYS_LISTEN | SYS_SENDTO | SYS_SENDMSG
            ) {
                return;
            }
            let Ok(args) = (unsafe { bpf_probe_read_user(a(1) as *const [u32; 6]) }) else {
                return;
            };
            let s = |n: usize| args[n] as u64;
            match call {
                SYS_CONNECT => enter_sock_call(RecordKind::Connect, s(0), s(1), s(2), COMPAT),
                SYS_BIND => enter_sock_call(RecordKind::Bind, s(0), s(1), s(2), COMPAT),
                SYS_LISTEN => enter_sock_call(RecordKind::Listen, s(0), 0, 0, COMPAT),
                SYS_SENDTO => udp_send(s(0), s(4), s(5), COMPAT),
                SYS_SENDMSG => sendmsg32(s(0), s(1)),
                _ => {}
            }
        }
        _ => {}
    }
}

/// The network domain's part of the shared `sys_exit` program (`sys_exit_shared`, a
/// BTF tracepoint, not raw like the entry: its `regs` argument is a typed pointer, so
/// the number `id` is a plain load instead of a helper call). Every syscall on the
/// machine passes here.
#[inline(always)]
pub(crate) fn on_sys_exit(ctx: &BtfTracePointContext, regs: *const u8, id: u64) -> i32 {
    if !exit_wanted(id) {
        return 0;
    }
    let native = is_native_socket_call(id);
    if !in_compat_syscall() {
        if native {
            native_exit(id, ctx.arg(1));
        }
        return 0;
    }
    // The return value of a 32-bit call is the low half, sign-extended.
    let result = ctx.arg::<u64>(1) as u32 as i32 as i64;
    match id {
        NR32_CONNECT | NR32_BIND | NR32_LISTEN | NR32_SENDTO | NR32_SENDMSG => {
            exit_sock_call(result)
        }
        NR32_ACCEPT4 => exit_accept(result, COMPAT),
        NR32_SOCKETCALL => match arg32(regs, 0) {
            SYS_CONNECT | SYS_BIND | SYS_LISTEN | SYS_SENDTO | SYS_SENDMSG => {
                exit_sock_call(result)
            }
            SYS_ACCEPT | SYS_ACCEPT4 => exit_accept(result, COMPAT),
            _ => {}
        },
        _ => {}
    }
    0
}
