//! collector-userspace: the loaders and event sources that feed collector-core, and the
//! `collector` binary.
//!
//! - [`ebpf`]: loads the kernel programs (built by `cargo xtask build-ebpf` and embedded in
//!   the binary) and drains their ring buffers into the runtime.
#![deny(missing_docs)]

pub mod ebpf;
