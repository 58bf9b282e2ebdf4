//! Project automation. `cargo xtask <command>`:
//!
//! - `setup`      install the eBPF toolchain pieces (rust-src for nightly, bpf-linker), idempotently
//! - `build-ebpf` compile the kernel programs (nightly, build-std, bpf-linker, with BTF)
//! - `build`      kernel programs + the release `collector` binary with them embedded
//! - `run`        build, then run `collector run` as root (through sudo when needed)
//! - `test`       build, fmt check, clippy (userspace and kernel crate), every test incl. kernel tests
//! - `bench`      criterion benchmarks, the kernel storm benchmarks and `ptable-bench`
//! - `fuzz`       fuzz the IPC frame decoder (installs cargo-fuzz)
//! - `storm`      the storms against the release daemon and a `collector events` subscriber
//! - `ptable-bench` `collector processes` and the daemon's memory with 10,000 live processes
//! - `install`    build, then put the binary, systemd unit, example config and docs in place
mod fuzz;
mod install;
mod ptable_bench;
mod setup;
mod storm;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "collector-core project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the eBPF build needs (idempotent).
    Setup,
    /// Compile the kernel programs.
    BuildEbpf,
    /// Kernel programs and the release binary.
    Build,
    /// Build and run the collector as root; arguments after `--` go to `collector run`.
    Run {
        /// Arguments for `collector run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, lint and run every test (kernel tests need root).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fuzz the IPC frame decoder for a while (installs cargo-fuzz when missing).
    Fuzz {
        /// How long to fuzz.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Build, then install the binary, the systemd unit, the example configuration and
    /// the operator docs (see docs/operations.md).
    Install(install::InstallArgs),
    /// The storms as an operator runs them: release daemon + JSON subscriber, untraced vs
    /// traced, with CPU, memory and per-program kernel cost.
    Storm(storm::StormArgs),
    /// `collector processes` and the daemon's memory with 10,000 live processes.
    PtableBench(ptable_bench::PtableBenchArgs),
    /// Run the criterion benchmarks.
    Bench {
        /// Extra arguments for `cargo bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed with {status}", cmd.get_program());
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The kernel crate's cargo: its own workspace, nightly via rustup.
fn ebpf_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root().join("collector-ebpf"));
    // The outer `cargo run` sets these for the stable toolchain; the nightly build
    // must not inherit them.
    for var in [
        "RUSTC",
        "RUSTDOC",
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.arg(format!("+{}", setup::NIGHTLY));
    cmd
}

pub(crate) fn ebpf_object() -> PathBuf {
    root().join("collector-ebpf/target/bpfel-unknown-none/release/collector-ebpf")
}

fn build_ebpf() -> Result<()> {
    setup::ensure()?;
    run(ebpf_cargo().args(["build", "--release"]))?;
    let object = ebpf_object();
    let size = std::fs::metadata(&object)
        .with_context(|| format!("kernel object {} was not produced", object.display()))?
        .len();
    eprintln!("xtask: kernel object {} ({size} bytes)", object.display());
    Ok(())
}

pub(crate) fn build() -> Result<()> {
    build_ebpf()?;
    run(cargo().current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "collector-userspace",
        "--bin",
        "collector",
    ]))
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn run_collector(args: Vec<String>) -> Result<()> {
    build()?;
    let binary = root().join("target/release/collector");
    let mut cmd = if is_root() {
        Command::new(&binary)
    } else {
        eprintln!("xtask: the collector needs root for eBPF; re-running through sudo");
        let mut c = Command::new("sudo");
        c.arg(&binary);
        c
    };
    cmd.arg("run").args(args);
    run(&mut cmd)
}

fn test(args: Vec<String>) -> Result<()> {
    build_ebpf()?;
    let root = root();
    run(cargo()
        .current_dir(&root)
        .args(["fmt", "--all", "--", "--check"]))?;
    run(ebpf_cargo().args(["fmt", "--", "--check"]))?;
    run(cargo().current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(ebpf_cargo().args(["clippy", "--release", "--", "-D", "warnings"]))?;
    if std::env::var_os("COLLECTOR_REQUIRE_KERNEL").is_some() && !is_root() {
        bail!("COLLECTOR_REQUIRE_KERNEL is set but kernel tests need root");
    }
    run(cargo()
        .current_dir(&root)
        .args(["test", "--workspace"])
        .args(args))
}

fn bench(args: Vec<String>) -> Result<()> {
    build_ebpf()?;
    run(cargo()
        .current_dir(root())
        .args(["bench", "--workspace"])
        .args(&args))?;
    // The whole daemon under the storms, with each kernel program's cost per call. Only
    // for a full `cargo xtask bench` (arguments select criterion benchmarks).
    if args.is_empty() && is_root() {
        storm::storm(&storm::StormArgs::default())?;
        ptable_bench::ptable_bench(&ptable_bench::PtableBenchArgs::default())?;
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::ensure(),
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Build => build(),
        Cmd::Run { args } => run_collector(args),
        Cmd::Test { args } => test(args),
        Cmd::Bench { args } => bench(args),
        Cmd::Fuzz { seconds } => fuzz::fuzz(seconds),
        Cmd::Install(args) => install::install(&args),
        Cmd::Storm(args) => storm::storm(&args),
        Cmd::PtableBench(args) => ptable_bench::ptable_bench(&args),
    }
}
