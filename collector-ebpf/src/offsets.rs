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
}

/// Set by the loader: 1 when `sched_process_exit` passes `group_dead` (Linux >= 6.13).
#[unsafe(no_mangle)]
static EXIT_HAS_GROUP_DEAD: u32 = 0;

#[inline(always)]
pub fn exit_has_group_dead() -> bool {
    unsafe { read_volatile(&EXIT_HAS_GROUP_DEAD) != 0 }
}
