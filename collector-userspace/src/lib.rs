//! collector-userspace: the loaders and event sources that feed collector-core, and the
//! `collector` binary.
//!
//! - [`ebpf`]: loads the kernel programs (built by `cargo xtask build-ebpf` and embedded in
//!   the binary) and drains each domain's ring buffer into the runtime.
//! - [`procfs`]: the procfs polling fallback (`procfs-process`, `procfs-performance`) for
//!   hosts where the kernel programs cannot run.
//! - [`process_query`]: `collector processes` answered from the table, paged.
//! - [`ptable`]: the live process table (kernel- or poll-fed) that `collector processes` reads.
//! - [`store`]: the embedded database (redb) of the process table and recent execs.
//! - [`daemon`]: `collector run`, wiring sources, sinks and the IPC server.
//! - [`stdout_sink`]: events as JSON lines on stdout.
//! - [`export`]: fleet export to NATS JetStream (`run --export-nats`, `consume`).
//! - [`ipc_cli`]: the client commands (`events`, `status`, `processes`).
//! - [`daemon_metrics`]: the daemon's own CPU, memory and kernel-program cost as metrics.
//! - [`metrics_server`]: `/metrics` and `/healthz` over HTTP (`collector run --metrics-addr`).
//! - [`logging`]: stderr logs as text or JSON, with a level a reload can change.
//! - [`reload`]: SIGHUP reloads the configuration, applying what can change live.
//! - [`config_cli`]: `collector config`, the effective configuration and its origins.
//! - [`hash`]: bounded, cached hashing of regular files (executables, tasks).
//! - [`exec_hash`]: executable hashes of exec events, off the hot path.
//! - [`tasks`]: answers to detection tasks from procfs and the filesystem.
#![deny(missing_docs)]

pub mod config_cli;
pub mod daemon;
pub mod daemon_metrics;
pub mod ebpf;
pub mod exec_hash;
pub mod export;
pub mod hash;
pub mod ipc_cli;
pub mod logging;
pub mod metrics_server;
pub mod process_query;
pub mod procfs;
pub mod ptable;
pub mod reload;
pub mod stdout_sink;
pub mod store;
pub mod tasks;
