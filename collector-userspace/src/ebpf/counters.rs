//! What the kernel side counts: records emitted and lost per kind, by reason, the
//! network domain's own counters, and each program's run count and time.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray};
use collector_common::{
    abi, counter_index, RecordKind, COUNTER_EMITTED, COUNTER_FD_GONE, COUNTER_LOST,
    COUNTER_LOST_STASH_FULL, COUNTER_PATH_UNREADABLE,
};

use super::error::LoadError;
use super::loader::KernelPrograms;

/// Kernel-side losses of one record kind, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelLosses {
    /// Records lost because the ring buffer had no room.
    pub ring_full: u64,
    /// Calls lost because the per-thread stash map was full at syscall entry.
    pub stash_full: u64,
    /// Records sent with a path that could not be read (event kept, path partial).
    pub path_unreadable: u64,
    /// Successful calls not reported because another thread closed their new
    /// descriptor before the exit read it (accept).
    pub fd_gone: u64,
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

impl KernelPrograms {
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
            fd_gone: sum(COUNTER_FD_GONE),
        }
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
