//! Kernel-level sources: the loader of the embedded eBPF object and one `EventSource`
//! per domain draining its ring buffer.

mod abi;
pub mod btf;
pub mod btf_fixup;
pub mod clock;
pub mod decode;
pub mod drain;
pub mod enrich;
mod exclusions;
mod links;
pub mod loader;
pub mod offsets;
mod prog_info;
pub mod source;

pub use loader::{
    enable_bpf_stats, Exclusions, KernelConfig, KernelDomain, KernelLosses, KernelPrograms,
    LinkCheck, LoadError, ProgramCost, SelfTgid, SyscallHooks,
};
pub use source::{source_name, KernelSource};
