//! The kernel-structure offsets the programs need, resolved from the running kernel's BTF.

use super::btf::{BtfError, KernelBtf};

/// (global name in the kernel object, struct, member path)
const FIELDS: &[(&str, &str, &str)] = &[
    ("OFF_TASK_REAL_PARENT", "task_struct", "real_parent"),
    ("OFF_TASK_TGID", "task_struct", "tgid"),
    ("OFF_TASK_PID", "task_struct", "pid"),
    ("OFF_TASK_MM", "task_struct", "mm"),
    ("OFF_TASK_EXIT_CODE", "task_struct", "exit_code"),
    ("OFF_TASK_START_BOOTTIME", "task_struct", "start_boottime"),
    ("OFF_MM_ARG_START", "mm_struct", "arg_start"),
    ("OFF_MM_ARG_END", "mm_struct", "arg_end"),
    ("OFF_BPRM_FILENAME", "linux_binprm", "filename"),
    ("OFF_TASK_FILES", "task_struct", "files"),
    ("OFF_FILES_FDT", "files_struct", "fdt"),
    ("OFF_FDT_MAX_FDS", "fdtable", "max_fds"),
    ("OFF_FDT_FD", "fdtable", "fd"),
    ("OFF_FILE_PRIVATE_DATA", "file", "private_data"),
    ("OFF_FILE_F_MODE", "file", "f_mode"),
    ("OFF_SOCKET_SK", "socket", "sk"),
    ("OFF_SK_FAMILY", "sock", "__sk_common.skc_family"),
    ("OFF_SK_DADDR", "sock", "__sk_common.skc_daddr"),
    ("OFF_SK_RCV_SADDR", "sock", "__sk_common.skc_rcv_saddr"),
    ("OFF_SK_DPORT", "sock", "__sk_common.skc_dport"),
    ("OFF_SK_NUM", "sock", "__sk_common.skc_num"),
    ("OFF_SK_V6_DADDR", "sock", "__sk_common.skc_v6_daddr"),
    (
        "OFF_SK_V6_RCV_SADDR",
        "sock",
        "__sk_common.skc_v6_rcv_saddr",
    ),
    ("OFF_SK_PROTOCOL", "sock", "sk_protocol"),
    ("OFF_NET_SK_TYPE", "sock", "sk_type"),
    ("OFF_NET_SK_ERR", "sock", "sk_err"),
    ("OFF_NET_SK_STATE", "sock", "__sk_common.skc_state"),
    ("OFF_NET_INET_SPORT", "inet_sock", "inet_sport"),
    ("OFF_NET_TASK_FLAGS", "task_struct", "flags"),
];

/// Fields the io_uring network hook reads. Optional: a kernel without io_uring lacks
/// them, and then that hook is not attached (see `OPTIONAL_PROGRAMS` in the loader).
const IO_URING_FIELDS: &[(&str, &str, &str)] = &[("OFF_NET_IO_KIOCB_OPCODE", "io_kiocb", "opcode")];

/// Fields the 32-bit (compat) network hooks read: x86 only. Optional: where they are
/// missing those hooks stay inert (`HAS_COMPAT_SYSCALLS` = 0), nothing else.
const COMPAT_FIELDS: &[(&str, &str, &str)] = &[
    (
        "OFF_NET_TASK_TI_STATUS",
        "task_struct",
        "thread_info.status",
    ),
    ("OFF_NET_REGS_BX", "pt_regs", "bx"),
    ("OFF_NET_REGS_CX", "pt_regs", "cx"),
    ("OFF_NET_REGS_BP", "pt_regs", "bp"),
];

/// Saved-register fields the raw `sys_enter`/`sys_exit` fallback reads (x86_64 names).
/// Optional: where they are missing the fallback is unavailable, nothing else.
const SYSCALL_REGS: &[(&str, &str, &str)] = &[
    ("OFF_REGS_DI", "pt_regs", "di"),
    ("OFF_REGS_SI", "pt_regs", "si"),
    ("OFF_REGS_DX", "pt_regs", "dx"),
    ("OFF_REGS_R10", "pt_regs", "r10"),
    ("OFF_REGS_R8", "pt_regs", "r8"),
    ("OFF_REGS_ORIG_AX", "pt_regs", "orig_ax"),
    ("OFF_NET_REGS_R9", "pt_regs", "r9"),
];

/// Offsets to hand to the kernel programs as read-only globals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelOffsets {
    /// (global name, byte offset)
    pub values: Vec<(&'static str, u64)>,
    /// Whether `sched_process_exit` passes `group_dead` (Linux >= 6.13).
    pub exit_has_group_dead: bool,
    /// Whether the raw-syscall fallback can read syscall arguments on this kernel.
    pub raw_syscalls: bool,
    /// Whether the 32-bit syscall entry can be watched (x86 `TS_COMPAT`, i386 registers).
    pub compat_syscalls: bool,
}

impl KernelOffsets {
    /// Resolves every field; fails naming the first one this kernel lacks.
    pub fn resolve(btf: &KernelBtf) -> Result<Self, BtfError> {
        let mut values = FIELDS
            .iter()
            .map(|&(global, ty, path)| Ok((global, btf.member_offset(ty, path)?)))
            .collect::<Result<Vec<_>, BtfError>>()?;
        let regs: Result<Vec<_>, BtfError> = SYSCALL_REGS
            .iter()
            .map(|&(global, ty, path)| Ok((global, btf.member_offset(ty, path)?)))
            .collect();
        let raw_syscalls = regs.is_ok();
        match regs {
            Ok(regs) => values.extend(regs),
            Err(e) => {
                tracing::debug!("raw syscall fallback unavailable: {e}");
                values.extend(SYSCALL_REGS.iter().map(|&(global, ..)| (global, 0)));
            }
        }
        let compat: Result<Vec<_>, BtfError> = COMPAT_FIELDS
            .iter()
            .map(|&(global, ty, path)| Ok((global, btf.member_offset(ty, path)?)))
            .collect();
        let compat_syscalls = compat.is_ok() && raw_syscalls;
        match compat {
            Ok(compat) if raw_syscalls => values.extend(compat),
            Ok(_) => values.extend(COMPAT_FIELDS.iter().map(|&(global, ..)| (global, 0))),
            Err(e) => {
                tracing::debug!("32-bit syscall entry cannot be watched: {e}");
                values.extend(COMPAT_FIELDS.iter().map(|&(global, ..)| (global, 0)));
            }
        }
        for &(global, ty, path) in IO_URING_FIELDS {
            let offset = btf.member_offset(ty, path).unwrap_or_else(|e| {
                tracing::debug!("io_uring accepts cannot be watched: {e}");
                0
            });
            values.push((global, offset));
        }
        // ctx + task + group_dead
        let exit_has_group_dead = btf
            .func_typedef_params("btf_trace_sched_process_exit")
            .map(|n| n >= 3)
            .unwrap_or(false);
        Ok(Self {
            values,
            exit_has_group_dead,
            raw_syscalls,
            compat_syscalls,
        })
    }
}
