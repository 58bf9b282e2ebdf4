//! Loads the embedded kernel object into the running kernel: resolves offsets from BTF,
//! sizes the ring buffers, installs filters, and attaches each program to its hook.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::{
    maps::{
        lpm_trie::{Key as LpmKey, LpmTrie},
        Array as BpfArray, HashMap as BpfHashMap, Map, MapData, PerCpuArray, RingBuf,
    },
    programs::{BtfTracePoint, ProgramError, RawTracePoint, TracePoint},
    Btf, Ebpf, EbpfError, EbpfLoader,
};
use collector_common::abi;
use collector_common::{
    counter_index, RecordKind, COMM_LEN, COUNTER_EMITTED, COUNTER_LOST, COUNTER_LOST_STASH_FULL,
    COUNTER_PATH_UNREADABLE, PATH_PREFIX_LEN,
};

use super::btf::{BtfError, KernelBtf};
pub use super::exclusions::Exclusions;
pub use super::links::LinkCheck;
use super::offsets::KernelOffsets;

/// The kernel object built by `cargo xtask build-ebpf` (empty when it was not built).
static KERNEL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/collector-ebpf.o"));

/// Drops the embedded kernel object's pages from the resident set once the programs are
/// loaded (about 8 MB, most of it debug info). They are file-backed and read-only, so a
/// later load simply reads them from the binary again.
pub fn release_object_pages() {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => return,
    };
    let start = KERNEL_OBJECT.as_ptr() as usize;
    // Whole pages inside the object only: the pages at its ends hold other data too.
    let first = start.div_ceil(page) * page;
    let end = (start + KERNEL_OBJECT.len()) / page * page;
    if end > first {
        // SAFETY: the range lies inside a read-only file mapping of this binary; with
        // MADV_DONTNEED its pages are re-read from the file on the next access.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
        }
    }
}

/// A copy of the kernel object in 8-byte aligned memory.
struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    fn copy_of(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        let len = bytes.len();
        // SAFETY: `words` holds at least `len` initialized bytes; u8 has no alignment.
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
            .copy_from_slice(bytes);
        Self { words, len }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: as in `copy_of`; the borrow of `words` bounds the slice's life.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `copy_of`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// What can go wrong loading the kernel programs; each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The binary was built without the kernel object.
    #[error("this binary has no kernel programs embedded: build them with `cargo xtask build-ebpf`, then rebuild (or use `cargo xtask run`)")]
    NotBuilt,
    /// Kernel type information is missing or lacks a field.
    #[error(transparent)]
    Btf(#[from] BtfError),
    /// The running kernel's BTF could not be loaded by aya.
    #[error("cannot load kernel BTF for BTF tracepoints (needs CONFIG_DEBUG_INFO_BTF=y)")]
    AyaBtf(#[source] aya::BtfError),
    /// The object failed to load (maps, verifier).
    #[error("loading kernel programs failed{hint}")]
    Load {
        /// Cause (boxed: aya's error is large).
        #[source]
        source: Box<EbpfError>,
        /// What to do, when we can tell.
        hint: &'static str,
    },
    /// One program failed to load or attach.
    #[error("program `{program}` on hook `{hook}` failed{hint}")]
    Program {
        /// Program name.
        program: String,
        /// Hook.
        hook: String,
        /// Cause (boxed: aya's error is large).
        #[source]
        source: Box<ProgramError>,
        /// What to do, when we can tell.
        hint: &'static str,
    },
    /// The number of possible CPUs (for per-CPU scratch slots) could not be read.
    #[error("cannot read the possible CPUs from {path} (is sysfs mounted?)")]
    PossibleCpus {
        /// The file read.
        path: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A map the loader expects is missing or of the wrong type.
    #[error("kernel object has no usable map `{0}`")]
    Map(&'static str),
    /// tracefs is not mounted and could not be mounted.
    #[error("classic tracepoints need tracefs, which is not mounted and could not be mounted at /sys/kernel/tracing (mount it: `mount -t tracefs nodev /sys/kernel/tracing`)")]
    Tracefs(#[source] std::io::Error),
    /// Raw syscall hooks were asked for but this kernel's `pt_regs` is not the x86_64 one.
    #[error("raw sys_enter/sys_exit hooks need x86_64 `pt_regs` field names, which this kernel's BTF lacks: use syscall tracepoints (mount tracefs)")]
    NoRawSyscalls,
    /// The file domain reads open/openat/creat arguments from x86_64 `pt_regs` at
    /// syscall exit; this kernel's BTF has no such registers (another architecture).
    #[error("the filesystem programs read syscall arguments from x86_64 registers (`pt_regs.di`, ...), which this kernel's BTF lacks: the filesystem domain is x86_64-only")]
    FileNeedsX86Regs,
    /// The kernel's BPF statistics could not be turned on.
    #[error("cannot turn on the kernel's BPF statistics (BPF_ENABLE_STATS needs Linux >= 5.8 and CAP_SYS_ADMIN or CAP_BPF); set kernel_bpf_stats = false")]
    BpfStats(#[source] Box<aya::sys::SyscallError>),
    /// A kernel setting is out of range: refused, never a silent fallback.
    #[error("invalid kernel setting `{setting}` = {value}: {rule}")]
    InvalidSetting {
        /// The setting, as its configuration key.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What it must be.
        rule: &'static str,
    },
    /// No random bytes for the connection-id key.
    #[error("cannot read /dev/urandom for the connection-id key (is /dev mounted?)")]
    Random(#[source] std::io::Error),
    /// The kernel's list of BPF links could not be read, so no link was checked.
    #[error("cannot list the kernel's BPF links to check that the programs are attached")]
    LinkList(#[source] std::io::Error),
    /// The programs were loaded with fixed exclusions.
    #[error("the kernel programs were loaded with fixed exclusions (live_exclusions off): restart the collector to change them")]
    ExclusionsFixed,
    /// A map update failed.
    #[error("updating map `{map}` failed")]
    MapUpdate {
        /// Map name.
        map: &'static str,
        /// Cause.
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

const PRIVILEGE_HINT: &str = " (run as root, or grant CAP_BPF and CAP_PERFMON)";

fn hint_for(err: &dyn std::error::Error) -> &'static str {
    let mut cur: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if text.contains("Operation not permitted") || text.contains("EPERM") {
            return PRIVILEGE_HINT;
        }
        cur = e.source();
    }
    ""
}

/// Which hooks the syscall-based programs (file and network) use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyscallHooks {
    /// Per-syscall tracepoints (mounting tracefs if needed); raw `sys_enter`/`sys_exit`
    /// when tracefs cannot be had.
    #[default]
    Auto,
    /// Per-syscall tracepoints only (cheapest: they fire only for watched syscalls).
    Tracepoints,
    /// Raw `sys_enter`/`sys_exit` tracepoints only (no tracefs; fire for every syscall).
    Raw,
}

/// Kernel-side losses of one record kind, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelLosses {
    /// Records lost because the ring buffer had no room.
    pub ring_full: u64,
    /// Calls lost because the per-thread stash map was full at syscall entry.
    pub stash_full: u64,
    /// Records sent with a path that could not be read (event kept, path partial).
    pub path_unreadable: u64,
}

/// Settings of the kernel side.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// Bytes of the process ring buffer (power of two, multiple of the page size).
    pub process_ring_bytes: u32,
    /// Pending bytes at which the process ring wakes the reader; 0 = kernel adaptive.
    pub process_wakeup_bytes: u64,
    /// Bytes of the network ring buffer.
    pub network_ring_bytes: u32,
    /// Pending bytes at which the network ring wakes the reader; 0 = kernel adaptive.
    pub network_wakeup_bytes: u64,
    /// Bytes of the filesystem ring buffer.
    pub file_ring_bytes: u32,
    /// Pending bytes at which the filesystem ring wakes the reader; 0 = kernel adaptive.
    pub file_wakeup_bytes: u64,
    /// Process ids excluded in the kernel (the collector itself is always excluded).
    pub excluded_pids: Vec<u32>,
    /// Task names excluded in the kernel.
    pub excluded_comms: Vec<String>,
    /// Path prefixes whose file events are dropped in the kernel (the first
    /// `PATH_PREFIX_LEN` bytes count). Matched only against kernel-resolved canonical
    /// paths (the file an open produced); user-supplied paths (failed opens, unlink,
    /// rename) are never dropped, since a string can reach anywhere through `..` or
    /// symlinks.
    pub excluded_path_prefixes: Vec<String>,
    /// Record only the processes added with [`KernelPrograms::include_pid`].
    pub include_only: bool,
    /// Let [`KernelPrograms::set_exclusions`] change the exclusions while the programs
    /// run. Costs an array lookup per event and set; off, an empty set costs nothing
    /// (the verifier drops its lookups) and the exclusions are fixed at load.
    pub live_exclusions: bool,
    /// Hooks for the syscall-based programs.
    pub syscall_hooks: SyscallHooks,
    /// How often readers drain without a wakeup (and check for shutdown).
    pub poll_interval: Duration,
    /// How long a reader waits for room in the runtime's queue before dropping.
    pub max_send_wait: Duration,
    /// Minimum time between two send-count updates of one UDP (socket, destination)
    /// flow. The first send to a destination is always reported at once; later sends
    /// are counted in the kernel and a send at least this long after the flow's last
    /// report emits an update with the total count. `Duration::ZERO` reports every send.
    pub udp_report_interval: Duration,
    /// Tell a process's last exiting thread from `signal->live == 0` even where
    /// `sched_process_exit` passes `group_dead` (6.16+): what older kernels get, so that
    /// path can be tested on a new one.
    pub exit_by_signal_live: bool,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            process_ring_bytes: 8 << 20,
            // A wakeup per record (the kernel's adaptive policy when the reader keeps
            // up) is what a process program spent its time on: measured on 6.18, fork
            // and exit averaged 12 and 9 us per call with it and 1.5 and 1.7 us with a
            // 256 KiB watermark. The reader drains on its own timer (`poll_interval`)
            // below the watermark, so events wait at most that long.
            process_wakeup_bytes: 256 << 10,
            network_ring_bytes: 8 << 20,
            // A connect storm otherwise pays a reader wakeup (an IPI, costly in VMs) on
            // most submits; below 64 KiB the reader drains on its own timer.
            network_wakeup_bytes: 64 << 10,
            file_ring_bytes: 32 << 20,
            // File events come in storms: wake the reader per 256 KiB, and let it drain
            // on its own timer (`poll_interval`) below that.
            file_wakeup_bytes: 256 << 10,
            excluded_pids: Vec::new(),
            excluded_comms: Vec::new(),
            excluded_path_prefixes: Vec::new(),
            include_only: false,
            live_exclusions: false,
            syscall_hooks: SyscallHooks::Auto,
            poll_interval: Duration::from_millis(10),
            max_send_wait: Duration::from_millis(500),
            udp_report_interval: Duration::from_secs(10),
            exit_by_signal_live: false,
        }
    }
}

/// Largest ring buffer accepted per domain (1 GiB).
pub const MAX_RING_BYTES: u32 = 1 << 30;

impl KernelConfig {
    /// Checks every setting; an operator's bad value is an error that names it (the
    /// kernel would refuse it with a bare EINVAL, and the daemon must not fall back to
    /// polling because of a typo).
    pub fn validate(&self) -> Result<(), LoadError> {
        fn invalid(
            setting: &'static str,
            value: impl std::fmt::Display,
            rule: &'static str,
        ) -> LoadError {
            LoadError::InvalidSetting {
                setting,
                value: value.to_string(),
                rule,
            }
        }
        let page = page_size();
        let rings = [
            (
                "process_ring_bytes",
                self.process_ring_bytes,
                self.process_wakeup_bytes,
                "process_wakeup_bytes",
            ),
            (
                "network_ring_bytes",
                self.network_ring_bytes,
                self.network_wakeup_bytes,
                "network_wakeup_bytes",
            ),
            (
                "file_ring_bytes",
                self.file_ring_bytes,
                self.file_wakeup_bytes,
                "file_wakeup_bytes",
            ),
        ];
        for (setting, bytes, wakeup, wakeup_setting) in rings {
            if !bytes.is_power_of_two() || u64::from(bytes) < page || bytes > MAX_RING_BYTES {
                return Err(invalid(
                    setting,
                    bytes,
                    "a ring buffer must be a power of two of at least the page size (4096) and at most 1 GiB",
                ));
            }
            if wakeup >= u64::from(bytes) {
                return Err(invalid(
                    wakeup_setting,
                    wakeup,
                    "the wakeup watermark must be below its ring buffer's size (0 = wake on every event)",
                ));
            }
        }
        for comm in &self.excluded_comms {
            if comm.is_empty() || comm.len() >= collector_common::COMM_LEN {
                return Err(invalid(
                    "excluded_comms",
                    format!("{comm:?}"),
                    "a task name has 1 to 15 bytes (the kernel's TASK_COMM_LEN less the NUL)",
                ));
            }
        }
        for prefix in &self.excluded_path_prefixes {
            if !prefix.starts_with('/') || prefix.len() > PATH_PREFIX_LEN {
                return Err(invalid(
                    "excluded_path_prefixes",
                    format!("{prefix:?}"),
                    "a path prefix is absolute and at most 128 bytes",
                ));
            }
        }
        if self.poll_interval.is_zero() || self.poll_interval > Duration::from_secs(10) {
            return Err(invalid(
                "poll_interval",
                format!("{:?}", self.poll_interval),
                "it must be above zero and at most 10s",
            ));
        }
        if self.max_send_wait > Duration::from_secs(24 * 3600) {
            return Err(invalid(
                "max_send_wait",
                format!("{:?}", self.max_send_wait),
                "it must be at most a day",
            ));
        }
        Ok(())
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096).max(4096)
}

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
    fn describe(self) -> String {
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

    /// Names of this domain's kernel programs (with either set of hooks).
    pub fn program_names(self) -> impl Iterator<Item = &'static str> {
        self.programs()
            .iter()
            .chain(self.fallback_programs().unwrap_or_default())
            .map(|p| p.name)
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
            ],
        }
    }
}

pub(crate) const PROCESS_PROGRAMS: &[ProgramSpec] = &[
    btf("sched_process_exec"),
    btf("sched_process_fork"),
    btf("sched_process_exit"),
    // Credential changes and failed execs (x86_64 and i386 syscall numbers).
    btf_at("proc_sys_enter", "sys_enter"),
    btf_at("proc_sys_exit", "sys_exit"),
];

pub(crate) const NETWORK_PROGRAMS: &[ProgramSpec] = &[
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
    // The 32-bit entry: per-syscall tracepoints do not fire for it on x86.
    raw("raw_net_compat_enter", "sys_enter"),
    btf_at("net_compat_exit", "sys_exit"),
    ProgramSpec {
        name: "io_uring_complete_net",
        hook: Hook::BtfTracepoint("io_uring_complete"),
    },
];

/// Programs whose hook a kernel may lack (io_uring compiled out): when one fails to
/// attach, its domain goes on without it (logged; its hook is absent from status).
const OPTIONAL_PROGRAMS: &[&str] = &[
    "io_uring_complete_net",
    "io_uring_submit_req_file",
    "io_uring_complete_file",
    "io_uring_cqe_overflow_file",
    "sys_enter_fchmodat2",
    "sys_exit_fchmodat2",
    // Legacy path calls some architectures lack (arm64 has only the *at forms).
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
];

pub(crate) const NETWORK_PROGRAMS_RAW: &[ProgramSpec] = &[
    raw("raw_net_sys_enter", "sys_enter"),
    raw("raw_net_sys_exit", "sys_exit"),
    btf("inet_sock_set_state"),
    raw("raw_net_compat_enter", "sys_enter"),
    btf_at("net_compat_exit", "sys_exit"),
    ProgramSpec {
        name: "io_uring_complete_net",
        hook: Hook::BtfTracepoint("io_uring_complete"),
    },
];

pub(crate) const FILE_PROGRAMS_RAW: &[ProgramSpec] = &[
    raw("raw_file_sys_enter", "sys_enter"),
    raw("raw_file_sys_exit", "sys_exit"),
    raw("raw_file_compat_enter", "sys_enter"),
    raw("raw_file_compat_exit", "sys_exit"),
    // io_uring file operations (IORING_OP_OPENAT, UNLINKAT, RENAMEAT, ...).
    ProgramSpec {
        name: "io_uring_submit_req_file",
        hook: Hook::BtfTracepoint("io_uring_submit_req"),
    },
    ProgramSpec {
        name: "io_uring_complete_file",
        hook: Hook::BtfTracepoint("io_uring_complete"),
    },
    ProgramSpec {
        name: "io_uring_cqe_overflow_file",
        hook: Hook::BtfTracepoint("io_uring_cqe_overflow"),
    },
];

pub(crate) const FILE_PROGRAMS: &[ProgramSpec] = &[
    // open, creat, openat (from the saved registers, no entry hook) and the 32-bit
    // entry's file calls (per-syscall tracepoints do not fire for it on x86), also from
    // the saved registers.
    btf_at("file_sys_exit", "sys_exit"),
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
    ProgramSpec {
        name: "io_uring_submit_req_file",
        hook: Hook::BtfTracepoint("io_uring_submit_req"),
    },
    ProgramSpec {
        name: "io_uring_complete_file",
        hook: Hook::BtfTracepoint("io_uring_complete"),
    },
    ProgramSpec {
        name: "io_uring_cqe_overflow_file",
        hook: Hook::BtfTracepoint("io_uring_cqe_overflow"),
    },
];

/// A random SipHash key for connection ids (from the kernel's CSPRNG), so an id
/// reveals nothing about the kernel address it was derived from.
fn random_key() -> Result<[u64; 2], LoadError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(LoadError::Random)?;
    let (a, b) = bytes.split_at(8);
    Ok([
        u64::from_ne_bytes(a.try_into().expect("8 bytes")),
        u64::from_ne_bytes(b.try_into().expect("8 bytes")),
    ])
}

/// Loaded kernel programs, shared by the domain sources. Dropping the last reference
/// detaches and unloads every program and map.
pub struct KernelPrograms {
    /// This process's tgid as the kernel sees it (initial pid namespace).
    self_tgid: SelfTgid,
    ebpf: Mutex<Ebpf>,
    btf: Btf,
    raw_syscalls: bool,
    attached: Mutex<std::collections::HashMap<KernelDomain, &'static [ProgramSpec]>>,
    /// The link of each attached program (see `links`).
    links: Mutex<std::collections::HashMap<&'static str, super::links::AttachedLink>>,
    /// Times each program was found without a link and attached again.
    reattached: Mutex<BTreeMap<&'static str, u64>>,
    /// What the exclusion maps hold now.
    exclusions: Mutex<Exclusions>,
    counters: PerCpuArray<MapData, u64>,
    hooks: Mutex<BTreeMap<String, String>>,
    config: KernelConfig,
    // Kept alive for the programs' life: dropping it closes the log map under them.
    logger: Mutex<Option<aya_log::EbpfLogger<&'static dyn log::Log>>>,
}

impl std::fmt::Debug for KernelPrograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelPrograms")
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

fn bump_memlock_rlimit() {
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones ignore it.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK (fine on Linux >= 5.11)");
    }
}

impl KernelPrograms {
    /// Loads the object (maps, filters, offsets). Programs are attached per domain with
    /// [`KernelPrograms::attach`], so one domain failing leaves the others working.
    pub fn load(config: KernelConfig) -> Result<Arc<Self>, LoadError> {
        if KERNEL_OBJECT.is_empty() {
            return Err(LoadError::NotBuilt);
        }
        config.validate()?;
        bump_memlock_rlimit();
        let btf = KernelBtf::from_sys_fs()?;
        let offsets = KernelOffsets::resolve(&btf)?;
        let own_ns = own_pid_namespace();
        let group_dead = u32::from(offsets.exit_has_group_dead && !config.exit_by_signal_live);
        let proc_has_audit = u32::from(offsets.proc_has_audit);
        let proc_has_compat = u32::from(offsets.proc_has_compat);
        let proc_has_bprm_executable = u32::from(offsets.proc_has_bprm_executable);
        let include_only = u32::from(config.include_only);
        // 0: none, 1: some (fixed), 2: ask EXCLUSION_GATES (live; see `exclusions`).
        let gate = |some: bool| {
            if config.live_exclusions {
                2
            } else {
                u32::from(some)
            }
        };
        let has_excluded_pids = gate(!config.excluded_pids.is_empty());
        let has_excluded_comms = gate(!config.excluded_comms.is_empty());
        let has_excluded_paths = gate(!config.excluded_path_prefixes.is_empty());
        let has_compat_syscalls = u32::from(offsets.compat_syscalls);
        let file_has_io_uring = u32::from(offsets.file_has_io_uring);
        let conn_id_key = random_key()?;
        let udp_report_interval_ns =
            u64::try_from(config.udp_report_interval.as_nanos()).unwrap_or(u64::MAX);

        // Own copy: its BTF is sanitized in place first (see `btf_fixup`), in an
        // 8-aligned buffer as the ELF parser wants.
        let mut object = AlignedObject::copy_of(KERNEL_OBJECT);
        let renamed = super::btf_fixup::sanitize_object(object.bytes_mut())?;
        if renamed > 0 {
            tracing::debug!(renamed, "sanitized BTF type names in the kernel object");
        }

        let exec_scratch_slots = aya::util::nr_cpus()
            .map_err(|(path, source)| LoadError::PossibleCpus { path, source })?
            as u32;
        let mut loader = EbpfLoader::new();
        for (name, value) in &offsets.values {
            loader.override_global(name, value, true);
        }
        loader
            .override_global(abi::globals::EXIT_HAS_GROUP_DEAD, &group_dead, true)
            .override_global(abi::globals::PROC_HAS_AUDIT, &proc_has_audit, true)
            .override_global(abi::globals::PROC_HAS_COMPAT, &proc_has_compat, true)
            .override_global(
                abi::globals::PROC_HAS_BPRM_EXECUTABLE,
                &proc_has_bprm_executable,
                true,
            )
            .override_global(abi::globals::SELF_NS_DEV, &own_ns.dev, true)
            .override_global(abi::globals::SELF_NS_INO, &own_ns.ino, true)
            .override_global(abi::globals::SELF_NS_TGID, &own_ns.tgid, true)
            .override_global(abi::globals::INCLUDE_ONLY, &include_only, true)
            .override_global(abi::globals::HAS_EXCLUDED_PIDS, &has_excluded_pids, true)
            .override_global(abi::globals::HAS_EXCLUDED_COMMS, &has_excluded_comms, true)
            .override_global(abi::globals::HAS_EXCLUDED_PATHS, &has_excluded_paths, true)
            .override_global(
                abi::globals::PROCESS_WAKEUP_BYTES,
                &config.process_wakeup_bytes,
                true,
            )
            .override_global(
                abi::globals::NET_WAKEUP_BYTES,
                &config.network_wakeup_bytes,
                true,
            )
            .override_global(
                abi::globals::FILE_WAKEUP_BYTES,
                &config.file_wakeup_bytes,
                true,
            )
            .override_global(
                abi::globals::HAS_COMPAT_SYSCALLS,
                &has_compat_syscalls,
                true,
            )
            .override_global(abi::globals::FILE_HAS_IO_URING, &file_has_io_uring, true)
            .override_global(abi::globals::CONN_ID_KEY, &conn_id_key, true)
            .override_global(
                abi::globals::UDP_REPORT_INTERVAL_NS,
                &udp_report_interval_ns,
                true,
            )
            .map_max_entries(abi::maps::PROCESS_EVENTS, config.process_ring_bytes)
            // One exec-assembly slot per possible CPU (indexed by the CPU id).
            .map_max_entries(abi::maps::EXEC_SCRATCH, exec_scratch_slots)
            .map_max_entries(abi::maps::NET_EVENTS, config.network_ring_bytes)
            .map_max_entries(abi::maps::FILE_EVENTS, config.file_ring_bytes);
        let mut ebpf = loader
            .load(object.bytes())
            .map_err(|source| LoadError::Load {
                hint: hint_for(&source),
                source: Box::new(source),
            })?;

        let logger = match aya_log::EbpfLogger::init_with_logger(&mut ebpf, log_bridge()) {
            Ok(logger) => Some(logger),
            Err(e) => {
                tracing::debug!("kernel-side logging unavailable: {e}");
                None
            }
        };

        install_filters(&mut ebpf, &config)?;
        let exclusions = Exclusions {
            pids: config.excluded_pids.clone(),
            comms: config.excluded_comms.clone(),
            path_prefixes: config.excluded_path_prefixes.clone(),
        };
        if config.live_exclusions {
            super::exclusions::write_gates(&mut ebpf, &exclusions)?;
        }
        let self_tgid = resolve_self_tgid(&mut ebpf, &own_ns)?;

        let counters = ebpf
            .take_map(abi::maps::COUNTERS)
            .ok_or(LoadError::Map(abi::maps::COUNTERS))
            .and_then(|m| {
                PerCpuArray::try_from(m).map_err(|_| LoadError::Map(abi::maps::COUNTERS))
            })?;

        let aya_btf = Btf::from_sys_fs().map_err(LoadError::AyaBtf)?;
        let programs = Arc::new(Self {
            self_tgid,
            ebpf: Mutex::new(ebpf),
            btf: aya_btf,
            raw_syscalls: offsets.raw_syscalls,
            attached: Mutex::default(),
            links: Mutex::default(),
            reattached: Mutex::default(),
            exclusions: Mutex::new(exclusions),
            counters,
            hooks: Mutex::new(BTreeMap::new()),
            config,
            logger: Mutex::new(logger),
        });
        programs.spawn_log_reader();
        Ok(programs)
    }

    fn spawn_log_reader(self: &Arc<Self>) {
        // aya-log records are rare (diagnostics off the hot path); flushing them on a
        // slow timer keeps the logger's map drained without a dedicated wakeup.
        let has_logger = self.logger.lock().map(|l| l.is_some()).unwrap_or(false);
        if !has_logger || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(programs) = weak.upgrade() else {
                    return;
                };
                if let Ok(mut logger) = programs.logger.lock() {
                    if let Some(logger) = logger.as_mut() {
                        logger.flush();
                    }
                };
            }
        });
    }

    /// Verifies, loads and attaches every program of `domain`, choosing hooks by
    /// [`SyscallHooks`]. On failure the domain's programs that did attach are unloaded.
    pub fn attach(&self, domain: KernelDomain) -> Result<(), LoadError> {
        if domain == KernelDomain::Filesystem && !self.raw_syscalls {
            // Reading x86_64 register offsets that resolved to 0 would decode garbage.
            return Err(LoadError::FileNeedsX86Regs);
        }
        let preferred = domain.programs();
        let needs_tracefs = preferred
            .iter()
            .any(|p| matches!(p.hook, Hook::Tracepoint(..)));
        let specs = match (self.config.syscall_hooks, domain.fallback_programs()) {
            (SyscallHooks::Raw, Some(raw)) if self.raw_syscalls => raw,
            (SyscallHooks::Raw, Some(_)) => return Err(LoadError::NoRawSyscalls),
            (SyscallHooks::Auto, Some(raw)) if needs_tracefs => match ensure_tracefs() {
                Ok(()) => preferred,
                Err(e) if self.raw_syscalls => {
                    tracing::warn!(
                        "{:#}; using raw sys_enter/sys_exit tracepoints instead (costlier)",
                        anyhow::Error::from(e)
                    );
                    raw
                }
                Err(e) => return Err(e),
            },
            _ => {
                if needs_tracefs {
                    ensure_tracefs()?;
                }
                preferred
            }
        };
        let mut attached = Vec::new();
        for spec in specs {
            let result = {
                let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
                attach_program(&mut ebpf, spec, &self.btf)
            };
            match result {
                Ok(link) => {
                    self.links
                        .lock()
                        .expect("links lock poisoned")
                        .insert(spec.name, link);
                    attached.push(spec);
                }
                Err(e) if OPTIONAL_PROGRAMS.contains(&spec.name) => {
                    tracing::warn!("{:#}; going on without it", anyhow::Error::from(e));
                }
                Err(e) => {
                    for spec in attached {
                        self.unload_one(spec.name);
                    }
                    return Err(e);
                }
            }
        }
        let mut hooks = self.hooks.lock().expect("hooks lock poisoned");
        for spec in &attached {
            hooks.insert(spec.name.to_string(), spec.hook.describe());
        }
        self.attached
            .lock()
            .expect("attached lock poisoned")
            .insert(domain, specs);
        Ok(())
    }

    fn unload_one(&self, name: &str) {
        // Unloading closes the link too (aya owns it).
        self.links.lock().expect("links lock poisoned").remove(name);
        let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        if let Some(program) = ebpf.program_mut(name) {
            let result = match program {
                aya::programs::Program::BtfTracePoint(p) => p.unload(),
                aya::programs::Program::TracePoint(p) => p.unload(),
                aya::programs::Program::RawTracePoint(p) => p.unload(),
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(program = name, "unload failed: {e}");
            }
        }
        self.hooks.lock().expect("hooks lock poisoned").remove(name);
    }

    /// Replaces the exclusions while the programs run (loaded with `live_exclusions`):
    /// the maps change in place, each set's gate turning on after its entries are in
    /// and off before they go. An excluded pid already excluded stays as the kernel has
    /// it (an exec since ended its exclusion).
    pub fn set_exclusions(&self, new: Exclusions) -> Result<(), LoadError> {
        if !self.config.live_exclusions {
            return Err(LoadError::ExclusionsFixed);
        }
        KernelConfig {
            excluded_pids: new.pids.clone(),
            excluded_comms: new.comms.clone(),
            excluded_path_prefixes: new.path_prefixes.clone(),
            ..self.config.clone()
        }
        .validate()?;
        let mut current = self.exclusions.lock().expect("exclusions lock poisoned");
        let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        super::exclusions::apply(&mut ebpf, &current, &new)?;
        *current = new;
        Ok(())
    }

    /// The exclusions in force.
    pub fn exclusions(&self) -> Exclusions {
        self.exclusions
            .lock()
            .expect("exclusions lock poisoned")
            .clone()
    }

    /// Adds a process to the watched set (effective with `include_only`).
    pub fn include_pid(&self, pid: u32) -> Result<(), LoadError> {
        let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        let mut pids: BpfHashMap<_, u32, u8> = ebpf
            .map_mut(abi::maps::INCLUDED_PIDS)
            .ok_or(LoadError::Map(abi::maps::INCLUDED_PIDS))?
            .try_into()
            .map_err(|_| LoadError::Map(abi::maps::INCLUDED_PIDS))?;
        pids.insert(pid, 1, 0)
            .map_err(|source| LoadError::MapUpdate {
                map: abi::maps::INCLUDED_PIDS,
                source: Box::new(source),
            })
    }

    /// Takes a domain's ring buffer (once).
    pub(crate) fn take_ring(&self, name: &'static str) -> Result<RingBuf<MapData>, LoadError> {
        let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        let map: Map = ebpf.take_map(name).ok_or(LoadError::Map(name))?;
        RingBuf::try_from(map).map_err(|_| LoadError::Map(name))
    }

    /// Kernel counters summed over CPUs: (emitted, lost) for `kind`.
    pub fn kernel_counts(&self, kind: RecordKind) -> (u64, u64) {
        let sum = |which| {
            self.counters
                .get(&counter_index(kind, which), 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        (sum(COUNTER_EMITTED), sum(COUNTER_LOST))
    }

    /// Network-domain kernel counters that are not per record kind, summed over CPUs:
    /// `owner_map_full` (a connection whose close cannot be attributed, so is not
    /// reported), `owner_stale_evicted` (an owner entry of a freed sock dropped when a
    /// new sock was born at its address), `pending_map_full` (a socket call not
    /// remembered between entry and exit, so not reported).
    pub fn network_counters(&self) -> BTreeMap<&'static str, u64> {
        const NAMES: [&str; 3] = ["owner_map_full", "owner_stale_evicted", "pending_map_full"];
        let ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        let Some(Ok(map)) = ebpf
            .map(abi::maps::NET_COUNTERS)
            .map(PerCpuArray::<&MapData, u64>::try_from)
        else {
            return BTreeMap::new();
        };
        NAMES
            .iter()
            .enumerate()
            .map(|(i, &name)| {
                let n = map.get(&(i as u32), 0).map(|v| v.iter().sum()).unwrap_or(0);
                (name, n)
            })
            .collect()
    }

    /// Times a loaded program did not run because another BPF program was already
    /// running on that CPU (`recursion_misses` of `bpf_prog_info`); `None` when the
    /// program is not loaded or the kernel does not say.
    pub fn recursion_misses(&self, program: &str) -> Option<u64> {
        let ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        let fd = ebpf.program(program)?.fd().ok()?;
        use std::os::fd::{AsFd, AsRawFd};
        super::prog_info::recursion_misses(fd.as_fd().as_raw_fd())
    }

    /// `run_cnt` of a loaded program read two ways, ours (as for `recursion_misses`) and
    /// aya's, so a test can check our reading of `bpf_prog_info` lines up.
    pub fn program_run_counts(&self, program: &str) -> Option<(u64, u64)> {
        let ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        let p = ebpf.program(program)?;
        let aya_count = p.info().ok()?.run_count();
        use std::os::fd::{AsFd, AsRawFd};
        let ours = super::prog_info::run_count(p.fd().ok()?.as_fd().as_raw_fd())?;
        Some((ours, aya_count))
    }

    /// Kernel losses of `kind` by reason, summed over CPUs.
    pub fn kernel_losses(&self, kind: RecordKind) -> KernelLosses {
        let sum = |which| {
            self.counters
                .get(&counter_index(kind, which), 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        KernelLosses {
            ring_full: sum(COUNTER_LOST),
            stash_full: sum(COUNTER_LOST_STASH_FULL),
            path_unreadable: sum(COUNTER_PATH_UNREADABLE),
        }
    }

    /// Whether kernel-side diagnostics (aya-log) reach this process's log.
    pub fn kernel_logging(&self) -> bool {
        self.logger.lock().map(|l| l.is_some()).unwrap_or(false)
    }

    /// Program name -> hook it is attached with.
    pub fn hooks(&self) -> BTreeMap<String, String> {
        self.hooks.lock().expect("hooks lock poisoned").clone()
    }

    /// The collector's tgid as the kernel sees it, which the programs exclude; differs
    /// from `std::process::id()` inside a pid namespace.
    pub fn self_tgid(&self) -> SelfTgid {
        self.self_tgid
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    /// Detaches and unloads a domain's programs (a source's `stop`).
    pub fn detach(&self, domain: KernelDomain) {
        let specs = self
            .attached
            .lock()
            .expect("attached lock poisoned")
            .remove(&domain)
            .unwrap_or_default();
        for spec in specs {
            self.unload_one(spec.name);
        }
    }

    /// The programs a domain got attached with (empty when not attached).
    pub fn attached_programs(&self, domain: KernelDomain) -> Vec<&'static str> {
        self.attached
            .lock()
            .expect("attached lock poisoned")
            .get(&domain)
            .map(|specs| specs.iter().map(|s| s.name).collect())
            .unwrap_or_default()
    }

    /// Looks for a link to each of `domain`'s attached programs in the kernel's list of
    /// links, and attaches again every program that has none (see `links`). Events its
    /// hook saw while it was detached are gone and cannot be counted.
    pub fn check_links(&self, domain: KernelDomain) -> Result<LinkCheck, LoadError> {
        // Held to the end: a `detach` (a source stopping) waits, so that a program it
        // unloads is never taken for one detached from outside and attached again.
        let attached = self.attached.lock().expect("attached lock poisoned");
        let specs: &'static [ProgramSpec] = match attached.get(&domain) {
            Some(specs) => specs,
            None => return Ok(LinkCheck::default()),
        };
        let linked = super::links::linked_program_ids().map_err(LoadError::LinkList)?;
        let mut check = LinkCheck::default();
        let hooks = self.hooks();
        for spec in specs {
            // Optional programs that did not attach have no hook entry: nothing to check.
            if !hooks.contains_key(spec.name) {
                continue;
            }
            let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
            let id = super::links::program_id(&ebpf, spec.name);
            if id.is_some_and(|id| linked.contains(&id)) {
                continue;
            }
            let result = match id {
                Some(_) => super::links::attach_loaded(&mut ebpf, spec),
                None => super::links::load_and_attach(&mut ebpf, spec, &self.btf),
            };
            drop(ebpf);
            match result {
                Ok(link) => {
                    // The old link (if aya still holds one) stays with the program and
                    // goes when it is unloaded.
                    self.links
                        .lock()
                        .expect("links lock poisoned")
                        .insert(spec.name, link);
                    *self
                        .reattached
                        .lock()
                        .expect("reattached lock poisoned")
                        .entry(spec.name)
                        .or_default() += 1;
                    check.reattached.push(spec.name);
                }
                Err(e) => check.failed.push((spec.name, format!("{e:#}"))),
            }
        }
        Ok(check)
    }

    /// Times each program was found detached and attached again.
    pub fn reattach_counts(&self) -> BTreeMap<&'static str, u64> {
        self.reattached
            .lock()
            .expect("reattached lock poisoned")
            .clone()
    }

    /// Closes one program's link and leaves the program loaded: what `BPF_LINK_DETACH`
    /// (`bpftool link detach`) does on link types that support it. Linux 6.18 refuses
    /// that for tracepoint links, so tests of [`KernelPrograms::check_links`] use this to
    /// make the same state. Returns whether the program had a link.
    #[doc(hidden)]
    pub fn close_link(&self, program: &str) -> Result<bool, LoadError> {
        let Some((name, link)) = self
            .links
            .lock()
            .expect("links lock poisoned")
            .remove_entry(program)
        else {
            return Ok(false);
        };
        let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        super::links::close(&mut ebpf, name, link).map_err(|source| LoadError::Program {
            program: name.to_string(),
            hook: "its link".into(),
            hint: "",
            source: Box::new(source),
        })?;
        Ok(true)
    }

    /// The kernel's id of a loaded program (what `bpftool prog` and `bpftool link` show).
    pub fn program_id(&self, program: &str) -> Option<u32> {
        super::links::program_id(&self.ebpf.lock().expect("ebpf lock poisoned"), program)
    }

    /// What each attached program has cost so far, from the kernel's BPF statistics
    /// (counted only while they are on: `kernel.bpf_stats_enabled` or
    /// [`enable_bpf_stats`]), in program-name order.
    pub fn program_costs(&self) -> Vec<ProgramCost> {
        let attached: Vec<&'static str> = {
            let attached = self.attached.lock().expect("attached lock poisoned");
            attached
                .values()
                .flat_map(|specs| specs.iter().map(|s| s.name))
                .collect()
        };
        let ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        let mut costs: Vec<ProgramCost> = ebpf
            .programs()
            .filter(|(name, _)| attached.contains(name))
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some(ProgramCost {
                    program: name.to_owned(),
                    run_count: info.run_count(),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                })
            })
            .collect();
        costs.sort_by(|a, b| a.program.cmp(&b.program));
        costs
    }
}

/// Run count and accumulated run time of one kernel program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramCost {
    /// Program name.
    pub program: String,
    /// Times it ran.
    pub run_count: u64,
    /// Nanoseconds it ran, in all.
    pub run_time_ns: u64,
}

/// Turns the kernel's BPF run-time statistics on for as long as the returned descriptor
/// lives (`BPF_ENABLE_STATS`, Linux >= 5.8), the way `kernel.bpf_stats_enabled=1` does
/// without changing a sysctl that others may rely on.
pub fn enable_bpf_stats() -> Result<std::os::fd::OwnedFd, LoadError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| LoadError::BpfStats(Box::new(e)))
}

fn attach_program(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
    btf: &Btf,
) -> Result<super::links::AttachedLink, LoadError> {
    let wrap = |source: ProgramError| LoadError::Program {
        program: spec.name.to_string(),
        hook: spec.hook.describe(),
        hint: hint_for(&source),
        source: Box::new(source),
    };
    let program = ebpf
        .program_mut(spec.name)
        .ok_or(LoadError::Map("program missing from object"))?;
    match spec.hook {
        Hook::BtfTracepoint(function) => {
            let p: &mut BtfTracePoint = program.try_into().map_err(wrap)?;
            p.load(function, btf).map_err(wrap)?;
            Ok(super::links::AttachedLink::Btf(p.attach().map_err(wrap)?))
        }
        Hook::Tracepoint(category, name) => {
            let p: &mut TracePoint = program.try_into().map_err(wrap)?;
            p.load().map_err(wrap)?;
            Ok(super::links::AttachedLink::Tracepoint(
                p.attach(category, name).map_err(wrap)?,
            ))
        }
        Hook::RawTracepoint(name) => {
            let p: &mut RawTracePoint = program.try_into().map_err(wrap)?;
            p.load().map_err(wrap)?;
            Ok(super::links::AttachedLink::Raw(
                p.attach(name).map_err(wrap)?,
            ))
        }
    }
}

/// Classic tracepoints need tracefs; a fresh machine may not have it mounted.
fn ensure_tracefs() -> Result<(), LoadError> {
    let dir = std::path::Path::new("/sys/kernel/tracing");
    if dir.join("events").exists()
        || std::path::Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return Ok(());
    }
    let target = std::ffi::CString::new("/sys/kernel/tracing").expect("no NUL");
    let fstype = std::ffi::CString::new("tracefs").expect("no NUL");
    let source = std::ffi::CString::new("nodev").expect("no NUL");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LoadError::Tracefs(std::io::Error::last_os_error()));
    }
    tracing::info!("mounted tracefs at /sys/kernel/tracing (classic tracepoints need it)");
    Ok(())
}

fn install_filters(ebpf: &mut Ebpf, config: &KernelConfig) -> Result<(), LoadError> {
    let mut prefixes: LpmTrie<_, [u8; PATH_PREFIX_LEN], u8> = ebpf
        .map_mut(abi::maps::EXCLUDED_PATH_PREFIXES)
        .ok_or(LoadError::Map(abi::maps::EXCLUDED_PATH_PREFIXES))?
        .try_into()
        .map_err(|_| LoadError::Map(abi::maps::EXCLUDED_PATH_PREFIXES))?;
    for prefix in &config.excluded_path_prefixes {
        let bytes = prefix.as_bytes();
        let n = bytes.len().min(PATH_PREFIX_LEN);
        let mut data = [0u8; PATH_PREFIX_LEN];
        data[..n].copy_from_slice(&bytes[..n]);
        let key = LpmKey::new((n * 8) as u32, data);
        prefixes
            .insert(&key, 1, 0)
            .map_err(|source| LoadError::MapUpdate {
                map: abi::maps::EXCLUDED_PATH_PREFIXES,
                source: Box::new(source),
            })?;
    }
    let mut pids: BpfHashMap<_, u32, u8> = ebpf
        .map_mut(abi::maps::EXCLUDED_PIDS)
        .ok_or(LoadError::Map(abi::maps::EXCLUDED_PIDS))?
        .try_into()
        .map_err(|_| LoadError::Map(abi::maps::EXCLUDED_PIDS))?;
    for pid in &config.excluded_pids {
        pids.insert(pid, 1, 0)
            .map_err(|source| LoadError::MapUpdate {
                map: abi::maps::EXCLUDED_PIDS,
                source: Box::new(source),
            })?;
    }
    let mut comms: BpfHashMap<_, [u8; COMM_LEN], u8> = ebpf
        .map_mut(abi::maps::EXCLUDED_COMMS)
        .ok_or(LoadError::Map(abi::maps::EXCLUDED_COMMS))?
        .try_into()
        .map_err(|_| LoadError::Map(abi::maps::EXCLUDED_COMMS))?;
    let mut keys = Vec::new();
    for comm in &config.excluded_comms {
        let mut key = [0u8; COMM_LEN];
        let bytes = comm.as_bytes();
        // The kernel keeps TASK_COMM_LEN - 1 bytes and a NUL.
        let n = bytes.len().min(COMM_LEN - 1);
        key[..n].copy_from_slice(&bytes[..n]);
        comms
            .insert(key, 1, 0)
            .map_err(|source| LoadError::MapUpdate {
                map: abi::maps::EXCLUDED_COMMS,
                source: Box::new(source),
            })?;
        keys.push(key);
    }
    if !keys.is_empty() {
        seed_excluded_comm_processes(ebpf, &keys)?;
    }
    Ok(())
}

/// The loader's pid namespace and its tgid there.
struct OwnPidNamespace {
    dev: u64,
    ino: u64,
    tgid: u32,
}

fn own_pid_namespace() -> OwnPidNamespace {
    use std::os::unix::fs::MetadataExt;
    // stat(2) of the nsfs file gives the (dev, inode) pair bpf_get_ns_current_pid_tgid
    // compares with; without it the resolver matches nothing and the fallback applies.
    let (dev, ino) = std::fs::metadata("/proc/self/ns/pid")
        .map(|m| (m.dev(), m.ino()))
        .unwrap_or((0, 0));
    OwnPidNamespace {
        dev,
        ino,
        tgid: std::process::id(),
    }
}

/// How the collector's kernel-side tgid was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfTgid {
    /// Seen by the kernel: the tgid of the loader's own syscall.
    Kernel(u32),
    /// The kernel could not tell (no `bpf_get_ns_current_pid_tgid` or no nsfs):
    /// `std::process::id()`, right only in the initial pid namespace.
    Assumed(u32),
}

impl SelfTgid {
    /// The tgid the programs exclude.
    pub fn tgid(self) -> u32 {
        match self {
            Self::Kernel(t) | Self::Assumed(t) => t,
        }
    }
}

/// Runs `proc_resolve_self` around a few syscalls of this process and writes what it
/// saw (or, failing that, `std::process::id()`) into `SELF_TGID`.
fn resolve_self_tgid(ebpf: &mut Ebpf, own: &OwnPidNamespace) -> Result<SelfTgid, LoadError> {
    let seen = (|| -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
        let btf = Btf::from_sys_fs()?;
        let program: &mut BtfTracePoint = ebpf
            .program_mut("proc_resolve_self")
            .ok_or("proc_resolve_self missing from the object")?
            .try_into()?;
        program.load("sys_enter", &btf)?;
        let link = program.attach()?;
        let mut seen = 0;
        for _ in 0..100 {
            // Any syscall of this process will do; the program matches our tgid.
            std::thread::yield_now();
            seen = read_self_tgid(ebpf).unwrap_or(0);
            if seen != 0 {
                break;
            }
        }
        let program: &mut BtfTracePoint = ebpf
            .program_mut("proc_resolve_self")
            .ok_or("proc_resolve_self missing from the object")?
            .try_into()?;
        program.detach(link)?;
        program.unload()?;
        Ok(seen)
    })();
    let resolved = match seen {
        Ok(tgid) if tgid != 0 => SelfTgid::Kernel(tgid),
        Ok(_) => {
            tracing::warn!(
                "the kernel did not see this process's syscalls; self-exclusion assumes \
                 pid {} (wrong inside a pid namespace)",
                own.tgid
            );
            SelfTgid::Assumed(own.tgid)
        }
        Err(e) => {
            tracing::warn!(
                "could not resolve this process's kernel tgid ({e}); self-exclusion \
                 assumes pid {} (wrong inside a pid namespace)",
                own.tgid
            );
            SelfTgid::Assumed(own.tgid)
        }
    };
    let mut map: BpfArray<_, u32> = ebpf
        .map_mut(abi::maps::SELF_TGID)
        .ok_or(LoadError::Map(abi::maps::SELF_TGID))?
        .try_into()
        .map_err(|_| LoadError::Map(abi::maps::SELF_TGID))?;
    map.set(0, resolved.tgid(), 0)
        .map_err(|source| LoadError::MapUpdate {
            map: abi::maps::SELF_TGID,
            source: Box::new(source),
        })?;
    Ok(resolved)
}

fn read_self_tgid(ebpf: &Ebpf) -> Option<u32> {
    let map: BpfArray<_, u32> = ebpf.map(abi::maps::SELF_TGID)?.try_into().ok()?;
    map.get(&0, 0).ok()
}

/// Processes already running an image with an excluded comm when the collector starts:
/// their exec happened before the programs, so the name comes from their executable's
/// file name (what exec would have set), not their current, self-chosen comm.
pub(crate) fn seed_excluded_comm_processes(
    ebpf: &mut Ebpf,
    comms: &[[u8; COMM_LEN]],
) -> Result<(), LoadError> {
    let mut procs: BpfHashMap<_, u32, u8> = ebpf
        .map_mut(abi::maps::EXCLUDED_COMM_PROCS)
        .ok_or(LoadError::Map(abi::maps::EXCLUDED_COMM_PROCS))?
        .try_into()
        .map_err(|_| LoadError::Map(abi::maps::EXCLUDED_COMM_PROCS))?;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Ok(());
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        let Some(name) = exe.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let name = name.strip_suffix(" (deleted)").unwrap_or(name);
        let mut key = [0u8; COMM_LEN];
        let n = name.len().min(COMM_LEN - 1);
        key[..n].copy_from_slice(&name.as_bytes()[..n]);
        if comms.contains(&key) {
            // A process that ends meanwhile leaves an entry its pid's next exec resets.
            let _ = procs.insert(pid, 1, 0);
        }
    }
    Ok(())
}

/// Forwards aya-log records (which use the `log` crate) to `tracing`.
struct LogBridge;

impl log::Log for LogBridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args().to_string();
        match record.level() {
            log::Level::Error => tracing::error!(target: "collector::kernel", "{msg}"),
            log::Level::Warn => tracing::warn!(target: "collector::kernel", "{msg}"),
            log::Level::Info => tracing::info!(target: "collector::kernel", "{msg}"),
            log::Level::Debug => tracing::debug!(target: "collector::kernel", "{msg}"),
            log::Level::Trace => tracing::trace!(target: "collector::kernel", "{msg}"),
        }
    }
    fn flush(&self) {}
}

fn log_bridge() -> &'static dyn log::Log {
    static BRIDGE: LogBridge = LogBridge;
    &BRIDGE
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operator mistakes in kernel settings: each is refused naming the setting (they
    /// used to make every kernel domain fall back to /proc polling with a warning that
    /// did not say why).
    #[test]
    fn bad_kernel_settings_are_refused_naming_the_setting() {
        type Edit = fn(&mut KernelConfig);
        let cases: [(&str, Edit); 9] = [
            ("process_ring_bytes", |c| c.process_ring_bytes = 0),
            ("network_ring_bytes", |c| c.network_ring_bytes = 12_345),
            ("file_ring_bytes", |c| c.file_ring_bytes = 1 << 31),
            ("file_wakeup_bytes", |c| c.file_wakeup_bytes = u64::MAX),
            ("excluded_comms", |c| {
                c.excluded_comms = vec!["a-name-longer-than-15".into()]
            }),
            ("excluded_comms", |c| c.excluded_comms = vec![String::new()]),
            ("excluded_path_prefixes", |c| {
                c.excluded_path_prefixes = vec!["relative/".into()]
            }),
            ("poll_interval", |c| c.poll_interval = Duration::ZERO),
            ("max_send_wait", |c| c.max_send_wait = Duration::MAX),
        ];
        for (setting, edit) in cases {
            let mut config = KernelConfig::default();
            edit(&mut config);
            let err = config.validate().expect_err(setting);
            assert!(err.to_string().contains(setting), "`{err}` names {setting}");
        }
        KernelConfig::default().validate().unwrap();
    }
}
