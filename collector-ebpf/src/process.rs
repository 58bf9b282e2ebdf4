//! Process lifecycle: exec, fork, exit.
//!
//! Hooks: BTF tracepoints `sched_process_exec`, `sched_process_fork`,
//! `sched_process_exit` (Linux >= 5.5; `group_dead` on exit since 6.13). They fire in
//! the kernel for every task, so a process that lives for microseconds is complete; a
//! failed exec never reaches `sched_process_exec`.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_kernel_str, bpf_probe_read_user},
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use collector_common::{
    flags, ExecRecord, ExitRecord, ForkRecord, RecordKind, EXEC_ARGV_LEN, EXEC_FILENAME_LEN,
};

use crate::{
    common::{
        count_emitted, count_lost, excluded, fill_header, process_wakeup_flags, read_kernel,
        PROCESS_EVENTS,
    },
    offsets::{exit_has_group_dead, get},
};

#[inline(always)]
unsafe fn parent_tgid(task: *const u8) -> Result<u32, i64> {
    let parent: u64 = unsafe { read_kernel(task, get::OFF_TASK_REAL_PARENT())? };
    unsafe { read_kernel(parent as *const u8, get::OFF_TASK_TGID()) }
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if excluded(pid_tgid) {
        return 0;
    }
    let Some(mut entry) = PROCESS_EVENTS.reserve::<ExecRecord>(0) else {
        count_lost(RecordKind::Exec);
        return 0;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*rec).header, RecordKind::Exec, pid_tgid);
        let task: *const u8 = ctx.arg(0);
        let old_pid: u32 = ctx.arg(1);
        let bprm: *const u8 = ctx.arg(2);
        (*rec).old_pid = old_pid;
        (*rec).ppid = parent_tgid(task).unwrap_or(0);
        (*rec).start_boottime_ns =
            read_kernel::<u64>(task, get::OFF_TASK_START_BOOTTIME()).unwrap_or(0);
        fill_filename(rec, bprm);
        fill_argv(rec, task);
        if (*rec).header.flags & flags::ARGV_UNREADABLE != 0 {
            // Rare (an image whose argument pages are not resident): diagnostics through
            // aya-log, off the hot path. Userspace still gets the event, flagged.
            aya_log_ebpf::warn!(
                &ctx,
                "exec of pid {}: argv could not be read",
                (*rec).header.pid
            );
        }
    }
    entry.submit(process_wakeup_flags());
    count_emitted(RecordKind::Exec);
    0
}

#[inline(always)]
unsafe fn fill_filename(rec: *mut ExecRecord, bprm: *const u8) {
    unsafe {
        (*rec).filename_len = 0;
        let Ok(name) = read_kernel::<u64>(bprm, get::OFF_BPRM_FILENAME()) else {
            return;
        };
        let n = bpf_probe_read_kernel_str(
            (&raw mut (*rec).filename).cast(),
            EXEC_FILENAME_LEN as u32,
            name as *const _,
        );
        if n > 0 {
            // `n` counts the NUL; a full buffer means the path may have been cut.
            let len = (n - 1) as u32;
            (*rec).filename_len = len;
            if len as usize >= EXEC_FILENAME_LEN - 1 {
                (*rec).header.flags |= flags::FILENAME_TRUNCATED;
            }
        }
    }
}

#[inline(always)]
unsafe fn fill_argv(rec: *mut ExecRecord, task: *const u8) {
    unsafe {
        (*rec).argv_len = 0;
        let args = read_kernel::<u64>(task, get::OFF_TASK_MM()).and_then(|mm| {
            let mm = mm as *const u8;
            Ok((
                read_kernel::<u64>(mm, get::OFF_MM_ARG_START())?,
                read_kernel::<u64>(mm, get::OFF_MM_ARG_END())?,
            ))
        });
        let Ok((start, end)) = args else {
            (*rec).header.flags |= flags::ARGV_UNREADABLE;
            return;
        };
        let mut len = end.wrapping_sub(start);
        if len > EXEC_ARGV_LEN as u64 {
            len = EXEC_ARGV_LEN as u64;
            (*rec).header.flags |= flags::ARGV_TRUNCATED;
        }
        // Bound for the verifier: 0 < len <= EXEC_ARGV_LEN.
        let len = ((len.wrapping_sub(1)) & (EXEC_ARGV_LEN as u64 - 1)) + 1;
        let ret = bpf_probe_read_user((&raw mut (*rec).argv).cast(), len as u32, start as *const _);
        if ret < 0 {
            (*rec).header.flags |= flags::ARGV_UNREADABLE;
        } else {
            (*rec).argv_len = len as u32;
        }
    }
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if excluded(pid_tgid) {
        return 0;
    }
    let child: *const u8 = ctx.arg(1);
    let (Ok(child_pid), Ok(child_tgid)) = (
        unsafe { read_kernel::<u32>(child, get::OFF_TASK_PID()) },
        unsafe { read_kernel::<u32>(child, get::OFF_TASK_TGID()) },
    ) else {
        return 0;
    };
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
    }
    entry.submit(process_wakeup_flags());
    count_emitted(RecordKind::Fork);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let last_thread = if exit_has_group_dead() {
        let group_dead: u64 = ctx.arg(1);
        group_dead & 0xff != 0
    } else {
        // Older kernels: report the thread-group leader's exit.
        (pid_tgid >> 32) as u32 == pid_tgid as u32
    };
    if !last_thread || excluded(pid_tgid) {
        return 0;
    }
    let task: *const u8 = ctx.arg(0);
    let Some(mut entry) = PROCESS_EVENTS.reserve::<ExitRecord>(0) else {
        count_lost(RecordKind::Exit);
        return 0;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        fill_header(&raw mut (*rec).header, RecordKind::Exit, pid_tgid);
        (*rec).exit_code = read_kernel::<u32>(task, get::OFF_TASK_EXIT_CODE()).unwrap_or(0);
        (*rec).ppid = parent_tgid(task).unwrap_or(0);
    }
    entry.submit(process_wakeup_flags());
    count_emitted(RecordKind::Exit);
    0
}
