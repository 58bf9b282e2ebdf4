//! Which kernel programs there are: per domain, the programs with their preferred hooks,
//! the raw-tracepoint fallbacks, and the ones a kernel may lack. Add a program to its
//! domain's list here.

use collector_common::{abi, RecordKind};

/// Where a program attaches.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hook {
    /// BTF tracepoint (no tracefs needed).
    BtfTracepoint(&'static str),
    /// Classic tracepoint `category/name` (needs tracefs).
    Tracepoint(&'static str, &'static str),
    /// Raw tracepoint (no tracefs needed).
    RawTracepoint(&'static str),
}

impl Hook {
    pub(crate) fn describe(self) -> String {
        match self {
            Hook::BtfTracepoint(f) => format!("tp_btf/{f}"),
            Hook::Tracepoint(c, n) => format!("tracepoint/{c}/{n}"),
            Hook::RawTracepoint(n) => format!("raw_tp/{n}"),
        }
    }
}

/// One program and its hook.
pub(crate) struct ProgramSpec {
    pub name: &'static str,
    pub hook: Hook,
}

const fn btf(name: &'static str) -> ProgramSpec {
    ProgramSpec {
        name,
        hook: Hook::BtfTracepoint(name),
    }
}

/// A BTF tracepoint whose program name differs from the tracepoint's (several domains
/// hook `sys_enter`/`sys_exit`).
const fn btf_at(name: &'static str, function: &'static str) -> ProgramSpec {
    ProgramSpec {
        name,
        hook: Hook::BtfTracepoint(function),
    }
}

const fn raw(name: &'static str, tracepoint: &'static str) -> ProgramSpec {
    ProgramSpec {
        name,
        hook: Hook::RawTracepoint(tracepoint),
    }
}

/// The one program on `sys_exit`, shared by the domains that need that hook (see
/// `collector_common::abi::sys_exit`): each domain attaching it turns its own part on.
pub(crate) const SYS_EXIT_SHARED: ProgramSpec = btf_at(abi::sys_exit::PROGRAM, "sys_exit");

/// The one program on `sys_enter`, shared the same way (`collector_common::abi::sys_enter`).
pub(crate) const SYS_ENTER_SHARED: ProgramSpec = btf_at(abi::sys_enter::PROGRAM, "sys_enter");

/// Which of the two shared syscall programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shared {
    Enter,
    Exit,
}

impl Shared {
    /// Both, in the order a domain joins them.
    pub(crate) const ALL: [Shared; 2] = [Shared::Enter, Shared::Exit];

    /// The attached program.
    pub(crate) fn spec(self) -> &'static ProgramSpec {
        match self {
            Self::Enter => &SYS_ENTER_SHARED,
            Self::Exit => &SYS_EXIT_SHARED,
        }
    }

    /// The one for the program `name`, if it is one.
    pub(crate) fn of(name: &str) -> Option<Shared> {
        Self::ALL.into_iter().find(|s| s.spec().name == name)
    }

    /// The tracepoint (its parts are verified against it too).
    pub(crate) fn tracepoint(self) -> &'static str {
        match self {
            Self::Enter => "sys_enter",
            Self::Exit => "sys_exit",
        }
    }

    /// The program array of its parts.
    pub(crate) fn parts_map(self) -> &'static str {
        match self {
            Self::Enter => abi::maps::SYS_ENTER_PARTS,
            Self::Exit => abi::maps::SYS_EXIT_PARTS,
        }
    }
}

const fn syscall(name: &'static str) -> ProgramSpec {
    ProgramSpec {
        name,
        hook: Hook::Tracepoint("syscalls", name),
    }
}

/// The kernel-side domains, each with its ring buffer and programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelDomain {
    /// exec, fork, exit
    Process,
    /// connect, accept, listen, close
    Network,
    /// open, create, unlink, rename
    Filesystem,
}

impl KernelDomain {
    /// All domains.
    pub const ALL: [KernelDomain; 3] = [Self::Process, Self::Network, Self::Filesystem];

    pub(crate) fn ring(self) -> &'static str {
        match self {
            Self::Process => abi::maps::PROCESS_EVENTS,
            Self::Network => abi::maps::NET_EVENTS,
            Self::Filesystem => abi::maps::FILE_EVENTS,
        }
    }

    /// Its ring's reader's slot in `READER_PARKED`.
    pub(crate) fn parked_slot(self) -> u32 {
        match self {
            Self::Process => abi::parked::SLOT_PROCESS,
            Self::Network => abi::parked::SLOT_NETWORK,
            Self::Filesystem => abi::parked::SLOT_FILESYSTEM,
        }
    }

    /// Programs with the preferred hooks.
    pub(crate) fn programs(self) -> &'static [ProgramSpec] {
        match self {
            Self::Process => PROCESS_PROGRAMS,
            Self::Network => NETWORK_PROGRAMS,
            Self::Filesystem => FILE_PROGRAMS,
        }
    }

    /// Programs for kernels where the preferred hooks cannot attach (no tracefs).
    pub(crate) fn fallback_programs(self) -> Option<&'static [ProgramSpec]> {
        match self {
            Self::Process => None,
            Self::Network => Some(NETWORK_PROGRAMS_RAW),
            Self::Filesystem => Some(FILE_PROGRAMS_RAW),
        }
    }

    /// This domain's slot in the kernel's parts array of `shared` (`SYS_ENTER_PARTS`,
    /// `SYS_EXIT_PARTS`): where its part goes while it runs. `None`: no part there.
    pub(crate) fn shared_slot(self, shared: Shared) -> Option<u32> {
        match (shared, self) {
            (Shared::Enter, Self::Process) => None,
            (Shared::Enter, Self::Network) => Some(abi::sys_enter::SLOT_NETWORK),
            (Shared::Enter, Self::Filesystem) => Some(abi::sys_enter::SLOT_FILESYSTEM),
            (Shared::Exit, Self::Process) => Some(abi::sys_exit::SLOT_PROCESS),
            (Shared::Exit, Self::Network) => Some(abi::sys_exit::SLOT_NETWORK),
            (Shared::Exit, Self::Filesystem) => Some(abi::sys_exit::SLOT_FILESYSTEM),
        }
    }

    /// The program of this domain's part of `shared` (loaded, never attached: the
    /// shared program tail-calls it).
    pub(crate) fn shared_part(self, shared: Shared) -> Option<&'static str> {
        let slot = self.shared_slot(shared)? as usize;
        Some(match shared {
            Shared::Enter => abi::sys_enter::PART_PROGRAMS[slot],
            Shared::Exit => abi::sys_exit::PART_PROGRAMS[slot],
        })
    }

    /// The programs without the shared syscall programs, which read syscall numbers
    /// and arguments from x86_64's saved registers (`pt_regs.orig_ax`, `di`, ...) and
    /// compare x86_64/i386 syscall numbers. Where the kernel's `pt_regs` is not
    /// x86_64's (arm64, ...), or with `syscall_hooks = "portable"`: per-syscall
    /// tracepoints stand in for the file and socket calls; cred changes and failed
    /// execs go unreported, and calls made through the 32-bit entry are not seen.
    pub(crate) fn portable_programs(self) -> Vec<&'static ProgramSpec> {
        let programs: &'static [ProgramSpec] = match self {
            Self::Process => PROCESS_PROGRAMS,
            Self::Network => NETWORK_PROGRAMS_PORTABLE,
            Self::Filesystem => FILE_PROGRAMS_PORTABLE,
        };
        programs
            .iter()
            .filter(|p| Shared::of(p.name).is_none())
            .collect()
    }

    /// The programs of `syscall_hooks = "tracepoints"`: per-syscall tracepoints for the
    /// file and socket calls (the portable set), the process domain's own programs
    /// (it has no per-syscall tracepoints to use instead of its `sys_exit` part).
    pub(crate) fn tracepoint_programs(self) -> Vec<&'static ProgramSpec> {
        match self {
            Self::Process => self.programs().iter().collect(),
            Self::Network | Self::Filesystem => self.portable_programs(),
        }
    }

    /// Names of this domain's kernel programs (with any set of hooks).
    pub fn program_names(self) -> impl Iterator<Item = &'static str> {
        self.programs()
            .iter()
            .chain(self.fallback_programs().unwrap_or_default())
            .chain(self.portable_programs())
            .map(|p| p.name)
            .chain(
                Shared::ALL
                    .into_iter()
                    .filter_map(move |s| self.shared_part(s)),
            )
    }

    /// Record kinds this domain's programs emit, with their names.
    pub fn kinds(self) -> &'static [(RecordKind, &'static str)] {
        match self {
            Self::Process => &[
                (RecordKind::Exec, "exec"),
                (RecordKind::Fork, "fork"),
                (RecordKind::Exit, "exit"),
                (RecordKind::CredChange, "cred_change"),
                (RecordKind::ExecFailed, "exec_failed"),
            ],
            Self::Network => &[
                (RecordKind::Connect, "connect"),
                (RecordKind::Accept, "accept"),
                (RecordKind::Listen, "listen"),
                (RecordKind::Close, "close"),
                (RecordKind::Bind, "bind"),
                (RecordKind::UdpSend, "udp_send"),
                (RecordKind::UnixConnect, "unix_connect"),
                (RecordKind::UnixBind, "unix_bind"),
            ],
            Self::Filesystem => &[
                (RecordKind::Open, "open"),
                (RecordKind::Create, "create"),
                (RecordKind::Unlink, "unlink"),
                (RecordKind::Rename, "rename"),
                (RecordKind::Mkdir, "mkdir"),
                (RecordKind::Rmdir, "rmdir"),
                (RecordKind::Chmod, "chmod"),
                (RecordKind::Chown, "chown"),
                (RecordKind::Link, "link"),
                (RecordKind::Symlink, "symlink"),
                (RecordKind::MemfdCreate, "memfd_create"),
                (RecordKind::Mknod, "mknod"),
                (RecordKind::Truncate, "truncate"),
                (RecordKind::Setxattr, "setxattr"),
            ],
        }
    }
}

pub(crate) const PROCESS_PROGRAMS: &[ProgramSpec] = &[
    btf("sched_process_exec"),
    btf("sched_process_fork"),
    btf("sched_process_exit"),
    // Credential changes and failed execs (x86_64 and i386 syscall numbers), at exit
    // only: every syscall on the machine runs each program on this tracepoint.
    SYS_EXIT_SHARED,
];

/// The network domain's io_uring program (connects and accepts), in every one of its
/// sets.
const URING_COMPLETE_NET: ProgramSpec = btf_at("io_uring_complete_net", "io_uring_complete");

pub(crate) const NETWORK_PROGRAMS: &[ProgramSpec] = &[
    // The socket calls, native and through the 32-bit entry, from the saved registers.
    // Exit before entry: an entry stashes arguments only once its exit is there to
    // take them (a stash left by a thread with no exit part yet would stay, and be
    // taken by a later unrelated call's exit). Released in the reverse order.
    SYS_EXIT_SHARED,
    SYS_ENTER_SHARED,
    btf("inet_sock_set_state"),
    URING_COMPLETE_NET,
];

/// What stands in for the network parts of the shared syscall programs without
/// register reads (see [`KernelDomain::portable_programs`]): per-syscall tracepoints,
/// whose records carry the arguments on every architecture.
pub(crate) const NETWORK_PROGRAMS_PORTABLE: &[ProgramSpec] = &[
    syscall("sys_enter_connect"),
    syscall("sys_exit_connect"),
    syscall("sys_exit_accept"),
    syscall("sys_exit_accept4"),
    syscall("sys_enter_listen"),
    syscall("sys_exit_listen"),
    syscall("sys_enter_bind"),
    syscall("sys_exit_bind"),
    syscall("sys_enter_sendto"),
    syscall("sys_exit_sendto"),
    syscall("sys_enter_sendmsg"),
    syscall("sys_exit_sendmsg"),
    syscall("sys_enter_sendmmsg"),
    syscall("sys_exit_sendmmsg"),
    btf("inet_sock_set_state"),
    URING_COMPLETE_NET,
];

/// Programs whose hook a kernel may lack (io_uring compiled out): when one fails to
/// attach, its domain goes on without it (logged; its hook is absent from status).
pub(crate) const OPTIONAL_PROGRAMS: &[&str] = &[
    "io_uring_complete_net",
    "io_uring_submit_req_file",
    "io_uring_complete_file",
    "io_uring_cqe_overflow_file",
    "sys_enter_fchmodat2",
    "sys_exit_fchmodat2",
    // Legacy path calls some architectures lack (arm64 has only the *at forms).
    "sys_enter_open",
    "sys_exit_open",
    "sys_enter_creat",
    "sys_exit_creat",
    "sys_enter_unlink",
    "sys_exit_unlink",
    "sys_enter_rename",
    "sys_exit_rename",
    "sys_enter_mkdir",
    "sys_exit_mkdir",
    "sys_enter_rmdir",
    "sys_exit_rmdir",
    "sys_enter_chmod",
    "sys_exit_chmod",
    "sys_enter_chown",
    "sys_exit_chown",
    "sys_enter_lchown",
    "sys_exit_lchown",
    "sys_enter_link",
    "sys_exit_link",
    "sys_enter_symlink",
    "sys_exit_symlink",
    "sys_enter_mknod",
    "sys_exit_mknod",
];

/// The raw-tracepoint set: an entry program per domain on `sys_enter`; the exits
/// (native and 32-bit) are the network part of `sys_exit_shared`, as in the preferred set.
pub(crate) const NETWORK_PROGRAMS_RAW: &[ProgramSpec] = &[
    raw("raw_net_sys_enter", "sys_enter"),
    btf("inet_sock_set_state"),
    raw("raw_net_compat_enter", "sys_enter"),
    SYS_EXIT_SHARED,
    URING_COMPLETE_NET,
];

// The filesystem domain's io_uring programs, in every one of its sets.
const URING_SUBMIT_FILE: ProgramSpec = btf_at("io_uring_submit_req_file", "io_uring_submit_req");
const URING_COMPLETE_FILE: ProgramSpec = btf_at("io_uring_complete_file", "io_uring_complete");
const URING_OVERFLOW_FILE: ProgramSpec =
    btf_at("io_uring_cqe_overflow_file", "io_uring_cqe_overflow");

pub(crate) const FILE_PROGRAMS_RAW: &[ProgramSpec] = &[
    raw("raw_file_sys_enter", "sys_enter"),
    raw("raw_file_sys_exit", "sys_exit"),
    raw("raw_file_compat_enter", "sys_enter"),
    raw("raw_file_compat_exit", "sys_exit"),
    // io_uring file operations (IORING_OP_OPENAT, UNLINKAT, RENAMEAT, ...).
    URING_SUBMIT_FILE,
    URING_COMPLETE_FILE,
    URING_OVERFLOW_FILE,
];

pub(crate) const FILE_PROGRAMS: &[ProgramSpec] = &[
    // The file calls, native and through the 32-bit entry, from the saved registers:
    // entries (arguments and digests of the user strings) by the shared `sys_enter`
    // program's part, exits (and opens, whole) by the shared `sys_exit` program's.
    // Exit before entry: an entry stashes arguments only once its exit is there to
    // take them (a stash left by a thread with no exit part yet would stay, and be
    // taken by a later unrelated call's exit). Released in the reverse order.
    SYS_EXIT_SHARED,
    SYS_ENTER_SHARED,
    // io_uring file operations (IORING_OP_OPENAT, UNLINKAT, RENAMEAT, ...).
    URING_SUBMIT_FILE,
    URING_COMPLETE_FILE,
    URING_OVERFLOW_FILE,
];

/// What stands in for the filesystem parts of the shared syscall programs without
/// register reads (see [`KernelDomain::portable_programs`]): per-syscall tracepoints,
/// whose records carry the arguments on every architecture. The legacy path calls
/// (`open`, `creat`, `unlink`, ...) exist only on some architectures (x86_64 has them,
/// arm64 does not): optional.
pub(crate) const FILE_PROGRAMS_PORTABLE: &[ProgramSpec] = &[
    syscall("sys_enter_openat"),
    syscall("sys_exit_openat"),
    syscall("sys_enter_open"),
    syscall("sys_exit_open"),
    syscall("sys_enter_creat"),
    syscall("sys_exit_creat"),
    syscall("sys_enter_openat2"),
    syscall("sys_exit_openat2"),
    syscall("sys_enter_unlink"),
    syscall("sys_exit_unlink"),
    syscall("sys_enter_unlinkat"),
    syscall("sys_exit_unlinkat"),
    syscall("sys_enter_rename"),
    syscall("sys_exit_rename"),
    syscall("sys_enter_renameat"),
    syscall("sys_exit_renameat"),
    syscall("sys_enter_renameat2"),
    syscall("sys_exit_renameat2"),
    syscall("sys_enter_mkdir"),
    syscall("sys_exit_mkdir"),
    syscall("sys_enter_mkdirat"),
    syscall("sys_exit_mkdirat"),
    syscall("sys_enter_rmdir"),
    syscall("sys_exit_rmdir"),
    syscall("sys_enter_chmod"),
    syscall("sys_exit_chmod"),
    syscall("sys_enter_fchmodat"),
    syscall("sys_exit_fchmodat"),
    syscall("sys_enter_chown"),
    syscall("sys_exit_chown"),
    syscall("sys_enter_lchown"),
    syscall("sys_exit_lchown"),
    syscall("sys_enter_fchownat"),
    syscall("sys_exit_fchownat"),
    syscall("sys_enter_memfd_create"),
    syscall("sys_exit_memfd_create"),
    syscall("sys_enter_mknodat"),
    syscall("sys_exit_mknodat"),
    syscall("sys_enter_mknod"),
    syscall("sys_exit_mknod"),
    syscall("sys_enter_truncate"),
    syscall("sys_exit_truncate"),
    syscall("sys_enter_setxattr"),
    syscall("sys_exit_setxattr"),
    syscall("sys_enter_lsetxattr"),
    syscall("sys_exit_lsetxattr"),
    syscall("sys_enter_fsetxattr"),
    syscall("sys_exit_fsetxattr"),
    syscall("sys_enter_ftruncate"),
    syscall("sys_exit_ftruncate"),
    syscall("sys_enter_fchmod"),
    syscall("sys_exit_fchmod"),
    syscall("sys_enter_fchown"),
    syscall("sys_exit_fchown"),
    syscall("sys_enter_open_by_handle_at"),
    syscall("sys_exit_open_by_handle_at"),
    syscall("sys_enter_link"),
    syscall("sys_exit_link"),
    syscall("sys_enter_linkat"),
    syscall("sys_exit_linkat"),
    syscall("sys_enter_symlink"),
    syscall("sys_exit_symlink"),
    syscall("sys_enter_symlinkat"),
    syscall("sys_exit_symlinkat"),
    // fchmodat2 is Linux >= 6.6: optional (see OPTIONAL_PROGRAMS).
    syscall("sys_enter_fchmodat2"),
    syscall("sys_exit_fchmodat2"),
    // io_uring file operations (IORING_OP_OPENAT, UNLINKAT, RENAMEAT, ...).
    URING_SUBMIT_FILE,
    URING_COMPLETE_FILE,
    URING_OVERFLOW_FILE,
];
