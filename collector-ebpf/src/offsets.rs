//! Offsets of kernel structure fields, set by the loader from the running kernel's BTF
//! (read-only globals: the verifier sees them as constants, so they cost nothing).

use core::ptr::read_volatile;

macro_rules! offsets {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            #[unsafe(no_mangle)]
            static $name: u64 = 0;
        )*
        /// Accessors for the offsets above.
        pub mod get {
            $(
                #[inline(always)]
                #[allow(non_snake_case)]
                pub fn $name() -> u64 {
                    unsafe { super::read_volatile(&super::$name) }
                }
            )*
        }
    };
}

offsets! {
    /// `task_struct.real_parent`
    OFF_TASK_REAL_PARENT,
    /// `task_struct.tgid`
    OFF_TASK_TGID,
    /// `task_struct.pid`
    OFF_TASK_PID,
    /// `task_struct.mm`
    OFF_TASK_MM,
    /// `task_struct.exit_code`
    OFF_TASK_EXIT_CODE,
    /// `task_struct.start_boottime`
    OFF_TASK_START_BOOTTIME,
    /// `mm_struct.arg_start`
    OFF_MM_ARG_START,
    /// `mm_struct.arg_end`
    OFF_MM_ARG_END,
    /// `linux_binprm.filename`
    OFF_BPRM_FILENAME,
    /// `task_struct.files`
    OFF_TASK_FILES,
    /// `files_struct.fdt`
    OFF_FILES_FDT,
    /// `fdtable.max_fds`
    OFF_FDT_MAX_FDS,
    /// `fdtable.fd`
    OFF_FDT_FD,
    /// `file.private_data`
    OFF_FILE_PRIVATE_DATA,
    /// `file.f_mode`
    OFF_FILE_F_MODE,
    /// `socket.sk`
    OFF_SOCKET_SK,
    /// `sock.__sk_common.skc_family`
    OFF_SK_FAMILY,
    /// `sock.__sk_common.skc_daddr`
    OFF_SK_DADDR,
    /// `sock.__sk_common.skc_rcv_saddr`
    OFF_SK_RCV_SADDR,
    /// `sock.__sk_common.skc_dport`
    OFF_SK_DPORT,
    /// `sock.__sk_common.skc_num`
    OFF_SK_NUM,
    /// `sock.__sk_common.skc_v6_daddr`
    OFF_SK_V6_DADDR,
    /// `sock.__sk_common.skc_v6_rcv_saddr`
    OFF_SK_V6_RCV_SADDR,
    /// `sock.sk_protocol`
    OFF_SK_PROTOCOL,
    /// `pt_regs.di` (x86_64)
    OFF_REGS_DI,
    /// `pt_regs.si`
    OFF_REGS_SI,
    /// `pt_regs.dx`
    OFF_REGS_DX,
    /// `pt_regs.r10`
    OFF_REGS_R10,
    /// `pt_regs.r8`
    OFF_REGS_R8,
    /// `pt_regs.orig_ax`
    OFF_REGS_ORIG_AX,
    /// `sock.sk_type` (network)
    OFF_NET_SK_TYPE,
    /// `sock.sk_err` (network)
    OFF_NET_SK_ERR,
    /// `sock.__sk_common.skc_state` (network)
    OFF_NET_SK_STATE,
    /// `inet_sock.inet_sport` (network: the local port, kept after `inet_put_port`)
    OFF_NET_INET_SPORT,
    /// `task_struct.flags` (network: `PF_IO_WORKER`)
    OFF_NET_TASK_FLAGS,
    /// `task_struct.thread_info.status` (network, x86: `TS_COMPAT`)
    OFF_NET_TASK_TI_STATUS,
    /// `pt_regs.bx` (network: i386 argument 0)
    OFF_NET_REGS_BX,
    /// `pt_regs.cx` (network: i386 argument 1)
    OFF_NET_REGS_CX,
    /// `pt_regs.bp` (network: i386 argument 5)
    OFF_NET_REGS_BP,
    /// `pt_regs.r9` (network: x86_64 argument 5)
    OFF_NET_REGS_R9,
    /// `io_kiocb.opcode` (network: io_uring accept)
    OFF_NET_IO_KIOCB_OPCODE,
    /// `task_struct.cred` (process)
    OFF_PROC_TASK_CRED,
    /// `task_struct.flags` (process: `PF_KTHREAD`)
    OFF_PROC_TASK_FLAGS,
    /// `task_struct.signal` (process)
    OFF_PROC_TASK_SIGNAL,
    /// `task_struct.group_leader` (process)
    OFF_PROC_TASK_GROUP_LEADER,
    /// `task_struct.real_parent` (process: a clone's creator, for its user namespace)
    OFF_PROC_TASK_REAL_PARENT,
    /// `cred.user_ns` (process: the user namespace a task's credentials are in)
    OFF_PROC_CRED_USER_NS,
    /// `signal_struct.live` (process: 0 once the last thread is exiting)
    OFF_PROC_SIGNAL_LIVE,
    /// `cred.uid` (process)
    OFF_PROC_CRED_UID,
    /// `cred.euid`
    OFF_PROC_CRED_EUID,
    /// `cred.suid`
    OFF_PROC_CRED_SUID,
    /// `cred.fsuid`
    OFF_PROC_CRED_FSUID,
    /// `cred.gid`
    OFF_PROC_CRED_GID,
    /// `cred.egid`
    OFF_PROC_CRED_EGID,
    /// `cred.sgid`
    OFF_PROC_CRED_SGID,
    /// `cred.fsgid`
    OFF_PROC_CRED_FSGID,
    /// `cred.cap_effective`
    OFF_PROC_CRED_CAP_EFFECTIVE,
    /// `cred.cap_permitted`
    OFF_PROC_CRED_CAP_PERMITTED,
    /// `linux_binprm` byte holding the `secureexec` bit
    OFF_PROC_BPRM_SECUREEXEC_BYTE,
    /// bit of `secureexec` inside that byte
    PROC_BPRM_SECUREEXEC_BIT,
    /// `task_struct.loginuid` (CONFIG_AUDIT; see `PROC_HAS_AUDIT`)
    OFF_PROC_TASK_LOGINUID,
    /// `task_struct.sessionid` (CONFIG_AUDIT)
    OFF_PROC_TASK_SESSIONID,
    /// `task_struct.thread_info.status` (x86: `TS_COMPAT`; see `PROC_HAS_COMPAT`)
    OFF_PROC_TASK_TI_STATUS,
    /// `pt_regs.bx` (process: i386 argument 0)
    OFF_PROC_REGS_BX,
    /// `pt_regs.cx` (process: i386 argument 1)
    OFF_PROC_REGS_CX,
    /// `linux_binprm.file` (process)
    OFF_PROC_BPRM_FILE,
    /// `linux_binprm.executable` (process; 0 when the kernel lacks it: `PROC_HAS_BPRM_EXECUTABLE`)
    OFF_PROC_BPRM_EXECUTABLE,
    /// `linux_binprm.interp`
    OFF_PROC_BPRM_INTERP,
    /// `file.f_inode`
    OFF_PROC_FILE_INODE,
    /// `file.f_path.dentry`
    OFF_PROC_FILE_DENTRY,
    /// `dentry.d_name.name`
    OFF_PROC_DENTRY_NAME,
    /// `inode.i_ino`
    OFF_PROC_INODE_INO,
    /// `inode.i_nlink`
    OFF_PROC_INODE_NLINK,
    /// `inode.i_size` (process; the version fields are 0 where the kernel lacks them)
    OFF_PROC_INODE_SIZE,
    /// `inode.i_mtime_sec`
    OFF_PROC_INODE_MTIME_SEC,
    /// `inode.i_mtime_nsec`
    OFF_PROC_INODE_MTIME_NSEC,
    /// `inode.i_ctime_sec`
    OFF_PROC_INODE_CTIME_SEC,
    /// `inode.i_ctime_nsec`
    OFF_PROC_INODE_CTIME_NSEC,
    /// `inode.i_sb`
    OFF_PROC_INODE_SB,
    /// `super_block.s_dev`
    OFF_PROC_SB_DEV,
    /// `task_struct.thread_pid`
    OFF_PROC_TASK_THREAD_PID,
    /// `pid.level`
    OFF_PROC_PID_LEVEL,
    /// `pid.numbers`
    OFF_PROC_PID_NUMBERS,
    /// `upid.ns` (the stride of `numbers[]` is twice this: `int nr` padded, then the pointer)
    OFF_PROC_UPID_NS,
    /// `pid_namespace.ns.inum`
    OFF_PROC_PIDNS_INUM,
    /// `io_kiocb.opcode` (filesystem: io_uring)
    OFF_FILE_IO_KIOCB_OPCODE,
    /// `io_kiocb.flags` (filesystem: io_uring, `REQ_F_CQE_SKIP`)
    OFF_FILE_IO_KIOCB_FLAGS,
    /// `io_kiocb.ctx` (filesystem: io_uring, overflowed completions)
    OFF_FILE_IO_KIOCB_CTX,
    /// `io_kiocb.cqe.user_data` (filesystem: io_uring, overflowed completions)
    OFF_FILE_IO_KIOCB_USER_DATA,
    /// `io_kiocb.cmd` (filesystem: io_uring)
    OFF_FILE_IO_KIOCB_CMD,
    /// `filename.name` (filesystem: io_uring)
    OFF_FILE_FILENAME_NAME,
    /// `io_open.dfd` (filesystem: io_uring)
    OFF_FILE_IO_OPEN_DFD,
    /// `io_open.file_slot` (filesystem: io_uring)
    OFF_FILE_IO_OPEN_FILE_SLOT,
    /// `io_open.filename` (filesystem: io_uring)
    OFF_FILE_IO_OPEN_FILENAME,
    /// `io_open.how` (filesystem: io_uring)
    OFF_FILE_IO_OPEN_HOW,
    /// `io_unlink.dfd` (filesystem: io_uring)
    OFF_FILE_IO_UNLINK_DFD,
    /// `io_unlink.flags` (filesystem: io_uring)
    OFF_FILE_IO_UNLINK_FLAGS,
    /// `io_unlink.filename` (filesystem: io_uring)
    OFF_FILE_IO_UNLINK_FILENAME,
    /// `io_mkdir.dfd` (filesystem: io_uring)
    OFF_FILE_IO_MKDIR_DFD,
    /// `io_mkdir.mode` (filesystem: io_uring)
    OFF_FILE_IO_MKDIR_MODE,
    /// `io_mkdir.filename` (filesystem: io_uring)
    OFF_FILE_IO_MKDIR_FILENAME,
    /// `io_rename.old_dfd` (filesystem: io_uring)
    OFF_FILE_IO_RENAME_OLD_DFD,
    /// `io_rename.new_dfd` (filesystem: io_uring)
    OFF_FILE_IO_RENAME_NEW_DFD,
    /// `io_rename.oldpath` (filesystem: io_uring)
    OFF_FILE_IO_RENAME_OLDPATH,
    /// `io_rename.newpath` (filesystem: io_uring)
    OFF_FILE_IO_RENAME_NEWPATH,
    /// `io_rename.flags` (filesystem: io_uring)
    OFF_FILE_IO_RENAME_FLAGS,
    /// `io_link.old_dfd` (filesystem: io_uring)
    OFF_FILE_IO_LINK_OLD_DFD,
    /// `io_link.new_dfd` (filesystem: io_uring)
    OFF_FILE_IO_LINK_NEW_DFD,
    /// `io_link.oldpath` (filesystem: io_uring)
    OFF_FILE_IO_LINK_OLDPATH,
    /// `io_link.newpath` (filesystem: io_uring)
    OFF_FILE_IO_LINK_NEWPATH,
    /// `io_link.flags` (filesystem: io_uring)
    OFF_FILE_IO_LINK_FLAGS,
    /// `io_kiocb.file` (filesystem: io_uring FTRUNCATE, the file it acted on)
    OFF_FILE_IO_KIOCB_FILE,
    /// `io_kiocb.cqe.fd` (filesystem: io_uring FTRUNCATE, the descriptor as submitted)
    OFF_FILE_IO_KIOCB_FD,
    /// `io_ftrunc.len` (filesystem: io_uring FTRUNCATE)
    OFF_FILE_IO_FTRUNC_LEN,
    /// `io_xattr.ctx.size` (filesystem: io_uring SETXATTR/FSETXATTR)
    OFF_FILE_IO_XATTR_SIZE,
    /// `io_xattr.ctx.kname` (the kernel's copy of the attribute's name)
    OFF_FILE_IO_XATTR_KNAME,
    /// `io_xattr.ctx.flags`
    OFF_FILE_IO_XATTR_FLAGS,
    /// `io_xattr.filename` (SETXATTR: the kernel's copy of the path)
    OFF_FILE_IO_XATTR_FILENAME,
    /// `task_struct.comm` (every record header: two typed loads, no helper)
    OFF_TASK_COMM,
    /// `task_struct.cgroups` (every record header, with `HAS_TYPED_CGROUP`)
    OFF_TASK_CGROUPS,
    /// `css_set.dfl_cgrp`
    OFF_CSS_SET_DFL_CGRP,
    /// `cgroup.kn`
    OFF_CGROUP_KN,
    /// `kernfs_node.id`
    OFF_KERNFS_NODE_ID,
}

/// Set by the loader when the `OFF_TASK_CGROUPS` chain was found in BTF: the header then
/// reads the cgroup id with four typed loads instead of `bpf_get_current_cgroup_id`.
#[unsafe(no_mangle)]
static HAS_TYPED_CGROUP: u32 = 0;

#[inline(always)]
pub fn has_typed_cgroup() -> bool {
    unsafe { read_volatile(&HAS_TYPED_CGROUP) != 0 }
}

/// Set by the loader when `linux_binprm` has `executable` (the file the caller named,
/// kept apart from the interpreter's).
#[unsafe(no_mangle)]
static PROC_HAS_BPRM_EXECUTABLE: u32 = 0;

#[inline(always)]
pub fn proc_has_bprm_executable() -> bool {
    unsafe { read_volatile(&PROC_HAS_BPRM_EXECUTABLE) != 0 }
}

/// Set by the loader when `task_struct` has `loginuid`/`sessionid` (CONFIG_AUDIT).
#[unsafe(no_mangle)]
static PROC_HAS_AUDIT: u32 = 0;

#[inline(always)]
pub fn proc_has_audit() -> bool {
    unsafe { read_volatile(&PROC_HAS_AUDIT) != 0 }
}

/// Set by the loader when the 32-bit entry can be told apart (x86 `TS_COMPAT`).
#[unsafe(no_mangle)]
static PROC_HAS_COMPAT: u32 = 0;

#[inline(always)]
pub fn proc_has_compat() -> bool {
    unsafe { read_volatile(&PROC_HAS_COMPAT) != 0 }
}

/// Set by the loader: 1 when `sched_process_exit` passes `group_dead` (Linux >= 6.13).
#[unsafe(no_mangle)]
static EXIT_HAS_GROUP_DEAD: u32 = 0;

#[inline(always)]
pub fn exit_has_group_dead() -> bool {
    unsafe { read_volatile(&EXIT_HAS_GROUP_DEAD) != 0 }
}

/// Set by the loader when the io_uring file structs (`io_open`, `io_rename`, ...) were
/// all found in BTF: otherwise the io_uring file hooks stay inert.
#[unsafe(no_mangle)]
static FILE_HAS_IO_URING: u32 = 0;

#[inline(always)]
pub fn file_has_io_uring() -> bool {
    unsafe { read_volatile(&FILE_HAS_IO_URING) != 0 }
}

/// Set by the loader when `io_ftrunc` (IORING_OP_FTRUNCATE, Linux >= 6.9) and the
/// request's `file` and `cqe.fd` were found in BTF, with `FILE_HAS_IO_URING`.
#[unsafe(no_mangle)]
static FILE_HAS_IO_URING_FTRUNCATE: u32 = 0;

#[inline(always)]
pub fn file_has_io_uring_ftruncate() -> bool {
    unsafe { read_volatile(&FILE_HAS_IO_URING_FTRUNCATE) != 0 }
}

/// Set by the loader when `io_xattr` (IORING_OP_SETXATTR/FSETXATTR, Linux >= 5.19) was
/// found in BTF, with `FILE_HAS_IO_URING`.
#[unsafe(no_mangle)]
static FILE_HAS_IO_URING_XATTR: u32 = 0;

#[inline(always)]
pub fn file_has_io_uring_xattr() -> bool {
    unsafe { read_volatile(&FILE_HAS_IO_URING_XATTR) != 0 }
}
