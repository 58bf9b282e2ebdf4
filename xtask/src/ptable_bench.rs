//! `cargo xtask ptable-bench`: the process table with many live processes, as an operator
//! meets it. The release daemon (kernel process domain) runs while N sleeping processes
//! (`sleep`, 10,000 by default) are started; once its table lists them all, it measures:
//!
//! - `collector processes` (the CLI over IPC, every page): wall time (median of 3) and
//!   whether every sleeper came back with a complete row (pid, ppid, process key,
//!   executable, command line, start time);
//! - the daemon's RSS less the ring-buffer mappings (idle; with the processes, 12 s after
//!   the table listed them all; after the queries), and its peak RSS.
//!
//! The sleepers are killed at the end, the daemon stopped with SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::storm::{memory_kib, tempdir, Daemon};

/// Options of `cargo xtask ptable-bench`.
#[derive(Debug, clap::Args)]
pub struct PtableBenchArgs {
    /// Sleeping processes to start.
    #[arg(long, default_value_t = 10_000)]
    processes: usize,
}

impl Default for PtableBenchArgs {
    fn default() -> Self {
        Self { processes: 10_000 }
    }
}

/// `live` of the daemon's process table, from `collector status`.
fn table_live(socket: &Path) -> Result<u64> {
    let out = Command::new(crate::root().join("target/release/collector"))
        .arg("status")
        .arg("--socket")
        .arg(socket)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // `"processes": { "live": N, ...`: the first `"live"` after `"processes"`.
    let after = text
        .split_once("\"processes\"")
        .map(|(_, r)| r)
        .context("status has no process table")?;
    let value = after
        .split_once("\"live\":")
        .map(|(_, r)| r.trim_start())
        .context("status has no live count")?;
    let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
    Ok(digits.parse()?)
}

/// Runs `collector processes`; returns (seconds, output).
fn list(socket: &Path) -> Result<(f64, String)> {
    let started = Instant::now();
    let out = Command::new(crate::root().join("target/release/collector"))
        .arg("processes")
        .arg("--socket")
        .arg(socket)
        .stderr(Stdio::inherit())
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("collector processes failed: {}", out.status);
    }
    Ok((seconds, String::from_utf8(out.stdout)?))
}

/// Whether `line` is a complete row of sleeper `pid` (its JSON, checked by text: the
/// xtask has no JSON parser and the CLI's field order is fixed).
fn complete_row(line: &str, pid: u32, me: u32) -> bool {
    line.starts_with(&format!("{{\"pid\":{pid},"))
        && line.contains(&format!("\"ppid\":{me},"))
        && line.contains(&format!("\"process_key\":\"{pid}:"))
        && line.contains("\"executable_path\":\"")
        && line.contains("sleep")
        && line.contains("\"command_line\":[\"sleep\",\"600\"]")
        && line.contains("\"start_time\":\"")
}

pub fn ptable_bench(args: &PtableBenchArgs) -> Result<()> {
    crate::build()?;
    if !crate::is_root() {
        bail!("the process table benchmark loads kernel programs: run as root");
    }
    let dir = tempdir()?;
    let daemon = Daemon::start(&dir, "process", false)?;
    let me = std::process::id();
    let mut sleepers: Vec<Child> = Vec::with_capacity(args.processes);
    let result = (|| -> Result<()> {
        // Idle first: what the daemon holds before the processes exist.
        std::thread::sleep(Duration::from_secs(2));
        let (_, idle) = memory_kib(daemon.child.id());
        let started = Instant::now();
        for _ in 0..args.processes {
            sleepers.push(
                Command::new("sleep")
                    .arg("600")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .context("starting a sleeper")?,
            );
        }
        eprintln!(
            "xtask: {} sleepers started in {:.1}s",
            sleepers.len(),
            started.elapsed().as_secs_f64()
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let live = table_live(&daemon.socket)?;
            if live >= args.processes as u64 {
                break;
            }
            if Instant::now() > deadline {
                bail!("the table lists {live} live processes, fewer than the sleepers");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // Steady state: the daemon hands freed heap back every 10 s.
        std::thread::sleep(Duration::from_secs(12));
        let (_, loaded) = memory_kib(daemon.child.id());
        let mut times = Vec::new();
        let mut rows = 0;
        let mut complete = 0;
        for _ in 0..3 {
            let (seconds, out) = list(&daemon.socket)?;
            times.push(seconds);
            rows = out.lines().count();
            let lines: std::collections::HashMap<u32, &str> = out
                .lines()
                .filter_map(|l| {
                    let pid = l
                        .strip_prefix("{\"pid\":")?
                        .split(',')
                        .next()?
                        .parse()
                        .ok()?;
                    Some((pid, l))
                })
                .collect();
            complete = sleepers
                .iter()
                .filter(|c| {
                    lines
                        .get(&c.id())
                        .is_some_and(|l| complete_row(l, c.id(), me))
                })
                .count();
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let (peak, own) = memory_kib(daemon.child.id());
        println!("\n## process table ({} sleeping processes)", sleepers.len());
        println!("| `collector processes` (median of 3) | rows | sleepers with complete rows | daemon RSS less rings: idle / with the processes / after the queries | daemon peak RSS |");
        println!("|---|---|---|---|---|");
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "| {:.3} s | {rows} | {complete}/{} | {:.1} / {:.1} / {:.1} MiB | {:.1} MiB |",
            times[1],
            sleepers.len(),
            mib(idle),
            mib(loaded),
            mib(own),
            mib(peak),
        );
        Ok(())
    })();
    for child in &mut sleepers {
        let _ = child.kill();
    }
    for child in &mut sleepers {
        let _ = child.wait();
    }
    daemon.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
