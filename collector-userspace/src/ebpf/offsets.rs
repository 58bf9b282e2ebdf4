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
    ("OFF_PROC_TASK_CRED", "task_struct", "cred"),
    ("OFF_PROC_TASK_FLAGS", "task_struct", "flags"),
    ("OFF_PROC_TASK_SIGNAL", "task_struct", "signal"),
    ("OFF_PROC_TASK_GROUP_LEADER", "task_struct", "group_leader"),
    ("OFF_PROC_TASK_REAL_PARENT", "task_struct", "real_parent"),
    ("OFF_PROC_CRED_USER_NS", "cred", "user_ns"),
    ("OFF_PROC_SIGNAL_LIVE", "signal_struct", "live"),
    ("OFF_PROC_CRED_UID", "cred", "uid"),
    ("OFF_PROC_CRED_EUID", "cred", "euid"),
    ("OFF_PROC_CRED_SUID", "cred", "suid"),
    ("OFF_PROC_CRED_FSUID", "cred", "fsuid"),
    ("OFF_PROC_CRED_GID", "cred", "gid"),
    ("OFF_PROC_CRED_EGID", "cred", "egid"),
    ("OFF_PROC_CRED_SGID", "cred", "sgid"),
    ("OFF_PROC_CRED_FSGID", "cred", "fsgid"),
    ("OFF_PROC_CRED_CAP_EFFECTIVE", "cred", "cap_effective"),
    ("OFF_PROC_CRED_CAP_PERMITTED", "cred", "cap_permitted"),
    ("OFF_PROC_BPRM_FILE", "linux_binprm", "file"),
    ("OFF_PROC_BPRM_INTERP", "linux_binprm", "interp"),
    ("OFF_PROC_FILE_INODE", "file", "f_inode"),
    ("OFF_PROC_FILE_DENTRY", "file", "f_path.dentry"),
    ("OFF_PROC_DENTRY_NAME", "dentry", "d_name.name"),
    ("OFF_PROC_INODE_INO", "inode", "i_ino"),
    ("OFF_PROC_INODE_NLINK", "inode", "i_nlink"),
    ("OFF_PROC_INODE_SB", "inode", "i_sb"),
    ("OFF_PROC_SB_DEV", "super_block", "s_dev"),
    ("OFF_PROC_TASK_THREAD_PID", "task_struct", "thread_pid"),
    ("OFF_PROC_PID_LEVEL", "pid", "level"),
    ("OFF_PROC_PID_NUMBERS", "pid", "numbers"),
    ("OFF_PROC_UPID_NS", "upid", "ns"),
    ("OFF_PROC_PIDNS_INUM", "pid_namespace", "ns.inum"),
    ("OFF_NET_SK_TYPE", "sock", "sk_type"),
    ("OFF_NET_SK_ERR", "sock", "sk_err"),
    ("OFF_NET_SK_STATE", "sock", "__sk_common.skc_state"),
    ("OFF_NET_INET_SPORT", "inet_sock", "inet_sport"),
    ("OFF_NET_TASK_FLAGS", "task_struct", "flags"),
    ("OFF_TASK_COMM", "task_struct", "comm"),
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

/// `linux_binprm.executable`: the file the caller named, apart from the interpreter's.
/// Optional: without it the exec's identity is `bprm->file`.
const PROC_BPRM_EXECUTABLE: &[(&str, &str, &str)] =
    &[("OFF_PROC_BPRM_EXECUTABLE", "linux_binprm", "executable")];

/// The executed file's version (size, mtime, ctime): the key of the executable-hash
/// cache, read at the exec. Optional (the split `i_*_sec`/`i_*_nsec` fields are 6.11+):
/// without them the offsets stay 0, the kernel leaves the fields 0, and userspace keys
/// the cache on a `statx` instead.
const PROC_FILE_VERSION_FIELDS: &[(&str, &str, &str)] = &[
    ("OFF_PROC_INODE_SIZE", "inode", "i_size"),
    ("OFF_PROC_INODE_MTIME_SEC", "inode", "i_mtime_sec"),
    ("OFF_PROC_INODE_MTIME_NSEC", "inode", "i_mtime_nsec"),
    ("OFF_PROC_INODE_CTIME_SEC", "inode", "i_ctime_sec"),
    ("OFF_PROC_INODE_CTIME_NSEC", "inode", "i_ctime_nsec"),
];

/// Audit identity of a task (CONFIG_AUDIT). Optional: without them loginuid and
/// sessionid read as unset (`u32::MAX`).
const PROC_AUDIT_FIELDS: &[(&str, &str, &str)] = &[
    ("OFF_PROC_TASK_LOGINUID", "task_struct", "loginuid"),
    ("OFF_PROC_TASK_SESSIONID", "task_struct", "sessionid"),
];

/// What tells a 32-bit syscall and reads its first arguments (x86 only). Optional:
/// without them the process hooks see native syscalls only.
const PROC_COMPAT_FIELDS: &[(&str, &str, &str)] = &[
    (
        "OFF_PROC_TASK_TI_STATUS",
        "task_struct",
        "thread_info.status",
    ),
    ("OFF_PROC_REGS_BX", "pt_regs", "bx"),
    ("OFF_PROC_REGS_CX", "pt_regs", "cx"),
];

/// Fields the io_uring file hooks read (collector-ebpf/src/file_uring.rs): the per-op
/// structs inside `io_kiocb.cmd`. Optional: where any is missing those hooks stay inert
/// (`FILE_HAS_IO_URING` = 0).
const FILE_IO_URING_FIELDS: &[(&str, &str, &str)] = &[
    ("OFF_FILE_IO_KIOCB_OPCODE", "io_kiocb", "opcode"),
    ("OFF_FILE_IO_KIOCB_FLAGS", "io_kiocb", "flags"),
    ("OFF_FILE_IO_KIOCB_CTX", "io_kiocb", "ctx"),
    ("OFF_FILE_IO_KIOCB_USER_DATA", "io_kiocb", "cqe.user_data"),
    ("OFF_FILE_IO_KIOCB_CMD", "io_kiocb", "cmd"),
    ("OFF_FILE_FILENAME_NAME", "filename", "name"),
    ("OFF_FILE_IO_OPEN_DFD", "io_open", "dfd"),
    ("OFF_FILE_IO_OPEN_FILE_SLOT", "io_open", "file_slot"),
    ("OFF_FILE_IO_OPEN_FILENAME", "io_open", "filename"),
    ("OFF_FILE_IO_OPEN_HOW", "io_open", "how"),
    ("OFF_FILE_IO_UNLINK_DFD", "io_unlink", "dfd"),
    ("OFF_FILE_IO_UNLINK_FLAGS", "io_unlink", "flags"),
    ("OFF_FILE_IO_UNLINK_FILENAME", "io_unlink", "filename"),
    ("OFF_FILE_IO_MKDIR_DFD", "io_mkdir", "dfd"),
    ("OFF_FILE_IO_MKDIR_MODE", "io_mkdir", "mode"),
    ("OFF_FILE_IO_MKDIR_FILENAME", "io_mkdir", "filename"),
    ("OFF_FILE_IO_RENAME_OLD_DFD", "io_rename", "old_dfd"),
    ("OFF_FILE_IO_RENAME_NEW_DFD", "io_rename", "new_dfd"),
    ("OFF_FILE_IO_RENAME_OLDPATH", "io_rename", "oldpath"),
    ("OFF_FILE_IO_RENAME_NEWPATH", "io_rename", "newpath"),
    ("OFF_FILE_IO_RENAME_FLAGS", "io_rename", "flags"),
    ("OFF_FILE_IO_LINK_OLD_DFD", "io_link", "old_dfd"),
    ("OFF_FILE_IO_LINK_NEW_DFD", "io_link", "new_dfd"),
    ("OFF_FILE_IO_LINK_OLDPATH", "io_link", "oldpath"),
    ("OFF_FILE_IO_LINK_NEWPATH", "io_link", "newpath"),
    ("OFF_FILE_IO_LINK_FLAGS", "io_link", "flags"),
    ("OFF_FILE_IO_KIOCB_FILE", "io_kiocb", "file"),
    ("OFF_FILE_IO_KIOCB_FD", "io_kiocb", "cqe.fd"),
];

/// What the io_uring SETXATTR/FSETXATTR hooks read besides `FILE_IO_URING_FIELDS`: the
/// kernel's copies of the attribute's name and of the path, the value's size and the
/// flags. Optional (`FILE_HAS_IO_URING_XATTR` = 0 without them).
const FILE_IO_URING_XATTR_FIELDS: &[(&str, &str, &str)] = &[
    ("OFF_FILE_IO_XATTR_SIZE", "io_xattr", "ctx.size"),
    ("OFF_FILE_IO_XATTR_KNAME", "io_xattr", "ctx.kname"),
    ("OFF_FILE_IO_XATTR_FLAGS", "io_xattr", "ctx.flags"),
    ("OFF_FILE_IO_XATTR_FILENAME", "io_xattr", "filename"),
];

/// What the io_uring FTRUNCATE hook reads besides `FILE_IO_URING_FIELDS`: its length. Optional: the
/// operation is Linux >= 6.9 (`FILE_HAS_IO_URING_FTRUNCATE` = 0 without it).
const FILE_IO_URING_FTRUNCATE_FIELDS: &[(&str, &str, &str)] =
    &[("OFF_FILE_IO_FTRUNC_LEN", "io_ftrunc", "len")];

/// Resolves an optional group of fields: all of them, or zeros and `false`.
fn optional_fields(
    btf: &KernelBtf,
    fields: &[(&'static str, &str, &str)],
    values: &mut Vec<(&'static str, u64)>,
) -> bool {
    let resolved: Result<Vec<_>, BtfError> = fields
        .iter()
        .map(|&(global, ty, path)| Ok((global, btf.member_offset(ty, path)?)))
        .collect();
    match resolved {
        Ok(found) => {
            values.extend(found);
            true
        }
        Err(e) => {
            tracing::debug!("optional kernel fields unavailable: {e}");
            values.extend(fields.iter().map(|&(global, ..)| (global, 0)));
            false
        }
    }
}

/// The task's default-hierarchy cgroup, read in every record header with typed loads
/// (`task->cgroups->dfl_cgrp->kn->id`, what `bpf_get_current_cgroup_id` returns).
/// Optional: without them (no CONFIG_CGROUPS, or renamed fields) the header takes the
/// helper call.
const CGROUP_FIELDS: &[(&str, &str, &str)] = &[
    ("OFF_TASK_CGROUPS", "task_struct", "cgroups"),
    ("OFF_CSS_SET_DFL_CGRP", "css_set", "dfl_cgrp"),
    ("OFF_CGROUP_KN", "cgroup", "kn"),
    ("OFF_KERNFS_NODE_ID", "kernfs_node", "id"),
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
    ("OFF_PATHWALK_TASK_NSPROXY", "task_struct", "nsproxy"),
    ("OFF_PATHWALK_NSPROXY_MNT_NS", "nsproxy", "mnt_ns"),
    ("OFF_PATHWALK_MNT_NS_ROOT", "mnt_namespace", "root"),
];

/// `fs_struct.seq`'s sequence count, by layout: a `seqlock_t` (6.x), a
/// `seqcount_spinlock_t`, or a bare `seqcount_t` (older kernels). The first that resolves
/// is used; none leaves 0 (the cwd's identity is then its dentry alone).
const FS_SEQ_PATHS: &[&str] = &[
    "seq.seqcount.seqcount.sequence",
    "seq.seqcount.sequence",
    "seq.sequence",
];

/// Where `struct file` keeps its reference count, and the raw value that means "held
/// exactly once": `file_ref_t f_ref` counts from 0 (6.13+), `atomic_long_t f_count`
/// from 1. Neither: `u64::MAX`, and the programs make no claim about a new descriptor's
/// file (`PATH_FLAG_FD_RACED` is never set).
fn file_ref_layout(btf: &KernelBtf) -> (u64, u64) {
    if let Ok(off) = btf.member_offset("file", "f_ref") {
        return (off, 0);
    }
    if let Ok(off) = btf.member_offset("file", "f_count") {
        return (off, 1);
    }
    tracing::debug!("struct file has neither f_ref nor f_count: fd races are not detected");
    (0, u64::MAX)
}

/// Globals chosen among layouts (above) rather than read from one table row.
#[cfg(test)]
const CHOSEN_GLOBALS: &[(&str, &str, &str)] = &[
    ("OFF_PATHWALK_FS_SEQ", "fs_struct", "seq"),
    ("OFF_PATHWALK_FILE_REF", "file", "f_ref"),
    ("PATHWALK_FILE_REF_ONE", "file", "f_ref"),
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
    /// Whether `task_struct` has `loginuid`/`sessionid` (CONFIG_AUDIT).
    pub proc_has_audit: bool,
    /// Whether the process hooks can tell and read 32-bit syscalls (x86).
    pub proc_has_compat: bool,
    /// Whether `linux_binprm` has `executable`.
    pub proc_has_bprm_executable: bool,
    /// Whether the io_uring file-operation structs are known (`FILE_IO_URING_FIELDS`).
    pub file_has_io_uring: bool,
    /// Whether io_uring's FTRUNCATE can be read too (`FILE_IO_URING_FTRUNCATE_FIELDS`).
    pub file_has_io_uring_ftruncate: bool,
    /// Whether io_uring's SETXATTR/FSETXATTR can be read too
    /// (`FILE_IO_URING_XATTR_FIELDS`).
    pub file_has_io_uring_xattr: bool,
    /// Whether the record header reads the cgroup id with typed loads (`CGROUP_FIELDS`).
    pub typed_cgroup: bool,
}

impl KernelOffsets {
    /// Resolves every field; fails naming the first one this kernel lacks.
    pub fn resolve(btf: &KernelBtf) -> Result<Self, BtfError> {
        let mut values = FIELDS
            .iter()
            .chain(PATH_FIELDS)
            .map(|&(global, ty, path)| Ok((global, btf.member_offset(ty, path)?)))
            .collect::<Result<Vec<_>, BtfError>>()?;
        let fs_seq = FS_SEQ_PATHS
            .iter()
            .find_map(|path| btf.member_offset("fs_struct", path).ok())
            .unwrap_or(0);
        values.push(("OFF_PATHWALK_FS_SEQ", fs_seq));
        let (file_ref, file_ref_one) = file_ref_layout(btf);
        values.push(("OFF_PATHWALK_FILE_REF", file_ref));
        values.push(("PATHWALK_FILE_REF_ONE", file_ref_one));
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
        let proc_has_audit = optional_fields(btf, PROC_AUDIT_FIELDS, &mut values);
        let proc_has_compat = optional_fields(btf, PROC_COMPAT_FIELDS, &mut values);
        let proc_has_bprm_executable = optional_fields(btf, PROC_BPRM_EXECUTABLE, &mut values);
        optional_fields(btf, PROC_FILE_VERSION_FIELDS, &mut values);
        let file_has_io_uring = optional_fields(btf, FILE_IO_URING_FIELDS, &mut values);
        let file_has_io_uring_ftruncate =
            optional_fields(btf, FILE_IO_URING_FTRUNCATE_FIELDS, &mut values) && file_has_io_uring;
        let file_has_io_uring_xattr =
            optional_fields(btf, FILE_IO_URING_XATTR_FIELDS, &mut values) && file_has_io_uring;
        let typed_cgroup = optional_fields(btf, CGROUP_FIELDS, &mut values);
        // `linux_binprm.secureexec` is a bitfield: its byte, and the bit in that byte.
        let secureexec_bits = btf.member_bit_offset("linux_binprm", "secureexec")?;
        values.push(("OFF_PROC_BPRM_SECUREEXEC_BYTE", secureexec_bits / 8));
        values.push(("PROC_BPRM_SECUREEXEC_BIT", secureexec_bits % 8));
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
            proc_has_audit,
            proc_has_compat,
            proc_has_bprm_executable,
            file_has_io_uring,
            file_has_io_uring_ftruncate,
            file_has_io_uring_xattr,
            typed_cgroup,
        })
    }
}

/// The name of every offset global the loader sets (each table above), for the ABI test.
#[cfg(test)]
pub(crate) fn global_names() -> impl Iterator<Item = &'static str> {
    [
        FIELDS,
        IO_URING_FIELDS,
        COMPAT_FIELDS,
        PROC_BPRM_EXECUTABLE,
        PROC_FILE_VERSION_FIELDS,
        PROC_AUDIT_FIELDS,
        PROC_COMPAT_FIELDS,
        FILE_IO_URING_FIELDS,
        FILE_IO_URING_FTRUNCATE_FIELDS,
        FILE_IO_URING_XATTR_FIELDS,
        PATH_FIELDS,
        CHOSEN_GLOBALS,
        SYSCALL_REGS,
        CGROUP_FIELDS,
    ]
    .into_iter()
    .flatten()
    .map(|&(global, ..)| global)
}
