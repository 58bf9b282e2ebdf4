//! The kernel's exclusion maps, and changing them while the programs run (a
//! configuration reload).
//!
//! Programs loaded with [`KernelConfig::live_exclusions`](super::KernelConfig) read one
//! `EXCLUSION_GATES` slot per set before its map, so an empty set costs an array
//! lookup and a set added later takes effect at once. Entries are added before their
//! gate opens and removed after it closes: no event sees a half-written set as a whole
//! one.

use collector_common::abi;
use std::collections::BTreeSet;

use aya::maps::{
    lpm_trie::{Key as LpmKey, LpmTrie},
    Array as BpfArray, HashMap as BpfHashMap, MapData,
};
use aya::Ebpf;
use collector_common::{COMM_LEN, PATH_PREFIX_LEN};

use super::loader::LoadError;

/// What the kernel excludes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions {
    /// Process ids (an exclusion ends when the process execs or exits).
    pub pids: Vec<u32>,
    /// Task names, matched against the image a process runs.
    pub comms: Vec<String>,
    /// Path prefixes of kernel-resolved file paths.
    pub path_prefixes: Vec<String>,
}

/// `EXCLUSION_GATES` slots (see `collector-ebpf/src/common.rs`).
const GATE_PIDS: u32 = 0;
const GATE_COMMS: u32 = 1;
const GATE_PATHS: u32 = 2;

fn map_update(map: &'static str) -> impl Fn(aya::maps::MapError) -> LoadError {
    move |source| LoadError::MapUpdate {
        map,
        source: Box::new(source),
    }
}

fn hash_map<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<BpfHashMap<&'a mut MapData, K, V>, LoadError> {
    ebpf.map_mut(name)
        .ok_or(LoadError::Map(name))?
        .try_into()
        .map_err(|_| LoadError::Map(name))
}

/// The LPM key of a path prefix (its first `PATH_PREFIX_LEN` bytes count).
pub(crate) fn prefix_key(prefix: &str) -> LpmKey<[u8; PATH_PREFIX_LEN]> {
    let bytes = prefix.as_bytes();
    let n = bytes.len().min(PATH_PREFIX_LEN);
    let mut data = [0u8; PATH_PREFIX_LEN];
    data[..n].copy_from_slice(&bytes[..n]);
    LpmKey::new((n * 8) as u32, data)
}

/// The `EXCLUDED_COMMS` key of a task name (the kernel keeps 15 bytes and a NUL).
pub(crate) fn comm_key(comm: &str) -> [u8; COMM_LEN] {
    let mut key = [0u8; COMM_LEN];
    let bytes = comm.as_bytes();
    let n = bytes.len().min(COMM_LEN - 1);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

/// The comm key of the image `pid` runs (its executable's file name, which exec makes
/// the comm), or `None` when the process is gone.
pub(crate) fn image_comm(pid: u32) -> Option<[u8; COMM_LEN]> {
    let exe = crate::procfs::read::executable(pid)?;
    let name = exe.file_name()?.to_str()?;
    Some(comm_key(name.strip_suffix(" (deleted)").unwrap_or(name)))
}

/// Opens or closes the gates to match `set`.
pub(crate) fn write_gates(ebpf: &mut Ebpf, set: &Exclusions) -> Result<(), LoadError> {
    let mut gates: BpfArray<_, u32> = ebpf
        .map_mut(abi::maps::EXCLUSION_GATES)
        .ok_or(LoadError::Map(abi::maps::EXCLUSION_GATES))?
        .try_into()
        .map_err(|_| LoadError::Map(abi::maps::EXCLUSION_GATES))?;
    for (slot, on) in [
        (GATE_PIDS, !set.pids.is_empty()),
        (GATE_COMMS, !set.comms.is_empty()),
        (GATE_PATHS, !set.path_prefixes.is_empty()),
    ] {
        gates
            .set(slot, u32::from(on), 0)
            .map_err(map_update(abi::maps::EXCLUSION_GATES))?;
    }
    Ok(())
}

fn added<'a, T: Ord>(from: &'a [T], to: &'a [T]) -> impl Iterator<Item = &'a T> {
    let from: BTreeSet<&T> = from.iter().collect();
    to.iter().filter(move |x| !from.contains(x))
}

/// Changes the maps from `old` to `new`: additions, then the gates, then removals.
/// Pids in both keep the state the kernel gave them (an excluded pid that exec'd since
/// is not excluded again).
pub(crate) fn apply(ebpf: &mut Ebpf, old: &Exclusions, new: &Exclusions) -> Result<(), LoadError> {
    {
        let mut pids = hash_map::<u32, u8>(ebpf, abi::maps::EXCLUDED_PIDS)?;
        for pid in added(&old.pids, &new.pids) {
            pids.insert(pid, 1, 0)
                .map_err(map_update(abi::maps::EXCLUDED_PIDS))?;
        }
    }
    {
        let mut prefixes: LpmTrie<_, [u8; PATH_PREFIX_LEN], u8> = ebpf
            .map_mut(abi::maps::EXCLUDED_PATH_PREFIXES)
            .ok_or(LoadError::Map(abi::maps::EXCLUDED_PATH_PREFIXES))?
            .try_into()
            .map_err(|_| LoadError::Map(abi::maps::EXCLUDED_PATH_PREFIXES))?;
        for prefix in added(&old.path_prefixes, &new.path_prefixes) {
            prefixes
                .insert(&prefix_key(prefix), 1, 0)
                .map_err(map_update(abi::maps::EXCLUDED_PATH_PREFIXES))?;
        }
    }
    let new_comms: Vec<[u8; COMM_LEN]> =
        added(&old.comms, &new.comms).map(|c| comm_key(c)).collect();
    if !new_comms.is_empty() {
        let mut comms = hash_map::<[u8; COMM_LEN], u8>(ebpf, abi::maps::EXCLUDED_COMMS)?;
        for key in &new_comms {
            comms
                .insert(key, 1, 0)
                .map_err(map_update(abi::maps::EXCLUDED_COMMS))?;
        }
        // Running processes of those images exec'd before the name was excluded.
        super::filters::seed_excluded_comm_processes(ebpf, &new_comms)?;
    }

    write_gates(ebpf, new)?;

    // Removals: a missing entry is already what we want.
    {
        let mut pids = hash_map::<u32, u8>(ebpf, abi::maps::EXCLUDED_PIDS)?;
        for pid in added(&new.pids, &old.pids) {
            let _ = pids.remove(pid);
        }
    }
    {
        let mut prefixes: LpmTrie<_, [u8; PATH_PREFIX_LEN], u8> = ebpf
            .map_mut(abi::maps::EXCLUDED_PATH_PREFIXES)
            .ok_or(LoadError::Map(abi::maps::EXCLUDED_PATH_PREFIXES))?
            .try_into()
            .map_err(|_| LoadError::Map(abi::maps::EXCLUDED_PATH_PREFIXES))?;
        for prefix in added(&new.path_prefixes, &old.path_prefixes) {
            let _ = prefixes.remove(&prefix_key(prefix));
        }
    }
    let gone: Vec<[u8; COMM_LEN]> = added(&new.comms, &old.comms).map(|c| comm_key(c)).collect();
    if !gone.is_empty() {
        let mut comms = hash_map::<[u8; COMM_LEN], u8>(ebpf, abi::maps::EXCLUDED_COMMS)?;
        for key in &gone {
            let _ = comms.remove(key);
        }
        // A process stays excluded only while its image is still an excluded name.
        let keep: BTreeSet<[u8; COMM_LEN]> = new.comms.iter().map(|c| comm_key(c)).collect();
        let mut procs = hash_map::<u32, u8>(ebpf, abi::maps::EXCLUDED_COMM_PROCS)?;
        let pids: Vec<u32> = procs.keys().filter_map(Result::ok).collect();
        for pid in pids {
            if !image_comm(pid).is_some_and(|comm| keep.contains(&comm)) {
                let _ = procs.remove(&pid);
            }
        }
    }
    Ok(())
}
