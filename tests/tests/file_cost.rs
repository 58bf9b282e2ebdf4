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

/// Exec storm (`/bin/true` with 8 arguments, `EXECS` of them, 5,000 by default): the
/// process programs (`sched_process_exec`, `_fork`, `_exit`, and the `sys_enter` /
/// `sys_exit` ones for failed execs and credential changes). Every process is watched
/// (the storm's children are new processes), so the figures include the machine's
/// background; the storm dominates them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn exec_storm_kernel_cost() {
    if !kernel_or_skip("exec_storm_kernel_cost") {
        return;
    }
    let n: u64 = std::env::var("EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let before = prog_ids();
    let programs = KernelPrograms::load(KernelConfig::default()).expect("load kernel programs");
    let source =
        Arc::new(KernelSource::new(programs, KernelDomain::Process).expect("process source"));
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
    let at_go = stats(&before);
    // Without cargo's library path: each exec's loader would search it for libc,
    // doubling the syscalls per exec (see `cargo xtask storm`).
    let out = Command::new(env!("CARGO_BIN_EXE_collector-test-actor"))
        .env_remove("LD_LIBRARY_PATH")
        .args(["exec-storm", &n.to_string()])
        .args((1..=8).map(|i| format!("arg{i}")))
        .output()
        .unwrap();
    assert!(out.status.success());
    let storm = delta(&stats(&before), &at_go);
    println!("actor: {}", String::from_utf8_lossy(&out.stdout).trim());
    for (name, (t, c)) in &storm {
        if *c > 0 {
            println!(
                "{name:<28} run_cnt={c:<9} run_time_ns={t:<12} ns/run={:.0}",
                *t as f64 / *c as f64
            );
        }
    }
    source.stop().await.unwrap();
    shutdown.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();
    println!("events received: {}", drain.await.unwrap());
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
    // One idle second first: what each program costs the rest of the machine's
    // syscalls (the `sys_exit` programs run for every syscall), to tell the storm's own
    // calls apart from the background in the figures below.
    let idle_start = stats(&before);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let at_go = stats(&before);
    let idle = delta(&at_go, &idle_start);
    writeln!(actor.stdin.take().unwrap(), "go").unwrap();
    let done = lines.next().unwrap().unwrap();
    assert!(actor.wait().unwrap().success());
    let storm = delta(&stats(&before), &at_go);
    println!("actor: {done}");
    let ops = args
        .iter()
        .rev()
        .find_map(|a| a.parse::<f64>().ok())
        .unwrap_or(1.0);
    let mut per_op_total = 0.0;
    for (name, (t, c)) in &storm {
        if *c == 0 {
            continue;
        }
        let (it, ic) = idle.get(name).copied().unwrap_or((0, 0));
        let idle_per_run = if ic > 0 { it as f64 / ic as f64 } else { 0.0 };
        per_op_total += *t as f64 / ops;
        println!(
            "{name:<28} run_cnt={c:<9} run_time_ns={t:<12} ns/run={:<6.0} ns/op={:<6.0} idle: run_cnt/s={ic:<7} ns/run={idle_per_run:.0}",
            *t as f64 / *c as f64,
            *t as f64 / ops,
        );
    }
    println!("all programs: {per_op_total:.0} ns of program time per operation ({ops} operations, background included)");
    source.stop().await.unwrap();
    shutdown.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();
    println!("events received: {}", drain.await.unwrap());
}

/// (run_time_ns, run_cnt) by program name, summed over the programs loaded since
/// `before` (ids not in it).
type Stats = std::collections::BTreeMap<String, (u64, u64)>;

fn stats(before: &[u64]) -> Stats {
    let mut out = Stats::new();
    for p in progs().as_array().unwrap() {
        if p["id"].as_u64().is_none_or(|id| before.contains(&id)) {
            continue;
        }
        let (Some(t), Some(c)) = (p["run_time_ns"].as_u64(), p["run_cnt"].as_u64()) else {
            continue;
        };
        let e = out
            .entry(p["name"].as_str().unwrap_or("?").to_string())
            .or_insert((0, 0));
        e.0 += t;
        e.1 += c;
    }
    out
}

/// `now - then`, per program.
fn delta(now: &Stats, then: &Stats) -> Stats {
    now.iter()
        .map(|(name, (t, c))| {
            let (t0, c0) = then.get(name).copied().unwrap_or((0, 0));
            (name.clone(), (t.saturating_sub(t0), c.saturating_sub(c0)))
        })
        .collect()
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
