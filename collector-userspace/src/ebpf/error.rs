//! What can go wrong loading, attaching and steering the kernel programs.

use aya::programs::ProgramError;
use aya::EbpfError;

use super::btf::BtfError;

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

    #[error("the {0:?} domain's programs are attached already (one source per domain)")]
    /// A second attach of a domain that is running.
    AlreadyAttached(super::catalogue::KernelDomain),
    /// tracefs is not mounted and could not be mounted.
    #[error("classic tracepoints need tracefs, which is not mounted and could not be mounted at /sys/kernel/tracing (mount it: `mount -t tracefs nodev /sys/kernel/tracing`)")]
    Tracefs(#[source] std::io::Error),
    /// Raw syscall hooks were asked for but this kernel's `pt_regs` is not the x86_64 one.
    #[error("raw sys_enter/sys_exit hooks need x86_64 `pt_regs` field names, which this kernel's BTF lacks: use syscall tracepoints (mount tracefs)")]
    NoRawSyscalls,
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

pub(super) fn hint_for(err: &dyn std::error::Error) -> &'static str {
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
