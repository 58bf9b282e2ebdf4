//! Names and numbers both sides of the kernel/userspace boundary must agree on, defined
//! once: the maps and globals the loader finds by name in the kernel object, and the
//! kernel's own constants the programs and the decoder both use. A test in
//! collector-userspace (`ebpf::abi`) parses the built object and finds every name.

/// Maps the loader opens, sizes or fills by name.
pub mod maps {
    /// Process-domain ring buffer.
    pub const PROCESS_EVENTS: &str = "PROCESS_EVENTS";
    /// Network-domain ring buffer.
    pub const NET_EVENTS: &str = "NET_EVENTS";
    /// Filesystem-domain ring buffer.
    pub const FILE_EVENTS: &str = "FILE_EVENTS";
    /// Per-CPU emitted/lost counters by kind and reason.
    pub const COUNTERS: &str = "COUNTERS";
    /// Network-domain counters (owner map evictions, pending map full, ...).
    pub const NET_COUNTERS: &str = "NET_COUNTERS";
    /// The exec record scratch (one slot per CPU).
    pub const EXEC_SCRATCH: &str = "EXEC_SCRATCH";
    /// `include_only` pids.
    pub const INCLUDED_PIDS: &str = "INCLUDED_PIDS";
    /// Excluded pids (until exec or exit).
    pub const EXCLUDED_PIDS: &str = "EXCLUDED_PIDS";
    /// Excluded comms (matched at exec).
    pub const EXCLUDED_COMMS: &str = "EXCLUDED_COMMS";
    /// Processes whose image had an excluded comm at exec.
    pub const EXCLUDED_COMM_PROCS: &str = "EXCLUDED_COMM_PROCS";
    /// Excluded canonical path prefixes (LPM trie).
    pub const EXCLUDED_PATH_PREFIXES: &str = "EXCLUDED_PATH_PREFIXES";
    /// The collector's own tgid as the kernel sees it.
    pub const SELF_TGID: &str = "SELF_TGID";
    /// Whether each exclusion set is empty, updated live (SIGHUP).
    pub const EXCLUSION_GATES: &str = "EXCLUSION_GATES";
    /// Generation of the threads' known credentials: bumped by the loader whenever the
    /// fork hook (re)attaches, so slots written before a gap in it are not trusted.
    pub const TASK_CREDS_EPOCH: &str = "TASK_CREDS_EPOCH";
    /// The running domains' parts of the shared `sys_exit` program (a program array,
    /// slots in [`super::sys_exit`]), filled by the loader as domains start and stop.
    pub const SYS_EXIT_PARTS: &str = "SYS_EXIT_PARTS";
    /// The running domains' parts of the shared `sys_enter` program (slots in
    /// [`super::sys_enter`]).
    pub const SYS_ENTER_PARTS: &str = "SYS_ENTER_PARTS";
    /// Whether each ring's reader is parked (sleeping without its timer, to be woken by
    /// the next record), at the slots of [`super::parked`].
    pub const READER_PARKED: &str = "READER_PARKED";

    /// Every name above.
    pub const ALL: &[&str] = &[
        PROCESS_EVENTS,
        NET_EVENTS,
        FILE_EVENTS,
        COUNTERS,
        NET_COUNTERS,
        EXEC_SCRATCH,
        INCLUDED_PIDS,
        EXCLUDED_PIDS,
        EXCLUDED_COMMS,
        EXCLUDED_COMM_PROCS,
        EXCLUDED_PATH_PREFIXES,
        SELF_TGID,
        EXCLUSION_GATES,
        TASK_CREDS_EPOCH,
        SYS_EXIT_PARTS,
        SYS_ENTER_PARTS,
        READER_PARKED,
    ];
}

/// Slots of [`maps::READER_PARKED`], one per ring buffer.
pub mod parked {
    /// `PROCESS_EVENTS`'s reader.
    pub const SLOT_PROCESS: u32 = 0;
    /// `NET_EVENTS`'s reader.
    pub const SLOT_NETWORK: u32 = 1;
    /// `FILE_EVENTS`'s reader.
    pub const SLOT_FILESYSTEM: u32 = 2;
    /// Slots in all.
    pub const SLOTS: u32 = 3;
}

/// The one program on the `sys_exit` tracepoint, shared by the domains, and the parts
/// it tail-calls from [`maps::SYS_EXIT_PARTS`]. Each program attached to that
/// tracepoint runs for every syscall on the machine (70-100 ns each here), so the
/// domains share one instead of attaching one each.
pub mod sys_exit {
    /// The attached program.
    pub const PROGRAM: &str = "sys_exit_shared";
    /// Slots of [`super::maps::SYS_EXIT_PARTS`], in the order the parts run.
    pub const PARTS: u32 = 3;
    /// Cred changes and failed execs.
    pub const SLOT_PROCESS: u32 = 0;
    /// open/openat/creat, and the 32-bit entry's file calls.
    pub const SLOT_FILESYSTEM: u32 = 1;
    /// The 32-bit entry's socket calls.
    pub const SLOT_NETWORK: u32 = 2;
    /// The part programs, by slot (loaded, never attached).
    pub const PART_PROGRAMS: [&str; PARTS as usize] =
        ["sys_exit_proc", "sys_exit_file", "sys_exit_net"];
}

/// The one program on the `sys_enter` tracepoint, shared like [`sys_exit`]'s, and the
/// parts it tail-calls from [`maps::SYS_ENTER_PARTS`]. With it and `sys_exit_shared`,
/// the file and socket calls need no per-syscall tracepoint: those add the perf
/// syscall probes to both raw tracepoints, a second callback that every syscall on the
/// machine then reaches through an indirect call (about 100 ns a syscall here).
pub mod sys_enter {
    /// The attached program.
    pub const PROGRAM: &str = "sys_enter_shared";
    /// Slots of [`super::maps::SYS_ENTER_PARTS`], in the order the parts run.
    pub const PARTS: u32 = 2;
    /// The file calls' arguments (native entry).
    pub const SLOT_FILESYSTEM: u32 = 0;
    /// The socket calls' arguments (native and 32-bit entries).
    pub const SLOT_NETWORK: u32 = 1;
    /// The part programs, by slot (loaded, never attached).
    pub const PART_PROGRAMS: [&str; PARTS as usize] = ["sys_enter_file", "sys_enter_net"];
}

/// Globals (read-only data) the loader sets by name before loading. The structure
/// offsets (`OFF_*`) are listed with their BTF source in collector-userspace's
/// `ebpf/offsets.rs` tables.
pub mod globals {
    /// SipHash key of connection ids.
    pub const CONN_ID_KEY: &str = "CONN_ID_KEY";
    /// `sched_process_exit` has `group_dead` (Linux >= 6.16).
    pub const EXIT_HAS_GROUP_DEAD: &str = "EXIT_HAS_GROUP_DEAD";
    /// Wakeup watermarks of the three rings.
    pub const PROCESS_WAKEUP_BYTES: &str = "PROCESS_WAKEUP_BYTES";
    /// See [`PROCESS_WAKEUP_BYTES`].
    pub const NET_WAKEUP_BYTES: &str = "NET_WAKEUP_BYTES";
    /// See [`PROCESS_WAKEUP_BYTES`].
    pub const FILE_WAKEUP_BYTES: &str = "FILE_WAKEUP_BYTES";
    /// The 32-bit entry can be told and read.
    pub const HAS_COMPAT_SYSCALLS: &str = "HAS_COMPAT_SYSCALLS";
    /// The io_uring request structures the file programs read are known (BTF).
    pub const FILE_HAS_IO_URING: &str = "FILE_HAS_IO_URING";
    /// io_uring's FTRUNCATE request structure is known too (Linux >= 6.9).
    pub const FILE_HAS_IO_URING_FTRUNCATE: &str = "FILE_HAS_IO_URING_FTRUNCATE";
    /// io_uring's SETXATTR/FSETXATTR request structure is known too.
    pub const FILE_HAS_IO_URING_XATTR: &str = "FILE_HAS_IO_URING_XATTR";
    /// Exclusion maps hold entries (skip their lookups otherwise).
    pub const HAS_EXCLUDED_COMMS: &str = "HAS_EXCLUDED_COMMS";
    /// See [`HAS_EXCLUDED_COMMS`].
    pub const HAS_EXCLUDED_PATHS: &str = "HAS_EXCLUDED_PATHS";
    /// See [`HAS_EXCLUDED_COMMS`].
    pub const HAS_EXCLUDED_PIDS: &str = "HAS_EXCLUDED_PIDS";
    /// Only `INCLUDED_PIDS` are traced.
    pub const INCLUDE_ONLY: &str = "INCLUDE_ONLY";
    /// Kernel features of the process hooks.
    pub const PROC_HAS_AUDIT: &str = "PROC_HAS_AUDIT";
    /// See [`PROC_HAS_AUDIT`].
    pub const PROC_HAS_BPRM_EXECUTABLE: &str = "PROC_HAS_BPRM_EXECUTABLE";
    /// See [`PROC_HAS_AUDIT`].
    pub const PROC_HAS_COMPAT: &str = "PROC_HAS_COMPAT";
    /// The task's default-hierarchy cgroup id can be read with typed loads
    /// (`task->cgroups->dfl_cgrp->kn->id`) instead of a helper call.
    pub const HAS_TYPED_CGROUP: &str = "HAS_TYPED_CGROUP";
    /// The loader's pid namespace, to find its host tgid.
    pub const SELF_NS_DEV: &str = "SELF_NS_DEV";
    /// See [`SELF_NS_DEV`].
    pub const SELF_NS_INO: &str = "SELF_NS_INO";
    /// See [`SELF_NS_DEV`].
    pub const SELF_NS_TGID: &str = "SELF_NS_TGID";
    /// How often a UDP destination's count is re-reported.
    pub const UDP_REPORT_INTERVAL_NS: &str = "UDP_REPORT_INTERVAL_NS";

    /// Every name above.
    pub const ALL: &[&str] = &[
        CONN_ID_KEY,
        EXIT_HAS_GROUP_DEAD,
        PROCESS_WAKEUP_BYTES,
        NET_WAKEUP_BYTES,
        FILE_WAKEUP_BYTES,
        HAS_COMPAT_SYSCALLS,
        FILE_HAS_IO_URING,
        FILE_HAS_IO_URING_FTRUNCATE,
        FILE_HAS_IO_URING_XATTR,
        HAS_EXCLUDED_COMMS,
        HAS_EXCLUDED_PATHS,
        HAS_EXCLUDED_PIDS,
        INCLUDE_ONLY,
        PROC_HAS_AUDIT,
        PROC_HAS_BPRM_EXECUTABLE,
        PROC_HAS_COMPAT,
        HAS_TYPED_CGROUP,
        SELF_NS_DEV,
        SELF_NS_INO,
        SELF_NS_TGID,
        UDP_REPORT_INTERVAL_NS,
    ];
}

/// `AT_FDCWD`: a dirfd meaning the working directory.
pub const AT_FDCWD: i32 = -100;
/// `AF_UNIX`.
pub const AF_UNIX: u16 = 1;
/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// TCP states (`include/net/tcp_states.h`), as `sock.__sk_common.skc_state` holds them.
pub mod tcp_state {
    /// `TCP_ESTABLISHED`
    pub const ESTABLISHED: u32 = 1;
    /// `TCP_SYN_SENT`
    pub const SYN_SENT: u32 = 2;
    /// `TCP_SYN_RECV`
    pub const SYN_RECV: u32 = 3;
    /// `TCP_FIN_WAIT1`
    pub const FIN_WAIT1: u32 = 4;
    /// `TCP_FIN_WAIT2`
    pub const FIN_WAIT2: u32 = 5;
    /// `TCP_TIME_WAIT`
    pub const TIME_WAIT: u32 = 6;
    /// `TCP_CLOSE`
    pub const CLOSE: u32 = 7;
    /// `TCP_CLOSE_WAIT`
    pub const CLOSE_WAIT: u32 = 8;
    /// `TCP_LAST_ACK`
    pub const LAST_ACK: u32 = 9;
    /// `TCP_LISTEN`
    pub const LISTEN: u32 = 10;
    /// `TCP_CLOSING`
    pub const CLOSING: u32 = 11;
    /// `TCP_NEW_SYN_RECV`
    pub const NEW_SYN_RECV: u32 = 12;

    /// The kernel's name of `state` (as `ss` prints it), `None` for an unknown number.
    pub fn name(state: u32) -> Option<&'static str> {
        Some(match state {
            ESTABLISHED => "ESTABLISHED",
            SYN_SENT => "SYN_SENT",
            SYN_RECV => "SYN_RECV",
            FIN_WAIT1 => "FIN_WAIT1",
            FIN_WAIT2 => "FIN_WAIT2",
            TIME_WAIT => "TIME_WAIT",
            CLOSE => "CLOSE",
            CLOSE_WAIT => "CLOSE_WAIT",
            LAST_ACK => "LAST_ACK",
            LISTEN => "LISTEN",
            CLOSING => "CLOSING",
            NEW_SYN_RECV => "NEW_SYN_RECV",
            _ => return None,
        })
    }
}
