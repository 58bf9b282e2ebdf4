//! Process lifecycle: exec, fork, exit; credential changes and failed execs.
//!
//! Hooks: BTF tracepoints `sched_process_exec`, `sched_process_fork`,
//! `sched_process_exit` (Linux >= 5.5; `group_dead` on exit from 6.16 here, before that
//! `signal->live == 0` tells the last thread). They fire in the kernel for every task,
//! so a process that lives for microseconds is complete. A failed exec never reaches
//! `sched_process_exec`: it and credential changes come from the BTF `sys_exit`
//! tracepoint (which, unlike `syscalls:sys_exit_*`, also fires for the 32-bit entry),
//! filtered on the syscall number first so other syscalls cost a compare. There is no
//! `sys_enter` hook: every syscall on the machine pays for each program on these two
//! tracepoints, so the credentials a call is compared with are each thread's last known
//! ones ([`TASK_CREDS`], set at its clone and at each watched call's exit), and a failed
//! exec's path is read through the argument registers saved at entry.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_smp_processor_id, bpf_probe_read_kernel_str, bpf_probe_read_user,
            bpf_probe_read_user_str,
        },
    },
    macros::{btf_tracepoint, map},
    maps::Array,
    programs::BtfTracePointContext,
};
use collector_common::{
    exec_flags, flags, CredChangeRecord, Credentials, ExecFailedRecord, ExecRecord, ExitRecord,
    ForkRecord, RecordKind, EXEC_ARGV_LEN, EXEC_EXE_NAME_LEN, EXEC_FAILED_PATH_LEN,
    EXEC_FILENAME_LEN, EXEC_INTERP_LEN,
};

use crate::{
    common::{
        count_emitted, count_lost, current_task_btf, excluded, excluded_by_pid, exclusions_at_exec,
        exclusions_at_exit, exclusions_at_fork, exec_wakeup_flags, fill_header, load_btf,
        process_wakeup_flags, read_kernel, syscall_arg, PROCESS_EVENTS,
    },
    offsets::{
        exit_has_group_dead, get, proc_has_audit, proc_has_bprm_executable, proc_has_compat,
    },
    path::{copy_out, resolve_file, resolve_pwd, PATH_MAX},
};

/// `PF_KTHREAD` in `task_struct.flags` (stable since 2.6).
const PF_KTHREAD: u32 = 0x0020_0000;
/// `TS_COMPAT` in x86 `thread_info.status`: the current syscall came through the 32-bit entry.
const TS_COMPAT: u32 = 0x0002;

/// The task's credentials (`task->cred`, the ones the kernel checks against).
/// `task` must be BTF-typed (a tracepoint argument or `current_task_btf`): every field
/// is a plain typed load, no helper call (each used to be a `bpf_probe_read_kernel`).
#[inline(always)]
unsafe fn read_creds(task: *const u8) -> Credentials {
    unsafe {
        let cred: *const u8 = load_btf(task, get::OFF_PROC_TASK_CRED());
        let (loginuid, sessionid) = if proc_has_audit() {
            (
                load_btf(task, get::OFF_PROC_TASK_LOGINUID()),
                load_btf(task, get::OFF_PROC_TASK_SESSIONID()),
            )
        } else {
            (u32::MAX, u32::MAX)
        };
        Credentials {
            uid: load_btf(cred, get::OFF_PROC_CRED_UID()),
            euid: load_btf(cred, get::OFF_PROC_CRED_EUID()),
            suid: load_btf(cred, get::OFF_PROC_CRED_SUID()),
            fsuid: load_btf(cred, get::OFF_PROC_CRED_FSUID()),
            gid: load_btf(cred, get::OFF_PROC_CRED_GID()),
            egid: load_btf(cred, get::OFF_PROC_CRED_EGID()),
            sgid: load_btf(cred, get::OFF_PROC_CRED_SGID()),
            fsgid: load_btf(cred, get::OFF_PROC_CRED_FSGID()),
            cap_effective: load_btf(cred, get::OFF_PROC_CRED_CAP_EFFECTIVE()),
            cap_permitted: load_btf(cred, get::OFF_PROC_CRED_CAP_PERMITTED()),
            loginuid,
            sessionid,
        }
    }
}

/// The inode number of the initial pid namespace (`PROC_PID_INIT_INO`), fixed by the
/// kernel since 3.8: what `/proc/<pid>/ns/pid` shows for every host process.
const PROC_PID_INIT_INO: u32 = 0xEFFF_FFFC;

/// The current process's pid in its own pid namespace and that namespace's inode
/// (of the thread-group leader: the process, not the thread).
#[inline(always)]
fn pid_namespace_identity() -> (u32, u32) {
    unsafe {
        // Typed loads down to `struct pid`; `numbers[level]` has a variable index, which
        // typed loads cannot take, so the `upid` (nr, ns) is one helper read and the
        // namespace's inode another.
        let leader: *const u8 = load_btf(current_task_btf(), get::OFF_PROC_TASK_GROUP_LEADER());
        let pid: *const u8 = load_btf(leader, get::OFF_PROC_TASK_THREAD_PID());
        if pid.is_null() {
            return (0, 0);
        }
        // Nesting is at most 32 levels (MAX_PID_NS_LEVEL).
        let level = load_btf::<u32>(pid, get::OFF_PROC_PID_LEVEL()) & 31;
        if level == 0 {
            // A host process (nearly all of them): its pid there is its tgid and the
            // namespace is the initial one. Two helper reads and two cold loads fewer
            // per record (measured: fork and exit programs spend most of their time on
            // loads of memory the workload has not touched lately).
            return ((bpf_get_current_pid_tgid() >> 32) as u32, PROC_PID_INIT_INO);
        }
        let stride = get::OFF_PROC_UPID_NS() * 2;
        let upid = (pid as u64).wrapping_add(get::OFF_PROC_PID_NUMBERS() + level as u64 * stride);
        let r = if get::OFF_PROC_UPID_NS() == 8 {
            // `struct upid { int nr; struct pid_namespace *ns; }`: both in one read.
            read_kernel::<[u64; 2]>(upid as *const u8, 0).map(|v| (v[0] as u32, v[1]))
        } else {
            read_kernel::<u32>(upid as *const u8, 0).and_then(|nr| {
                Ok((
                    nr,
                    read_kernel::<u64>(upid as *const u8, get::OFF_PROC_UPID_NS())?,
                ))
            })
        };
        r.and_then(|(nr, ns)| {
            Ok((
                nr,
                read_kernel::<u32>(ns as *const u8, get::OFF_PROC_PIDNS_INUM())?,
            ))
        })
        .unwrap_or((0, 0))
    }
}

/// `task` must be BTF-typed (see `read_creds`).
#[inline(always)]
unsafe fn is_kthread(task: *const u8) -> bool {
    unsafe { load_btf::<u32>(task, get::OFF_PROC_TASK_FLAGS()) & PF_KTHREAD != 0 }
}

/// `task` must be BTF-typed (see `read_creds`).
#[inline(always)]
unsafe fn parent_tgid(task: *const u8) -> u32 {
    unsafe {
        let parent: *const u8 = load_btf(task, get::OFF_TASK_REAL_PARENT());
        load_btf(parent, get::OFF_TASK_TGID())
    }
}

/// Per-CPU assembly area of one exec record: the fixed part, then the tail with every
/// part at its cap. A plain array with one slot per possible CPU (the loader sizes it),
/// because a per-CPU array value is capped at 32 KiB and argv alone may be that long.
/// Programs on one CPU do not nest into the same program (the kernel's per-program
/// recursion guard), so a slot is never shared by two execs at once.
const EXEC_SCRATCH_LEN: usize = ExecRecord::TAIL_OFFSET + ExecRecord::MAX_TAIL_LEN;

#[repr(C, align(8))]
pub struct ExecScratch {
    bytes: [u8; EXEC_SCRATCH_LEN],
}

#[map]
static EXEC_SCRATCH: Array<ExecScratch> = Array::with_max_entries(1, 0);

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let old_pid: u32 = ctx.arg(1);
    if old_pid != pid_tgid as u32 {
        // A non-leader thread exec'd and took the leader's id (`de_thread`): its exit
        // from the exec is compared with its own credentials, not the leader's.
        match recall_creds(old_pid) {
            Some(creds) => remember_creds(pid_tgid as u32, &creds),
            None => forget_creds(pid_tgid as u32),
        }
    }
    exclusions_at_exec((pid_tgid >> 32) as u32);
    if excluded(pid_tgid) {
        return 0;
    }
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(scratch) = EXEC_SCRATCH.get_ptr_mut(cpu) else {
        count_lost(RecordKind::Exec);
        return 0;
    };
    let base = scratch.cast::<u8>();
    let rec = base.cast::<ExecRecord>();
    let len = unsafe {
        fill_header(&raw mut (*rec).header, RecordKind::Exec, pid_tgid);
        let task: *const u8 = ctx.arg(0);
        let old_pid: u32 = ctx.arg(1);
        let bprm: *const u8 = ctx.arg(2);
        (*rec).old_pid = old_pid;
        (*rec).ppid = parent_tgid(task);
        (*rec).start_boottime_ns = load_btf(task, get::OFF_TASK_START_BOOTTIME());
        (*rec).creds = read_creds(task);
        let secure = read_kernel::<u8>(bprm, get::OFF_PROC_BPRM_SECUREEXEC_BYTE()).unwrap_or(0);
        (*rec).exec_flags = if (secure >> (get::PROC_BPRM_SECUREEXEC_BIT() & 7)) & 1 != 0 {
            exec_flags::SECURE_EXEC
        } else {
            0
        };
        // Volatile: adjacent zero stores are otherwise merged into a call of the
        // byte-wise `memset` subprogram.
        write_volatile(&raw mut (*rec)._pad, 0);
        write_volatile(&raw mut (*rec).exe_path_len, 0);
        write_volatile(&raw mut (*rec).exe_path_flags, 0);
        write_volatile(&raw mut (*rec).cwd_len, 0);
        write_volatile(&raw mut (*rec).cwd_flags, 0);
        ((*rec).ns_pid, (*rec).pidns_inum) = pid_namespace_identity();
        // The tail: each part is read straight into place after the previous one, and
        // each offset is masked to its part's cap so the verifier sees the bound.
        let tail = base.add(ExecRecord::TAIL_OFFSET);
        let filename: u64 = load_btf(bprm, get::OFF_BPRM_FILENAME());
        let flen = read_filename(rec, tail, filename);
        let ilen = read_interpreter(rec, tail.add(flen), bprm, filename);
        let file = exec_file(bprm);
        let elen = read_executable(rec, tail.add(flen + ilen), file);
        let plen = read_exe_path(rec, tail.add(flen + ilen + elen), file);
        let clen = read_cwd(rec, tail.add(flen + ilen + elen + plen));
        let alen = read_argv(rec, tail.add(flen + ilen + elen + plen + clen), task);
        if (*rec).header.flags & flags::ARGV_UNREADABLE != 0 {
            // Rare (an image whose argument pages are not resident): diagnostics through
            // aya-log, off the hot path. Userspace still gets the event, flagged.
            aya_log_ebpf::warn!(
                &ctx,
                "exec of pid {}: argv could not be read",
                (*rec).header.pid
            );
        }
        ExecRecord::TAIL_OFFSET + flen + ilen + elen + plen + clen + alen
    };
    // One copy of exactly the bytes used (`len` <= EXEC_SCRATCH_LEN by construction).
    let bytes = unsafe { core::slice::from_raw_parts(base.cast_const(), len) };
    // An exec wakes the reader (rate-limited, see `exec_wakeup_flags`), so it reaches
    // subscribers in milliseconds; forks and exits ride along with it or wait for the
    // reader's timer (`process_wakeup_flags`), since a wakeup per record was most of
    // these programs' cost.
    if PROCESS_EVENTS
        .output::<[u8]>(
            bytes,
            exec_wakeup_flags(unsafe { (*rec).header.ktime_ns }, len as u64),
        )
        .is_err()
    {
        count_lost(RecordKind::Exec);
        return 0;
    }
    count_emitted(RecordKind::Exec);
    0
}

/// `bprm->filename` (the path the kernel resolved the exec from) into `dst`; its length.
#[inline(always)]
unsafe fn read_filename(rec: *mut ExecRecord, dst: *mut u8, filename: u64) -> usize {
    unsafe {
        (*rec).filename_len = 0;
        if filename == 0 {
            return 0;
        }
        let n =
            bpf_probe_read_kernel_str(dst.cast(), EXEC_FILENAME_LEN as u32, filename as *const _);
        if n <= 0 {
            return 0;
        }
        // `n` counts the NUL; a full buffer means the path may have been cut.
        let len = ((n - 1) as usize) & (EXEC_FILENAME_LEN - 1);
        if len >= EXEC_FILENAME_LEN - 1 {
            (*rec).header.flags |= flags::FILENAME_TRUNCATED;
        }
        (*rec).filename_len = len as u32;
        len
    }
}

/// A script's interpreter: binfmt_script/binfmt_misc point `interp` at it; otherwise it
/// is the very `filename` pointer. Its length (0 for a binary).
#[inline(always)]
unsafe fn read_interpreter(
    rec: *mut ExecRecord,
    dst: *mut u8,
    bprm: *const u8,
    filename: u64,
) -> usize {
    unsafe {
        (*rec).interp_len = 0;
        let interp: u64 = load_btf(bprm, get::OFF_PROC_BPRM_INTERP());
        if interp == 0 || interp == filename {
            return 0;
        }
        (*rec).exec_flags |= exec_flags::SCRIPT;
        let n = bpf_probe_read_kernel_str(dst.cast(), EXEC_INTERP_LEN as u32, interp as *const _);
        if n <= 0 {
            return 0;
        }
        let len = ((n - 1) as usize) & (EXEC_INTERP_LEN - 1);
        if len >= EXEC_INTERP_LEN - 1 {
            (*rec).exec_flags |= exec_flags::INTERP_TRUNCATED;
        }
        (*rec).interp_len = len as u32;
        len
    }
}

/// The file the kernel loaded: `bprm->executable` when set (binfmt_misc with the `O`
/// flag keeps the original binary there), else `bprm->file` (for a script, the
/// interpreter's: `exec_binprm` has swapped the script's file out by this tracepoint).
/// 0 when unreadable.
#[inline(always)]
unsafe fn exec_file(bprm: *const u8) -> u64 {
    unsafe {
        let mut file = 0u64;
        if proc_has_bprm_executable() {
            file = load_btf(bprm, get::OFF_PROC_BPRM_EXECUTABLE());
        }
        if file == 0 {
            file = load_btf(bprm, get::OFF_PROC_BPRM_FILE());
        }
        file
    }
}

/// The loaded file's absolute path, walked in the kernel from its `struct file` (what
/// the kernel executes, whatever string or symlink led to it), into `dst`; its length.
#[inline(always)]
unsafe fn read_exe_path(rec: *mut ExecRecord, dst: *mut u8, file: u64) -> usize {
    unsafe {
        let r = resolve_file(0, file as *const u8);
        let mut len = copy_out(dst, &r);
        if len > PATH_MAX {
            len = PATH_MAX;
        }
        (*rec).exe_path_len = len;
        (*rec).exe_path_flags = r.flags;
        len as usize
    }
}

/// The task's working directory at the exec, walked in the kernel, into `dst`; its
/// length. With it a relative script path (or argv[0]) is made absolute without /proc.
#[inline(always)]
unsafe fn read_cwd(rec: *mut ExecRecord, dst: *mut u8) -> usize {
    unsafe {
        let r = resolve_pwd(1);
        let mut len = copy_out(dst, &r);
        if len > PATH_MAX {
            len = PATH_MAX;
        }
        (*rec).cwd_len = len;
        (*rec).cwd_flags = r.flags;
        len as usize
    }
}

/// Identity of the executed file: inode, device, link count; its dentry name is kept
/// (at `dst`) only when it is a memfd's. Returns the bytes kept.
#[inline(always)]
unsafe fn read_executable(rec: *mut ExecRecord, dst: *mut u8, file: u64) -> usize {
    unsafe {
        // Volatile: see the exec record's zeroing.
        write_volatile(&raw mut (*rec).exe_nlink, 0);
        write_volatile(&raw mut (*rec).exe_ino, 0);
        write_volatile(&raw mut (*rec).exe_dev, 0);
        write_volatile(&raw mut (*rec).exe_name_len, 0);
        write_volatile(&raw mut (*rec).exe_size, 0);
        write_volatile(&raw mut (*rec).exe_mtime_sec, 0);
        write_volatile(&raw mut (*rec).exe_mtime_nsec, 0);
        write_volatile(&raw mut (*rec).exe_ctime_sec, 0);
        write_volatile(&raw mut (*rec).exe_ctime_nsec, 0);
        if file == 0 {
            return 0;
        }
        // `file` came from a typed load (`exec_file`): typed loads down to the inode,
        // superblock and dentry name pointer, no helper call.
        let file = file as *const u8;
        let inode: *const u8 = load_btf(file, get::OFF_PROC_FILE_INODE());
        if !inode.is_null() {
            (*rec).exe_ino = load_btf(inode, get::OFF_PROC_INODE_INO());
            (*rec).exe_nlink = load_btf(inode, get::OFF_PROC_INODE_NLINK());
            // The file's version (the executable-hash cache's key); 0 offsets where the
            // kernel lacks the split time fields.
            if get::OFF_PROC_INODE_MTIME_SEC() != 0 {
                (*rec).exe_size = load_btf(inode, get::OFF_PROC_INODE_SIZE());
                (*rec).exe_mtime_sec = load_btf(inode, get::OFF_PROC_INODE_MTIME_SEC());
                (*rec).exe_mtime_nsec = load_btf(inode, get::OFF_PROC_INODE_MTIME_NSEC());
                (*rec).exe_ctime_sec = load_btf(inode, get::OFF_PROC_INODE_CTIME_SEC());
                (*rec).exe_ctime_nsec = load_btf(inode, get::OFF_PROC_INODE_CTIME_NSEC());
            }
            let sb: *const u8 = load_btf(inode, get::OFF_PROC_INODE_SB());
            (*rec).exe_dev = load_btf(sb, get::OFF_PROC_SB_DEV());
            if (*rec).exe_nlink == 0 {
                (*rec).exec_flags |= exec_flags::DELETED;
            }
        }
        let dentry: *const u8 = load_btf(file, get::OFF_PROC_FILE_DENTRY());
        let name: u64 = load_btf(dentry, get::OFF_PROC_DENTRY_NAME());
        if name == 0 {
            return 0;
        }
        // memfd_create names the shmem file's dentry "memfd:<name>". One 8-byte read
        // (the name's storage is at least that long: the dentry's inline name or a
        // kmalloc'ed one), compared on its first 6 bytes (little-endian).
        const MEMFD_PREFIX: u64 = u64::from_le_bytes(*b"memfd:\0\0");
        let prefix = read_kernel::<u64>(name as *const u8, 0).unwrap_or(0);
        if prefix & 0xffff_ffff_ffff != MEMFD_PREFIX {
            return 0;
        }
        (*rec).exec_flags |= exec_flags::MEMFD;
        let n = bpf_probe_read_kernel_str(dst.cast(), EXEC_EXE_NAME_LEN as u32, name as *const _);
        if n <= 0 {
            return 0;
        }
        let len = ((n - 1) as usize) & (EXEC_EXE_NAME_LEN - 1);
        (*rec).exe_name_len = len as u32;
        len
    }
}

/// NUL-separated arguments from `mm->arg_start..arg_end` into `dst`; their length.
/// An empty argument area (a process exec'd with argc 0) is never read.
#[inline(always)]
unsafe fn read_argv(rec: *mut ExecRecord, dst: *mut u8, task: *const u8) -> usize {
    unsafe {
        (*rec).argv_len = 0;
        // Typed loads (`task` is the tracepoint's typed argument).
        let mm: *const u8 = load_btf(task, get::OFF_TASK_MM());
        let args: Result<(u64, u64), ()> = if mm.is_null() {
            Err(())
        } else {
            Ok((
                load_btf(mm, get::OFF_MM_ARG_START()),
                load_btf(mm, get::OFF_MM_ARG_END()),
            ))
        };
        let Ok((start, end)) = args else {
            (*rec).header.flags |= flags::ARGV_UNREADABLE;
            return 0;
        };
        if end <= start {
            return 0;
        }
        let mut len = end - start;
        if len > EXEC_ARGV_LEN as u64 {
            len = EXEC_ARGV_LEN as u64;
            (*rec).header.flags |= flags::ARGV_TRUNCATED;
        }
        // Bound for the verifier: 0 < len <= EXEC_ARGV_LEN.
        let len = ((len - 1) & (EXEC_ARGV_LEN as u64 - 1)) + 1;
        if bpf_probe_read_user(dst.cast(), len as u32, start as *const _) < 0 {
            (*rec).header.flags |= flags::ARGV_UNREADABLE;
            return 0;
        }
        (*rec).argv_len = len as u32;
        len as usize
    }
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let child: *const u8 = ctx.arg(1);
    // `child` is the tracepoint's typed argument: plain loads.
    let child_tgid: u32 = unsafe { load_btf(child, get::OFF_TASK_TGID()) };
    let child_pid: u32 = unsafe { load_btf(child, get::OFF_TASK_PID()) };
    // Every new task, thread or process, starts with known credentials (its creator's
    // copy), which its watched syscalls are compared with at their exit. Kernel
    // threads too: before 5.19 a usermode helper keeps `PF_KTHREAD` until its exec.
    let child_creds = unsafe { read_creds(child) };
    remember_creds(child_pid, &child_creds);
    if unsafe { is_kthread(child) } {
        // kthreadd spawning kernel workers: not a process a user started.
        return 0;
    }
    exclusions_at_fork((pid_tgid >> 32) as u32, child_tgid);
    if excluded(pid_tgid) {
        return 0;
    }
    if child_pid != child_tgid {
        // A new thread of an existing process, not a new process.
        return 0;
    }
    let Some(mut entry) = PROCESS_EVENTS.reserve::<ForkRecord>(0) else {
        count_lost(RecordKind::Fork);
        return 0;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*rec).header, RecordKind::Fork, pid_tgid);
        (*rec).child_pid = child_tgid;
        (*rec)._pad = 0;
        (*rec).child_start_boottime_ns = load_btf(child, get::OFF_TASK_START_BOOTTIME());
        (*rec).creds = read_creds(ctx.arg(0));
        ((*rec).ns_pid, (*rec).pidns_inum) = pid_namespace_identity();
    }
    entry.submit(process_wakeup_flags(size_of::<ForkRecord>() as u64));
    count_emitted(RecordKind::Fork);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let task: *const u8 = ctx.arg(0);
    let last_thread = if exit_has_group_dead() {
        let group_dead: u64 = ctx.arg(1);
        group_dead & 0xff != 0
    } else {
        // Before `group_dead` was passed: do_exit() has already decremented
        // `signal->live`, so it is 0 only for the last thread of the group, whichever
        // thread that is (the leader may have pthread_exit'ed long before), and never
        // for the old leader that a non-leader exec (de_thread) reaps.
        unsafe {
            let sig: *const u8 = load_btf(task, get::OFF_PROC_TASK_SIGNAL());
            !sig.is_null() && load_btf::<u32>(sig, get::OFF_PROC_SIGNAL_LIVE()) == 0
        }
    };
    if !last_thread || unsafe { is_kthread(task) } {
        return 0;
    }
    if excluded(pid_tgid) {
        exclusions_at_exit((pid_tgid >> 32) as u32);
        return 0;
    }
    exclusions_at_exit((pid_tgid >> 32) as u32);
    let Some(mut entry) = PROCESS_EVENTS.reserve::<ExitRecord>(0) else {
        count_lost(RecordKind::Exit);
        return 0;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*rec).header, RecordKind::Exit, pid_tgid);
        (*rec).exit_code = load_btf(task, get::OFF_TASK_EXIT_CODE());
        (*rec).ppid = parent_tgid(task);
        (*rec).creds = read_creds(task);
        ((*rec).ns_pid, (*rec).pidns_inum) = pid_namespace_identity();
    }
    entry.submit(process_wakeup_flags(size_of::<ExitRecord>() as u64));
    count_emitted(RecordKind::Exit);
    0
}

/// One thread's last known credentials (see [`TASK_CREDS`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KnownCreds {
    /// Whose they are; 0 while being written (no user thread has id 0).
    tid: u32,
    /// [`TASK_CREDS_EPOCH`] when written.
    epoch: u32,
    creds: Credentials,
}

/// Slots of [`TASK_CREDS`] (a power of two).
const TASK_CREDS_SLOTS: u32 = 1 << 16;
/// `Credentials` as the 8-byte words it is copied by (no byte-wise `memcpy`).
const CRED_WORDS: usize = size_of::<Credentials>() / 8;
const _: () = assert!(size_of::<Credentials>().is_multiple_of(8));

/// Each thread's last known credentials, in the slot of its thread id modulo
/// [`TASK_CREDS_SLOTS`], tagged with the id: written when the thread is created
/// (`sched_process_fork` fires for threads too) and at the exit of each watched
/// syscall, read there to tell a change. Every thread passes its creation, so a slot
/// tagged with a thread's id holds that thread's credentials, never those of an earlier
/// holder of the id. A direct-mapped array, not a hash map: a lookup is an inlined
/// address computation, with no helper call or lock (a hash map insert cost the fork
/// program 0.5-1 µs here). A thread with no slot (it predates the collector, or a
/// thread whose id is congruent to its own took the slot since) reports its first
/// change with the old credentials unknown (`OLD_CREDS_UNKNOWN`), never wrong ones.
#[map]
static TASK_CREDS: Array<KnownCreds> = Array::with_max_entries(TASK_CREDS_SLOTS, 0);

/// Generation of [`TASK_CREDS`]: the loader bumps it whenever `sched_process_fork`
/// (re)attaches, since a thread created while it was detached may have taken a tagged
/// slot's id; slots of another generation are unknown.
#[map]
static TASK_CREDS_EPOCH: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
fn creds_epoch() -> u32 {
    TASK_CREDS_EPOCH.get(0).copied().unwrap_or(0)
}

/// Records `creds` as thread `tid`'s. The tag is cleared first and set last, so a
/// reader racing a writer of another id in the same slot sees a tag that is not its own.
#[inline(always)]
fn remember_creds(tid: u32, creds: &Credentials) {
    let Some(slot) = TASK_CREDS.get_ptr_mut(tid & (TASK_CREDS_SLOTS - 1)) else {
        return;
    };
    unsafe {
        write_volatile(&raw mut (*slot).tid, 0);
        write_volatile(&raw mut (*slot).epoch, creds_epoch());
        copy_creds(&raw mut (*slot).creds, creds);
        write_volatile(&raw mut (*slot).tid, tid);
    }
}

/// Copies credentials word by word, each word read and written once (a slot may be
/// written on another CPU meanwhile; the tags around the copy tell), with no byte-wise
/// `memcpy`.
///
/// # Safety
/// `dst` and `src` point to `Credentials`.
#[inline(always)]
unsafe fn copy_creds(dst: *mut Credentials, src: *const Credentials) {
    let (dst, src) = (dst.cast::<u64>(), src.cast::<u64>());
    for i in 0..CRED_WORDS {
        unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
    }
}

/// Drops thread `tid`'s credentials, if its slot holds them.
#[inline(always)]
fn forget_creds(tid: u32) {
    if let Some(slot) = TASK_CREDS.get_ptr_mut(tid & (TASK_CREDS_SLOTS - 1)) {
        unsafe {
            if read_volatile(&raw const (*slot).tid) == tid {
                write_volatile(&raw mut (*slot).tid, 0);
            }
        }
    }
}

/// Whether credentials hold capabilities without being root: what a new user namespace
/// gives an unprivileged process.
#[inline(always)]
fn holds_caps_unprivileged(c: &Credentials) -> bool {
    c.uid != 0 && c.euid != 0 && c.cap_effective != 0
}

/// Whether namespace call `nr` may have entered a user namespace: an unshare with
/// `CLONE_NEWUSER` in its flags, or any setns (its descriptor's type is not in the
/// arguments when `nstype` is 0).
#[inline(always)]
fn may_enter_user_ns(nr: u64, regs: *const u8, compat: bool) -> bool {
    const CLONE_NEWUSER: u64 = 0x1000_0000;
    let unshare = if compat { nr == 310 } else { nr == 272 };
    !unshare || entry_arg(regs, 0, compat) & CLONE_NEWUSER != 0
}

/// The task a clone's child `task` was made from: its group leader for a thread, its
/// parent otherwise (a typed load).
#[inline(always)]
unsafe fn clone_creator(task: *const u8, pid_tgid: u64) -> *const u8 {
    unsafe {
        if pid_tgid as u32 != (pid_tgid >> 32) as u32 {
            load_btf(task, get::OFF_PROC_TASK_GROUP_LEADER())
        } else {
            load_btf(task, get::OFF_PROC_TASK_REAL_PARENT())
        }
    }
}

/// The user namespace `task`'s credentials are in (its address: typed loads).
#[inline(always)]
unsafe fn user_ns_of(task: *const u8) -> u64 {
    unsafe {
        let cred: *const u8 = load_btf(task, get::OFF_PROC_TASK_CRED());
        let ns: *const u8 = load_btf(cred, get::OFF_PROC_CRED_USER_NS());
        ns as u64
    }
}

/// Whether credentials show a privilege an exec can grant: set-id bits left the
/// effective or saved ids apart from the real ones, or file capabilities gave a
/// non-root user capabilities.
#[inline(always)]
fn shows_exec_privilege(c: &Credentials) -> bool {
    c.euid != c.uid
        || c.suid != c.uid
        || c.egid != c.gid
        || c.sgid != c.gid
        || (c.uid != 0 && c.cap_permitted != 0)
}

/// Thread `tid`'s last known credentials, if its slot holds them: the tag is checked
/// before and after the copy.
#[inline(always)]
fn recall_creds(tid: u32) -> Option<Credentials> {
    let slot = TASK_CREDS.get_ptr(tid & (TASK_CREDS_SLOTS - 1))?;
    unsafe {
        if read_volatile(&raw const (*slot).tid) != tid
            || read_volatile(&raw const (*slot).epoch) != creds_epoch()
        {
            return None;
        }
        let mut out = core::mem::MaybeUninit::<Credentials>::uninit();
        copy_creds(out.as_mut_ptr(), &raw const (*slot).creds);
        if read_volatile(&raw const (*slot).tid) != tid {
            return None;
        }
        Some(out.assume_init())
    }
}

/// What a watched syscall number is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watched {
    /// Changes credentials (setuid family, capset).
    Creds,
    /// `execve`: path is argument 0.
    Execve,
    /// `execveat`: path is argument 1.
    Execveat,
    /// unshare, setns: may enter a user namespace, which gives every capability in it.
    Namespace,
    /// clone, clone3: the new task may start in a new user namespace (`CLONE_NEWUSER`).
    Clone,
}

/// Syscall numbers (x86_64 and, with `compat`, i386) that change credentials or exec.
#[inline(always)]
fn watched(nr: u64, compat: bool) -> Option<Watched> {
    if compat {
        match nr {
            // setuid, setgid, setreuid, setregid, setfsuid, setfsgid, setresuid,
            // setresgid (16-bit), capset, setreuid32, setregid32, setresuid32,
            // setresgid32, setuid32, setgid32, setfsuid32, setfsgid32
            23 | 46 | 70 | 71 | 138 | 139 | 164 | 170 | 185 | 203 | 204 | 208 | 210 | 213 | 214
            | 215 | 216 => Some(Watched::Creds),
            11 => Some(Watched::Execve),
            358 => Some(Watched::Execveat),
            // unshare, setns
            310 | 346 => Some(Watched::Namespace),
            // clone, clone3
            120 | 435 => Some(Watched::Clone),
            _ => None,
        }
    } else {
        match nr {
            // setuid, setgid, setreuid, setregid, setresuid, setresgid, setfsuid,
            // setfsgid, capset
            105 | 106 | 113 | 114 | 117 | 119 | 122 | 123 | 126 => Some(Watched::Creds),
            59 => Some(Watched::Execve),
            322 => Some(Watched::Execveat),
            // unshare, setns
            272 | 308 => Some(Watched::Namespace),
            // clone, clone3
            56 | 435 => Some(Watched::Clone),
            _ => None,
        }
    }
}

/// Whether `nr` is watched under either entry's numbering (the task's entry is read
/// only for these). `sys_exit_shared` asks it too, before any part runs (see
/// `sys_exit.rs`), so it is exactly [`watched`]'s numbers: a wider test let hot calls
/// such as futex (202) through to every part.
#[inline(always)]
pub(crate) fn exit_wanted(nr: u64) -> bool {
    watched(nr, false).is_some() || watched(nr, true).is_some()
}

#[inline(always)]
fn current_is_compat(task: *const u8) -> bool {
    proc_has_compat()
        && unsafe { load_btf::<u32>(task, get::OFF_PROC_TASK_TI_STATUS()) } & TS_COMPAT != 0
}

/// Argument `n` (0 or 1) of the current syscall for either entry.
#[inline(always)]
fn entry_arg(regs: *const u8, n: usize, compat: bool) -> u64 {
    if compat {
        let off = if n == 0 {
            get::OFF_PROC_REGS_BX()
        } else {
            get::OFF_PROC_REGS_CX()
        };
        // i386 registers are 32 bits wide.
        unsafe { read_kernel::<u64>(regs, off) }.unwrap_or(0) & 0xffff_ffff
    } else {
        syscall_arg(regs, n)
    }
}

/// The process domain's part of the shared `sys_exit` program (`sys_exit_shared`):
/// cred changes and failed execs. `nr` is the syscall number from the saved
/// registers `regs`; only the syscalls some domain's `exit_wanted`
/// names get here from `sys_exit_shared`.
#[inline(always)]
pub(crate) fn on_sys_exit(ctx: &BtfTracePointContext, regs: *const u8, nr: u64) -> i32 {
    if !exit_wanted(nr) {
        return 0;
    }
    let task = current_task_btf();
    let compat = current_is_compat(task);
    let Some(what) = watched(nr, compat) else {
        return 0;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let ret: i64 = ctx.arg(1);
    // A clone's child returning to user space in another user namespace than the task
    // it was cloned from (`CLONE_NEWUSER`): that task's credentials are its old ones.
    // The creator's side (the child's id), and a child in its creator's namespace
    // (every ordinary fork and thread), changed nothing.
    let cloned_from = if what == Watched::Clone {
        if ret != 0 {
            return 0;
        }
        let creator = unsafe { clone_creator(task, pid_tgid) };
        if creator.is_null() || unsafe { user_ns_of(task) == user_ns_of(creator) } {
            return 0;
        }
        Some(unsafe { read_creds(creator) })
    } else {
        None
    };
    if ret < 0 {
        // A refused call changes no credentials. A failed exec left the saved registers
        // as the caller set them: the path pointer is still its argument.
        if matches!(what, Watched::Execve | Watched::Execveat) && !excluded(pid_tgid) {
            let filename = match what {
                Watched::Execveat => entry_arg(regs, 1, compat),
                _ => entry_arg(regs, 0, compat),
            };
            emit_exec_failed(pid_tgid, nr as u32, compat, filename, ret);
        }
        return 0;
    }
    let tid = pid_tgid as u32;
    let new = unsafe { read_creds(task) };
    let old = cloned_from.or_else(|| recall_creds(tid));
    if old == Some(new) {
        return 0;
    }
    remember_creds(tid, &new);
    if what == Watched::Namespace
        && old.is_none()
        && (!holds_caps_unprivileged(&new) || !may_enter_user_ns(nr, regs, compat))
    {
        // Never seen: a change cannot be told; shown when the call may have entered a
        // user namespace and the task holds capabilities without being root, as a new
        // one gives them.
        return 0;
    }
    if matches!(what, Watched::Creds | Watched::Namespace | Watched::Clone) {
        if excluded(pid_tgid) {
            return 0;
        }
    } else {
        // An exec by a thread with no slot: reported (old unknown) when the result
        // shows a privilege an exec grants, so emptying one's slot (pid reuse) does
        // not hide a setuid exec; otherwise the exec record says it all.
        if old.is_none() && !shows_exec_privilege(&new) {
            return 0;
        }
        // Not by comm: the new image's comm is the name of the path the caller gave
        // (a symlink named like an excluded program).
        if excluded_by_pid(pid_tgid) {
            return 0;
        }
    }
    let Some(mut entry) = PROCESS_EVENTS.reserve::<CredChangeRecord>(0) else {
        count_lost(RecordKind::CredChange);
        return 0;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*rec).header, RecordKind::CredChange, pid_tgid);
        (*rec).syscall_nr = nr as u32;
        (*rec).compat = compat as u32;
        (*rec).new = new;
        match old {
            Some(old) => (*rec).old = old,
            None => {
                (*rec).old = new;
                (*rec).header.flags |= flags::OLD_CREDS_UNKNOWN;
            }
        }
    }
    // Rare and security-relevant: delivered at once, like an exec.
    entry.submit(0);
    count_emitted(RecordKind::CredChange);
    0
}

#[inline(always)]
fn emit_exec_failed(pid_tgid: u64, nr: u32, compat: bool, filename: u64, ret: i64) {
    let Some(mut entry) = PROCESS_EVENTS.reserve::<ExecFailedRecord>(0) else {
        count_lost(RecordKind::ExecFailed);
        return;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*rec).header, RecordKind::ExecFailed, pid_tgid);
        (*rec).errno = ret.wrapping_neg() as u32;
        (*rec).syscall_nr = nr;
        (*rec).compat = compat as u32;
        (*rec).filename_len = 0;
        let n = bpf_probe_read_user_str(
            (&raw mut (*rec).filename).cast(),
            EXEC_FAILED_PATH_LEN as u32,
            filename as *const _,
        );
        if n > 0 {
            let len = (n - 1) as u32;
            (*rec).filename_len = len;
            if len as usize >= EXEC_FAILED_PATH_LEN - 1 {
                (*rec).header.flags |= flags::FILENAME_TRUNCATED;
            }
        } else {
            (*rec).header.flags |= flags::ARGV_UNREADABLE;
        }
    }
    // Rare and security-relevant: delivered at once, like an exec.
    entry.submit(0);
    count_emitted(RecordKind::ExecFailed);
}
