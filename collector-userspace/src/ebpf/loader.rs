//! Loads the embedded kernel object into the running kernel: resolves offsets from BTF,
//! sizes the ring buffers, installs filters, and attaches each program to its hook.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::{
    maps::{
        lpm_trie::{Key as LpmKey, LpmTrie},
        HashMap as BpfHashMap, Map, MapData, PerCpuArray, RingBuf,
    },
    programs::{BtfTracePoint, ProgramError, RawTracePoint, TracePoint},
    Btf, Ebpf, EbpfError, EbpfLoader,
};
use collector_common::{
    counter_index, RecordKind, COMM_LEN, COUNTER_EMITTED, COUNTER_LOST, COUNTER_LOST_STASH_FULL,
    COUNTER_PATH_UNREADABLE, PATH_PREFIX_LEN,
};

use super::btf::{BtfError, KernelBtf};
use super::offsets::KernelOffsets;

/// The kernel object built by `cargo xtask build-ebpf` (empty when it was not built).
static KERNEL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/collector-ebpf.o"));

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
    /// A map the loader expects is missing or of the wrong type.
    #[error("kernel object has no usable map `{0}`")]
    Map(&'static str),
    /// tracefs is not mounted and could not be mounted.
    #[error("classic tracepoints need tracefs, which is not mounted and could not be mounted at /sys/kernel/tracing (mount it: `mount -t tracefs nodev /sys/kernel/tracing`)")]
    Tracefs(#[source] std::io::Error),
    /// Raw syscall hooks were asked for but this kernel's `pt_regs` is not the x86_64 one.
    #[error("raw sys_enter/sys_exit hooks need x86_64 `pt_regs` field names, which this kernel's BTF lacks: use syscall tracepoints (mount tracefs)")]
    NoRawSyscalls,
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
    /// Hooks for the syscall-based programs.
    pub syscall_hooks: SyscallHooks,
    /// How often readers drain without a wakeup (and check for shutdown).
    pub poll_interval: Duration,
    /// How long a reader waits for room in the runtime's queue before dropping.
    pub max_send_wait: Duration,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            process_ring_bytes: 8 << 20,
            process_wakeup_bytes: 0,
            network_ring_bytes: 8 << 20,
            network_wakeup_bytes: 0,
            file_ring_bytes: 32 << 20,
            // File events come in storms: wake the reader per 256 KiB, and let it drain
            // on its own timer (`poll_interval`) below that.
            file_wakeup_bytes: 256 << 10,
            excluded_pids: Vec::new(),
            excluded_comms: Vec::new(),
            excluded_path_prefixes: Vec::new(),
            include_only: false,
            syscall_hooks: SyscallHooks::Auto,
            poll_interval: Duration::from_millis(10),
            max_send_wait: Duration::from_millis(500),
        }
    }
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
            Self::Process => "PROCESS_EVENTS",
            Self::Network => "NET_EVENTS",
            Self::Filesystem => "FILE_EVENTS",
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
            ],
            Self::Network => &[
                (RecordKind::Connect, "connect"),
                (RecordKind::Accept, "accept"),
                (RecordKind::Listen, "listen"),
                (RecordKind::Close, "close"),
            ],
            Self::Filesystem => &[
                (RecordKind::Open, "open"),
                (RecordKind::Create, "create"),
                (RecordKind::Unlink, "unlink"),
                (RecordKind::Rename, "rename"),
            ],
        }
    }
}

pub(crate) const PROCESS_PROGRAMS: &[ProgramSpec] = &[
    btf("sched_process_exec"),
    btf("sched_process_fork"),
    btf("sched_process_exit"),
];

pub(crate) const NETWORK_PROGRAMS: &[ProgramSpec] = &[
    syscall("sys_enter_connect"),
    syscall("sys_exit_connect"),
    syscall("sys_exit_accept"),
    syscall("sys_exit_accept4"),
    syscall("sys_enter_listen"),
    syscall("sys_exit_listen"),
    btf("inet_sock_set_state"),
];

pub(crate) const NETWORK_PROGRAMS_RAW: &[ProgramSpec] = &[
    raw("raw_net_sys_enter", "sys_enter"),
    raw("raw_net_sys_exit", "sys_exit"),
    btf("inet_sock_set_state"),
];

pub(crate) const FILE_PROGRAMS_RAW: &[ProgramSpec] = &[
    raw("raw_file_sys_enter", "sys_enter"),
    raw("raw_file_sys_exit", "sys_exit"),
];

pub(crate) const FILE_PROGRAMS: &[ProgramSpec] = &[
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
];

/// Loaded kernel programs, shared by the domain sources. Dropping the last reference
/// detaches and unloads every program and map.
pub struct KernelPrograms {
    ebpf: Mutex<Ebpf>,
    btf: Btf,
    raw_syscalls: bool,
    attached: Mutex<std::collections::HashMap<KernelDomain, &'static [ProgramSpec]>>,
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
        bump_memlock_rlimit();
        let btf = KernelBtf::from_sys_fs()?;
        let offsets = KernelOffsets::resolve(&btf)?;
        let own_tgid = std::process::id();
        let group_dead = u32::from(offsets.exit_has_group_dead);
        let include_only = u32::from(config.include_only);
        let has_excluded_pids = u32::from(!config.excluded_pids.is_empty());
        let has_excluded_comms = u32::from(!config.excluded_comms.is_empty());
        let has_excluded_paths = u32::from(!config.excluded_path_prefixes.is_empty());

        // Own copy: its BTF is sanitized in place first (see `btf_fixup`), in an
        // 8-aligned buffer as the ELF parser wants.
        let mut object = AlignedObject::copy_of(KERNEL_OBJECT);
        let renamed = super::btf_fixup::sanitize_object(object.bytes_mut())?;
        if renamed > 0 {
            tracing::debug!(renamed, "sanitized BTF type names in the kernel object");
        }

        let mut loader = EbpfLoader::new();
        for (name, value) in &offsets.values {
            loader.override_global(name, value, true);
        }
        loader
            .override_global("EXIT_HAS_GROUP_DEAD", &group_dead, true)
            .override_global("COLLECTOR_TGID", &own_tgid, true)
            .override_global("INCLUDE_ONLY", &include_only, true)
            .override_global("HAS_EXCLUDED_PIDS", &has_excluded_pids, true)
            .override_global("HAS_EXCLUDED_COMMS", &has_excluded_comms, true)
            .override_global("HAS_EXCLUDED_PATHS", &has_excluded_paths, true)
            .override_global("PROCESS_WAKEUP_BYTES", &config.process_wakeup_bytes, true)
            .override_global("NET_WAKEUP_BYTES", &config.network_wakeup_bytes, true)
            .override_global("FILE_WAKEUP_BYTES", &config.file_wakeup_bytes, true)
            .map_max_entries("PROCESS_EVENTS", config.process_ring_bytes)
            .map_max_entries("NET_EVENTS", config.network_ring_bytes)
            .map_max_entries("FILE_EVENTS", config.file_ring_bytes);
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

        let counters = ebpf
            .take_map("COUNTERS")
            .ok_or(LoadError::Map("COUNTERS"))
            .and_then(|m| PerCpuArray::try_from(m).map_err(|_| LoadError::Map("COUNTERS")))?;

        let aya_btf = Btf::from_sys_fs().map_err(LoadError::AyaBtf)?;
        let programs = Arc::new(Self {
            ebpf: Mutex::new(ebpf),
            btf: aya_btf,
            raw_syscalls: offsets.raw_syscalls,
            attached: Mutex::default(),
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
                Ok(()) => attached.push(spec),
                Err(e) => {
                    for spec in attached {
                        self.unload_one(spec.name);
                    }
                    return Err(e);
                }
            }
        }
        let mut hooks = self.hooks.lock().expect("hooks lock poisoned");
        for spec in specs {
            hooks.insert(spec.name.to_string(), spec.hook.describe());
        }
        self.attached
            .lock()
            .expect("attached lock poisoned")
            .insert(domain, specs);
        Ok(())
    }

    fn unload_one(&self, name: &str) {
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

    /// Adds a process to the watched set (effective with `include_only`).
    pub fn include_pid(&self, pid: u32) -> Result<(), LoadError> {
        let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        let mut pids: BpfHashMap<_, u32, u8> = ebpf
            .map_mut("INCLUDED_PIDS")
            .ok_or(LoadError::Map("INCLUDED_PIDS"))?
            .try_into()
            .map_err(|_| LoadError::Map("INCLUDED_PIDS"))?;
        pids.insert(pid, 1, 0)
            .map_err(|source| LoadError::MapUpdate {
                map: "INCLUDED_PIDS",
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
}

fn attach_program(ebpf: &mut Ebpf, spec: &ProgramSpec, btf: &Btf) -> Result<(), LoadError> {
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
            p.attach().map_err(wrap)?;
        }
        Hook::Tracepoint(category, name) => {
            let p: &mut TracePoint = program.try_into().map_err(wrap)?;
            p.load().map_err(wrap)?;
            p.attach(category, name).map_err(wrap)?;
        }
        Hook::RawTracepoint(name) => {
            let p: &mut RawTracePoint = program.try_into().map_err(wrap)?;
            p.load().map_err(wrap)?;
            p.attach(name).map_err(wrap)?;
        }
    }
    Ok(())
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
        .map_mut("EXCLUDED_PATH_PREFIXES")
        .ok_or(LoadError::Map("EXCLUDED_PATH_PREFIXES"))?
        .try_into()
        .map_err(|_| LoadError::Map("EXCLUDED_PATH_PREFIXES"))?;
    for prefix in &config.excluded_path_prefixes {
        let bytes = prefix.as_bytes();
        let n = bytes.len().min(PATH_PREFIX_LEN);
        let mut data = [0u8; PATH_PREFIX_LEN];
        data[..n].copy_from_slice(&bytes[..n]);
        let key = LpmKey::new((n * 8) as u32, data);
        prefixes
            .insert(&key, 1, 0)
            .map_err(|source| LoadError::MapUpdate {
                map: "EXCLUDED_PATH_PREFIXES",
                source: Box::new(source),
            })?;
    }
    let mut pids: BpfHashMap<_, u32, u8> = ebpf
        .map_mut("EXCLUDED_PIDS")
        .ok_or(LoadError::Map("EXCLUDED_PIDS"))?
        .try_into()
        .map_err(|_| LoadError::Map("EXCLUDED_PIDS"))?;
    for pid in &config.excluded_pids {
        pids.insert(pid, 1, 0)
            .map_err(|source| LoadError::MapUpdate {
                map: "EXCLUDED_PIDS",
                source: Box::new(source),
            })?;
    }
    let mut comms: BpfHashMap<_, [u8; COMM_LEN], u8> = ebpf
        .map_mut("EXCLUDED_COMMS")
        .ok_or(LoadError::Map("EXCLUDED_COMMS"))?
        .try_into()
        .map_err(|_| LoadError::Map("EXCLUDED_COMMS"))?;
    for comm in &config.excluded_comms {
        let mut key = [0u8; COMM_LEN];
        let bytes = comm.as_bytes();
        // The kernel keeps TASK_COMM_LEN - 1 bytes and a NUL.
        let n = bytes.len().min(COMM_LEN - 1);
        key[..n].copy_from_slice(&bytes[..n]);
        comms
            .insert(key, 1, 0)
            .map_err(|source| LoadError::MapUpdate {
                map: "EXCLUDED_COMMS",
                source: Box::new(source),
            })?;
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
