//! Loads the embedded kernel object into the running kernel: resolves offsets from BTF,
//! sizes the ring buffers, installs filters, and attaches each program to its hook.
//!
//! [`KernelPrograms`] is the loaded object; its parts live in their own files: the
//! program catalogue (`catalogue`), settings (`config`), object loading (`object`),
//! attaching (`attach`), filter maps (`filters`), counters (`counters`), self
//! exclusion (`self_tgid`) and the aya-log bridge (`log_bridge`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use aya::{Btf, Ebpf};
use collector_common::abi;

use super::btf::KernelBtf;
use super::catalogue::ProgramSpec;
use super::filters::install_filters;
use super::log_bridge::log_bridge;
use super::offsets::KernelOffsets;
use super::self_tgid::{own_pid_namespace, resolve_self_tgid};

pub use super::catalogue::KernelDomain;
pub use super::config::{KernelConfig, SyscallHooks, MAX_RING_BYTES};
pub use super::counters::{enable_bpf_stats, KernelLosses, ProgramCost};
pub use super::error::LoadError;
pub use super::exclusions::Exclusions;
pub use super::links::LinkCheck;
pub use super::object::release_object_pages;
pub use super::self_tgid::SelfTgid;

/// Loaded kernel programs, shared by the domain sources. Dropping the last reference
/// detaches and unloads every program and map.
pub struct KernelPrograms {
    /// This process's tgid as the kernel sees it (initial pid namespace).
    pub(super) self_tgid: SelfTgid,
    pub(super) ebpf: Mutex<Ebpf>,
    /// The kernel's BTF as aya parses it (tens of MB), for loading programs at attach;
    /// released once the daemon has attached its domains, parsed again if needed.
    pub(super) btf: Mutex<Option<Btf>>,
    pub(super) raw_syscalls: bool,
    pub(super) attached: Mutex<std::collections::HashMap<KernelDomain, Vec<&'static ProgramSpec>>>,
    /// The link of each attached program (see `links`).
    pub(super) links: Mutex<std::collections::HashMap<&'static str, super::links::AttachedLink>>,
    /// Times each program was found without a link and attached again.
    pub(super) reattached: Mutex<BTreeMap<&'static str, u64>>,
    /// The domains whose part of the shared `sys_exit` program is in its slot (bit =
    /// 1 << slot); its lock orders attaching and unloading that program and the parts.
    pub(super) sys_exit_users: Mutex<u32>,
    /// The same for the shared `sys_enter` program.
    pub(super) sys_enter_users: Mutex<u32>,
    /// Per domain and program, the reattaches it has reported: a program the domains
    /// share may be attached again by another domain's check.
    pub(super) reattaches_seen: Mutex<std::collections::HashMap<(KernelDomain, &'static str), u64>>,
    /// What the exclusion maps hold now.
    pub(super) exclusions: Mutex<Exclusions>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) hooks: Mutex<BTreeMap<String, String>>,
    pub(super) config: KernelConfig,
    // Kept alive for the programs' life: dropping it closes the log map under them.
    pub(super) logger: Mutex<Option<aya_log::EbpfLogger<&'static dyn log::Log>>>,
}

impl std::fmt::Debug for KernelPrograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelPrograms")
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl KernelPrograms {
    /// Loads the object (maps, filters, offsets). Programs are attached per domain with
    /// [`KernelPrograms::attach`], so one domain failing leaves the others working.
    pub fn load(config: KernelConfig) -> Result<Arc<Self>, LoadError> {
        if !super::object::is_embedded() {
            return Err(LoadError::NotBuilt);
        }
        config.validate()?;
        super::object::bump_memlock_rlimit();
        let btf = KernelBtf::from_sys_fs()?;
        let offsets = KernelOffsets::resolve(&btf)?;
        let own_ns = own_pid_namespace();
        let mut ebpf = super::object::load_object(&config, &offsets, &own_ns)?;

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
            btf: Mutex::new(Some(aya_btf)),
            raw_syscalls: offsets.raw_syscalls,
            attached: Mutex::default(),
            links: Mutex::default(),
            reattached: Mutex::default(),
            sys_exit_users: Mutex::new(0),
            sys_enter_users: Mutex::new(0),
            reattaches_seen: Mutex::default(),
            exclusions: Mutex::new(exclusions),
            counters,
            hooks: Mutex::new(BTreeMap::new()),
            config,
            logger: Mutex::new(logger),
        });
        programs.spawn_log_reader();
        Ok(programs)
    }

    /// Takes a domain's ring buffer (once).
    pub(crate) fn take_ring(&self, name: &'static str) -> Result<RingBuf<MapData>, LoadError> {
        let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        let map: Map = ebpf.take_map(name).ok_or(LoadError::Map(name))?;
        RingBuf::try_from(map).map_err(|_| LoadError::Map(name))
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

    /// Runs `f` with the kernel's BTF, parsing it again if it was released. Called with
    /// the `ebpf` lock held (the order is always `ebpf`, then `btf`).
    pub(super) fn with_btf<T>(
        &self,
        f: impl FnOnce(&Btf) -> Result<T, LoadError>,
    ) -> Result<T, LoadError> {
        let mut btf = self.btf.lock().expect("btf lock poisoned");
        let btf = match &mut *btf {
            Some(btf) => btf,
            empty => empty.insert(Btf::from_sys_fs().map_err(LoadError::AyaBtf)?),
        };
        f(btf)
    }

    /// Tells the programs that the reader of the ring at `slot` (`abi::parked`) is parked
    /// (asleep without its timer: wake it at the next record) or not.
    pub(crate) fn set_parked(&self, slot: u32, parked: bool) -> Result<(), LoadError> {
        let name = abi::maps::READER_PARKED;
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        let mut map: aya::maps::Array<_, u32> = ebpf
            .map_mut(name)
            .ok_or(LoadError::Map(name))?
            .try_into()
            .map_err(|_| LoadError::Map(name))?;
        map.set(slot, u32::from(parked), 0)
            .map_err(|source| LoadError::MapUpdate {
                map: name,
                source: Box::new(source),
            })
    }

    /// Frees the parsed kernel BTF: the largest thing loading leaves on the heap (most of
    /// the daemon's idle memory). Only a later attach (a reattach after the programs were
    /// detached from outside) needs it, and parses it again.
    pub fn release_btf(&self) {
        self.btf.lock().expect("btf lock poisoned").take();
    }
}
