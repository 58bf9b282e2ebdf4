//! The collector's own tgid as the kernel sees it, which the programs exclude.

use aya::maps::Array as BpfArray;
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf};
use collector_common::abi;

use super::error::LoadError;

/// The loader's pid namespace and its tgid there.
pub(super) struct OwnPidNamespace {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) tgid: u32,
}

pub(super) fn own_pid_namespace() -> OwnPidNamespace {
    // Without the namespace's (dev, inode) the resolver matches nothing and the
    // fallback applies.
    let (dev, ino) = crate::procfs::read::own_pid_namespace().unwrap_or((0, 0));
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
pub(super) fn resolve_self_tgid(
    ebpf: &mut Ebpf,
    own: &OwnPidNamespace,
) -> Result<SelfTgid, LoadError> {
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
