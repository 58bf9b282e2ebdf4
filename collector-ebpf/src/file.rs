//! Filesystem: open/openat/openat2/creat (open or create), unlink/unlinkat (rmdir with
//! `AT_REMOVEDIR`), rename/renameat/renameat2, mkdir/mkdirat, rmdir,
//! chmod/fchmodat/fchmodat2.
//!
//! Hooks: the file parts of the shared `sys_enter`/`sys_exit` programs (`native_enter`,
//! `native_exit`, arguments from the saved registers); classic syscall tracepoints
//! `syscalls/sys_enter_*` + `sys_exit_*` stand in where registers cannot be read (the
//! portable set; tracefs). Enter stashes the arguments per thread (and, except for
//! opens, a keyed digest of each user string); exit writes one variable-length record
//! with the result. A successful open reports the opened file's path, walked in the
//! kernel (`path.rs`); otherwise each path is the directory (dirfd or cwd) walked at exit
//! plus the user string read again there, flagged `PATH_FLAG_CHANGED` when it no longer
//! matches the entry digest. rename/link/symlink carry two such paths (`RenameOut`); a
//! symlink's target is the string alone. A create is an open whose file has
//! `FMODE_CREATED` set (the call really created it). open, openat and creat have no entry
//! hook: `file_sys.rs` reads their arguments at exit. io_uring: `file_uring.rs`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_prandom_u32},
    macros::{map, raw_tracepoint, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};
use collector_common::{
    flags, FileRecord, RecordKind, RenameRecord, COUNTER_LOST_STASH_FULL, COUNTER_PATH_UNREADABLE,
    FILE_FLAG_BY_FD, FILE_FLAG_COMPAT, FILE_PATH_MAX,
};

use crate::{
    common::{
        count_emitted, count_loss, count_lost, excluded, fd_to_file, file_wakeup_flags,
        fill_header, path_excluded, read_kernel, syscall_arg, syscall_arg_btf, syscall_nr,
        FILE_EVENTS,
    },
    net_compat::in_compat_syscall,
    offsets::get,
    path::{
        append_user, copy_dir, copy_out, dir_key, entry_digest, resolve_fd, resolve_fd_since,
        resolve_new_fd, resolve_pwd, user_digest, Resolved, PATH_FLAG_CHANGED, PATH_FLAG_TRUNCATED,
        PATH_FLAG_UNREADABLE, PATH_FLAG_USER,
    },
};

/// A one-path record assembled in place: the fixed part, then the path bytes. Only
/// `size_of::<FileRecord>() + path_len` bytes are sent; nothing is zeroed.
#[repr(C)]
pub struct FileOut {
    pub(crate) rec: FileRecord,
    pub(crate) path: [u8; FILE_PATH_MAX],
}

/// Per-CPU assembly buffer for `FileOut` (too big for the stack).
#[map]
pub(crate) static FILE_OUT: PerCpuArray<FileOut> = PerCpuArray::with_max_entries(1, 0);

/// A two-path record assembled in place: the fixed part, the old path, then the new path
/// right after it. Only `size_of::<RenameRecord>() + old_path_len + new_path_len` bytes
/// are sent.
#[repr(C)]
pub struct RenameOut {
    pub(crate) rec: RenameRecord,
    pub(crate) paths: [u8; 2 * FILE_PATH_MAX],
}

/// Per-CPU assembly buffer for `RenameOut`.
#[map]
pub(crate) static RENAME_OUT: PerCpuArray<RenameOut> = PerCpuArray::with_max_entries(1, 0);

use collector_common::abi::AT_FDCWD;
const O_CREAT: u32 = 0o100;
/// `unlinkat` flag: remove a directory (an rmdir).
const AT_REMOVEDIR: u32 = 0x200;
/// `AT_EMPTY_PATH`: an empty path names the descriptor's own file.
pub(crate) const AT_EMPTY_PATH: u64 = 0x1000;
/// `FMODE_CREATED` in `file->f_mode` (include/linux/fs.h).
const FMODE_CREATED: u32 = 0x100000;

/// Arguments saved at syscall entry until its exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingFile {
    kind: u32,
    open_flags: u32,
    mode: u32,
    dirfd: i32,
    new_dirfd: i32,
    /// `FILE_FLAG_*` (the 32-bit entry sets `FILE_FLAG_COMPAT`).
    pub(crate) file_flags: u32,
    path: u64,
    new_path: u64,
    /// Per-call random key of the digests below.
    seed: u64,
    /// `entry_digest` of `path` and `new_path` at entry (see `PATH_FLAG_CHANGED`).
    digest: u64,
    new_digest: u64,
    /// `path::dir_key` of the directory each relative string is looked up from, at
    /// entry (0: absolute, or not taken): compared at exit with the directory walked.
    dir_key: u64,
    new_dir_key: u64,
}

/// In-flight file syscalls by thread id.
#[map]
static PENDING_FILE: HashMap<u32, PendingFile> = HashMap::with_max_entries(16384, 0);

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // Syscall tracepoint records: 8-byte common header, syscall nr, then 8-byte args at 16.
    unsafe { ctx.read_at::<u64>(16 + 8 * n) }.unwrap_or(0)
}

#[inline(always)]
pub(crate) fn stash(kind: RecordKind, pending: PendingFile) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if excluded(pid_tgid) {
        return;
    }
    let mut pending = pending;
    // A 32-bit by-descriptor call's entry note, which its caller (stashing at exit) put
    // here.
    let note = pending.dir_key;
    // The user strings as they are now, before the kernel reads them: the exit reads
    // them again and flags a difference (a buffer rewritten by another thread). Not for
    // opens, the hot path (the digest would double `sys_enter_openat`'s cost): a
    // successful open reports the opened file's own path, so only a failed open's
    // string goes unchecked.
    if kind != RecordKind::Open {
        stash_digests(&mut pending);
    }
    if pending.file_flags & FILE_FLAG_BY_FD != 0 {
        // The file behind the descriptor as the call enters, compared at exit with the
        // one walked (`resolve_fd_since`). The 32-bit entry's calls are stashed at
        // their exit: theirs was noted at entry (`note_fd`).
        pending.dir_key = if pending.file_flags & FILE_FLAG_COMPAT != 0 {
            note
        } else {
            unsafe { dir_key(false, pending.dirfd as u64) }
        };
    }
    if PENDING_FILE.insert(pid_tgid as u32, pending, 0).is_err() {
        // Too many calls in flight: the event is lost, and counted under its reason.
        count_loss(kind, COUNTER_LOST_STASH_FULL);
    }
}

/// For calls that name their file by a descriptor and are read at their exit (native
/// fchmod, fchown, ftruncate; every such 32-bit call): `dir_key` of the descriptor's
/// file when the call entered, by thread id. Another thread sharing the fd table can
/// `dup2` a file of its choice over the descriptor while the call runs, after the
/// kernel took the file it acts on: the exit would walk the other file. The exit takes
/// the note back (`take_fd_note`) and flags a difference (`PATH_FLAG_FD_RACED`,
/// `path::resolve_fd_since`).
///
/// An LRU map: each exit of a noted number takes its note back whatever it reports, so
/// entries do not outlive their calls; with more than 4,096 such calls in flight the
/// oldest notes go, and those calls make no claim.
#[map]
static FD_NOTES: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// Notes `fd`'s file for the current thread's call (see `FD_NOTES`).
#[inline(always)]
fn note_fd(fd: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // An excluded process's exit takes no note back: none is left behind.
    if excluded(pid_tgid) {
        return;
    }
    let key = unsafe { dir_key(false, fd) };
    let _ = FD_NOTES.insert(pid_tgid as u32, key, 0);
}

/// The current thread's `note_fd`, removed (0 when there is none). Every exit of a
/// noted number calls it (`file_sys`, `file_compat`) and puts the value in its record's
/// `dir_key`. Without a branch on whether there is one: the value is read through the
/// lookup's pointer by a helper, which reads 0 for a NULL pointer. The verifier then
/// sees one unknown value on every path, where a branch would double the states of all
/// the program after it (this runs in `sys_exit_file`, close to the verifier's million
/// instructions).
#[inline(always)]
pub(crate) fn take_fd_note() -> u64 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let ptr = FD_NOTES.get_ptr(tid).map_or(core::ptr::null(), |p| p);
    let mut key = 0u64;
    // SAFETY: a helper read of 8 bytes into `key`; a NULL source fails and leaves 0.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel((&raw mut key).cast(), 8, ptr.cast())
    };
    let _ = FD_NOTES.remove(tid);
    key
}

/// `p` with `key` (a by-descriptor call's `take_fd_note`) as its descriptor's identity
/// at entry.
#[inline(always)]
pub(crate) fn with_entry_key(mut p: PendingFile, key: u64) -> PendingFile {
    p.dir_key = key;
    p
}

/// `entry_digest` of the stash's strings under a fresh per-call key.
#[inline(always)]
fn stash_digests(pending: &mut PendingFile) {
    // Never 0: 0 marks "no digest taken" (opens).
    let seed = unsafe { ((bpf_get_prandom_u32() as u64) << 32) | bpf_get_prandom_u32() as u64 } | 1;
    pending.seed = seed;
    pending.digest = unsafe { entry_digest(0, pending.path as *const u8, seed) };
    if pending.new_path != 0 {
        pending.new_digest = unsafe { entry_digest(0, pending.new_path as *const u8, seed) };
    }
    // The directories the relative strings start from: another thread sharing the cwd
    // (fchdir) or the fd table (dup2 onto the dirfd) can change them while the call
    // runs, so that the one walked at exit is not the one the kernel used. A symlink's
    // target and a memfd's name are not looked up.
    if pending.kind != RecordKind::Symlink as u32 && pending.kind != RecordKind::MemfdCreate as u32
    {
        pending.dir_key = unsafe { entry_dir_key(pending.dirfd, pending.path) };
    }
    // An attribute's name is not looked up either.
    if pending.new_path != 0 && pending.kind != RecordKind::Setxattr as u32 {
        pending.new_dir_key = unsafe { entry_dir_key(pending.new_dirfd, pending.new_path) };
    }
}

/// `dir_key` of the directory the user string at `path` is relative to (0 when it is
/// absolute or unreadable).
#[inline(always)]
unsafe fn entry_dir_key(dirfd: i32, path: u64) -> u64 {
    match unsafe { aya_ebpf::helpers::bpf_probe_read_user(path as *const u8) } {
        // An empty string too: with `AT_EMPTY_PATH` (fchmodat2, fchownat, linkat) it
        // names the descriptor's own file, which another thread can swap as well.
        Ok(first) if first != b'/' => unsafe { dir_key(dirfd == AT_FDCWD, dirfd as u64) },
        _ => 0,
    }
}

/// Whether the directory a relative string was looked up from is not the one it was at
/// entry (`key`, 0 when none was taken).
#[inline(always)]
fn dir_moved(key: u64, dirfd: i32) -> bool {
    key != 0 && unsafe { dir_key(dirfd == AT_FDCWD, dirfd as u64) } != key
}

pub(crate) fn pending(
    kind: RecordKind,
    dirfd: u64,
    path: u64,
    open_flags: u64,
    mode: u64,
) -> PendingFile {
    PendingFile {
        kind: kind as u32,
        open_flags: open_flags as u32,
        mode: mode as u32,
        dirfd: dirfd as i32,
        new_dirfd: 0,
        file_flags: 0,
        path,
        new_path: 0,
        seed: 0,
        digest: 0,
        new_digest: 0,
        dir_key: 0,
        new_dir_key: 0,
    }
}

/// `p`, a call that names its file by the descriptor in its `dirfd` slot, with `flags`.
#[inline(always)]
pub(crate) fn by_fd(mut p: PendingFile, flags: u32) -> PendingFile {
    p.file_flags |= FILE_FLAG_BY_FD | flags;
    p
}

// The portable open hooks: per-syscall tracepoints, whose records carry the arguments
// on every architecture. The loader uses them only where `sys_exit_file` cannot read
// the arguments from the saved registers (a kernel whose `pt_regs` is not x86_64's, or
// `syscall_hooks = "portable"`). `open` and `creat` exist only on some architectures
// (x86_64 has them, arm64 does not): those four programs are optional.

/// creat(path, mode) == open(path, O_CREAT | O_WRONLY | O_TRUNC, mode)
pub(crate) const CREAT_FLAGS: u64 = 0o100 | 0o1 | 0o1000;

/// Stashes an open's arguments for its exit.
#[inline(always)]
fn stash_open(dirfd: u64, path: u64, open_flags: u64, mode: u64) {
    let p = pending(RecordKind::Open, dirfd, path, open_flags, mode);
    stash(RecordKind::Open, p);
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    stash_open(arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2), arg(&ctx, 3));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    stash_open(AT_FDCWD as u64, arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_creat")]
pub fn sys_enter_creat(ctx: TracePointContext) -> u32 {
    stash_open(AT_FDCWD as u64, arg(&ctx, 0), CREAT_FLAGS, arg(&ctx, 1));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_creat")]
pub fn sys_exit_creat(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    // struct open_how { u64 flags; u64 mode; u64 resolve; } in user memory.
    let how = arg(&ctx, 2) as *const u64;
    let open_flags = unsafe { aya_ebpf::helpers::bpf_probe_read_user(how) }.unwrap_or(0);
    let mode = unsafe { aya_ebpf::helpers::bpf_probe_read_user(how.wrapping_add(1)) }.unwrap_or(0);
    stash(
        RecordKind::Open,
        pending(
            RecordKind::Open,
            arg(&ctx, 0),
            arg(&ctx, 1),
            open_flags,
            mode,
        ),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_unlink")]
pub fn sys_enter_unlink(ctx: TracePointContext) -> u32 {
    stash(
        RecordKind::Unlink,
        pending(RecordKind::Unlink, AT_FDCWD as u64, arg(&ctx, 0), 0, 0),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_unlinkat")]
pub fn sys_enter_unlinkat(ctx: TracePointContext) -> u32 {
    // unlinkat(dirfd, path, flags): AT_REMOVEDIR (0x200) in flags means rmdir.
    stash(
        RecordKind::Unlink,
        pending(
            RecordKind::Unlink,
            arg(&ctx, 0),
            arg(&ctx, 1),
            arg(&ctx, 2),
            0,
        ),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mkdir")]
pub fn sys_enter_mkdir(ctx: TracePointContext) -> u32 {
    let at = AT_FDCWD as u64;
    stash(
        RecordKind::Mkdir,
        pending(RecordKind::Mkdir, at, arg(&ctx, 0), 0, arg(&ctx, 1)),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mkdirat")]
pub fn sys_enter_mkdirat(ctx: TracePointContext) -> u32 {
    stash(
        RecordKind::Mkdir,
        pending(
            RecordKind::Mkdir,
            arg(&ctx, 0),
            arg(&ctx, 1),
            0,
            arg(&ctx, 2),
        ),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_rmdir")]
pub fn sys_enter_rmdir(ctx: TracePointContext) -> u32 {
    let at = AT_FDCWD as u64;
    stash(
        RecordKind::Rmdir,
        pending(RecordKind::Rmdir, at, arg(&ctx, 0), 0, 0),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_chmod")]
pub fn sys_enter_chmod(ctx: TracePointContext) -> u32 {
    let at = AT_FDCWD as u64;
    stash(
        RecordKind::Chmod,
        pending(RecordKind::Chmod, at, arg(&ctx, 0), 0, arg(&ctx, 1)),
    );
    0
}

/// fchmodat(dirfd, path, mode) and fchmodat2(dirfd, path, mode, flags).
#[inline(always)]
fn stash_fchmodat(ctx: &TracePointContext) {
    stash(
        RecordKind::Chmod,
        pending(RecordKind::Chmod, arg(ctx, 0), arg(ctx, 1), 0, arg(ctx, 2)),
    );
}

#[tracepoint(category = "syscalls", name = "sys_enter_fchmodat")]
pub fn sys_enter_fchmodat(ctx: TracePointContext) -> u32 {
    stash_fchmodat(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_fchmodat2")]
pub fn sys_enter_fchmodat2(ctx: TracePointContext) -> u32 {
    stash_fchmodat(&ctx);
    0
}

/// chown/lchown(path, uid, gid) and fchownat(dirfd, path, uid, gid, flags): uid and gid
/// ride in the stash's open_flags and mode slots.
#[inline(always)]
fn stash_chown(dirfd: u64, path: u64, uid: u64, gid: u64) {
    stash(
        RecordKind::Chown,
        pending(RecordKind::Chown, dirfd, path, uid, gid),
    );
}

#[tracepoint(category = "syscalls", name = "sys_enter_chown")]
pub fn sys_enter_chown(ctx: TracePointContext) -> u32 {
    stash_chown(AT_FDCWD as u64, arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_lchown")]
pub fn sys_enter_lchown(ctx: TracePointContext) -> u32 {
    stash_chown(AT_FDCWD as u64, arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_fchownat")]
pub fn sys_enter_fchownat(ctx: TracePointContext) -> u32 {
    stash_chown(arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2), arg(&ctx, 3));
    0
}

/// mknod/mknodat: the mode (file type bits included: a device node, a FIFO, a regular
/// file made with its setuid bit) and the device number in the open_flags slot.
#[inline(always)]
fn stash_mknod(dirfd: u64, path: u64, mode: u64, dev: u64) {
    stash(
        RecordKind::Mknod,
        pending(RecordKind::Mknod, dirfd, path, dev, mode),
    );
}

#[tracepoint(category = "syscalls", name = "sys_enter_mknod")]
pub fn sys_enter_mknod(ctx: TracePointContext) -> u32 {
    stash_mknod(AT_FDCWD as u64, arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mknodat")]
pub fn sys_enter_mknodat(ctx: TracePointContext) -> u32 {
    stash_mknod(arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2), arg(&ctx, 3));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mknod")]
pub fn sys_exit_mknod(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_mknodat")]
pub fn sys_exit_mknodat(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

/// A truncate's new length as its record carries it: (low 32 bits, high 32 bits), for
/// the open_flags and mode slots.
#[inline(always)]
pub(crate) fn length_halves(length: u64) -> (u64, u64) {
    (length & 0xffff_ffff, length >> 32)
}

/// The stash of truncate(`path`) or, with `path` 0 and `by_fd`, ftruncate(`dirfd`), to
/// `length`.
#[inline(always)]
pub(crate) fn truncate_pending(dirfd: u64, path: u64, length: u64) -> PendingFile {
    let (low, high) = length_halves(length);
    pending(RecordKind::Truncate, dirfd, path, low, high)
}

#[inline(always)]
fn stash_truncate(path: u64, length: u64) {
    stash(
        RecordKind::Truncate,
        truncate_pending(AT_FDCWD as u64, path, length),
    );
}

#[tracepoint(category = "syscalls", name = "sys_enter_truncate")]
pub fn sys_enter_truncate(ctx: TracePointContext) -> u32 {
    stash_truncate(arg(&ctx, 0), arg(&ctx, 1));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_truncate")]
pub fn sys_exit_truncate(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

// The calls that name their file by a descriptor (see `file_sys`): the fd in the dirfd
// slot, no path.

#[tracepoint(category = "syscalls", name = "sys_enter_ftruncate")]
pub fn sys_enter_ftruncate(ctx: TracePointContext) -> u32 {
    // ftruncate(fd, length)
    stash(
        RecordKind::Truncate,
        by_fd(truncate_pending(arg(&ctx, 0), 0, arg(&ctx, 1)), 0),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_ftruncate")]
pub fn sys_exit_ftruncate(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_fchmod")]
pub fn sys_enter_fchmod(ctx: TracePointContext) -> u32 {
    // fchmod(fd, mode)
    stash(
        RecordKind::Chmod,
        by_fd(
            pending(RecordKind::Chmod, arg(&ctx, 0), 0, 0, arg(&ctx, 1)),
            0,
        ),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_fchown")]
pub fn sys_enter_fchown(ctx: TracePointContext) -> u32 {
    // fchown(fd, uid, gid)
    stash(
        RecordKind::Chown,
        by_fd(
            pending(
                RecordKind::Chown,
                arg(&ctx, 0),
                0,
                arg(&ctx, 1),
                arg(&ctx, 2),
            ),
            0,
        ),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_open_by_handle_at")]
pub fn sys_enter_open_by_handle_at(ctx: TracePointContext) -> u32 {
    // open_by_handle_at(mount_fd, handle, flags)
    stash(
        RecordKind::Open,
        by_fd(
            pending(RecordKind::Open, arg(&ctx, 0), 0, arg(&ctx, 2), 0),
            collector_common::FILE_FLAG_BY_HANDLE,
        ),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_memfd_create")]
pub fn sys_enter_memfd_create(ctx: TracePointContext) -> u32 {
    // memfd_create(name, flags): the MFD_* flags in open_flags.
    let at = AT_FDCWD as u64;
    stash(
        RecordKind::MemfdCreate,
        pending(RecordKind::MemfdCreate, at, arg(&ctx, 0), arg(&ctx, 1), 0),
    );
    0
}

/// link/linkat/symlink/symlinkat: two paths, recorded like a rename.
#[inline(always)]
fn stash_two(kind: RecordKind, old_dirfd: u64, old: u64, new_dirfd: u64, new: u64) {
    stash_two_flagged(kind, old_dirfd, old, new_dirfd, new, 0);
}

/// `stash_two_flagged` for a call through the 32-bit entry (`FILE_FLAG_COMPAT`).
#[inline(always)]
pub(crate) fn stash_two_compat(
    kind: RecordKind,
    old_dirfd: u64,
    old: u64,
    new_dirfd: u64,
    new: u64,
    call_flags: u64,
) {
    let mut p = pending(kind, old_dirfd, old, call_flags, 0);
    p.file_flags = collector_common::FILE_FLAG_COMPAT;
    p.new_dirfd = new_dirfd as i32;
    p.new_path = new;
    stash(kind, p);
}

/// The stash of a setxattr of the file `path` (relative to `dirfd`; with `path` 0 and
/// `by_fd`, the descriptor `dirfd`'s file): the attribute's `name` is the second string
/// (digested at entry like a path, never resolved), the value's `size` rides in `mode`.
#[inline(always)]
pub(crate) fn setxattr_pending(
    dirfd: u64,
    path: u64,
    name: u64,
    size: u64,
    xattr_flags: u64,
    file_flags: u32,
) -> PendingFile {
    let mut p = pending(RecordKind::Setxattr, dirfd, path, xattr_flags, size);
    p.new_dirfd = AT_FDCWD;
    p.new_path = name;
    p.file_flags = file_flags;
    p
}

/// setxattrat(dirfd, path, at_flags, name, args, args_size) (Linux >= 6.13): size and
/// flags come from `struct xattr_args { u64 value; u32 size; u32 flags; }` in user
/// memory. An empty path with `AT_EMPTY_PATH` is the descriptor's own file.
///
/// `entry_key`: a 32-bit call's entry note (`take_fd_note`), 0 for a native one.
#[inline(always)]
pub(crate) fn stash_setxattrat(a: impl Fn(usize) -> u64, file_flags: u32, entry_key: u64) {
    let args = a(4) as *const u32;
    let read = |at: usize| unsafe { aya_ebpf::helpers::bpf_probe_read_user(args.wrapping_add(at)) };
    let (size, xattr_flags) = (read(2).unwrap_or(0), read(3).unwrap_or(0));
    // A NULL path counts as empty (`getname_maybe_null`).
    let empty = a(1) == 0
        || unsafe { aya_ebpf::helpers::bpf_probe_read_user(a(1) as *const u8) }
            .is_ok_and(|first| first == 0);
    let p = setxattr_pending(
        a(0),
        a(1),
        a(3),
        size as u64,
        xattr_flags as u64,
        file_flags,
    );
    let p = if empty && a(2) & AT_EMPTY_PATH != 0 {
        with_entry_key(by_fd(p, 0), entry_key)
    } else {
        p
    };
    stash(RecordKind::Setxattr, p);
}

/// `stash_two` with the call's flags (linkat's `AT_*`).
#[inline(always)]
fn stash_two_flagged(
    kind: RecordKind,
    old_dirfd: u64,
    old: u64,
    new_dirfd: u64,
    new: u64,
    call_flags: u64,
) {
    let mut p = pending(kind, old_dirfd, old, call_flags, 0);
    p.new_dirfd = new_dirfd as i32;
    p.new_path = new;
    stash(kind, p);
}

#[tracepoint(category = "syscalls", name = "sys_enter_link")]
pub fn sys_enter_link(ctx: TracePointContext) -> u32 {
    let at = AT_FDCWD as u64;
    stash_two(RecordKind::Link, at, arg(&ctx, 0), at, arg(&ctx, 1));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_linkat")]
pub fn sys_enter_linkat(ctx: TracePointContext) -> u32 {
    // linkat(olddirfd, oldpath, newdirfd, newpath, flags)
    stash_two_flagged(
        RecordKind::Link,
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        arg(&ctx, 3),
        arg(&ctx, 4),
    );
    0
}

/// setxattr and lsetxattr(path, name, value, size, flags) from their tracepoint.
#[inline(always)]
fn stash_setxattr_tp(ctx: &TracePointContext) {
    let a = |n| arg(ctx, n);
    stash(
        RecordKind::Setxattr,
        setxattr_pending(AT_FDCWD as u64, a(0), a(1), a(3), a(4), 0),
    );
}

#[tracepoint(category = "syscalls", name = "sys_enter_setxattr")]
pub fn sys_enter_setxattr(ctx: TracePointContext) -> u32 {
    stash_setxattr_tp(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_setxattr")]
pub fn sys_exit_setxattr(ctx: TracePointContext) -> u32 {
    exit_rename(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_lsetxattr")]
pub fn sys_enter_lsetxattr(ctx: TracePointContext) -> u32 {
    stash_setxattr_tp(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_lsetxattr")]
pub fn sys_exit_lsetxattr(ctx: TracePointContext) -> u32 {
    exit_rename(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_fsetxattr")]
pub fn sys_enter_fsetxattr(ctx: TracePointContext) -> u32 {
    let a = |n| arg(&ctx, n);
    stash(
        RecordKind::Setxattr,
        by_fd(setxattr_pending(a(0), 0, a(1), a(3), a(4), 0), 0),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_fsetxattr")]
pub fn sys_exit_fsetxattr(ctx: TracePointContext) -> u32 {
    exit_rename(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_symlink")]
pub fn sys_enter_symlink(ctx: TracePointContext) -> u32 {
    let at = AT_FDCWD as u64;
    stash_two(RecordKind::Symlink, at, arg(&ctx, 0), at, arg(&ctx, 1));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_symlinkat")]
pub fn sys_enter_symlinkat(ctx: TracePointContext) -> u32 {
    // symlinkat(target, newdirfd, linkpath): the target is a string, not resolved.
    let at = AT_FDCWD as u64;
    stash_two(
        RecordKind::Symlink,
        at,
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
    );
    0
}

#[inline(always)]
fn stash_rename(old_dirfd: u64, old: u64, new_dirfd: u64, new: u64, rename_flags: u64) {
    stash_rename_flagged(old_dirfd, old, new_dirfd, new, rename_flags, 0);
}

/// `stash_rename` with `FILE_FLAG_*` bits for the record.
#[inline(always)]
pub(crate) fn stash_rename_flagged(
    old_dirfd: u64,
    old: u64,
    new_dirfd: u64,
    new: u64,
    rename_flags: u64,
    file_flags: u32,
) {
    let mut p = pending(RecordKind::Rename, old_dirfd, old, rename_flags, 0);
    p.file_flags = file_flags;
    p.new_dirfd = new_dirfd as i32;
    p.new_path = new;
    stash(RecordKind::Rename, p);
}

#[tracepoint(category = "syscalls", name = "sys_enter_rename")]
pub fn sys_enter_rename(ctx: TracePointContext) -> u32 {
    stash_rename(
        AT_FDCWD as u64,
        arg(&ctx, 0),
        AT_FDCWD as u64,
        arg(&ctx, 1),
        0,
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_renameat")]
pub fn sys_enter_renameat(ctx: TracePointContext) -> u32 {
    stash_rename(arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2), arg(&ctx, 3), 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_renameat2")]
pub fn sys_enter_renameat2(ctx: TracePointContext) -> u32 {
    stash_rename(
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        arg(&ctx, 3),
        arg(&ctx, 4),
    );
    0
}

#[inline(always)]
fn take_pending() -> Option<(u64, PendingFile)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let p = *unsafe { PENDING_FILE.get(tid) }?;
    let _ = PENDING_FILE.remove(tid);
    Some((pid_tgid, p))
}

#[inline(always)]
fn exit_one_path(ctx: &TracePointContext) -> u32 {
    exit_one_path_ret(unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0))
}

#[inline(always)]
pub(crate) fn exit_one_path_ret(ret: i64) -> u32 {
    let Some((pid_tgid, p)) = take_pending() else {
        return 0;
    };
    emit_one_path(pid_tgid, &p, ret)
}

/// Writes the record of a one-path call that returned `ret`, from its arguments `p`.
#[inline(always)]
pub(crate) fn emit_one_path(pid_tgid: u64, p: &PendingFile, ret: i64) -> u32 {
    let mut kind = match p.kind {
        k if k == RecordKind::Unlink as u32 && p.open_flags & AT_REMOVEDIR != 0 => {
            RecordKind::Rmdir
        }
        k if k == RecordKind::Unlink as u32 => RecordKind::Unlink,
        k if k == RecordKind::Mkdir as u32 => RecordKind::Mkdir,
        k if k == RecordKind::Rmdir as u32 => RecordKind::Rmdir,
        k if k == RecordKind::Chmod as u32 => RecordKind::Chmod,
        k if k == RecordKind::Chown as u32 => RecordKind::Chown,
        k if k == RecordKind::MemfdCreate as u32 => RecordKind::MemfdCreate,
        k if k == RecordKind::Mknod as u32 => RecordKind::Mknod,
        k if k == RecordKind::Truncate as u32 => RecordKind::Truncate,
        _ => RecordKind::Open,
    };
    if kind == RecordKind::Open && ret >= 0 && p.open_flags & O_CREAT != 0 {
        let created = unsafe { fd_to_file(ret as u64) }
            .and_then(|file| unsafe { read_kernel::<u32>(file, get::OFF_FILE_F_MODE()) })
            .map(|mode| mode & FMODE_CREATED != 0)
            .unwrap_or(false);
        if created {
            kind = RecordKind::Create;
        }
    }
    let Some(out) = FILE_OUT.get_ptr_mut(0) else {
        return 0;
    };
    let rec = unsafe { &raw mut (*out).rec };
    // The header first, before the path walk: the verifier then checks its typed task
    // loads once, not once per state the walk leaves behind (each typed load from the
    // task costs the verifier linear scans of the kernel's BTF; filled last, these made
    // the file programs take seconds each to load).
    unsafe { fill_header(&raw mut (*rec).header, kind, pid_tgid) };
    let mut r = unsafe { resolve_for_exit(kind, ret, p) };
    if p.seed != 0
        && r.flags & PATH_FLAG_USER != 0
        && (unsafe { user_digest(0, &r, p.seed) } != p.digest || dir_moved(p.dir_key, p.dirfd))
    {
        r.flags |= PATH_FLAG_CHANGED;
    }
    let len = unsafe { copy_out((&raw mut (*out).path).cast(), &r) };
    // Again here: the verifier must see the bound at the output call.
    let len = if len > FILE_PATH_MAX as u32 {
        FILE_PATH_MAX as u32
    } else {
        len
    };
    unsafe {
        (*rec).result = ret;
        (*rec).open_flags = p.open_flags;
        (*rec).mode = p.mode;
        (*rec).dirfd = p.dirfd;
        (*rec).path_len = len;
        (*rec).path_flags = r.flags;
        (*rec).file_flags = p.file_flags;
        if kind == RecordKind::Chown {
            // The stash carries chown's uid/gid in its open_flags/mode slots.
            (*rec).open_flags = 0;
            (*rec).mode = 0;
            (*rec).owner_uid = p.open_flags;
            (*rec).owner_gid = p.mode;
        } else {
            (*rec).owner_uid = 0;
            (*rec).owner_gid = 0;
        }
        if r.flags & PATH_FLAG_TRUNCATED != 0 {
            (*rec).header.flags |= flags::PATH_TRUNCATED;
        }
    }
    // Exclusion matches only the kernel-resolved canonical path: a user string can name
    // an excluded directory through `..` or symlinks without being under it.
    if r.flags & PATH_FLAG_USER == 0
        && path_excluded(unsafe { (&raw const (*out).path).cast() }, len)
    {
        return 0;
    }
    let total = size_of::<FileRecord>() + len as usize;
    let bytes = unsafe { core::slice::from_raw_parts(out as *const u8, total) };
    if FILE_EVENTS
        .output::<[u8]>(bytes, file_wakeup_flags(bytes.len() as u64))
        .is_err()
    {
        count_lost(kind);
        return 0;
    }
    count_emitted(kind);
    if r.flags & PATH_FLAG_UNREADABLE != 0 {
        count_loss(kind, COUNTER_PATH_UNREADABLE);
    }
    0
}

/// The path a one-path record reports: for a successful open, the file the call
/// produced (fd -> file -> f_path, walked in the kernel); otherwise the user string,
/// made absolute against the directory (dirfd or cwd) resolved in the kernel now.
#[inline(always)]
unsafe fn resolve_for_exit(kind: RecordKind, ret: i64, p: &PendingFile) -> Resolved {
    if matches!(kind, RecordKind::Open | RecordKind::Create) && ret >= 0 {
        return unsafe { resolve_new_fd(0, ret as u64) };
    }
    if p.file_flags & FILE_FLAG_BY_FD != 0 {
        // No path argument: the descriptor's own file (fchmod, fchown), or the mount fd
        // of an open by handle that failed.
        return unsafe { resolve_fd_since(0, p.dirfd as u64, p.dir_key) };
    }
    if kind == RecordKind::MemfdCreate {
        // A name, not a path: no directory in front of it.
        return unsafe { append_user(0, Resolved::none(), p.path as *const u8) };
    }
    unsafe { resolve_user_at(0, p.dirfd, p.path) }
}

/// The user string at `path` made absolute against `dirfd` (or the cwd), the directory
/// walked in the kernel now, in scratch `slot`.
#[inline(always)]
pub(crate) unsafe fn resolve_user_at(slot: u32, dirfd: i32, path: u64) -> Resolved {
    let first: u8 =
        unsafe { aya_ebpf::helpers::bpf_probe_read_user(path as *const u8) }.unwrap_or(0);
    let dir = unsafe { resolve_dir(slot, dirfd, first) };
    unsafe { append_user(slot, dir, path as *const u8) }
}

/// The directory a path whose first byte is `first` is relative to: none when it is
/// absolute, else the cwd (`AT_FDCWD`) or `dirfd`, walked in the kernel now.
#[inline(always)]
pub(crate) unsafe fn resolve_dir(slot: u32, dirfd: i32, first: u8) -> Resolved {
    if first == b'/' {
        // Absolute: no directory to walk.
        Resolved::unreadable()
    } else if dirfd == AT_FDCWD {
        unsafe { resolve_pwd(slot) }
    } else {
        unsafe { resolve_fd(slot, dirfd as u64) }
    }
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_unlink")]
pub fn sys_exit_unlink(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_unlinkat")]
pub fn sys_exit_unlinkat(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_mkdir")]
pub fn sys_exit_mkdir(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_mkdirat")]
pub fn sys_exit_mkdirat(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_rmdir")]
pub fn sys_exit_rmdir(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_chmod")]
pub fn sys_exit_chmod(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_fchmodat")]
pub fn sys_exit_fchmodat(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_fchmodat2")]
pub fn sys_exit_fchmodat2(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_chown")]
pub fn sys_exit_chown(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_lchown")]
pub fn sys_exit_lchown(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_fchownat")]
pub fn sys_exit_fchownat(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_fchmod")]
pub fn sys_exit_fchmod(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_fchown")]
pub fn sys_exit_fchown(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_open_by_handle_at")]
pub fn sys_exit_open_by_handle_at(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_memfd_create")]
pub fn sys_exit_memfd_create(ctx: TracePointContext) -> u32 {
    exit_one_path(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_link")]
pub fn sys_exit_link(ctx: TracePointContext) -> u32 {
    exit_rename(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_linkat")]
pub fn sys_exit_linkat(ctx: TracePointContext) -> u32 {
    exit_rename(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_symlink")]
pub fn sys_exit_symlink(ctx: TracePointContext) -> u32 {
    exit_rename(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_symlinkat")]
pub fn sys_exit_symlinkat(ctx: TracePointContext) -> u32 {
    exit_rename(&ctx)
}

#[inline(always)]
fn exit_rename(ctx: &TracePointContext) -> u32 {
    exit_rename_ret(unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0))
}

#[inline(always)]
pub(crate) fn exit_rename_ret(ret: i64) -> u32 {
    let Some((pid_tgid, p)) = take_pending() else {
        return 0;
    };
    let kind = match p.kind {
        k if k == RecordKind::Link as u32 => RecordKind::Link,
        k if k == RecordKind::Symlink as u32 => RecordKind::Symlink,
        k if k == RecordKind::Setxattr as u32 => RecordKind::Setxattr,
        _ => RecordKind::Rename,
    };
    let Some(out) = RENAME_OUT.get_ptr_mut(0) else {
        return 0;
    };
    let rec = unsafe { &raw mut (*out).rec };
    // The header before the walks, as in `emit_one_path`: verified once.
    unsafe { fill_header(&raw mut (*rec).header, kind, pid_tgid) };
    // Each path: its directory (dirfd or cwd) walked in the kernel now + the user's
    // string, read again here and compared with the read at entry. A symlink's target
    // is content, not a path to resolve: the string alone.
    let first = |path: u64| -> u8 {
        unsafe { aya_ebpf::helpers::bpf_probe_read_user(path as *const u8) }.unwrap_or(0)
    };
    // fsetxattr (and setxattrat on its descriptor) names its file by descriptor: that
    // file, walked like a directory fd (the same walk), with no string after it.
    let by_fd = p.file_flags & FILE_FLAG_BY_FD != 0;
    let old_dir = if kind == RecordKind::Symlink {
        Resolved::none()
    } else {
        if by_fd {
            unsafe { resolve_fd_since(0, p.dirfd as u64, p.dir_key) }
        } else {
            unsafe { resolve_dir(0, p.dirfd, first(p.path)) }
        }
    };
    let old = if by_fd {
        let mut old = old_dir;
        // setxattrat on its descriptor took an empty path at entry: another thread
        // that filled the string in before the kernel read it made the kernel act on
        // that path, not on the descriptor.
        if p.path != 0 && unsafe { entry_digest(0, p.path as *const u8, p.seed) } != p.digest {
            old.flags |= PATH_FLAG_CHANGED;
        }
        old
    } else {
        let mut old = unsafe { append_user(0, old_dir, p.path as *const u8) };
        if unsafe { user_digest(0, &old, p.seed) } != p.digest || dir_moved(p.dir_key, p.dirfd) {
            old.flags |= PATH_FLAG_CHANGED;
        }
        old
    };
    let new_first = first(p.new_path);
    let new_dir = if kind == RecordKind::Setxattr {
        // An attribute's name: the string alone.
        Resolved::none()
    } else if !old_dir.ptr.is_null() && !by_fd && new_first != b'/' && p.new_dirfd == p.dirfd {
        // Same directory as the old path (renameat(fd, a, fd, b), or both cwd-relative):
        // copy the walk instead of walking again.
        unsafe { copy_dir(0, 1, &old_dir) }
    } else {
        unsafe { resolve_dir(1, p.new_dirfd, new_first) }
    };
    let mut new = unsafe { append_user(1, new_dir, p.new_path as *const u8) };
    if unsafe { user_digest(1, &new, p.seed) } != p.new_digest
        || dir_moved(p.new_dir_key, p.new_dirfd)
    {
        new.flags |= PATH_FLAG_CHANGED;
    }
    unsafe {
        (*rec).result = ret;
        (*rec).old_dirfd = p.dirfd;
        // A setxattr's name has no directory: the slot carries the value's size.
        (*rec).new_dirfd = if kind == RecordKind::Setxattr {
            p.mode as i32
        } else {
            p.new_dirfd
        };
        (*rec).file_flags = p.file_flags;
        (*rec).call_flags = p.open_flags;
    }
    unsafe { fill_two(out, &old, &new) };
    send_two(kind, out);
    0
}

/// Copies both paths behind `out.rec` (the new one right after the old one) and sets
/// their lengths and flags.
#[inline(always)]
pub(crate) unsafe fn fill_two(out: *mut RenameOut, old: &Resolved, new: &Resolved) {
    let rec = unsafe { &raw mut (*out).rec };
    let base: *mut u8 = unsafe { (&raw mut (*out).paths).cast() };
    let old_len = unsafe { copy_out(base, old) };
    let old_len = if old_len > FILE_PATH_MAX as u32 {
        FILE_PATH_MAX as u32
    } else {
        old_len
    };
    let new_len = unsafe { copy_out(base.add(old_len as usize), new) };
    unsafe {
        (*rec).old_path_len = old_len;
        (*rec).new_path_len = new_len;
        (*rec).old_path_flags = old.flags;
        (*rec).new_path_flags = new.flags;
        if old.flags & PATH_FLAG_TRUNCATED != 0 {
            (*rec).header.flags |= flags::PATH_TRUNCATED;
        }
        if new.flags & PATH_FLAG_TRUNCATED != 0 {
            (*rec).header.flags |= flags::NEW_PATH_TRUNCATED;
        }
    }
}

/// Sends a filled two-path record.
#[inline(always)]
pub(crate) fn send_two(kind: RecordKind, out: *mut RenameOut) {
    let rec = unsafe { &raw const (*out).rec };
    let (old_len, new_len, path_flags) = unsafe {
        (
            (*rec).old_path_len as usize,
            (*rec).new_path_len as usize,
            (*rec).old_path_flags | (*rec).new_path_flags,
        )
    };
    let total = size_of::<RenameRecord>() + old_len + new_len;
    let total = if total > size_of::<RenameOut>() {
        size_of::<RenameOut>()
    } else {
        total
    };
    let bytes = unsafe { core::slice::from_raw_parts(out as *const u8, total) };
    if FILE_EVENTS
        .output::<[u8]>(bytes, file_wakeup_flags(bytes.len() as u64))
        .is_err()
    {
        count_lost(kind);
        return;
    }
    count_emitted(kind);
    // Two-path records hold user strings: never matched against excluded prefixes (only
    // kernel-resolved canonical paths are; a string can reach anywhere via `..`).
    if path_flags & PATH_FLAG_UNREADABLE != 0 {
        count_loss(kind, COUNTER_PATH_UNREADABLE);
    }
}

#[tracepoint(category = "syscalls", name = "sys_exit_rename")]
pub fn sys_exit_rename(ctx: TracePointContext) -> u32 {
    exit_rename(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_renameat")]
pub fn sys_exit_renameat(ctx: TracePointContext) -> u32 {
    exit_rename(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_renameat2")]
pub fn sys_exit_renameat2(ctx: TracePointContext) -> u32 {
    exit_rename(&ctx)
}

// Fallback when tracefs cannot be mounted: the raw `sys_enter`/`sys_exit` tracepoints
// (no tracefs needed) fire for every syscall, so they cost more; the programs return
// at once for syscalls they do not watch. x86_64 syscall numbers.
const NR_OPEN: u64 = 2;
const NR_CREAT: u64 = 85;
const NR_OPENAT: u64 = 257;
const NR_OPENAT2: u64 = 437;
const NR_UNLINK: u64 = 87;
const NR_UNLINKAT: u64 = 263;
const NR_RENAME: u64 = 82;
const NR_RENAMEAT: u64 = 264;
const NR_RENAMEAT2: u64 = 316;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_file_sys_enter(ctx: RawTracePointContext) -> i32 {
    let id: u64 = ctx.arg(1);
    if !matches!(
        id,
        NR_OPEN
            | NR_CREAT
            | NR_OPENAT
            | NR_OPENAT2
            | NR_UNLINK
            | NR_UNLINKAT
            | NR_RENAME
            | NR_RENAMEAT
            | NR_RENAMEAT2
    ) || in_compat_syscall()
    {
        // i386 numbers mean other calls: the 32-bit entry is `file_compat`'s.
        return 0;
    }
    let regs: *const u8 = ctx.arg(0);
    let a = |n: usize| syscall_arg(regs, n);
    let at = AT_FDCWD as u64;
    match id {
        NR_OPENAT => stash(
            RecordKind::Open,
            pending(RecordKind::Open, a(0), a(1), a(2), a(3)),
        ),
        NR_OPEN => stash(
            RecordKind::Open,
            pending(RecordKind::Open, at, a(0), a(1), a(2)),
        ),
        NR_CREAT => stash(
            RecordKind::Open,
            pending(
                RecordKind::Open,
                at,
                a(0),
                (O_CREAT | 0o1 | 0o1000) as u64,
                a(1),
            ),
        ),
        // openat2, unlink, unlinkat and the renames: as the shared entry stashes them.
        _ => stash_native(id, a),
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_file_sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    let id = syscall_nr(regs);
    let ret: i64 = ctx.arg(1);
    if in_compat_syscall() {
        return 0;
    }
    match id {
        NR_OPEN | NR_CREAT | NR_OPENAT | NR_OPENAT2 | NR_UNLINK | NR_UNLINKAT => {
            exit_one_path_ret(ret);
        }
        NR_RENAME | NR_RENAMEAT | NR_RENAMEAT2 => {
            exit_rename_ret(ret);
        }
        _ => {}
    }
    0
}

// The file calls other than open/openat/creat, from the saved registers: the entry by
// the filesystem part of `sys_enter_shared` (`sys_enter.rs`), the exit by the one of
// `sys_exit_shared` (`file_sys.rs`). The same stash and records as the per-syscall
// tracepoints above, which stand in for these where registers cannot be read.
const NR_MKDIR: u64 = 83;
const NR_RMDIR: u64 = 84;
const NR_LINK: u64 = 86;
const NR_SYMLINK: u64 = 88;
const NR_CHMOD: u64 = 90;
const NR_CHOWN: u64 = 92;
const NR_LCHOWN: u64 = 94;
const NR_MKDIRAT: u64 = 258;
const NR_FCHOWNAT: u64 = 260;
const NR_LINKAT: u64 = 265;
const NR_SYMLINKAT: u64 = 266;
const NR_FCHMODAT: u64 = 268;
const NR_MEMFD_CREATE: u64 = 319;
const NR_FCHMODAT2: u64 = 452;
const NR_MKNOD: u64 = 133;
const NR_MKNODAT: u64 = 259;
const NR_TRUNCATE: u64 = 76;
const NR_SETXATTR: u64 = 188;
const NR_LSETXATTR: u64 = 189;
const NR_FSETXATTR: u64 = 190;
const NR_SETXATTRAT: u64 = 463;

/// An x86_64 one-path call whose entry stashes its arguments.
#[inline(always)]
fn is_native_one_path(nr: u64) -> bool {
    matches!(
        nr,
        NR_OPENAT2
            | NR_UNLINK
            | NR_UNLINKAT
            | NR_MKDIR
            | NR_MKDIRAT
            | NR_RMDIR
            | NR_CHMOD
            | NR_FCHMODAT
            | NR_FCHMODAT2
            | NR_CHOWN
            | NR_LCHOWN
            | NR_FCHOWNAT
            | NR_MEMFD_CREATE
            | NR_MKNOD
            | NR_MKNODAT
            | NR_TRUNCATE
    )
}

/// An x86_64 two-path call (rename, link, symlink and their *at forms; setxattr, whose
/// second string is the attribute's name).
#[inline(always)]
fn is_native_two_path(nr: u64) -> bool {
    matches!(
        nr,
        NR_RENAME
            | NR_RENAMEAT
            | NR_RENAMEAT2
            | NR_LINK
            | NR_LINKAT
            | NR_SYMLINK
            | NR_SYMLINKAT
            | NR_SETXATTR
            | NR_LSETXATTR
            | NR_FSETXATTR
            | NR_SETXATTRAT
    )
}

/// Whether syscall `nr` may be a file call whose entry this domain stashes (the
/// 32-bit entry's are read at exit). `sys_enter_shared` asks it before any part runs.
#[inline(always)]
pub(crate) fn enter_wanted(nr: u64) -> bool {
    is_native_stashed(nr) || is_noted_by_fd(nr)
}

/// Whether syscall `nr` (either entry's numbering) may be a call read at its exit that
/// names its file by a descriptor: its entry notes that descriptor's file (`note_fd`).
#[inline(always)]
fn is_noted_by_fd(nr: u64) -> bool {
    crate::file_sys::is_native_by_fd(nr) || crate::file_compat::is_by_fd32(nr)
}

/// The entry of a native file call (not open/openat/creat, which are read at exit):
/// stashes its arguments, as the per-syscall `sys_enter_*` programs do. `regs` is the
/// `sys_enter` tracepoint's typed `pt_regs` pointer. Only the syscalls `enter_wanted`
/// names get here from `sys_enter_shared`.
#[inline(always)]
pub(crate) fn native_enter(regs: *const u8, nr: u64) {
    if !enter_wanted(nr) {
        return;
    }
    // The i386 numbers mean other calls (83 is symlink there, 437 openat2 in both): the
    // 32-bit entry's file calls are read at exit (`file_compat`), but those that name
    // their file by a descriptor have it noted now.
    if in_compat_syscall() {
        if let Some(fd) = crate::file_compat::by_fd32_at_entry(regs, nr) {
            note_fd(fd);
        }
        return;
    }
    if crate::file_sys::is_native_by_fd(nr) {
        note_fd(syscall_arg_btf(regs, 0));
        return;
    }
    stash_native(nr, |n: usize| syscall_arg_btf(regs, n));
}

/// Stashes the arguments of native file call `nr` (one [`is_native_stashed`] names),
/// argument `n` being `a(n)`.
#[inline(always)]
fn stash_native(nr: u64, a: impl Fn(usize) -> u64) {
    let at = AT_FDCWD as u64;
    match nr {
        NR_OPENAT2 => {
            let how = a(2) as *const u64;
            let open_flags = unsafe { aya_ebpf::helpers::bpf_probe_read_user(how) }.unwrap_or(0);
            let mode =
                unsafe { aya_ebpf::helpers::bpf_probe_read_user(how.wrapping_add(1)) }.unwrap_or(0);
            stash(
                RecordKind::Open,
                pending(RecordKind::Open, a(0), a(1), open_flags, mode),
            );
        }
        NR_UNLINK => stash(
            RecordKind::Unlink,
            pending(RecordKind::Unlink, at, a(0), 0, 0),
        ),
        NR_UNLINKAT => stash(
            RecordKind::Unlink,
            pending(RecordKind::Unlink, a(0), a(1), a(2), 0),
        ),
        NR_MKDIR => stash(
            RecordKind::Mkdir,
            pending(RecordKind::Mkdir, at, a(0), 0, a(1)),
        ),
        NR_MKDIRAT => stash(
            RecordKind::Mkdir,
            pending(RecordKind::Mkdir, a(0), a(1), 0, a(2)),
        ),
        NR_RMDIR => stash(
            RecordKind::Rmdir,
            pending(RecordKind::Rmdir, at, a(0), 0, 0),
        ),
        NR_CHMOD => stash(
            RecordKind::Chmod,
            pending(RecordKind::Chmod, at, a(0), 0, a(1)),
        ),
        NR_FCHMODAT | NR_FCHMODAT2 => stash(
            RecordKind::Chmod,
            pending(RecordKind::Chmod, a(0), a(1), 0, a(2)),
        ),
        NR_CHOWN | NR_LCHOWN => stash_chown(at, a(0), a(1), a(2)),
        NR_FCHOWNAT => stash_chown(a(0), a(1), a(2), a(3)),
        NR_MEMFD_CREATE => stash(
            RecordKind::MemfdCreate,
            pending(RecordKind::MemfdCreate, at, a(0), a(1), 0),
        ),
        // mknod(path, mode, dev), mknodat(dirfd, path, mode, dev): the device number in
        // the open_flags slot.
        NR_MKNOD => stash_mknod(at, a(0), a(1), a(2)),
        NR_MKNODAT => stash_mknod(a(0), a(1), a(2), a(3)),
        NR_TRUNCATE => stash_truncate(a(0), a(1)),
        NR_RENAME => stash_rename(at, a(0), at, a(1), 0),
        NR_RENAMEAT => stash_rename(a(0), a(1), a(2), a(3), 0),
        NR_RENAMEAT2 => stash_rename(a(0), a(1), a(2), a(3), a(4)),
        NR_LINK => stash_two(RecordKind::Link, at, a(0), at, a(1)),
        NR_LINKAT => stash_two_flagged(RecordKind::Link, a(0), a(1), a(2), a(3), a(4)),
        NR_SYMLINK => stash_two(RecordKind::Symlink, at, a(0), at, a(1)),
        // setxattr(path, name, value, size, flags), lsetxattr the same.
        NR_SETXATTR | NR_LSETXATTR => stash(
            RecordKind::Setxattr,
            setxattr_pending(at, a(0), a(1), a(3), a(4), 0),
        ),
        // fsetxattr(fd, name, value, size, flags): the descriptor's file.
        NR_FSETXATTR => stash(
            RecordKind::Setxattr,
            by_fd(setxattr_pending(a(0), 0, a(1), a(3), a(4), 0), 0),
        ),
        NR_SETXATTRAT => stash_setxattrat(&a, 0, 0),
        // symlinkat(target, newdirfd, linkpath): the target is a string, not resolved.
        NR_SYMLINKAT => stash_two(RecordKind::Symlink, at, a(0), a(1), a(2)),
        // Numbers `enter_wanted` lets through for the 32-bit entry only (native umask,
        // listxattr...): nothing to stash.
        _ => {}
    }
}

/// An x86_64 file call whose entry `native_enter` stashes (all but open, openat and
/// creat).
#[inline(always)]
pub(crate) fn is_native_stashed(nr: u64) -> bool {
    is_native_one_path(nr) || is_native_two_path(nr)
}

/// The exit of a native file call whose entry `native_enter` saw: writes its record.
/// Returns false for other calls. The caller has checked that this is not the 32-bit
/// entry.
#[inline(always)]
pub(crate) fn native_exit(nr: u64, ret: i64) -> bool {
    if is_native_one_path(nr) {
        exit_one_path_ret(ret);
    } else if is_native_two_path(nr) {
        exit_rename_ret(ret);
    } else {
        return false;
    }
    true
}
