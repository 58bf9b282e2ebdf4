//! The one program on the `sys_enter` tracepoint, shared by the domains (the entry
//! side of `sys_exit.rs`, built the same way).
//!
//! Why: the file and socket calls used to be watched through per-syscall tracepoints
//! (`syscalls/sys_enter_unlink`, ...). Those fire only for their own call, but the
//! kernel builds them on the raw `sys_enter`/`sys_exit` tracepoints: enabling any one
//! adds the perf syscall probe to both, next to our BPF programs. With two callbacks
//! on a tracepoint the kernel can no longer call its one callback directly, and every
//! syscall on the machine (watched or not) went through an indirect call to each of
//! them: about 100 ns a syscall here. Now the arguments are read from the saved
//! registers by one attached program per tracepoint, which tail-calls the running
//! domains' parts; no per-syscall tracepoint is enabled.

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::ProgramArray,
    programs::BtfTracePointContext,
};
use collector_common::abi::sys_enter::{PARTS, SLOT_FILESYSTEM, SLOT_NETWORK};

/// The running domains' parts, at their slots.
#[map]
static SYS_ENTER_PARTS: ProgramArray = ProgramArray::with_max_entries(PARTS, 0);

#[inline(always)]
fn parts_from(ctx: &BtfTracePointContext, first: u32) {
    crate::sys_exit::run_parts(&SYS_ENTER_PARTS, PARTS, ctx, first);
}

/// The saved registers and the syscall number of the entering syscall (the
/// tracepoint's `regs` and `id` arguments: plain loads, no helper).
#[inline(always)]
fn syscall(ctx: &BtfTracePointContext) -> (*const u8, u64) {
    (ctx.arg(0), ctx.arg(1))
}

#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter_shared(ctx: BtfTracePointContext) -> i32 {
    let (_, nr) = syscall(&ctx);
    // Most syscalls are none of the parts' business: they return here, at one compare
    // chain, instead of jumping through every part (each asks the same question first,
    // through the same functions, so this filter cannot drop what a part would keep).
    if !(crate::file::enter_wanted(nr) || crate::net_compat::enter_wanted(nr)) {
        return 0;
    }
    parts_from(&ctx, 0);
    0
}

#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter_file(ctx: BtfTracePointContext) -> i32 {
    let (regs, nr) = syscall(&ctx);
    crate::file::native_enter(regs, nr);
    parts_from(&ctx, SLOT_FILESYSTEM + 1);
    0
}

#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter_net(ctx: BtfTracePointContext) -> i32 {
    let (regs, nr) = syscall(&ctx);
    crate::net::native_enter(regs, nr);
    crate::net_compat::compat_enter(regs, nr);
    parts_from(&ctx, SLOT_NETWORK + 1);
    0
}
