//! The one program on the `sys_exit` tracepoint, shared by the domains.
//!
//! Why one: a program attached to `sys_exit` runs for every syscall on the machine,
//! watched or not, and each one costs every syscall 70-100 ns here (the tracepoint's
//! call into the program, its RCU and statistics bookkeeping) before its first
//! compare. The process, filesystem and network domains each need that hook (cred
//! changes, opens from the saved registers, the 32-bit entry's file and socket calls),
//! so with all three loaded every syscall paid three programs. Now one program is
//! attached, and it tail-calls the parts of the domains that are running: a tail call
//! is a jump, not another trip through the tracepoint.
//!
//! Each part is its own program (verified on its own: the three bodies in one program
//! took the verifier past its million instructions), loaded but not attached; the
//! loader puts it in `SYS_EXIT_PARTS` at its slot (`collector_common::abi::sys_exit`)
//! when its domain starts and takes it out when the domain stops. A tail call into an
//! empty slot returns, so the parts of stopped domains cost one lookup.
//!
//! Before any tail call, the program asks each domain's `exit_wanted(nr)`, the same
//! function that domain's part asks first: a syscall none of them watches (most of
//! them: read, write, close, mmap...) returns at that compare chain instead of jumping
//! through every part. Measured with all domains loaded, a getppid loop, `bpf_stats`:
//! `sys_enter_shared` 49-60 ns and `sys_exit_shared` 59-73 ns per call before, 33-42
//! and 35-45 ns with the filter, against 30-47 ns for a program that returns at once
//! (docs/kernel.md).

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::ProgramArray,
    programs::BtfTracePointContext,
};
use collector_common::abi::sys_exit::{PARTS, SLOT_FILESYSTEM, SLOT_NETWORK, SLOT_PROCESS};

use crate::common::syscall_nr_btf;

/// The running domains' parts, at their slots.
#[map]
static SYS_EXIT_PARTS: ProgramArray = ProgramArray::with_max_entries(PARTS, 0);

/// Runs the parts in `parts` (of `count` slots) from slot `first` on: the first one
/// present never returns here (it goes on to the parts after it itself). Inlined with
/// a static map and constant slots, so each tail call is a direct jump. `sys_enter.rs`
/// runs its parts the same way.
#[inline(always)]
pub(crate) fn run_parts(parts: &ProgramArray, count: u32, ctx: &BtfTracePointContext, first: u32) {
    let mut slot = first;
    while slot < count {
        // SAFETY: the map holds programs of this type and hook, put there by the loader.
        unsafe { parts.tail_call(ctx, slot) };
        slot += 1;
    }
}

#[inline(always)]
fn parts_from(ctx: &BtfTracePointContext, first: u32) {
    run_parts(&SYS_EXIT_PARTS, PARTS, ctx, first);
}

/// The syscall number and the saved registers of the exiting syscall (a typed load,
/// no helper).
#[inline(always)]
fn syscall(ctx: &BtfTracePointContext) -> (*const u8, u64) {
    let regs: *const u8 = ctx.arg(0);
    (regs, syscall_nr_btf(regs))
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_shared(ctx: BtfTracePointContext) -> i32 {
    let (_, nr) = syscall(&ctx);
    // As in `sys_enter_shared`: the parts' own first question, asked once for all.
    if !(crate::process::exit_wanted(nr)
        || crate::file_sys::exit_wanted(nr)
        || crate::net_compat::exit_wanted(nr))
    {
        return 0;
    }
    parts_from(&ctx, 0);
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_proc(ctx: BtfTracePointContext) -> i32 {
    let (regs, nr) = syscall(&ctx);
    crate::process::on_sys_exit(&ctx, regs, nr);
    parts_from(&ctx, SLOT_PROCESS + 1);
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_file(ctx: BtfTracePointContext) -> i32 {
    let (regs, nr) = syscall(&ctx);
    crate::file_sys::on_sys_exit(&ctx, regs, nr);
    parts_from(&ctx, SLOT_FILESYSTEM + 1);
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_net(ctx: BtfTracePointContext) -> i32 {
    let (regs, nr) = syscall(&ctx);
    crate::net_compat::on_sys_exit(&ctx, regs, nr);
    parts_from(&ctx, SLOT_NETWORK + 1);
    0
}
