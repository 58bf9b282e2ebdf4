//! Installs the eBPF toolchain pieces, idempotently, and checks they fit together.
//!
//! Known-good set: the machine's `nightly` toolchain (LLVM 22) with `rust-src`, and
//! `bpf-linker` 0.10.0 whose default feature links the nightly's own libLLVM.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run;

/// The nightly toolchain the kernel crate builds with.
pub const NIGHTLY: &str = "nightly";
/// The bpf-linker release known to work with that nightly.
pub const BPF_LINKER_VERSION: &str = "0.10.0";
/// The LLVM major version bpf-linker 0.10.0's default features (`llvm-22`, `rust-llvm-22`)
/// are built for; it must equal the nightly's.
pub const BPF_LINKER_LLVM_MAJOR: u32 = 22;

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nightly_llvm_major() -> Result<u32> {
    let info = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-vV"])).with_context(|| {
        format!("the `{NIGHTLY}` toolchain is missing: install it with `rustup toolchain install {NIGHTLY}`")
    })?;
    parse_llvm_major(&info, "LLVM version:")
        .context("cannot read the nightly's LLVM version from `rustc -vV`")
}

fn parse_llvm_major(text: &str, prefix: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|m| m.trim().parse().ok())
}

fn bpf_linker_version() -> Option<String> {
    output(Command::new("bpf-linker").arg("--version"))
}

/// Installs what is missing; fails with instructions on a mismatch.
pub fn ensure() -> Result<()> {
    let llvm = nightly_llvm_major()?;
    check_llvm(llvm)?;

    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    }

    let installed = bpf_linker_version();
    let up_to_date = installed
        .as_deref()
        .is_some_and(|v| v.split_whitespace().any(|w| w == BPF_LINKER_VERSION));
    if !up_to_date {
        eprintln!(
            "xtask: installing bpf-linker {BPF_LINKER_VERSION} (found: {})",
            installed.as_deref().map(str::trim).unwrap_or("none")
        );
        // bpf-linker links the nightly's libLLVM: build it with that toolchain.
        run(Command::new("cargo").args([
            &format!("+{NIGHTLY}"),
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ]))?;
    }
    check_llvm(llvm)?;
    ensure_debian_tools()
}

/// Tools the tests and benchmarks run, with the Debian package that brings each:
/// promtool checks the metrics exposition, bpftool reads and detaches programs in the
/// kernel tests and benchmarks, nats-server is the JetStream server of the export tests,
/// valgrind counts the instructions of the userspace benchmarks (README: the VM's noise
/// hides changes that instruction counts show), opensnoop and execsnoop are the storms'
/// reference tracers (`cargo xtask storm`).
pub const DEBIAN_TOOLS: &[(&str, &str)] = &[
    ("promtool", "prometheus"),
    ("bpftool", "bpftool"),
    ("nats-server", "nats-server"),
    ("valgrind", "valgrind"),
    ("opensnoop", "libbpf-tools"),
];

fn on_path(binary: &str) -> bool {
    find_binary(binary).is_some()
}

/// Where `binary` is: on `PATH`, or in `/usr/sbin` or `/sbin` (Debian puts bpftool and
/// libbpf-tools there), which a non-root `PATH` may lack.
pub fn find_binary(binary: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

/// Installs the Debian packages of [`DEBIAN_TOOLS`] that are missing (as root, with
/// apt-get); elsewhere says what to install, since the tests that need them then skip
/// (or fail under `COLLECTOR_REQUIRE_KERNEL=1`).
pub fn ensure_debian_tools() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_TOOLS
        .iter()
        .filter(|(binary, _)| !on_path(binary))
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() || !on_path("apt-get") {
        eprintln!(
            "xtask: missing tools for some tests; install them: apt-get install {}",
            missing.join(" ")
        );
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn check_llvm(nightly_llvm: u32) -> Result<()> {
    if nightly_llvm != BPF_LINKER_LLVM_MAJOR {
        bail!(
            "bpf-linker {BPF_LINKER_VERSION} is built for LLVM {BPF_LINKER_LLVM_MAJOR} but `{NIGHTLY}` uses LLVM {nightly_llvm}: \
             install a nightly whose `rustc +nightly -vV` shows LLVM {BPF_LINKER_LLVM_MAJOR} (the project's known-good one is \
             rustc 1.97.0-nightly 2026-05-19), or a bpf-linker release built for LLVM {nightly_llvm}, then run `cargo xtask setup`"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_llvm, parse_llvm_major, BPF_LINKER_LLVM_MAJOR};

    #[test]
    fn parses_llvm_major() {
        assert_eq!(
            parse_llvm_major("rustc 1.97\nLLVM version: 22.1.4\n", "LLVM version:"),
            Some(22)
        );
        assert_eq!(parse_llvm_major("nothing here", "LLVM version:"), None);
    }

    #[test]
    fn mismatch_says_what_to_do() {
        assert!(check_llvm(BPF_LINKER_LLVM_MAJOR).is_ok());
        let err = check_llvm(23).unwrap_err().to_string();
        assert!(
            err.contains("LLVM 22") && err.contains("LLVM 23") && err.contains("cargo xtask setup"),
            "{err}"
        );
    }
}
