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
}

/// Set by the loader: 1 when `sched_process_exit` passes `group_dead` (Linux >= 6.13).
#[unsafe(no_mangle)]
static EXIT_HAS_GROUP_DEAD: u32 = 0;

#[inline(always)]
pub fn exit_has_group_dead() -> bool {
    unsafe { read_volatile(&EXIT_HAS_GROUP_DEAD) != 0 }
}
