//! The file domain's part of the shared `sys_exit` program (`sys_exit.rs`): native
//! opens without an entry hook, and the exits of every file call made through the
//! 32-bit entry.
//!
//! Why: `open`, `openat` and `creat` are the hottest file calls. With classic
//! per-syscall tracepoints each one paid an entry program (stash the arguments in a
//! hash map), an exit program (look them up and delete them) and the perf tracepoint
//! buffer set-up of both. The syscall's arguments are still in the task's saved
//! registers at exit, so the BTF `sys_exit` program reads them there: one program, no
//! map. It already had to run for every syscall (the 32-bit entry is only visible
//! here), so other syscalls pay one register read and a compare, as before.
//!
//! x86_64 numbers: open 2, creat 85, openat 257 (checked after `TS_COMPAT`, since the
//! i386 numbers mean other calls). The other native file calls (openat2, unlink, rename,
//! mkdir, ...) are stashed at entry by the filesystem part of `sys_enter_shared`
//! (`file::native_enter`); their exits are written here (`file::native_exit`).

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, programs::BtfTracePointContext};
use collector_common::RecordKind;

use crate::{
    common::{excluded, syscall_arg_btf},
    file::{emit_one_path, is_native_stashed, native_exit, pending, CREAT_FLAGS},
    file_compat::{compat_exit_from_regs, is_file_call32_at_exit},
    net_compat::in_compat_syscall,
};

const NR_OPEN: u64 = 2;
const NR_CREAT: u64 = 85;
const NR_OPENAT: u64 = 257;

const AT_FDCWD: u64 = collector_common::abi::AT_FDCWD as i64 as u64;

/// Whether syscall `nr` (either entry's numbering) may be a file call this part
/// records at its exit. `sys_exit_shared` asks it too, before any part runs.
#[inline(always)]
pub(crate) fn exit_wanted(nr: u64) -> bool {
    matches!(nr, NR_OPEN | NR_CREAT | NR_OPENAT)
        || is_native_stashed(nr)
        || is_file_call32_at_exit(nr)
}

/// The filesystem domain's part of the shared `sys_exit` program (`sys_exit_shared`).
#[inline(always)]
pub(crate) fn on_sys_exit(ctx: &BtfTracePointContext, regs: *const u8, nr: u64) -> i32 {
    if !exit_wanted(nr) {
        return 0;
    }
    let native = matches!(nr, NR_OPEN | NR_CREAT | NR_OPENAT);
    let stashed = is_native_stashed(nr);
    let ret: i64 = ctx.arg(1);
    if in_compat_syscall() {
        compat_exit_from_regs(regs, nr, ret);
        return 0;
    }
    if stashed {
        native_exit(nr, ret);
        return 0;
    }
    if !native {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if excluded(pid_tgid) {
        return 0;
    }
    let a = |n: usize| syscall_arg_btf(regs, n);
    let p = match nr {
        NR_OPENAT => pending(RecordKind::Open, a(0), a(1), a(2), a(3)),
        NR_OPEN => pending(RecordKind::Open, AT_FDCWD, a(0), a(1), a(2)),
        _ => pending(RecordKind::Open, AT_FDCWD, a(0), CREAT_FLAGS, a(1)),
    };
    emit_one_path(pid_tgid, &p, ret);
    0
}
