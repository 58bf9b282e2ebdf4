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
//! The calls that name their file by a descriptor are read here the same way: they
//! have no user string to read before the kernel does, so the exit sees all they pass.
//! Their entry only notes the descriptor's file (`file::note_fd`), which the exit
//! compares with the one it walks (`fd_raced`). `fchmod` and `fchown` report the descriptor's file, walked
//! in the kernel (`FILE_FLAG_BY_FD`): without them, `fchmod(fd, 04755)` set the setuid
//! bit unseen while `chmod` of the same file was reported. `open_by_handle_at` reports
//! the file it opened (`FILE_FLAG_BY_HANDLE`): an open by file handle reaches files
//! outside the caller's mount namespace and root, the "shocker" container escape.
//!
//! x86_64 numbers: open 2, creat 85, openat 257, fchmod 91, fchown 93, ftruncate 77,
//! open_by_handle_at 304 (checked after `TS_COMPAT`, since the i386 numbers mean other
//! calls). The other native file calls (openat2, unlink, rename,
//! mkdir, ...) are stashed at entry by the filesystem part of `sys_enter_shared`
//! (`file::native_enter`); their exits are written here (`file::native_exit`).

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, programs::BtfTracePointContext};
use collector_common::{RecordKind, FILE_FLAG_BY_HANDLE};

use crate::{
    common::{excluded, syscall_arg_btf},
    file::{
        by_fd, emit_one_path, is_native_stashed, native_exit, pending, take_fd_note,
        truncate_pending, with_entry_key, CREAT_FLAGS,
    },
    file_compat::{compat_exit_from_regs, is_file_call32_at_exit},
    net_compat::in_compat_syscall,
};

const NR_OPEN: u64 = 2;
const NR_CREAT: u64 = 85;
const NR_OPENAT: u64 = 257;
const NR_FCHMOD: u64 = 91;
const NR_FCHOWN: u64 = 93;
const NR_OPEN_BY_HANDLE_AT: u64 = 304;
const NR_FTRUNCATE: u64 = 77;

/// A native call whose arguments this part reads at exit, with no entry hook.
#[inline(always)]
fn is_native_at_exit(nr: u64) -> bool {
    matches!(
        nr,
        NR_OPEN
            | NR_CREAT
            | NR_OPENAT
            | NR_FCHMOD
            | NR_FCHOWN
            | NR_OPEN_BY_HANDLE_AT
            | NR_FTRUNCATE
    )
}

/// A native call read at its exit that names its file by a descriptor, noted at entry
/// (`file::note_fd`): another thread can swap the descriptor while it runs.
#[inline(always)]
pub(crate) fn is_native_by_fd(nr: u64) -> bool {
    matches!(nr, NR_FCHMOD | NR_FCHOWN | NR_FTRUNCATE)
}

const AT_FDCWD: u64 = collector_common::abi::AT_FDCWD as i64 as u64;

/// Whether syscall `nr` (either entry's numbering) may be a file call this part
/// records at its exit. `sys_exit_shared` asks it too, before any part runs.
#[inline(always)]
pub(crate) fn exit_wanted(nr: u64) -> bool {
    is_native_at_exit(nr) || is_native_stashed(nr) || is_file_call32_at_exit(nr)
}

/// The filesystem domain's part of the shared `sys_exit` program (`sys_exit_shared`).
#[inline(always)]
pub(crate) fn on_sys_exit(ctx: &BtfTracePointContext, regs: *const u8, nr: u64) -> i32 {
    if !exit_wanted(nr) {
        return 0;
    }
    let native = is_native_at_exit(nr);
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
    // The descriptor's file noted at entry, taken back whatever happens next.
    let entry_key = if is_native_by_fd(nr) {
        take_fd_note()
    } else {
        0
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    if excluded(pid_tgid) {
        return 0;
    }
    let a = |n: usize| syscall_arg_btf(regs, n);
    let p = match nr {
        NR_OPENAT => pending(RecordKind::Open, a(0), a(1), a(2), a(3)),
        NR_OPEN => pending(RecordKind::Open, AT_FDCWD, a(0), a(1), a(2)),
        NR_CREAT => pending(RecordKind::Open, AT_FDCWD, a(0), CREAT_FLAGS, a(1)),
        // fchmod(fd, mode). These three had their descriptor's file noted at entry
        // (`file::note_fd`), compared with the one walked.
        NR_FCHMOD => with_entry_key(
            by_fd(pending(RecordKind::Chmod, a(0), 0, 0, a(1)), 0),
            entry_key,
        ),
        // fchown(fd, uid, gid): the ids ride in the open_flags and mode slots, as chown's.
        NR_FCHOWN => with_entry_key(
            by_fd(pending(RecordKind::Chown, a(0), 0, a(1), a(2)), 0),
            entry_key,
        ),
        // ftruncate(fd, length): the length's low half in open_flags, high in mode.
        NR_FTRUNCATE => with_entry_key(by_fd(truncate_pending(a(0), 0, a(1)), 0), entry_key),
        // open_by_handle_at(mount_fd, handle, flags)
        _ => by_fd(
            pending(RecordKind::Open, a(0), 0, a(2), 0),
            FILE_FLAG_BY_HANDLE,
        ),
    };
    emit_one_path(pid_tgid, &p, ret);
    0
}
