//! In-kernel cost of the open hooks during an open+close storm (not a pass/fail test:
//! run by hand, `--ignored --nocapture`, as root, with `kernel.bpf_stats_enabled=1`).
//! Prints run_time_ns / run_cnt of this process's programs from `bpftool -j prog show`.
//!
//! ```text
//! sysctl kernel.bpf_stats_enabled=1
//! cargo test -p collector-tests --test file_cost -- --ignored --nocapture
//! ```
//!
//! `LIVE_EXCLUSIONS=1` loads the programs with live exclusions (what the daemon does),
//! to compare their gate lookups' cost with the fixed gates.
//!
//! `int80_open_storm_kernel_cost` does the same with opens through the 32-bit entry
//! (`int $0x80`), which only the raw `sys_enter`/`sys_exit` programs see.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use collector_core::EventSource;
use collector_tests::kernel_or_skip;
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms, KernelSource};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn open_storm_kernel_cost() {
    if !kernel_or_skip("open_storm_kernel_cost") {
        return;
    }
    let n = opens();
    storm_cost(
        env!("CARGO_BIN_EXE_collector-test-actor"),
        &["opens-after-go", "/etc/hostname", &n.to_string()],
    )
    .await;
}

#[cfg(target_arch = "x86_64")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn int80_open_storm_kernel_cost() {
    if !kernel_or_skip("int80_open_storm_kernel_cost") {
        return;
    }
    let n = opens();
    storm_cost(
        env!("CARGO_BIN_EXE_kfile-actor"),
        &["int80-opens", "/etc/hostname", &n.to_string()],
    )
    .await;
}

/// io_uring file operations (OPENAT, RENAMEAT) and NOPs, which the io_uring file
/// hooks must pass over at once: prints `io_uring_submit` (`io_uring_submit_req_file`)
/// and `io_uring_comple` (`io_uring_complete_file`) among the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn io_uring_storm_kernel_cost() {
    if !kernel_or_skip("io_uring_storm_kernel_cost") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = (opens() / 10).to_string();
    storm_cost(
        env!("CARGO_BIN_EXE_kuring-actor"),
        &["uring-storm", dir.path().to_str().unwrap(), &n],
    )
    .await;
}

/// NOPs only: what the io_uring file hooks cost an io_uring user that does no file
/// operations (the opcode test and return).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn io_uring_nop_storm_kernel_cost() {
    if !kernel_or_skip("io_uring_nop_storm_kernel_cost") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = (opens() / 10).to_string();
    storm_cost(
        env!("CARGO_BIN_EXE_kuring-actor"),
        &["uring-storm", dir.path().to_str().unwrap(), &n, "nops"],
    )
    .await;
}

/// renameat storm: the two-path programs (kernel-walked dirfd for both paths, entry
/// digests of both strings, variable-length record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn rename_storm_kernel_cost() {
    if !kernel_or_skip("rename_storm_kernel_cost") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = (opens() / 4).to_string();
    storm_cost(
        env!("CARGO_BIN_EXE_kuring-actor"),
        &["rename-storm", dir.path().to_str().unwrap(), &n],
    )
    .await;
}

fn opens() -> u64 {
    std::env::var("OPENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// Runs `actor` (prints `pid=`, waits for `go`, storms, prints a summary line) with
/// only its pid included, and prints the cost of the programs this test loaded.
async fn storm_cost(actor: &str, args: &[&str]) {
    // Programs loaded by this test are the ones whose ids were not there before (another
    // helper loading at the same instant could add a few; names tell them apart enough
    // for a by-hand measurement).
    let before = prog_ids();
    let programs = KernelPrograms::load(KernelConfig {
        include_only: true,
        live_exclusions: std::env::var_os("LIVE_EXCLUSIONS").is_some(),
        ..KernelConfig::default()
    })
    .expect("load kernel programs");
    let mut actor = Command::new(actor)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(actor.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let pid: u32 = first.trim_start_matches("pid=").parse().unwrap();
    programs.include_pid(pid).unwrap();
    let source =
        Arc::new(KernelSource::new(programs, KernelDomain::Filesystem).expect("filesystem source"));
    let (tx, mut rx) = mpsc::channel(1 << 20);
    let shutdown = Arc::new(AtomicBool::new(false));
    let task = {
        let (source, shutdown) = (source.clone(), shutdown.clone());
        tokio::spawn(async move { source.start(tx, shutdown).await })
    };
    let drain = tokio::spawn(async move {
        let mut n = 0u64;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    writeln!(actor.stdin.take().unwrap(), "go").unwrap();
    let done = lines.next().unwrap().unwrap();
    assert!(actor.wait().unwrap().success());
    println!("actor: {done}");
    for p in progs().as_array().unwrap() {
        let ours = p["id"].as_u64().is_some_and(|id| !before.contains(&id));
        let (Some(t), Some(c)) = (p["run_time_ns"].as_u64(), p["run_cnt"].as_u64()) else {
            continue;
        };
        if ours && c > 0 {
            println!(
                "{:<28} run_cnt={c:<9} run_time_ns={t:<12} ns/run={:.0}",
                p["name"].as_str().unwrap_or("?"),
                t as f64 / c as f64
            );
        }
    }
    source.stop().await.unwrap();
    shutdown.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();
    println!("events received: {}", drain.await.unwrap());
}

fn progs() -> serde_json::Value {
    let json = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .unwrap();
    serde_json::from_slice(&json.stdout).unwrap()
}

fn prog_ids() -> Vec<u64> {
    progs()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}
