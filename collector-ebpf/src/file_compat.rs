//! File calls through the 32-bit syscall entry (`int $0x80`, `CONFIG_IA32_EMULATION`).
//!
//! Hooks: raw tracepoints `sys_enter`/`sys_exit`, as in `net_compat`: the per-syscall
//! tracepoints do not fire for compat syscalls on x86, so an unprivileged process could
//! otherwise open, unlink or rename unseen. The i386 numbers are compared first (no
//! helper call for other syscalls), then `TS_COMPAT`, because several of them are
//! native x86_64 calls too (5 fstat, 8 lseek, 10 mprotect, 437 openat2). Arguments are
//! in bx, cx, dx, si, di, bp. The records are the native ones with `FILE_FLAG_COMPAT`.

use aya_ebpf::{
    helpers::bpf_probe_read_user, macros::raw_tracepoint, programs::RawTracePointContext,
};
use collector_common::{RecordKind, FILE_FLAG_BY_HANDLE, FILE_FLAG_COMPAT};

use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::{
    common::{excluded, syscall_nr},
    file::{
        by_fd, emit_one_path, exit_one_path_ret, exit_rename_ret, length_halves, pending,
        setxattr_pending, stash, stash_rename_flagged, stash_setxattrat, stash_two_compat,
        take_fd_note, with_entry_key, PendingFile, AT_EMPTY_PATH,
    },
    net_compat::{arg32, in_compat_syscall},
};

const NR32_OPEN: u64 = 5;
const NR32_CREAT: u64 = 8;
const NR32_UNLINK: u64 = 10;
const NR32_RENAME: u64 = 38;
const NR32_OPENAT: u64 = 295;
const NR32_UNLINKAT: u64 = 301;
const NR32_RENAMEAT: u64 = 302;
const NR32_RENAMEAT2: u64 = 353;
const NR32_OPENAT2: u64 = 437;
// Seen at exit only (`sys_exit_file`), from the saved registers:
const NR32_LINK: u64 = 9;
const NR32_CHMOD: u64 = 15;
/// 16-bit ids (`old_uid_t`).
const NR32_LCHOWN16: u64 = 16;
const NR32_MKDIR: u64 = 39;
const NR32_RMDIR: u64 = 40;
const NR32_SYMLINK: u64 = 83;
/// 16-bit ids.
const NR32_CHOWN16: u64 = 182;
const NR32_LCHOWN32: u64 = 198;
const NR32_CHOWN32: u64 = 212;
const NR32_MKDIRAT: u64 = 296;
const NR32_FCHOWNAT: u64 = 298;
const NR32_LINKAT: u64 = 303;
const NR32_SYMLINKAT: u64 = 304;
const NR32_FCHMODAT: u64 = 306;
const NR32_MEMFD_CREATE: u64 = 356;
const NR32_FCHMODAT2: u64 = 452;
// By descriptor, read at exit too (see `file_sys`):
const NR32_FCHMOD: u64 = 94;
/// 16-bit ids.
const NR32_FCHOWN16: u64 = 95;
const NR32_FCHOWN32: u64 = 207;
const NR32_OPEN_BY_HANDLE_AT: u64 = 342;
const NR32_MKNOD: u64 = 14;
const NR32_MKNODAT: u64 = 297;
/// `length` 32 bits, signed.
const NR32_TRUNCATE: u64 = 92;
const NR32_FTRUNCATE: u64 = 93;
/// `length` 64 bits, in two registers (low, high).
const NR32_TRUNCATE64: u64 = 193;
const NR32_FTRUNCATE64: u64 = 194;
const NR32_SETXATTR: u64 = 226;
const NR32_LSETXATTR: u64 = 227;
const NR32_FSETXATTR: u64 = 228;
const NR32_SETXATTRAT: u64 = 463;

/// `AT_FDCWD` as an i386 register holds it (32 bits; `dirfd32` sign-extends it).
const AT_FDCWD: u64 = collector_common::abi::AT_FDCWD as u32 as u64;
const O_CREAT: u64 = 0o100;

/// An i386 syscall number this file handles.
#[inline(always)]
pub(crate) fn is_file_call32(id: u64) -> bool {
    matches!(
        id,
        NR32_OPEN
            | NR32_CREAT
            | NR32_UNLINK
            | NR32_RENAME
            | NR32_OPENAT
            | NR32_UNLINKAT
            | NR32_RENAMEAT
            | NR32_RENAMEAT2
            | NR32_OPENAT2
    )
}

/// An i386 syscall number `sys_exit_file` handles: those of the raw fallback and the
/// other file calls of the native hooks (link, symlink, mkdir, rmdir, chmod, chown,
/// memfd_create and their *at forms). Several are frequent native calls too (9 mmap,
/// 16 ioctl, 39 getpid): those then pay one `TS_COMPAT` read.
#[inline(always)]
pub(crate) fn is_file_call32_at_exit(id: u64) -> bool {
    is_file_call32(id)
        || matches!(
            id,
            NR32_LINK
                | NR32_CHMOD
                | NR32_LCHOWN16
                | NR32_MKDIR
                | NR32_RMDIR
                | NR32_SYMLINK
                | NR32_CHOWN16
                | NR32_LCHOWN32
                | NR32_CHOWN32
                | NR32_MKDIRAT
                | NR32_FCHOWNAT
                | NR32_LINKAT
                | NR32_SYMLINKAT
                | NR32_FCHMODAT
                | NR32_MEMFD_CREATE
                | NR32_FCHMODAT2
                | NR32_FCHMOD
                | NR32_FCHOWN16
                | NR32_FCHOWN32
                | NR32_OPEN_BY_HANDLE_AT
                | NR32_MKNOD
                | NR32_MKNODAT
                | NR32_TRUNCATE
                | NR32_FTRUNCATE
                | NR32_TRUNCATE64
                | NR32_FTRUNCATE64
                | NR32_SETXATTR
                | NR32_LSETXATTR
                | NR32_FSETXATTR
                | NR32_SETXATTRAT
        )
}

/// A 16-bit id argument (`old_uid_t`): `(u16)-1` means "unchanged", as `u32::MAX` does
/// for the 32-bit calls.
#[inline(always)]
fn id16(v: u64) -> u64 {
    let v = v & 0xffff;
    if v == 0xffff {
        u32::MAX as u64
    } else {
        v
    }
}

/// A 32-bit `compat_off_t` length as the (low, high) halves of its 64-bit value
/// (sign-extended: a negative length is what the caller passed, refused with EINVAL).
#[inline(always)]
fn len32(v: u64) -> (u64, u64) {
    length_halves(v as u32 as i32 as i64 as u64)
}

/// A dirfd argument: 32 bits, sign-extended (`AT_FDCWD` is -100).
#[inline(always)]
fn dirfd32(v: u64) -> u64 {
    v as u32 as i32 as i64 as u64
}

/// An i386 call that names its file by a descriptor: its entry notes the descriptor's
/// file (`file::note_fd`), compared with the one walked at exit.
#[inline(always)]
pub(crate) fn is_by_fd32(nr: u64) -> bool {
    matches!(
        nr,
        NR32_FCHMOD
            | NR32_FCHOWN16
            | NR32_FCHOWN32
            | NR32_FTRUNCATE
            | NR32_FTRUNCATE64
            | NR32_FSETXATTR
            | NR32_SETXATTRAT
    )
}

/// The descriptor i386 call `nr` names its file by, read at its entry: the first
/// argument, and for setxattrat only with `AT_EMPTY_PATH` (else it names a path).
#[inline(always)]
pub(crate) fn by_fd32_at_entry(regs: *const u8, nr: u64) -> Option<u64> {
    if !is_by_fd32(nr) || (nr == NR32_SETXATTRAT && arg32(regs, 2) & AT_EMPTY_PATH == 0) {
        return None;
    }
    Some(dirfd32(arg32(regs, 0)))
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_file_compat_enter(ctx: RawTracePointContext) -> i32 {
    let id: u64 = ctx.arg(1);
    if !is_file_call32(id) || !in_compat_syscall() {
        return 0;
    }
    let regs: *const u8 = ctx.arg(0);
    if matches!(id, NR32_RENAME | NR32_RENAMEAT | NR32_RENAMEAT2) {
        stash_compat_rename(id, regs);
    } else if let Some((kind, p)) = one_path32(id, regs) {
        stash(kind, p);
    }
    0
}

/// Exit of the raw-tracepoint fallback (no BTF tracepoints); `sys_exit_file` does the
/// same otherwise.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_file_compat_exit(ctx: RawTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    let id = syscall_nr(regs);
    if !is_file_call32(id) || !in_compat_syscall() {
        return 0;
    }
    compat_exit(id, ctx.arg::<u64>(1) as i64);
    0
}

/// Writes the record of i386 file call `id` (the task is in a compat syscall) that
/// returned `raw_ret`, after an entry program stashed its arguments.
#[inline(always)]
pub(crate) fn compat_exit(id: u64, raw_ret: i64) {
    // The return value of a 32-bit call is the low half, sign-extended.
    let ret = raw_ret as u64 as u32 as i32 as i64;
    match id {
        NR32_RENAME | NR32_RENAMEAT | NR32_RENAMEAT2 => exit_rename_ret(ret),
        _ => exit_one_path_ret(ret),
    };
}

/// The same without an entry program: the arguments are read from the saved i386
/// registers at exit (`sys_exit_file`), so no hook has to run at every syscall's entry.
#[inline(always)]
pub(crate) fn compat_exit_from_regs(regs: *const u8, id: u64, raw_ret: i64) {
    let ret = raw_ret as u64 as u32 as i32 as i64;
    // A by-descriptor call's file noted at entry, taken back whatever happens next.
    let entry_key = if is_by_fd32(id) { take_fd_note() } else { 0 };
    // Two paths: stashed here and written by the one two-path exit (a single copy of it
    // in the program keeps the verifier's work bounded).
    let two_paths = match id {
        NR32_RENAME | NR32_RENAMEAT | NR32_RENAMEAT2 => {
            stash_compat_rename(id, regs);
            true
        }
        NR32_LINK | NR32_LINKAT | NR32_SYMLINK | NR32_SYMLINKAT => {
            stash_compat_link(id, regs);
            true
        }
        NR32_SETXATTR | NR32_LSETXATTR | NR32_FSETXATTR | NR32_SETXATTRAT => {
            stash_compat_setxattr(id, regs, entry_key);
            true
        }
        _ => false,
    };
    if two_paths {
        exit_rename_ret(ret);
        return;
    }
    let Some((_, p)) = one_path32(id, regs) else {
        return;
    };
    let p = with_entry_key(p, entry_key);
    let pid_tgid = bpf_get_current_pid_tgid();
    if !excluded(pid_tgid) {
        emit_one_path(pid_tgid, &p, ret);
    }
}

/// The record of one-path i386 file call `id` from its saved registers (kind and
/// arguments, `FILE_FLAG_COMPAT` set); `None` for the two-path calls and others.
#[inline(always)]
fn one_path32(id: u64, regs: *const u8) -> Option<(RecordKind, PendingFile)> {
    let a = |n| arg32(regs, n);
    let one = |kind: RecordKind, dirfd: u64, path: u64, open_flags: u64, mode: u64| {
        let mut p = pending(kind, dirfd32(dirfd), path, open_flags, mode);
        p.file_flags = FILE_FLAG_COMPAT;
        Some((kind, p))
    };
    let fd_one = |kind: RecordKind, fd: u64, open_flags: u64, mode: u64, flags: u32| {
        one(kind, fd, 0, open_flags, mode).map(|(kind, p)| (kind, by_fd(p, flags)))
    };
    match id {
        NR32_OPEN => one(RecordKind::Open, AT_FDCWD, a(0), a(1), a(2)),
        NR32_CREAT => one(
            RecordKind::Open,
            AT_FDCWD,
            a(0),
            O_CREAT | 0o1 | 0o1000,
            a(1),
        ),
        NR32_OPENAT => one(RecordKind::Open, a(0), a(1), a(2), a(3)),
        NR32_OPENAT2 => {
            let how = a(2) as *const u64;
            let open_flags = unsafe { bpf_probe_read_user(how) }.unwrap_or(0);
            let mode = unsafe { bpf_probe_read_user(how.wrapping_add(1)) }.unwrap_or(0);
            one(RecordKind::Open, a(0), a(1), open_flags, mode)
        }
        NR32_UNLINK => one(RecordKind::Unlink, AT_FDCWD, a(0), 0, 0),
        NR32_UNLINKAT => one(RecordKind::Unlink, a(0), a(1), a(2), 0),
        NR32_MKDIR => one(RecordKind::Mkdir, AT_FDCWD, a(0), 0, a(1)),
        NR32_MKDIRAT => one(RecordKind::Mkdir, a(0), a(1), 0, a(2)),
        NR32_RMDIR => one(RecordKind::Rmdir, AT_FDCWD, a(0), 0, 0),
        NR32_CHMOD => one(RecordKind::Chmod, AT_FDCWD, a(0), 0, a(1)),
        NR32_FCHMODAT | NR32_FCHMODAT2 => one(RecordKind::Chmod, a(0), a(1), 0, a(2)),
        // chown: the new owner in the open_flags/mode slots, as the native stash has it.
        NR32_CHOWN32 | NR32_LCHOWN32 => one(RecordKind::Chown, AT_FDCWD, a(0), a(1), a(2)),
        NR32_CHOWN16 | NR32_LCHOWN16 => {
            one(RecordKind::Chown, AT_FDCWD, a(0), id16(a(1)), id16(a(2)))
        }
        NR32_FCHOWNAT => one(RecordKind::Chown, a(0), a(1), a(2), a(3)),
        // memfd_create(name, flags): a name, no directory.
        NR32_MEMFD_CREATE => one(RecordKind::MemfdCreate, AT_FDCWD, a(0), a(1), 0),
        // mknod(path, mode, dev), mknodat(dirfd, path, mode, dev): dev in open_flags.
        NR32_MKNOD => one(RecordKind::Mknod, AT_FDCWD, a(0), a(2), a(1)),
        NR32_MKNODAT => one(RecordKind::Mknod, a(0), a(1), a(3), a(2)),
        // truncate(path, length): the length's low half in open_flags, high in mode.
        NR32_TRUNCATE => {
            let (lo, hi) = len32(a(1));
            one(RecordKind::Truncate, AT_FDCWD, a(0), lo, hi)
        }
        NR32_TRUNCATE64 => one(RecordKind::Truncate, AT_FDCWD, a(0), a(1), a(2)),
        // By descriptor: the fd in the dirfd slot, no path.
        NR32_FTRUNCATE => {
            let (lo, hi) = len32(a(1));
            fd_one(RecordKind::Truncate, a(0), lo, hi, 0)
        }
        NR32_FTRUNCATE64 => fd_one(RecordKind::Truncate, a(0), a(1), a(2), 0),
        NR32_FCHMOD => fd_one(RecordKind::Chmod, a(0), 0, a(1), 0),
        NR32_FCHOWN32 => fd_one(RecordKind::Chown, a(0), a(1), a(2), 0),
        NR32_FCHOWN16 => fd_one(RecordKind::Chown, a(0), id16(a(1)), id16(a(2)), 0),
        // open_by_handle_at(mount_fd, handle, flags)
        NR32_OPEN_BY_HANDLE_AT => fd_one(RecordKind::Open, a(0), a(2), 0, FILE_FLAG_BY_HANDLE),
        _ => None,
    }
}

/// link/linkat/symlink/symlinkat through the 32-bit entry: stashed now, at exit, and
/// written by the two-path exit at once.
#[inline(always)]
fn stash_compat_link(id: u64, regs: *const u8) {
    let a = |n| arg32(regs, n);
    let at = AT_FDCWD;
    let (kind, old_dirfd, old, new_dirfd, new, flags) = match id {
        NR32_LINK => (RecordKind::Link, at, a(0), at, a(1), 0),
        NR32_LINKAT => (RecordKind::Link, a(0), a(1), a(2), a(3), a(4)),
        NR32_SYMLINK => (RecordKind::Symlink, at, a(0), at, a(1), 0),
        // symlinkat(target, newdirfd, linkpath)
        _ => (RecordKind::Symlink, at, a(0), a(1), a(2), 0),
    };
    stash_two_compat(
        kind,
        dirfd32(old_dirfd),
        old,
        dirfd32(new_dirfd),
        new,
        flags,
    );
}

/// setxattr/lsetxattr/fsetxattr(path or fd, name, value, size, flags) through the
/// 32-bit entry: stashed now, at exit, and written by the two-path exit at once.
/// setxattrat's arguments are the native call's (its size and flags in user memory).
#[inline(always)]
fn stash_compat_setxattr(id: u64, regs: *const u8, entry_key: u64) {
    let a = |n| arg32(regs, n);
    let p = match id {
        // `stash` takes a 32-bit by-descriptor call's entry note from `dir_key`.
        NR32_FSETXATTR => with_entry_key(
            by_fd(
                setxattr_pending(dirfd32(a(0)), 0, a(1), a(3), a(4), FILE_FLAG_COMPAT),
                0,
            ),
            entry_key,
        ),
        NR32_SETXATTRAT => {
            // The native call's arguments, 32-bit descriptors sign-extended.
            let a = |n| {
                if n == 0 {
                    dirfd32(arg32(regs, 0))
                } else {
                    arg32(regs, n)
                }
            };
            stash_setxattrat(a, FILE_FLAG_COMPAT, entry_key);
            return;
        }
        _ => setxattr_pending(AT_FDCWD, a(0), a(1), a(3), a(4), FILE_FLAG_COMPAT),
    };
    stash(RecordKind::Setxattr, p);
}

#[inline(always)]
fn stash_compat_rename(id: u64, regs: *const u8) {
    let a = |n| arg32(regs, n);
    match id {
        NR32_RENAME => stash_rename_flagged(AT_FDCWD, a(0), AT_FDCWD, a(1), 0, FILE_FLAG_COMPAT),
        NR32_RENAMEAT => stash_rename_flagged(
            dirfd32(a(0)),
            a(1),
            dirfd32(a(2)),
            a(3),
            0,
            FILE_FLAG_COMPAT,
        ),
        _ => stash_rename_flagged(
            dirfd32(a(0)),
            a(1),
            dirfd32(a(2)),
            a(3),
            a(4),
            FILE_FLAG_COMPAT,
        ),
    }
}
