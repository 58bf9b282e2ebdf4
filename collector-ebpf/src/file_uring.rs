//! File operations submitted through io_uring: `IORING_OP_OPENAT`, `OPENAT2`, `UNLINKAT`,
//! `RENAMEAT`, `MKDIRAT`, `LINKAT`, `SYMLINKAT` (Linux >= 5.15 for all of them; 6.x
//! layouts, offsets from BTF). The records are the syscall ones with `FILE_FLAG_IO_URING`.
//!
//! Hooks: BTF tracepoints `io_uring:io_uring_submit_req` and `io_uring:io_uring_complete`.
//! `io_uring_submit_req` fires after the SQE was prepared, in the submitting task (or
//! the SQPOLL thread): the request's per-op struct inside `io_kiocb.cmd` (`io_open`,
//! `io_unlink`, `io_rename`, `io_mkdir`, `io_link`) already holds `struct filename *`,
//! the kernel's own copy of the path string. It is read there (exactly the bytes the
//! kernel will use: no user-memory race), the directory fd (or cwd) is walked at that
//! moment, and the assembled record waits in a map keyed by the `io_kiocb` pointer.
//! `io_uring_complete` (the CQE being posted) adds the result and sends it. A successful
//! open's new fd is installed by then: the path reported is the opened file's, walked
//! from the fd like `sys_exit_openat`.
//!
//! Not covered: an open into a fixed-file slot (`file_index`; the record keeps the
//! directory + string path, `result` is 0 or the slot); requests whose prep failed
//! (`-EFAULT`, `-EINVAL` before submit: no `submit_req`), which never reach the
//! filesystem. Both programs return after one read for every other opcode.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_boot_ns},
    macros::{btf_tracepoint, map},
    maps::{HashMap, PerCpuArray},
    programs::BtfTracePointContext,
    EbpfContext,
};
use collector_common::{
    flags, FileRecord, RecordKind, COUNTER_LOST_STASH_FULL, COUNTER_PATH_UNREADABLE,
    FILE_FLAG_BY_FD, FILE_FLAG_IO_URING, FILE_FLAG_NO_RESULT, FILE_PATH_MAX,
};

use crate::{
    common::{
        count_emitted, count_loss, count_lost, excluded, file_wakeup_flags, fill_header,
        path_excluded, read_kernel, FILE_EVENTS,
    },
    file::{fill_two, resolve_dir, send_two, FileOut, RenameOut, RENAME_OUT},
    offsets::{file_has_io_uring, file_has_io_uring_ftruncate, file_has_io_uring_xattr, get},
    path::{
        append_kernel, copy_out, copy_string, resolve_file, NewFd, Resolved, PATH_FLAG_FD_RACED,
        PATH_FLAG_TRUNCATED, PATH_FLAG_USER,
    },
};

const IORING_OP_OPENAT: u8 = 18;
const IORING_OP_OPENAT2: u8 = 28;
const IORING_OP_RENAMEAT: u8 = 35;
const IORING_OP_UNLINKAT: u8 = 36;
const IORING_OP_MKDIRAT: u8 = 37;
const IORING_OP_SYMLINKAT: u8 = 38;
const IORING_OP_LINKAT: u8 = 39;
const IORING_OP_FSETXATTR: u8 = 41;
const IORING_OP_SETXATTR: u8 = 42;
const IORING_OP_FTRUNCATE: u8 = 55;

/// `REQ_F_CQE_SKIP` in `io_kiocb.flags` (`IOSQE_CQE_SKIP_SUCCESS`): no CQE on success.
const REQ_F_CQE_SKIP: u64 = 1 << 6;
/// `REQ_F_FIXED_FILE` (`IOSQE_FIXED_FILE`): `cqe.fd` is a registered-file slot, not a
/// descriptor.
const REQ_F_FIXED_FILE: u64 = 1;

const AT_FDCWD: i32 = -100;
/// `unlinkat` flag: remove a directory (an rmdir).
const AT_REMOVEDIR: u32 = 0x200;
/// `FMODE_CREATED` in `file->f_mode` (include/linux/fs.h).
const FMODE_CREATED: u32 = 0x100000;

/// A one-path request between submit and completion.
#[repr(C)]
pub struct UringOne {
    /// The record as it will be sent (result and time filled at completion).
    out: FileOut,
    /// Nonzero: an open into a fixed-file slot (`res` is no fd).
    fixed_slot: u32,
    /// 1 for OPENAT/OPENAT2 (a successful one reports the new fd's file).
    is_open: u32,
    /// 1 for FTRUNCATE: the completion reports the request's own file (`io_kiocb.file`,
    /// assigned when the request ran), whatever the descriptor named at submission.
    by_file: u32,
    _pad: u32,
}

/// Assembly buffer for `UringOne` (too big for the stack).
#[map]
static URING_ONE_BUF: PerCpuArray<UringOne> = PerCpuArray::with_max_entries(1, 0);

/// One-path requests in flight, by `io_kiocb` address (kernel-only key, never sent).
/// Allocated on insert: most of the 4,096 slots are usually empty. Full = counted loss.
#[map]
static URING_ONE: HashMap<u64, UringOne> = HashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);

/// Two-path requests in flight (rename, link, symlink), by `io_kiocb` address.
#[map]
static URING_TWO: HashMap<u64, RenameOut> = HashMap::with_max_entries(2048, BPF_F_NO_PREALLOC);

/// The request behind each (ring, `user_data`) of a file request in flight. A completion
/// that overflows a full CQ is traced (`io_uring_cqe_overflow`) with the ring and
/// `user_data`, not the request: this finds it. Unique: a second request with the same
/// `user_data` on the same ring first flushes the older one without a result.
#[map]
static URING_BY_UDATA: HashMap<[u64; 2], u64> = HashMap::with_max_entries(6144, BPF_F_NO_PREALLOC);

/// (ring, `user_data`) of request `req`.
#[inline(always)]
fn udata_key(req: u64) -> [u64; 2] {
    unsafe {
        [
            read_kernel::<u64>(req as *const u8, get::OFF_FILE_IO_KIOCB_CTX()).unwrap_or(0),
            read_kernel::<u64>(req as *const u8, get::OFF_FILE_IO_KIOCB_USER_DATA()).unwrap_or(0),
        ]
    }
}

/// Indexes `req` by (ring, `user_data`) before it is stashed. A request already there
/// under that key is sent now, without a result (it stays reported, just not
/// attributable to a completion). False when the index is full (counted by the caller).
#[inline(always)]
fn index_request(req: u64) -> bool {
    let key = udata_key(req);
    if let Some(&old) = unsafe { URING_BY_UDATA.get(key) } {
        if old != req {
            flush_without_result(old);
        }
    }
    URING_BY_UDATA.insert(key, req, 0).is_ok()
}

/// Sends the record stashed for `req` (if any) with `FILE_FLAG_NO_RESULT`, and drops it.
#[inline(always)]
fn flush_without_result(req: u64) {
    if let Some(v) = URING_ONE.get_ptr_mut(req) {
        // Its file, if it has run already.
        unsafe { path_from_request_file_one(req, v) };
        let out = unsafe { &raw mut (*v).out };
        let kind = unsafe {
            (*out).rec.file_flags |= FILE_FLAG_NO_RESULT;
            record_kind((*out).rec.header.kind)
        };
        send_one(kind, out);
        let _ = URING_ONE.remove(req);
    } else if let Some(out) = URING_TWO.get_ptr_mut(req) {
        unsafe { path_from_request_file_two(req, out) };
        let kind = unsafe {
            (*out).rec.file_flags |= FILE_FLAG_NO_RESULT;
            record_kind((*out).rec.header.kind)
        };
        send_two(kind, out);
        let _ = URING_TWO.remove(req);
    }
}

/// Drops the (ring, `user_data`) index entry of a completed `req`.
#[inline(always)]
fn unindex_request(key: &[u64; 2], req: u64) {
    if unsafe { URING_BY_UDATA.get(key) }.is_some_and(|&r| r == req) {
        let _ = URING_BY_UDATA.remove(key);
    }
}

#[inline(always)]
fn is_one(op: u8) -> bool {
    matches!(
        op,
        IORING_OP_OPENAT | IORING_OP_OPENAT2 | IORING_OP_UNLINKAT | IORING_OP_MKDIRAT
    ) || (op == IORING_OP_FTRUNCATE && file_has_io_uring_ftruncate())
}

#[inline(always)]
fn is_two(op: u8) -> bool {
    matches!(
        op,
        IORING_OP_RENAMEAT | IORING_OP_LINKAT | IORING_OP_SYMLINKAT
    ) || (matches!(op, IORING_OP_SETXATTR | IORING_OP_FSETXATTR) && file_has_io_uring_xattr())
}

/// The opcode of the tracepoint's `struct io_kiocb *` argument `n` (with the pointer),
/// 0 when io_uring
/// offsets are unknown. A direct load, no helper call: the argument is a BTF-typed
/// pointer and the offset a read-only global the verifier sees as a constant, so it
/// checks the access against `io_kiocb.opcode` (this runs for every io_uring request).
#[inline(always)]
fn opcode(ctx: &BtfTracePointContext, n: usize) -> (u64, u8) {
    if !file_has_io_uring() {
        return (0, 0);
    }
    let req: *const u8 = ctx.arg(n);
    let op = unsafe { core::ptr::read_volatile(req.add(get::OFF_FILE_IO_KIOCB_OPCODE() as usize)) };
    (req as u64, op)
}

/// The descriptor (or registered-file slot) a request names, as submitted (`cqe.fd`).
#[inline(always)]
fn submitted_fd(req: u64) -> i32 {
    unsafe { read_kernel::<i32>(req as *const u8, get::OFF_FILE_IO_KIOCB_FD()) }.unwrap_or(-1)
}

/// A field of the request's per-op struct (`io_kiocb.cmd` + `off`).
#[inline(always)]
fn cmd<T: Copy + Default>(req: u64, off: u64) -> T {
    unsafe { read_kernel::<T>(req as *const u8, get::OFF_FILE_IO_KIOCB_CMD() + off) }
        .unwrap_or_default()
}

/// The kernel's copy of a path (`struct filename *` -> `name`).
#[inline(always)]
fn filename(fname: u64) -> *const u8 {
    unsafe { read_kernel::<u64>(fname as *const u8, get::OFF_FILE_FILENAME_NAME()) }.unwrap_or(0)
        as *const u8
}

/// `name` made absolute against `dfd` (or the cwd), walked now, in scratch `slot`.
#[inline(always)]
unsafe fn resolve_name(slot: u32, dfd: i32, name: *const u8) -> Resolved {
    let first: u8 = unsafe { read_kernel::<u8>(name, 0) }.unwrap_or(0);
    let dir = unsafe { resolve_dir(slot, dfd, first) };
    unsafe { append_kernel(slot, dir, name) }
}

/// After an SQE was prepared: reads the paths the kernel copied and keeps the record
/// until the completion.
#[btf_tracepoint(function = "io_uring_submit_req")]
pub fn io_uring_submit_req_file(ctx: BtfTracePointContext) -> i32 {
    let (req, op) = opcode(&ctx, 0);
    if !is_one(op) && !is_two(op) {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if excluded(pid_tgid) {
        return 0;
    }
    // A request that posts no completion on success is reported now, without result:
    // waiting would report nothing (and leave its entry behind).
    let req_flags = unsafe { read_kernel::<u64>(req as *const u8, get::OFF_FILE_IO_KIOCB_FLAGS()) }
        .unwrap_or(0);
    let skip_cqe = req_flags & REQ_F_CQE_SKIP != 0;
    if is_one(op) {
        submit_one(
            req,
            op,
            pid_tgid,
            skip_cqe,
            req_flags & REQ_F_FIXED_FILE != 0,
        );
    } else {
        submit_two(
            req,
            op,
            pid_tgid,
            skip_cqe,
            req_flags & REQ_F_FIXED_FILE != 0,
        );
    }
    0
}

#[inline(always)]
fn submit_one(req: u64, op: u8, pid_tgid: u64, skip_cqe: bool, fixed_file: bool) {
    let Some(buf) = URING_ONE_BUF.get_ptr_mut(0) else {
        return;
    };
    let (kind, dfd, fname, open_flags, mode, fixed_slot) = match op {
        IORING_OP_FTRUNCATE => {
            // No path: the descriptor (or registered-file slot) in `cqe.fd`, the new
            // length in `io_ftrunc.len`, split like the syscall's.
            let fd = submitted_fd(req);
            let (low, high) = crate::file::length_halves(cmd(req, get::OFF_FILE_IO_FTRUNC_LEN()));
            (RecordKind::Truncate, fd, 0, low as u32, high as u32, 0)
        }
        IORING_OP_UNLINKAT => {
            let uflags: u32 = cmd(req, get::OFF_FILE_IO_UNLINK_FLAGS());
            let kind = if uflags & AT_REMOVEDIR != 0 {
                RecordKind::Rmdir
            } else {
                RecordKind::Unlink
            };
            (
                kind,
                cmd::<i32>(req, get::OFF_FILE_IO_UNLINK_DFD()),
                cmd::<u64>(req, get::OFF_FILE_IO_UNLINK_FILENAME()),
                uflags,
                0,
                0,
            )
        }
        IORING_OP_MKDIRAT => (
            RecordKind::Mkdir,
            cmd::<i32>(req, get::OFF_FILE_IO_MKDIR_DFD()),
            cmd::<u64>(req, get::OFF_FILE_IO_MKDIR_FILENAME()),
            0,
            cmd::<u16>(req, get::OFF_FILE_IO_MKDIR_MODE()) as u32,
            0,
        ),
        _ => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let how = get::OFF_FILE_IO_OPEN_HOW();
            (
                RecordKind::Open,
                cmd::<i32>(req, get::OFF_FILE_IO_OPEN_DFD()),
                cmd::<u64>(req, get::OFF_FILE_IO_OPEN_FILENAME()),
                cmd::<u64>(req, how) as u32,
                cmd::<u64>(req, how + 8) as u32,
                cmd::<u32>(req, get::OFF_FILE_IO_OPEN_FILE_SLOT()),
            )
        }
    };
    let out = unsafe { &raw mut (*buf).out };
    let rec = unsafe { &raw mut (*out).rec };
    // The header before the walk: the verifier checks its typed task loads once (see
    // `emit_one_path`).
    unsafe { fill_header(&raw mut (*rec).header, kind, pid_tgid) };
    let by_file = kind == RecordKind::Truncate;
    let r = if !by_file {
        unsafe { resolve_name(0, dfd, filename(fname)) }
    } else if fixed_file {
        // A slot, not a descriptor: only the completion's `io_kiocb.file` names it.
        Resolved::unreadable()
    } else {
        // What the descriptor names now; the completion replaces it with the file the
        // request acted on (another thread may dup2 over the descriptor in between).
        unsafe { crate::path::resolve_fd(0, dfd as u64) }
    };
    unsafe {
        let len = copy_out((&raw mut (*out).path).cast(), &r);
        (*rec).result = 0;
        (*rec).open_flags = open_flags;
        (*rec).mode = mode;
        (*rec).dirfd = dfd;
        (*rec).path_len = len;
        (*rec).path_flags = r.flags;
        (*rec).file_flags = FILE_FLAG_IO_URING;
        if by_file {
            (*rec).file_flags |= FILE_FLAG_BY_FD;
        }
        (*rec).owner_uid = 0;
        (*rec).owner_gid = 0;
        (*buf).fixed_slot = fixed_slot;
        (*buf).is_open = u32::from(kind == RecordKind::Open);
        (*buf).by_file = u32::from(by_file);
        if skip_cqe {
            (*rec).file_flags |= FILE_FLAG_NO_RESULT;
            send_one(kind, out);
            return;
        }
        if !index_request(req) || URING_ONE.insert(req, &*buf, 0).is_err() {
            // Too many requests in flight: the event is lost, counted under its reason.
            count_loss(kind, COUNTER_LOST_STASH_FULL);
        }
    }
}

#[inline(always)]
fn submit_two(req: u64, op: u8, pid_tgid: u64, skip_cqe: bool, fixed_file: bool) {
    let Some(out) = RENAME_OUT.get_ptr_mut(0) else {
        return;
    };
    if matches!(op, IORING_OP_SETXATTR | IORING_OP_FSETXATTR) {
        submit_xattr(req, op, out, pid_tgid, skip_cqe, fixed_file);
        return;
    }
    // io_rename and io_link have the same shape; their offsets are resolved apart.
    let (kind, old_dfd, new_dfd, oldpath, newpath, call_flags) = if op == IORING_OP_RENAMEAT {
        (
            RecordKind::Rename,
            cmd::<i32>(req, get::OFF_FILE_IO_RENAME_OLD_DFD()),
            cmd::<i32>(req, get::OFF_FILE_IO_RENAME_NEW_DFD()),
            cmd::<u64>(req, get::OFF_FILE_IO_RENAME_OLDPATH()),
            cmd::<u64>(req, get::OFF_FILE_IO_RENAME_NEWPATH()),
            cmd::<u32>(req, get::OFF_FILE_IO_RENAME_FLAGS()),
        )
    } else {
        let kind = if op == IORING_OP_LINKAT {
            RecordKind::Link
        } else {
            RecordKind::Symlink
        };
        (
            kind,
            cmd::<i32>(req, get::OFF_FILE_IO_LINK_OLD_DFD()),
            cmd::<i32>(req, get::OFF_FILE_IO_LINK_NEW_DFD()),
            cmd::<u64>(req, get::OFF_FILE_IO_LINK_OLDPATH()),
            cmd::<u64>(req, get::OFF_FILE_IO_LINK_NEWPATH()),
            cmd::<u32>(req, get::OFF_FILE_IO_LINK_FLAGS()),
        )
    };
    let rec = unsafe { &raw mut (*out).rec };
    // The header before the walks, verified once (see `emit_one_path`).
    unsafe { fill_header(&raw mut (*rec).header, kind, pid_tgid) };
    let (old, old_dfd, call_flags) = if kind == RecordKind::Symlink {
        // The target is content, not a path: the string alone. Its prep leaves
        // old_dfd and flags unset.
        (
            unsafe { append_kernel(0, Resolved::none(), filename(oldpath)) },
            AT_FDCWD,
            0,
        )
    } else {
        (
            unsafe { resolve_name(0, old_dfd, filename(oldpath)) },
            old_dfd,
            call_flags,
        )
    };
    let new = unsafe { resolve_name(1, new_dfd, filename(newpath)) };
    unsafe {
        (*rec).result = 0;
        (*rec).old_dirfd = old_dfd;
        (*rec).new_dirfd = new_dfd;
        (*rec).file_flags = FILE_FLAG_IO_URING;
        (*rec).call_flags = call_flags;
        fill_two(out, &old, &new);
        if skip_cqe {
            (*rec).file_flags |= FILE_FLAG_NO_RESULT;
            send_two(kind, out);
            return;
        }
        if !index_request(req) || URING_TWO.insert(req, &*out, 0).is_err() {
            count_loss(kind, COUNTER_LOST_STASH_FULL);
        }
    }
}

/// SETXATTR (a path) and FSETXATTR (a descriptor): the kernel's copies of the path and
/// of the attribute's name are read now (`io_xattr_finish` frees them before the
/// completion). FSETXATTR's file is only known when the request has run: its path is
/// filled in at the completion, from `io_kiocb.file`, like FTRUNCATE's.
#[inline(always)]
fn submit_xattr(
    req: u64,
    op: u8,
    out: *mut RenameOut,
    pid_tgid: u64,
    skip_cqe: bool,
    fixed_file: bool,
) {
    let rec = unsafe { &raw mut (*out).rec };
    unsafe { fill_header(&raw mut (*rec).header, RecordKind::Setxattr, pid_tgid) };
    let by_file = op == IORING_OP_FSETXATTR;
    let path = if by_file && fixed_file {
        // A slot, not a descriptor: only the completion's `io_kiocb.file` names it.
        Resolved::unreadable()
    } else if by_file {
        // What the descriptor names now; the completion replaces it with the file the
        // request ran on (see FTRUNCATE).
        unsafe { crate::path::resolve_fd(0, submitted_fd(req) as u64) }
    } else {
        let fname: u64 = cmd(req, get::OFF_FILE_IO_XATTR_FILENAME());
        unsafe { resolve_name(0, AT_FDCWD, filename(fname)) }
    };
    let kname: u64 = cmd(req, get::OFF_FILE_IO_XATTR_KNAME());
    let name = unsafe { append_kernel(1, Resolved::none(), kname as *const u8) };
    let size: u64 = cmd(req, get::OFF_FILE_IO_XATTR_SIZE());
    unsafe {
        (*rec).result = 0;
        (*rec).old_dirfd = AT_FDCWD;
        // The name has no directory: the slot carries the value's size, as for the call.
        (*rec).new_dirfd = size as i32;
        (*rec).file_flags = FILE_FLAG_IO_URING;
        if by_file {
            (*rec).file_flags |= FILE_FLAG_BY_FD;
        }
        (*rec).call_flags = cmd::<u32>(req, get::OFF_FILE_IO_XATTR_FLAGS());
        fill_two(out, &path, &name);
        if skip_cqe {
            (*rec).file_flags |= FILE_FLAG_NO_RESULT;
            send_two(RecordKind::Setxattr, out);
            return;
        }
        if !index_request(req) || URING_TWO.insert(req, &*out, 0).is_err() {
            count_loss(RecordKind::Setxattr, COUNTER_LOST_STASH_FULL);
        }
    }
}

/// A CQE is being posted: sends the waiting record of that request with its result.
/// Runs in a thread of the ring's owner (the submitter, an io-wq worker, or SQPOLL).
#[btf_tracepoint(function = "io_uring_complete")]
pub fn io_uring_complete_file(ctx: BtfTracePointContext) -> i32 {
    // `req` is a `void *` in this tracepoint's BTF: the verifier passes it as a plain
    // number, so its fields take probe reads.
    if !file_has_io_uring() {
        return 0;
    }
    let req: u64 = ctx.arg(1);
    let op: u8 =
        unsafe { read_kernel(req as *const u8, get::OFF_FILE_IO_KIOCB_OPCODE()) }.unwrap_or(0);
    if !is_one(op) && !is_two(op) {
        return 0;
    }
    let Ok(cqe) = (unsafe { read_kernel::<u64>(ctx.as_ptr() as *const u8, 16) }) else {
        return 0;
    };
    // struct io_uring_cqe { u64 user_data; s32 res; u32 flags; }
    let res: i32 = unsafe { read_kernel(cqe as *const u8, 8) }.unwrap_or(-1);
    complete(req, res as i64);
    unindex_request(&udata_key(req), req);
    0
}

/// A completion that found the CQ full goes to the ring's overflow list, traced without
/// the request: `URING_BY_UDATA` names it. (A process that never reaps its CQ would
/// otherwise do file operations unseen.)
///
/// Hook: BTF tracepoint `io_uring:io_uring_cqe_overflow` (ctx, user_data, res, cflags,
/// ocqe); rare, one map lookup for requests that are not file operations.
#[btf_tracepoint(function = "io_uring_cqe_overflow")]
pub fn io_uring_cqe_overflow_file(ctx: BtfTracePointContext) -> i32 {
    if !file_has_io_uring() {
        return 0;
    }
    // `ctx` and `ocqe` are `void *` here: plain numbers.
    let key: [u64; 2] = [ctx.arg(0), ctx.arg(1)];
    let Some(&req) = (unsafe { URING_BY_UDATA.get(key) }) else {
        return 0;
    };
    let res: i32 = ctx.arg(2);
    complete(req, res as i64);
    let _ = URING_BY_UDATA.remove(key);
    0
}

/// Sends the record stashed for `req` with result `res`, if there is one.
#[inline(always)]
fn complete(req: u64, res: i64) {
    if URING_ONE.get_ptr(req).is_some() {
        complete_one(req, res);
    } else {
        complete_two(req, res);
    }
}

#[inline(always)]
fn complete_one(req: u64, res: i64) {
    let Some(v) = URING_ONE.get_ptr_mut(req) else {
        return;
    };
    let out = unsafe { &raw mut (*v).out };
    let rec = unsafe { &raw mut (*out).rec };
    unsafe {
        (*rec).result = res;
        (*rec).header.ktime_ns = bpf_ktime_get_boot_ns();
    }
    if unsafe { (*v).is_open } != 0 && res >= 0 && unsafe { (*v).fixed_slot } == 0 {
        // The new fd is installed: report the file the kernel opened, like the syscall.
        // Checked as the syscall's new fd is (`resolve_new_fd`): a `dup2` over it
        // between the install and this completion.
        if let Some(new) = unsafe { NewFd::read(res as u64) } {
            let created = unsafe { read_kernel::<u32>(new.file, get::OFF_FILE_F_MODE()) }
                .map(|m| m & FMODE_CREATED != 0)
                .unwrap_or(false);
            let mut r = unsafe { resolve_file(0, new.file) };
            if unsafe { new.raced() } {
                r.flags |= PATH_FLAG_FD_RACED;
            }
            unsafe {
                if created {
                    (*rec).header.kind = RecordKind::Create as u32;
                }
                set_path(out, &r);
            }
        }
    }
    unsafe { path_from_request_file_one(req, v) };
    send_one(record_kind(unsafe { (*rec).header.kind }), out);
    let _ = URING_ONE.remove(req);
}

/// The file a request ran on (`io_kiocb.file`, assigned when it ran and held until it
/// is freed), 0 before that.
#[inline(always)]
fn request_file(req: u64) -> u64 {
    unsafe { read_kernel::<u64>(req as *const u8, get::OFF_FILE_IO_KIOCB_FILE()) }.unwrap_or(0)
}

/// For a one-path request named by its file (FTRUNCATE): that file's path, once the
/// request has one.
#[inline(always)]
unsafe fn path_from_request_file_one(req: u64, v: *mut UringOne) {
    if unsafe { (*v).by_file } == 0 {
        return;
    }
    let file = request_file(req);
    if file != 0 {
        let r = unsafe { resolve_file(0, file as *const u8) };
        unsafe { set_path(&raw mut (*v).out, &r) };
    }
}

/// For a two-path request named by its file (FSETXATTR): that file's path, once the
/// request has one. The name that follows the path is set aside first: the path is
/// written where it lies.
#[inline(always)]
unsafe fn path_from_request_file_two(req: u64, out: *mut RenameOut) {
    let rec = unsafe { &raw mut (*out).rec };
    if unsafe { (*rec).file_flags } & FILE_FLAG_BY_FD == 0 {
        return;
    }
    let file = request_file(req);
    if file == 0 {
        return;
    }
    let (name_at, name_len, name_flags) = unsafe {
        (
            (&raw const (*out).paths)
                .cast::<u8>()
                .add((*rec).old_path_len as usize),
            (*rec).new_path_len,
            (*rec).new_path_flags,
        )
    };
    let name = unsafe { copy_string(1, name_at, name_len, name_flags) };
    let path = unsafe { resolve_file(0, file as *const u8) };
    unsafe {
        (*rec).header.flags &= !(flags::PATH_TRUNCATED | flags::NEW_PATH_TRUNCATED);
        fill_two(out, &path, &name);
    }
}

/// Replaces the path of a stashed one-path record with `r`.
#[inline(always)]
unsafe fn set_path(out: *mut FileOut, r: &Resolved) {
    unsafe {
        let rec = &raw mut (*out).rec;
        (*rec).path_len = copy_out((&raw mut (*out).path).cast(), r);
        (*rec).path_flags = r.flags;
        (*rec).header.flags &= !flags::PATH_TRUNCATED;
        if r.flags & PATH_FLAG_TRUNCATED != 0 {
            (*rec).header.flags |= flags::PATH_TRUNCATED;
        }
    }
}

/// Sends a filled one-path record (unless its kernel-resolved path is excluded).
#[inline(always)]
fn send_one(kind: RecordKind, out: *mut FileOut) {
    let rec = unsafe { &raw const (*out).rec };
    let len = unsafe { (*rec).path_len };
    let len = if len > FILE_PATH_MAX as u32 {
        FILE_PATH_MAX as u32
    } else {
        len
    };
    let path_flags = unsafe { (*rec).path_flags };
    // As for syscalls: only a kernel-resolved canonical path is matched against
    // excluded prefixes.
    let skip = path_flags & PATH_FLAG_USER == 0
        && path_excluded(unsafe { (&raw const (*out).path).cast() }, len);
    if !skip {
        let total = size_of::<FileRecord>() + len as usize;
        let bytes = unsafe { core::slice::from_raw_parts(out as *const u8, total) };
        if FILE_EVENTS
            .output::<[u8]>(bytes, file_wakeup_flags(bytes.len() as u64))
            .is_err()
        {
            count_lost(kind);
        } else {
            count_emitted(kind);
            if path_flags & crate::path::PATH_FLAG_UNREADABLE != 0 {
                count_loss(kind, COUNTER_PATH_UNREADABLE);
            }
        }
    }
}

#[inline(always)]
fn complete_two(req: u64, res: i64) {
    let Some(out) = URING_TWO.get_ptr_mut(req) else {
        return;
    };
    let rec = unsafe { &raw mut (*out).rec };
    let kind = unsafe {
        (*rec).result = res;
        (*rec).header.ktime_ns = bpf_ktime_get_boot_ns();
        record_kind((*rec).header.kind)
    };
    unsafe { path_from_request_file_two(req, out) };
    send_two(kind, out);
    let _ = URING_TWO.remove(req);
}

/// The kind a stashed record was made with.
#[inline(always)]
fn record_kind(kind: u32) -> RecordKind {
    match kind {
        k if k == RecordKind::Create as u32 => RecordKind::Create,
        k if k == RecordKind::Unlink as u32 => RecordKind::Unlink,
        k if k == RecordKind::Rmdir as u32 => RecordKind::Rmdir,
        k if k == RecordKind::Mkdir as u32 => RecordKind::Mkdir,
        k if k == RecordKind::Rename as u32 => RecordKind::Rename,
        k if k == RecordKind::Link as u32 => RecordKind::Link,
        k if k == RecordKind::Symlink as u32 => RecordKind::Symlink,
        k if k == RecordKind::Truncate as u32 => RecordKind::Truncate,
        k if k == RecordKind::Setxattr as u32 => RecordKind::Setxattr,
        _ => RecordKind::Open,
    }
}
