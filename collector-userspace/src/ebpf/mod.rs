//! Kernel-level sources: the loader of the embedded eBPF object and one `EventSource`
//! per domain draining its ring buffer.

mod abi;
mod attach;
pub mod btf;
pub mod btf_fixup;
mod catalogue;
pub mod clock;
mod config;
mod counters;
pub mod decode;
pub mod drain;
pub mod enrich;
mod error;
mod exclusions;
mod filters;
mod links;
pub mod loader;
mod log_bridge;
mod object;
pub mod offsets;
mod prog_info;
mod self_tgid;
pub mod source;

pub use loader::{
    enable_bpf_stats, Exclusions, KernelConfig, KernelDomain, KernelLosses, KernelPrograms,
    LinkCheck, LoadError, ProgramCost, SelfTgid, SyscallHooks,
};
pub use source::{source_name, KernelSource};
