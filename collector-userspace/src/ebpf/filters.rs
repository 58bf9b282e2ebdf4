//! The kernel's filter maps: exclusions by pid, task name and path prefix installed at
//! load and changed while running, and the watched set of `include_only`.

use aya::maps::{
    lpm_trie::{Key as LpmKey, LpmTrie},
    HashMap as BpfHashMap,
};
use aya::Ebpf;
use collector_common::{abi, COMM_LEN, PATH_PREFIX_LEN};

use super::config::KernelConfig;
use super::error::LoadError;
use super::exclusions::Exclusions;
use super::loader::KernelPrograms;

impl KernelPrograms {
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
}

pub(super) fn install_filters(ebpf: &mut Ebpf, config: &KernelConfig) -> Result<(), LoadError> {
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
    for pid in crate::procfs::read::pids() {
        let Some(key) = super::exclusions::image_comm(pid) else {
            continue;
        };
        if comms.contains(&key) {
            // A process that ends meanwhile leaves an entry its pid's next exec resets.
            let _ = procs.insert(pid, 1, 0);
        }
    }
    Ok(())
}
