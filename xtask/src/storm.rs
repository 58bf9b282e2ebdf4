//! `cargo xtask storm`: the storms as an operator runs them. The release `collector run`
//! daemon (with `--no-stdout`, a metrics endpoint) and one `collector events` subscriber
//! writing JSON lines to a file, against an actor process that runs the storm untraced
//! and traced in turn.
//!
//! For each storm it prints: the workload's untraced and traced rates (medians) and their
//! ratio, its rate with the programs attached but the daemon stopped (the kernel's
//! share), what the subscriber received of the actor's events, the kernel's losses, the
//! daemon's and the subscriber's CPU per event, the daemon's peak RSS and its RSS without
//! the ring-buffer mappings, the daemon's longest start (spawn to serving metrics:
//! loading and attaching the kernel programs, mostly verification), and each kernel
//! program's average cost per call.
//!
//! The rates are measured as a host runs the collector: with the kernel's BPF statistics
//! off. Statistics cost two clock reads per program run (a paravirtual clock in a VM,
//! tens of ns each), which would be charged to the collector. Each storm then has one
//! more traced run with statistics on, for the per-program costs; its own rate is
//! printed beside them, so the statistics' own cost stays visible.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Options of `cargo xtask storm`.
#[derive(Debug, clap::Args)]
pub struct StormArgs {
    /// Storms to run (open, exec, connect, syscall, idle, paced); all by default.
    storms: Vec<String>,
    /// Untraced/traced pairs per storm.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Multiply every storm's size (0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
}

impl Default for StormArgs {
    fn default() -> Self {
        Self {
            storms: Vec::new(),
            repeat: 3,
            scale: 1.0,
        }
    }
}

struct Storm {
    name: &'static str,
    domain: &'static str,
    count: u64,
    actor_args: Vec<String>,
    /// Events of the actor expected per iteration, and once per run.
    per_iteration: u64,
    extra: u64,
    /// Whether a JSON line (already known to be the actor's or its children's) is one
    /// of the storm's events.
    is_storm_event: fn(&str, u32) -> bool,
    /// The libbpf-tools program that records the same operation, run in each round.
    reference: Option<Reference>,
}

/// A reference tool from libbpf-tools (Debian `libbpf-tools`), run on the same storm as
/// its users run it: its text output to a file. It sees one operation per iteration
/// (the open, the exec), not the collector's fields or its other events: what it keeps
/// of the untraced rate is the cost of the simplest tracer of the operation, for scale.
#[derive(Clone, Copy)]
struct Reference {
    tool: &'static str,
    /// Whether a line of its output is one of the actor's operations (the actor's pid).
    is_event: fn(&str, u32) -> bool,
}

fn storms(scale: f64) -> Vec<Storm> {
    let n = |base: u64| ((base as f64 * scale) as u64).max(1);
    let exec_args: Vec<String> = (1..=8).map(|i| format!("arg{i}")).collect();
    vec![
        Storm {
            name: "open",
            domain: "filesystem",
            count: n(1_000_000),
            actor_args: vec![
                "opens".into(),
                "/etc/hostname".into(),
                n(1_000_000).to_string(),
            ],
            per_iteration: 1,
            extra: 0,
            is_storm_event: |line, pid| {
                line.contains(&format!("\"pid\":{pid},")) && line.contains("\"/etc/hostname\"")
            },
            // `PID COMM FD ERR PATH`
            reference: Some(Reference {
                tool: "opensnoop",
                is_event: |line, pid| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    f.first() == Some(&pid.to_string().as_str())
                        && f.last() == Some(&"/etc/hostname")
                },
            }),
        },
        Storm {
            name: "exec",
            domain: "process",
            count: n(5_000),
            actor_args: ["exec-storm".to_string(), n(5_000).to_string()]
                .into_iter()
                .chain(exec_args)
                .collect(),
            // fork (pid = actor), exec and exit (ppid = actor)
            per_iteration: 3,
            extra: 0,
            is_storm_event: |line, pid| {
                (line.contains("\"kind\":\"fork\"") && line.contains(&format!("\"pid\":{pid},")))
                    || line.contains(&format!("\"ppid\":{pid},"))
            },
            // `PCOMM PID PPID RET ARGS`
            reference: Some(Reference {
                tool: "execsnoop",
                is_event: |line, pid| {
                    line.split_whitespace().nth(2) == Some(pid.to_string().as_str())
                },
            }),
        },
        Storm {
            name: "connect",
            domain: "network",
            count: n(20_000),
            actor_args: vec!["connect-storm".into(), n(20_000).to_string()],
            // connect, accept, and the close of each end; the listener's bind and listen
            per_iteration: 4,
            extra: 2,
            is_storm_event: |line, pid| line.contains(&format!("\"pid\":{pid},")),
            reference: None,
        },
    ]
}

fn actor_binary() -> PathBuf {
    crate::root().join("target/release/collector-test-actor")
}

fn collector_binary() -> PathBuf {
    crate::root().join("target/release/collector")
}

/// One run of the storm's actor.
struct ActorRun {
    pid: u32,
    /// Wall time of its loop.
    seconds: f64,
    /// System CPU time of the actor and its children meanwhile (`getrusage`): where the
    /// kernel programs' time is charged, with the syscalls' own.
    sys: f64,
}

/// Runs the actor and reads what it printed.
fn run_actor(args: &[String]) -> Result<ActorRun> {
    // Without the library path `cargo run` sets for xtask: with its four directories,
    // the dynamic loader of each `/bin/true` the exec storm starts searched them all
    // for libc (311 syscalls per exec instead of 159, measured with `perf stat -e
    // raw_syscalls:sys_enter`), a workload no user runs.
    let out = Command::new(actor_binary())
        .env_remove("LD_LIBRARY_PATH")
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("actor failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let kv: BTreeMap<&str, &str> = text
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    Ok(ActorRun {
        pid: kv["pid"].parse()?,
        seconds: kv["seconds"].parse()?,
        sys: kv["sys"].parse()?,
    })
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    std::io::Write::write_all(
        &mut stream,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

/// Samples of `name` (with labels) from a scrape, by their label text.
fn samples(text: &str, name: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let labels = key.strip_prefix(name)?;
            (labels.is_empty() || labels.starts_with('{'))
                .then(|| (labels.to_owned(), value.parse().ok()))
                .and_then(|(k, v)| Some((k, v?)))
        })
        .collect()
}

/// How much the counter `name` grew between two scrapes, per label set.
fn counter_delta(before: &str, after: &str, name: &str) -> BTreeMap<String, f64> {
    let b = samples(before, name);
    samples(after, name)
        .into_iter()
        .map(|(k, v)| {
            let d = v - b.get(&k).copied().unwrap_or(0.0);
            (k, d)
        })
        .collect()
}

fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the `(comm)`: state is field 3; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .zip(fields.get(12))
        .map(|(u, s)| u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0))
        .unwrap_or(0.0);
    ticks / 100.0
}

/// (peak RSS, current RSS less the BPF map mappings), in KiB.
pub(crate) fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0u64)
    };
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_map = false;
    let mut maps_kib = 0u64;
    for line in smaps.lines() {
        if line.contains('-') && line.split_whitespace().count() >= 5 {
            in_map = line.contains("bpf-map") || line.contains("bpf_ringbuf");
        } else if in_map {
            if let Some(v) = line.strip_prefix("Rss:") {
                maps_kib += v
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
        }
    }
    (field("VmHWM:"), field("VmRSS:").saturating_sub(maps_kib))
}

pub(crate) struct Daemon {
    pub(crate) child: Child,
    metrics: SocketAddr,
    pub(crate) socket: PathBuf,
    /// From spawn to the metrics endpoint answering, which the daemon serves only once
    /// every kernel program is loaded and attached: mostly the verifier's time.
    pub(crate) started_in: Duration,
}

impl Daemon {
    pub(crate) fn start(dir: &Path, domain: &str, bpf_stats: bool) -> Result<Self> {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let socket = dir.join("collector.sock");
        let spawned = Instant::now();
        let mut command = Command::new(collector_binary());
        command.args(["run", "--no-stdout"]);
        // `a,b`: several domains.
        for domain in domain.split(',') {
            command.args(["--domain", domain]);
        }
        let child = command
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--metrics-addr", &metrics.to_string()])
            .env("COLLECTOR_KERNEL_BPF_STATS", bpf_stats.to_string())
            .env("XDG_CONFIG_HOME", dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log"))?)
            .spawn()
            .context("starting collector run")?;
        let mut daemon = Self {
            child,
            metrics,
            socket,
            started_in: Duration::ZERO,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        // Not `/healthz`: on a quiet host a source reports `starting` until its first
        // event or its start-up check (`startup_timeout`, 10 s), and the storm needs only
        // the programs attached, which comes before the endpoint is served.
        while http_get(metrics, "/metrics").is_none() {
            if Instant::now() > deadline {
                bail!(
                    "the daemon never served its metrics (see {}/daemon.log)",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon.started_in = spawned.elapsed();
        Ok(daemon)
    }

    fn scrape(&self) -> String {
        http_get(self.metrics, "/metrics").unwrap_or_default()
    }

    pub(crate) fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the daemon exited with {status}");
        }
        Ok(())
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Lines of `file` that are the storm's events.
fn count_events(file: &Path, storm: &Storm, pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(file)?;
    Ok(text
        .lines()
        .filter(|l| (storm.is_storm_event)(l, pid))
        .count() as u64)
}

#[derive(Default)]
struct Traced {
    rate: f64,
    /// The actor's system CPU seconds.
    sys: f64,
    delivered: u64,
    expected: u64,
    kernel_lost: f64,
    dropped: f64,
    daemon_cpu: f64,
    subscriber_cpu: f64,
    peak_rss_kib: u64,
    own_rss_kib: u64,
    started_in: Duration,
    programs: BTreeMap<String, (f64, f64)>,
}

fn traced_run(storm: &Storm, bpf_stats: bool) -> Result<Traced> {
    let dir = tempdir()?;
    let daemon = Daemon::start(&dir, storm.domain, bpf_stats)?;
    let events_file = dir.join("events.jsonl");
    let mut subscriber = Command::new(collector_binary())
        .args(["events", "--domain", storm.domain])
        .arg("--socket")
        .arg(&daemon.socket)
        .stdout(std::fs::File::create(&events_file)?)
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while samples(&daemon.scrape(), "collector_ipc_subscribers")
        .values()
        .sum::<f64>()
        < 1.0
    {
        if Instant::now() > deadline {
            bail!("the subscriber never connected");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = daemon.scrape();
    let daemon_cpu0 = cpu_seconds(daemon.child.id());
    let sub_cpu0 = cpu_seconds(subscriber.id());
    let actor = run_actor(&storm.actor_args)?;
    let pid = actor.pid;
    // The programs' statistics as the storm ends: they run when the events happen, and
    // what follows (the wait for the subscriber) would add only the daemon's and the
    // subscriber's own syscalls to them.
    let at_end = bpf_stats.then(|| daemon.scrape());
    let expected = storm.count * storm.per_iteration + storm.extra;
    // Wait until the subscriber's file stops growing (or has everything).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (0u64, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let size = std::fs::metadata(&events_file)
            .map(|m| m.len())
            .unwrap_or(0);
        if size != last.0 {
            last = (size, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(1500) || Instant::now() > deadline {
            break;
        }
    }
    let after = daemon.scrape();
    let mut traced = Traced {
        rate: storm.count as f64 / actor.seconds,
        sys: actor.sys,
        expected,
        daemon_cpu: cpu_seconds(daemon.child.id()) - daemon_cpu0,
        subscriber_cpu: cpu_seconds(subscriber.id()) - sub_cpu0,
        started_in: daemon.started_in,
        ..Traced::default()
    };
    (traced.peak_rss_kib, traced.own_rss_kib) = memory_kib(daemon.child.id());
    let delta = |name: &str| counter_delta(&before, &after, name);
    traced.kernel_lost = delta("collector_kernel_events_lost_total").values().sum();
    traced.dropped = delta("collector_source_events_dropped_total")
        .values()
        .sum::<f64>()
        + delta("collector_sink_events_dropped_total")
            .values()
            .sum::<f64>();
    let at_end = at_end.unwrap_or_else(|| after.clone());
    let runs = counter_delta(&before, &at_end, "collector_kernel_program_runs_total");
    let time = counter_delta(
        &before,
        &at_end,
        "collector_kernel_program_run_time_nanoseconds_total",
    );
    for (labels, n) in runs {
        if n > 0.0 {
            let program = labels
                .trim_start_matches("{program=\"")
                .trim_end_matches("\"}")
                .to_owned();
            traced
                .programs
                .insert(program, (n, time.get(&labels).copied().unwrap_or(0.0)));
        }
    }
    daemon.stop()?;
    // A clean daemon shutdown ends each subscription with an end-of-stream message, and
    // the subscriber then flushes and exits: wait for that rather than kill it with
    // events still in its output buffer (which would count as undelivered).
    let deadline = Instant::now() + Duration::from_secs(10);
    while subscriber.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = subscriber.kill();
    let _ = subscriber.wait();
    traced.delivered = count_events(&events_file, storm, pid)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(traced)
}

/// The storm with the programs attached and the daemon stopped (SIGSTOP) for its
/// duration: the workload then pays only the kernel side. (rate, kernel losses, the
/// actor's system CPU seconds).
fn kernel_only_run(storm: &Storm) -> Result<(f64, f64, f64)> {
    let dir = tempdir()?;
    let daemon = Daemon::start(&dir, storm.domain, false)?;
    let before = daemon.scrape();
    let pid = daemon.child.id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc_kill(pid, SIGSTOP) };
    let run = run_actor(&storm.actor_args);
    // SAFETY: as above.
    unsafe { libc_kill(pid, SIGCONT) };
    let run = run?;
    // Losses are counted in the kernel as they happen; the daemon reads the counters
    // when it serves the metrics.
    let lost = counter_delta(
        &before,
        &daemon.scrape(),
        "collector_kernel_events_lost_total",
    )
    .values()
    .sum();
    daemon.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((storm.count as f64 / run.seconds, lost, run.sys))
}

/// The storm traced by the reference tool alone. `costed`: with BPF statistics on
/// (host-wide, for this run only), the tool's programs' costs are returned too.
fn reference_run(storm: &Storm, reference: Reference, costed: bool) -> Result<ReferenceRun> {
    let dir = tempdir()?;
    let out = dir.join("reference.txt");
    let err = dir.join("reference.err");
    let binary =
        crate::setup::find_binary(reference.tool).context("libbpf-tools is not installed")?;
    let _stats = costed
        .then(|| Sysctl::set(BPF_STATS_SYSCTL, "1"))
        .transpose()?;
    let mut tool = Command::new(binary)
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(&err)?)
        .spawn()
        .with_context(|| format!("starting {} (Debian: libbpf-tools)", reference.tool))?;
    let attached = wait_attached(&mut tool);
    let before = if costed {
        program_stats(tool.id())
    } else {
        BTreeMap::new()
    };
    let run = attached.and_then(|()| run_actor(&storm.actor_args));
    // The programs that ran, named while the tool still holds them.
    let mut programs = BTreeMap::new();
    if costed {
        for (id, (runs, ns)) in program_stats(tool.id()) {
            let (runs0, ns0) = before.get(&id).copied().unwrap_or_default();
            if runs > runs0 {
                programs.insert(program_name(id), ((runs - runs0) as f64, (ns - ns0) as f64));
            }
        }
    }
    // SAFETY: kill(2) on our own child. SIGINT: the tools end their poll loop and
    // return from main, which flushes their buffered output.
    unsafe { libc_kill(tool.id() as i32, SIGINT) };
    let status = tool.wait()?;
    let run = run.with_context(|| {
        format!(
            "{}: {}",
            reference.tool,
            std::fs::read_to_string(&err).unwrap_or_default().trim()
        )
    })?;
    if !status.success() {
        bail!("{} exited with {status}", reference.tool);
    }
    let printed = std::fs::read_to_string(&out)?
        .lines()
        .filter(|l| (reference.is_event)(l, run.pid))
        .count() as u64;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ReferenceRun {
        rate: storm.count as f64 / run.seconds,
        sys: run.sys,
        printed,
        programs,
    })
}

struct ReferenceRun {
    rate: f64,
    /// The actor's system CPU seconds.
    sys: f64,
    /// The actor's operations the tool printed.
    printed: u64,
    /// Program name -> (runs, run time ns), in a costed run.
    programs: BTreeMap<String, (f64, f64)>,
}

/// The BPF programs a process holds (by id): (runs, run time ns), from each program
/// fd's `fdinfo` (`run_cnt`, `run_time_ns`; counted while BPF statistics are on).
fn program_stats(pid: u32) -> BTreeMap<u32, (u64, u64)> {
    let mut programs = BTreeMap::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return programs;
    };
    for fd in fds.flatten() {
        let is_prog = std::fs::read_link(fd.path())
            .is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        if let Some((id, runs, ns)) = prog_fdinfo(&info) {
            programs.insert(id, (runs, ns));
        }
    }
    programs
}

/// A program fd's `fdinfo` as (prog_id, run_cnt, run_time_ns); None if a field is
/// missing.
fn prog_fdinfo(info: &str) -> Option<(u32, u64, u64)> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some((
        u32::try_from(field("prog_id:")?).ok()?,
        field("run_cnt:")?,
        field("run_time_ns:")?,
    ))
}

/// A program's name as `bpftool prog show id <id>` prints it (`<id>: <type>  name
/// <name>  tag ...`: the whole name, from the program's BTF, where the kernel's own
/// copy keeps 15 bytes), or its id.
fn program_name(id: u32) -> String {
    Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut words = text.split_whitespace();
            words.find(|w| *w == "name")?;
            words.next().map(str::to_owned)
        })
        .unwrap_or_else(|| format!("program {id}"))
}

/// Waits until a libbpf tool has attached its programs: its output goes to a file,
/// block-buffered, so its header says nothing. libbpf attaches every program in one
/// call before the tool polls, each tracepoint attachment a perf event or BPF link fd:
/// the count of those stops growing once attached.
fn wait_attached(tool: &mut Child) -> Result<()> {
    let fds = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .filter(|l| {
                        let l = l.to_string_lossy();
                        l.contains("perf_event") || l.contains("bpf_link")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (0, Instant::now());
    loop {
        if let Some(status) = tool.try_wait()? {
            bail!("exited with {status} before attaching");
        }
        let n = fds(tool.id());
        if n != last.0 {
            last = (n, Instant::now());
        } else if n > 0 && last.1.elapsed() > Duration::from_millis(500) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not attached after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mounts tracefs where it is absent: the reference tools attach classic tracepoints
/// (the collector itself needs none).
fn ensure_tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").exists() {
        return Ok(());
    }
    crate::run(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]))
}

const SIGINT: i32 = 2;
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// A sysctl set to a value while this lives, then restored.
struct Sysctl {
    path: &'static str,
    was: Option<String>,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Result<Self> {
        let was = std::fs::read_to_string(path).ok();
        if was.as_deref().map(str::trim) != Some(value) {
            std::fs::write(path, value).with_context(|| format!("writing {path}"))?;
        }
        Ok(Self { path, was })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Some(was) = &self.was {
            let _ = std::fs::write(self.path, was);
        }
    }
}

pub(crate) fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "collector-storm-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub fn storm(args: &StormArgs) -> Result<()> {
    crate::build()?;
    crate::run(crate::cargo().current_dir(crate::root()).args([
        "build",
        "--release",
        "-p",
        "collector-tests",
        "--bin",
        "collector-test-actor",
    ]))?;
    if !crate::is_root() {
        bail!("the storms load kernel programs: run as root");
    }
    // A host-wide `kernel.bpf_stats_enabled=1` would put the statistics' cost into the
    // statistics-off runs: off for the storms, restored after.
    if std::fs::read_to_string(BPF_STATS_SYSCTL).is_ok_and(|v| v.trim() == "1") {
        eprintln!("xtask: {BPF_STATS_SYSCTL} was 1; 0 for the storms, restored after");
    }
    let _stats_off = Sysctl::set(BPF_STATS_SYSCTL, "0")?;
    for storm in storms(args.scale) {
        if !args.storms.is_empty() && !args.storms.iter().any(|s| s == storm.name) {
            continue;
        }
        let mut untraced = Vec::new();
        let mut untraced_sys = Vec::new();
        let mut kernel_only = Vec::new();
        let mut runs = Vec::new();
        // The reference tool, if it can run here (else why not, printed once).
        let mut reference = storm.reference.filter(|r| {
            let found = crate::setup::find_binary(r.tool).is_some();
            if !found {
                println!(
                    "\n(no `{}` here: install libbpf-tools for the reference run)",
                    r.tool
                );
            }
            found
        });
        if reference.is_some() {
            if let Err(e) = ensure_tracefs() {
                println!("\n(no reference run: {e:#})");
                reference = None;
            }
        }
        let mut references = Vec::new();
        for _ in 0..args.repeat.max(1) {
            let run = run_actor(&storm.actor_args)?;
            untraced.push(storm.count as f64 / run.seconds);
            untraced_sys.push(run.sys);
            kernel_only.push(kernel_only_run(&storm)?);
            runs.push(traced_run(&storm, false)?);
            if let Some(r) = reference {
                // The reference is for scale: its failure is reported, not the storm's.
                match reference_run(&storm, r, false) {
                    Ok(run) => references.push(run),
                    Err(e) => {
                        println!("\n(no reference: `{}` failed: {e:#})", r.tool);
                        reference = None;
                    }
                }
            }
        }
        // The statistics-on runs, for the programs' costs only.
        let costed = traced_run(&storm, true)?;
        let reference_costed = reference.and_then(|r| match reference_run(&storm, r, true) {
            Ok(run) => Some(run),
            Err(e) => {
                println!("\n(no reference costs: `{}` failed: {e:#})", r.tool);
                None
            }
        });
        // Each round's runs follow each other within seconds, in one phase of the VM's
        // speed, which drifts by tens of percent over minutes: what a round keeps is its
        // traced (kernel-only) rate over its own untraced rate, and the figure is the
        // median round, with the range of the rounds beside it.
        let kept = |rates: Vec<f64>| -> (f64, f64, f64) {
            let r: Vec<f64> = rates.iter().zip(&untraced).map(|(t, u)| t / u).collect();
            let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.iter().copied().fold(0.0, f64::max);
            (median(r), lo, hi)
        };
        let (kept_t, kept_lo, kept_hi) = kept(runs.iter().map(|r| r.rate).collect());
        let (kept_k, ..) = kept(kernel_only.iter().map(|r| r.0).collect());
        let (u, t) = (
            median(untraced.clone()),
            median(runs.iter().map(|r| r.rate).collect()),
        );
        let k = median(kernel_only.iter().map(|r| r.0).collect());
        let k_lost: f64 = kernel_only.iter().map(|r| r.1).sum();
        let events: u64 = runs.iter().map(|r| r.expected).sum();
        let delivered: u64 = runs.iter().map(|r| r.delivered).sum();
        let daemon_cpu: f64 = runs.iter().map(|r| r.daemon_cpu).sum();
        let sub_cpu: f64 = runs.iter().map(|r| r.subscriber_cpu).sum();
        println!(
            "\n## storm {} ({} x {}, {} runs)",
            storm.name,
            storm.count,
            storm.domain,
            runs.len()
        );
        println!("| untraced/s | kernel only/s | traced/s | rate kept | delivered | kernel lost | dropped | daemon CPU/event | subscriber CPU/event | daemon peak RSS | daemon RSS less rings | daemon start |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {:.0} | {:.0} ({:.1}%) | {:.0} | {:.1}% ({:.1}–{:.1}%) | {delivered}/{events} | {} | {} | {:.2} µs | {:.2} µs | {} MiB | {} MiB | {:.1} s |",
            u,
            k,
            100.0 * kept_k,
            t,
            100.0 * kept_t,
            100.0 * kept_lo,
            100.0 * kept_hi,
            runs.iter().map(|r| r.kernel_lost).sum::<f64>(),
            runs.iter().map(|r| r.dropped).sum::<f64>(),
            1e6 * daemon_cpu / events.max(1) as f64,
            1e6 * sub_cpu / events.max(1) as f64,
            runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) / 1024,
            runs.iter().map(|r| r.own_rss_kib).max().unwrap_or(0) / 1024,
            runs.iter()
                .map(|r| r.started_in)
                .max()
                .unwrap_or_default()
                .as_secs_f64(),
        );
        println!(
            "\nRates are medians over the rounds. What is kept (kernel only, traced) is the \
             median round's ratio to the untraced run of the same round, the rounds' range \
             in brackets: the VM's speed drifts over minutes, a round's runs share one phase. \
             Kernel only: the programs attached, the daemon stopped (SIGSTOP) so that \
             nothing in userspace runs; what it keeps of the untraced rate is the kernel's \
             share of the cost, the rest of the traced loss is the daemon's and the \
             subscriber's.{}",
            if k_lost > 0.0 {
                format!(
                    " Its ring filled ({k_lost:.0} records lost over the runs): \
                     a failed reservation is cheaper than a record, so it is an upper bound."
                )
            } else {
                String::new()
            }
        );
        // The kernel's side as the system time it adds to the workload, per iteration:
        // each round's run against that round's untraced run, the median round.
        let per_iteration = |sys: f64| 1e6 * sys / storm.count as f64;
        let added = |sys: Vec<f64>| -> (f64, f64) {
            let d: Vec<f64> = sys
                .iter()
                .zip(&untraced_sys)
                .map(|(s, u)| per_iteration(s - u))
                .collect();
            (
                median(sys.into_iter().map(per_iteration).collect()),
                median(d),
            )
        };
        let (k_sys, k_added) = added(kernel_only.iter().map(|r| r.2).collect());
        let (t_sys, t_added) = added(runs.iter().map(|r| r.sys).collect());
        let reference_sys = reference
            .filter(|_| !references.is_empty())
            .map(|r| (r.tool, added(references.iter().map(|r| r.sys).collect())));
        println!(
            "\nThe workload's system time per iteration (the actor's and its children's, \
             `getrusage`; the kernel programs' time is charged there, with the tracepoints' \
             dispatch that BPF statistics do not count): untraced {:.3} µs; kernel only \
             {k_sys:.3} µs (+{k_added:.3}); traced {t_sys:.3} µs (+{t_added:.3}){}. Added: \
             the median round's difference from its own untraced run.",
            median(untraced_sys.iter().copied().map(per_iteration).collect()),
            reference_sys
                .map(|(tool, (s, a))| format!("; `{tool}` {s:.3} µs (+{a:.3})"))
                .unwrap_or_default(),
        );
        if let Some(r) = reference {
            let (kept_r, lo, hi) = kept(references.iter().map(|r| r.rate).collect());
            // Pair by pair: the collector's traced rate over the reference's, same round.
            let vs: Vec<f64> = runs
                .iter()
                .zip(&references)
                .map(|(t, r)| t.rate / r.rate)
                .collect();
            let printed: u64 = references.iter().map(|r| r.printed).sum();
            println!(
                "\nReference, libbpf-tools `{}` (its text output to a file), in the same rounds: \
                 the workload keeps {:.1}% ({:.1}–{:.1}%) of its untraced rate, and the tool \
                 printed {printed}/{} of the actor's operations (one per iteration: it records \
                 only that operation, with fewer fields). The collector's traced rate over the \
                 reference's, round by round: {:.2} (median; {}).",
                r.tool,
                100.0 * kept_r,
                100.0 * lo,
                100.0 * hi,
                storm.count * references.len() as u64,
                median(vs.clone()),
                vs.iter()
                    .map(|v| format!("{v:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        println!(
            "\nKernel program costs, from one more traced run with BPF statistics on \
             (its rate: {:.0}/s, {:.1}% of untraced; delivered {}/{}):",
            costed.rate,
            100.0 * costed.rate / u,
            costed.delivered,
            costed.expected,
        );
        program_costs(&costed.programs, storm.count);
        if let (Some(r), Some(run)) = (reference, reference_costed) {
            println!(
                "\nThe reference's programs, `{}` alone with BPF statistics on \
                 (its rate: {:.0}/s, {:.1}% of untraced):",
                r.tool,
                run.rate,
                100.0 * run.rate / u,
            );
            program_costs(&run.programs, storm.count);
        }
    }
    if args.storms.is_empty() || args.storms.iter().any(|s| s == "syscall") {
        syscall_tax(args)?;
    }
    if args.storms.is_empty() || args.storms.iter().any(|s| s == "idle") {
        idle(args)?;
    }
    if args.storms.is_empty() || args.storms.iter().any(|s| s == "paced") {
        paced(args)?;
    }
    Ok(())
}

/// A table of programs' costs (name -> (runs, run time ns)) and their total per
/// iteration of the storm's actor (all of the host's calls of those programs meanwhile
/// included: the storm dominates them).
fn program_costs(programs: &BTreeMap<String, (f64, f64)>, iterations: u64) {
    println!("\n| program | runs | ns per call |");
    println!("|---|---|---|");
    for (p, (n, ns)) in programs {
        println!("| `{p}` | {n:.0} | {:.0} |", ns / n.max(1.0));
    }
    let total: f64 = programs.values().map(|(_, ns)| ns).sum();
    println!(
        "\nProgram time per iteration of the storm: {:.0} ns.",
        total / iterations.max(1) as f64
    );
}

/// What the daemon costs when nothing happens: every domain loaded, no subscriber, 10 s
/// after it settled. Its CPU time and how often its threads were scheduled come from
/// `/proc/<pid>/task/*/schedstat` (run time, timeslices); the kernel records it read
/// meanwhile show how quiet the host was (an idle VM still opens a few files).
fn idle(args: &StormArgs) -> Result<()> {
    const SETTLE: Duration = Duration::from_secs(3);
    const SPAN: Duration = Duration::from_secs(10);
    println!(
        "\n## idle daemon (all domains, {} rounds of {} s)",
        args.repeat.max(1),
        SPAN.as_secs()
    );
    println!("| round | CPU ms | CPU share | wakeups/s | kernel records/s |");
    println!("|---|---|---|---|---|");
    for round in 1..=args.repeat.max(1) {
        let dir = tempdir()?;
        let daemon = Daemon::start(&dir, "process,filesystem,network", false)?;
        std::thread::sleep(SETTLE);
        let pid = daemon.child.id();
        let (cpu0, slices0) = schedstat(pid);
        let before = daemon.scrape();
        std::thread::sleep(SPAN);
        let (cpu1, slices1) = schedstat(pid);
        let records: f64 = counter_delta(
            &before,
            &daemon.scrape(),
            "collector_kernel_events_emitted_total",
        )
        .values()
        .sum();
        daemon.stop()?;
        let _ = std::fs::remove_dir_all(&dir);
        let secs = SPAN.as_secs_f64();
        println!(
            "| {round} | {:.0} | {:.2}% | {:.0} | {:.1} |",
            (cpu1 - cpu0) / 1e6,
            100.0 * (cpu1 - cpu0) / 1e9 / secs,
            (slices1 - slices0) / secs,
            records / secs,
        );
    }
    Ok(())
}

/// What the daemon costs per exec on a quiet host, where each exec is alone: the
/// process domain, no subscriber, `/bin/true` every 10 ms (about 80 execs/s here). At
/// such rates the cost is per wakeup, not per event: each exec wakes the reader at
/// once (for latency), and the drain, the batcher and the store's writer then run from
/// cold caches.
fn paced(args: &StormArgs) -> Result<()> {
    const INTERVAL_MS: u64 = 10;
    let n = ((500.0 * args.scale) as u64).max(1);
    println!(
        "\n## paced execs ({n} x /bin/true, {INTERVAL_MS} ms apart, process domain, no subscriber, {} rounds)",
        args.repeat.max(1)
    );
    println!("| round | execs/s | daemon CPU per exec | daemon wakeups per exec | kernel records per exec |");
    println!("|---|---|---|---|---|");
    let actor = [
        "exec-paced".to_string(),
        n.to_string(),
        INTERVAL_MS.to_string(),
    ];
    for round in 1..=args.repeat.max(1) {
        let dir = tempdir()?;
        let daemon = Daemon::start(&dir, "process", false)?;
        // Past start-up: the kernel source's first checks and the purge of what
        // loading freed.
        std::thread::sleep(Duration::from_secs(3));
        let pid = daemon.child.id();
        let (cpu0, slices0) = schedstat(pid);
        let before = daemon.scrape();
        let run = run_actor(&actor);
        // The last exec's records drained and batched.
        std::thread::sleep(Duration::from_millis(300));
        let (cpu1, slices1) = schedstat(pid);
        let records: f64 = counter_delta(
            &before,
            &daemon.scrape(),
            "collector_kernel_events_emitted_total",
        )
        .values()
        .sum();
        daemon.stop()?;
        let _ = std::fs::remove_dir_all(&dir);
        let seconds = run?.seconds;
        let per = |x: f64| x / n as f64;
        println!(
            "| {round} | {:.0} | {:.0} µs | {:.1} | {:.1} |",
            n as f64 / seconds,
            per(cpu1 - cpu0) / 1e3,
            per(slices1 - slices0),
            per(records),
        );
    }
    Ok(())
}

/// A process's CPU time (ns) and timeslices (times scheduled) over its threads.
fn schedstat(pid: u32) -> (f64, f64) {
    let mut total = (0.0, 0.0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return total;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let fields: Vec<f64> = stat
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0.0))
            .collect();
        if let [run, _, slices] = fields[..] {
            total.0 += run;
            total.1 += slices;
        }
    }
    total
}

/// What every syscall on the host pays while the daemon runs: programs on the raw
/// `sys_enter`/`sys_exit` tracepoints run for every syscall of every process, watched
/// or not. A `getppid` loop, untraced and with each domain set loaded, rounds
/// interleaved.
fn syscall_tax(args: &StormArgs) -> Result<()> {
    let n = ((5_000_000.0 * args.scale) as u64).max(1);
    let actor = ["syscalls".to_string(), n.to_string()];
    let ns_per_call = || -> Result<f64> { Ok(1e9 * run_actor(&actor)?.seconds / n as f64) };
    println!(
        "\n## syscall tax ({n} x getppid, {} rounds)",
        args.repeat.max(1)
    );
    println!("| domains | untraced ns/call | traced ns/call | added per syscall |");
    println!("|---|---|---|---|");
    for domains in [
        "process",
        "filesystem",
        "network",
        "process,filesystem,network",
    ] {
        let (mut untraced, mut traced) = (Vec::new(), Vec::new());
        for _ in 0..args.repeat.max(1) {
            untraced.push(ns_per_call()?);
            let dir = tempdir()?;
            let daemon = Daemon::start(&dir, domains, false)?;
            let run = ns_per_call();
            daemon.stop()?;
            let _ = std::fs::remove_dir_all(&dir);
            traced.push(run?);
        }
        let (u, t) = (median(untraced), median(traced));
        println!("| {domains} | {u:.0} | {t:.0} | {:+.0} ns |", t - u);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{prog_fdinfo, storms};

    /// A program fd's `fdinfo` as Linux 6.18 prints it (taken from `opensnoop`).
    #[test]
    fn program_fdinfo_gives_id_runs_and_time() {
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\nprog_type:\t5\n\
                    prog_jited:\t1\nprog_tag:\te41ffdce9c0cdd50\nmemlock:\t4096\n\
                    prog_id:\t11414\nrun_time_ns:\t17889713\nrun_cnt:\t1144\n\
                    recursion_misses:\t0\nverified_insns:\t95\n";
        assert_eq!(prog_fdinfo(info), Some((11414, 1144, 17889713)));
        // A map's fdinfo, or a kernel without the statistics fields: not a program.
        assert_eq!(prog_fdinfo("map_type:\t27\nmap_id:\t5\n"), None);
        let no_stats = info.replace("run_cnt:\t1144\n", "");
        assert_eq!(prog_fdinfo(&no_stats), None);
    }

    /// The reference tools' lines as they print them (libbpf-tools 0.26), one of the
    /// actor's (pid 4242) and others that must not count.
    #[test]
    fn reference_lines_count_only_the_actors_operation() {
        let all = storms(1.0);
        let reference = |name: &str| {
            all.iter()
                .find(|s| s.name == name)
                .and_then(|s| s.reference)
                .unwrap()
        };
        let open = reference("open");
        assert_eq!(open.tool, "opensnoop");
        assert!((open.is_event)(
            "4242   collector-test     3   0 /etc/hostname",
            4242
        ));
        assert!(!(open.is_event)(
            "PID    COMM              FD ERR PATH",
            4242
        ));
        assert!(!(open.is_event)(
            "4243   cat                3   0 /etc/hostname",
            4242
        ));
        assert!(!(open.is_event)(
            "4242   collector-test     3   0 /etc/passwd",
            4242
        ));
        let exec = reference("exec");
        assert_eq!(exec.tool, "execsnoop");
        assert!((exec.is_event)(
            "true             15205  4242    0 /bin/true arg1 arg2",
            4242
        ));
        assert!(!(exec.is_event)(
            "PCOMM            PID    PPID   RET ARGS",
            4242
        ));
        assert!(!(exec.is_event)(
            "collector-test   4242   1213    0 /actor exec-storm",
            4242
        ));
        assert!(storms(1.0).iter().any(|s| s.reference.is_none()));
    }
}
