//! collector-userspace: the loaders and event sources that feed collector-core, and the
//! `collector` binary.
//!
//! - [`ebpf`]: loads the kernel programs (built by `cargo xtask build-ebpf` and embedded in
//!   the binary) and drains each domain's ring buffer into the runtime.
//! - [`procfs`]: the procfs polling fallback (`procfs-process`, `procfs-performance`) for
//!   hosts where the kernel programs cannot run.
//! - [`store`]: the embedded database (redb) of the process table and recent execs.
//! - [`daemon`]: `collector run`, wiring sources, sinks and the IPC server.
//! - [`stdout_sink`]: events as JSON lines on stdout.
//! - [`ipc_cli`]: the client commands (`events`, `status`, `processes`).
//! - [`hash`]: bounded, cached hashing of regular files (executables, tasks).
//! - [`tasks`]: answers to detection tasks from procfs and the filesystem.
#![deny(missing_docs)]

pub mod daemon;
pub mod ebpf;
pub mod hash;
pub mod ipc_cli;
pub mod procfs;
pub mod stdout_sink;
pub mod store;
pub mod tasks;
