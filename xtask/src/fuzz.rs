//! `cargo xtask fuzz`: runs the IPC frame-decoder fuzz target (`fuzz/`, its own workspace)
//! for a fixed time, installing cargo-fuzz first if it is missing.
//!
//! cargo-fuzz needs nightly (`-Zsanitizer=address`) and libFuzzer; the crash inputs it
//! finds land in `fuzz/artifacts/decode_frame/`, the growing corpus in
//! `fuzz/corpus/decode_frame/`.

use std::process::Command;

use anyhow::{ensure, Result};

use crate::setup::NIGHTLY;
use crate::{root, run};

/// The only fuzz target so far: `fuzz/fuzz_targets/decode_frame.rs`.
pub const TARGET: &str = "decode_frame";

/// A rustup-proxied `cargo +nightly`, free of the variables the outer stable `cargo run`
/// sets (they would pin the stable compiler).
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    for var in ["RUSTC", "RUSTDOC", "CARGO", "RUSTUP_TOOLCHAIN", "RUSTFLAGS"] {
        cmd.env_remove(var);
    }
    cmd.arg(format!("+{NIGHTLY}"));
    cmd
}

fn cargo_fuzz_installed() -> bool {
    nightly_cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Installs cargo-fuzz unless `cargo fuzz --version` already works (idempotent).
pub fn ensure_cargo_fuzz() -> Result<()> {
    if cargo_fuzz_installed() {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz");
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    ensure!(
        cargo_fuzz_installed(),
        "cargo-fuzz was installed but `cargo +{NIGHTLY} fuzz --version` still fails: \
         check that ~/.cargo/bin is on PATH"
    );
    Ok(())
}

/// Fuzzes `decode_frame` for `seconds`; fails if libFuzzer finds a crash (the input is in
/// `fuzz/artifacts/decode_frame/`; replay it with `cargo +nightly fuzz run decode_frame <file>`).
pub fn fuzz(seconds: u64) -> Result<()> {
    ensure!(seconds > 0, "give the fuzzer at least one second to run");
    ensure_cargo_fuzz()?;
    // Well-formed frames to start from (generated, not committed): see
    // collector-core/examples/fuzz_seeds.rs.
    let corpus = root().join(format!("fuzz/corpus/{TARGET}"));
    let seeds = root().join(format!("fuzz/seeds/{TARGET}"));
    std::fs::create_dir_all(&corpus)?;
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root())
            .args([
                "run",
                "--quiet",
                "-p",
                "collector-core",
                "--example",
                "fuzz_seeds",
                "--",
            ])
            .arg(&seeds),
    )?;
    run(nightly_cargo()
        .current_dir(root().join("fuzz"))
        .args(["fuzz", "run", TARGET])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}")))
}
