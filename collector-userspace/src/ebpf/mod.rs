//! Kernel-level sources: the loader of the embedded eBPF object and one `EventSource`
//! per domain draining its ring buffer.

pub mod btf;
pub mod btf_fixup;
pub mod clock;
pub mod decode;
pub mod drain;
pub mod enrich;
pub mod loader;
pub mod offsets;
pub mod source;

pub use loader::{
    KernelConfig, KernelDomain, KernelLosses, KernelPrograms, LoadError, SyscallHooks,
};
pub use source::{source_name, KernelSource};
