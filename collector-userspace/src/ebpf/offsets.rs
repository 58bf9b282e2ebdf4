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
];

/// Fields the in-kernel path walk needs (collector-ebpf/src/path.rs, `OFF_PATHWALK_*`).
const PATH_FIELDS: &[(&str, &str, &str)] = &[
    ("OFF_PATHWALK_FILE_F_PATH", "file", "f_path"),
    ("OFF_PATHWALK_PATH_MNT", "path", "mnt"),
    ("OFF_PATHWALK_PATH_DENTRY", "path", "dentry"),
    ("OFF_PATHWALK_DENTRY_PARENT", "dentry", "d_parent"),
    ("OFF_PATHWALK_DENTRY_NAME_LEN", "dentry", "d_name.len"),
    ("OFF_PATHWALK_DENTRY_NAME_NAME", "dentry", "d_name.name"),
    ("OFF_PATHWALK_MOUNT_MNT", "mount", "mnt"),
    ("OFF_PATHWALK_MOUNT_PARENT", "mount", "mnt_parent"),
    ("OFF_PATHWALK_MOUNT_MOUNTPOINT", "mount", "mnt_mountpoint"),
    ("OFF_PATHWALK_VFSMOUNT_ROOT", "vfsmount", "mnt_root"),
    ("OFF_PATHWALK_TASK_FS", "task_struct", "fs"),
    ("OFF_PATHWALK_FS_ROOT", "fs_struct", "root"),
    ("OFF_PATHWALK_FS_PWD", "fs_struct", "pwd"),
    ("OFF_PATHWALK_TASK_FILES", "task_struct", "files"),
    ("OFF_PATHWALK_FILES_FDT", "files_struct", "fdt"),
    ("OFF_PATHWALK_FDT_MAX_FDS", "fdtable", "max_fds"),
    ("OFF_PATHWALK_FDT_FD", "fdtable", "fd"),
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
}

impl KernelOffsets {
    /// Resolves every field; fails naming the first one this kernel lacks.
    pub fn resolve(btf: &KernelBtf) -> Result<Self, BtfError> {
        let mut values = FIELDS
            .iter()
            .chain(PATH_FIELDS)
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
        // ctx + task + group_dead
        let exit_has_group_dead = btf
            .func_typedef_params("btf_trace_sched_process_exit")
            .map(|n| n >= 3)
            .unwrap_or(false);
        Ok(Self {
            values,
            exit_has_group_dead,
            raw_syscalls,
        })
    }
}
