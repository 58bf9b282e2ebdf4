//! A kernel source whose program loses its link notices it at its next health check,
//! says so in `status` and the metrics, attaches the program again, and its events flow
//! again; a kernel source stopped and run again drains the same ring, also when the
//! supervisor restarts it after a failure.
//!
//! `bpftool link detach` is tried first: Linux 6.18 refuses it (`EOPNOTSUPP`) for the
//! link types the collector uses, which this test also pins down. The link is then
//! closed from inside (`KernelPrograms::close_link`), which leaves the same kernel state
//! a supported detach would: the program loaded, no link to it.

use std::io::{BufRead, Write};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use collector_core::event::FilesystemEventKind;
use collector_core::{
    CollectionEvent, Collector, CollectorConfig, Delivery, EventBatch, EventSink, EventSource,
    HealthState,
};
use collector_tests::{kernel_or_skip, Announced};
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms, KernelSource};

/// The program that reports a completed `openat` (the hook the actor's opens go through:
/// the `sys_exit` program the domains share).
const OPENAT_EXIT: &str = collector_common::abi::sys_exit::PROGRAM;

/// The actor, opening `path` once per round.
struct Actor(Announced);

impl Actor {
    fn spawn(path: &str) -> Self {
        Self(Announced::spawn(
            env!("CARGO_BIN_EXE_collector-test-actor"),
            &["opens-per-line", path],
        ))
    }

    fn round(&mut self) {
        writeln!(self.0.stdin, "open").unwrap();
        let mut line = String::new();
        self.0.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

/// Counts the actor's opens of the path.
struct Opens {
    pid: u32,
    path: String,
    seen: Mutex<usize>,
}

impl EventSink for Opens {
    fn name(&self) -> &str {
        "opens"
    }

    fn deliver(&self, batch: &EventBatch) -> Delivery {
        let n = batch
            .iter()
            .filter(|ev| {
                matches!(ev, CollectionEvent::Filesystem(f)
                    if f.pid == self.pid && f.kind == FilesystemEventKind::Open && f.path == self.path)
            })
            .count();
        *self.seen.lock().unwrap() += n;
        Delivery::Accepted
    }
}

impl Opens {
    fn seen(&self) -> usize {
        *self.seen.lock().unwrap()
    }

    /// Waits (bounded) until more than `before` opens arrived.
    async fn wait_past(&self, before: usize, what: &str) {
        let arrived = tokio::time::timeout(Duration::from_secs(10), async {
            while self.seen() <= before {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(arrived.is_ok(), "{what}: no open event within 10 s");
    }
}

/// `bpftool link detach` of the link to `prog_id`: `Ok(true)` when detached,
/// `Ok(false)` when the kernel refused with "Operation not supported", `Err` when
/// bpftool is not there.
fn bpftool_detach(prog_id: u32) -> Result<bool, String> {
    let out = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .map_err(|e| format!("bpftool: {e}"))?;
    let links: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let link_id = links
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["prog_id"].as_u64() == Some(u64::from(prog_id)))
        .and_then(|l| l["id"].as_u64())
        .ok_or_else(|| format!("bpftool lists no link to program {prog_id}"))?;
    let out = Command::new("bpftool")
        .args(["link", "detach", "id", &link_id.to_string()])
        .output()
        .map_err(|e| format!("bpftool: {e}"))?;
    if out.status.success() {
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Operation not supported"),
        "bpftool link detach failed for another reason: {stderr}"
    );
    Ok(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_program_is_reported_and_attached_again() {
    if !kernel_or_skip("a_detached_program_is_reported_and_attached_again") {
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().canonicalize().unwrap().display().to_string();
    let mut actor = Actor::spawn(&path);

    let programs = KernelPrograms::load(KernelConfig {
        include_only: true,
        ..KernelConfig::default()
    })
    .expect("load kernel programs");
    programs.include_pid(actor.0.pid).unwrap();
    let source =
        KernelSource::new(programs.clone(), KernelDomain::Filesystem).expect("filesystem source");
    // As the daemon does once its domains are attached: the reattach parses it again.
    programs.release_btf();
    // The degraded state lasts one check interval: long enough for bpftool and the
    // polls below to see it on a loaded host (at 300 ms, CI missed it once).
    let config = CollectorConfig::default()
        .with_health_check_interval(Duration::from_secs(2))
        .with_startup_timeout(Duration::from_millis(300));
    let mut collector = Collector::new(config).unwrap();
    collector.register_batch_source(Box::new(source)).unwrap();
    let opens = Arc::new(Opens {
        pid: actor.0.pid,
        path: path.clone(),
        seen: Mutex::new(0),
    });
    collector.add_sink(opens.clone());
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());

    actor.round();
    opens.wait_past(0, "before the detach").await;

    let prog_id = programs.program_id(OPENAT_EXIT).expect("program loaded");
    let detached_by_bpftool = match bpftool_detach(prog_id) {
        Ok(detached) => detached,
        Err(why) => {
            eprintln!("not trying bpftool: {why}");
            false
        }
    };
    if !detached_by_bpftool {
        eprintln!(
            "the kernel refused `bpftool link detach` (EOPNOTSUPP); closing the link instead"
        );
        assert!(programs.close_link(OPENAT_EXIT).unwrap(), "it had a link");
    }
    let linked = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
    if let Some(links) = linked {
        let still_linked = links
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["prog_id"].as_u64() == Some(u64::from(prog_id)));
        // A health check (every 300 ms) may have attached it again already, before
        // bpftool listed the links: only then may a link to it exist.
        let reattached = || {
            handle
                .status()
                .sources
                .iter()
                .find(|s| s.name == "ebpf-filesystem")
                .and_then(|s| s.stats.reattached.get(OPENAT_EXIT).copied())
                .unwrap_or(0)
        };
        // (The count follows the new link by microseconds: allow it a moment.)
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while still_linked && reattached() == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !still_linked || reattached() > 0,
            "the program has no link any more"
        );
    }

    // The next health check notices, says so and attaches it again.
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let status = handle.status();
            let fs = status
                .sources
                .iter()
                .find(|s| s.name == "ebpf-filesystem")
                .cloned()
                .unwrap();
            // The count is set during the check, the health right after it.
            if fs.stats.reattached.get(OPENAT_EXIT).copied().unwrap_or(0) > 0
                && fs.health == HealthState::Degraded
            {
                return (status, fs);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("status shows the reattach within 10 s");
    let (snapshot, fs) = status;
    assert_eq!(fs.stats.reattached[OPENAT_EXIT], 1);
    assert_eq!(
        fs.health,
        HealthState::Degraded,
        "the check that found it failed"
    );
    let error = fs.last_error.clone().unwrap();
    assert!(
        error.contains(OPENAT_EXIT) && error.contains("attached again"),
        "{error}"
    );
    assert!(error.contains("lost and cannot be counted"), "{error}");
    let metrics = collector_core::metrics::render_prometheus(&snapshot);
    assert!(
        metrics.contains(&format!(
            "collector_kernel_program_reattaches_total{{source=\"ebpf-filesystem\",program=\"{OPENAT_EXIT}\"}} 1"
        )),
        "{metrics}"
    );
    let now_linked = programs.program_id(OPENAT_EXIT).unwrap();
    assert_eq!(now_linked, prog_id, "the same program, attached again");

    // Its events flow again, and the next check passes.
    let before = opens.seen();
    actor.round();
    opens.wait_past(before, "after the reattach").await;
    let healthy = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let status = handle.status();
            let fs = status
                .sources
                .iter()
                .find(|s| s.name == "ebpf-filesystem")
                .unwrap();
            if fs.health == HealthState::Healthy {
                return fs.stats.reattached[OPENAT_EXIT];
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("healthy again within 10 s");
    assert_eq!(healthy, 1, "attached once, not again at every check");

    handle.shutdown();
    run.await.unwrap().unwrap();
}

/// A kernel source stopped (as the supervisor does before a restart) runs again on the
/// same ring: the programs are attached again and events flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_source_runs_again_after_a_stop() {
    if !kernel_or_skip("a_kernel_source_runs_again_after_a_stop") {
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().canonicalize().unwrap().display().to_string();
    let mut actor = Actor::spawn(&path);
    let programs = KernelPrograms::load(KernelConfig {
        include_only: true,
        ..KernelConfig::default()
    })
    .expect("load kernel programs");
    programs.include_pid(actor.0.pid).unwrap();
    let source = Arc::new(
        KernelSource::new(programs.clone(), KernelDomain::Filesystem).expect("filesystem source"),
    );
    // As the daemon does: the run after a stop reloads the programs with a fresh parse.
    programs.release_btf();
    for run in 0..2 {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
        let shutdown = Arc::new(AtomicBool::new(false));
        let task = {
            let (source, shutdown) = (source.clone(), shutdown.clone());
            tokio::spawn(async move { source.start(tx, shutdown).await })
        };
        // A run after a stop attaches the programs again as it starts. `stop` unloaded
        // them, so this loads (verifies) every filesystem program again: seconds on a
        // loaded 2-core host. A run that ends instead says why.
        let attached = tokio::time::timeout(Duration::from_secs(60), async {
            while programs
                .attached_programs(KernelDomain::Filesystem)
                .is_empty()
            {
                assert!(!task.is_finished(), "run {run} ended before attaching");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(attached.is_ok(), "run {run}: attached within 60 s");
        actor.round();
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(ev) = rx.recv().await {
                if let CollectionEvent::Filesystem(f) = ev {
                    if f.pid == actor.0.pid && f.kind == FilesystemEventKind::Open && f.path == path
                    {
                        return true;
                    }
                }
            }
            false
        })
        .await;
        assert_eq!(got, Ok(true), "run {run}: the open arrives");
        source.stop().await.unwrap();
        shutdown.store(true, Ordering::Relaxed);
        task.await.unwrap().unwrap();
        assert!(
            programs
                .attached_programs(KernelDomain::Filesystem)
                .is_empty(),
            "stop detaches"
        );
    }
}

/// A real filesystem source whose first run is made to fail (the test cancels it and
/// returns an error, as a drain that lost its ring would); everything else is the
/// kernel source's own.
struct FailsOnce {
    inner: KernelSource,
    trigger: tokio_util::sync::CancellationToken,
    runs: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl EventSource for FailsOnce {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn capabilities(&self) -> collector_core::SourceCaps {
        self.inner.capabilities()
    }
    async fn start(
        &self,
        tx: tokio::sync::mpsc::Sender<CollectionEvent>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        self.inner.start(tx, stop).await
    }
    async fn stop(&self) -> anyhow::Result<()> {
        self.inner.stop().await
    }
    async fn health_check(&self) -> anyhow::Result<()> {
        self.inner.health_check().await
    }
    fn stats(&self) -> collector_core::SourceStats {
        self.inner.stats()
    }
}

#[async_trait::async_trait]
impl collector_core::BatchSource for FailsOnce {
    async fn run_batches(
        &self,
        tx: collector_core::BatchSender,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        if self.runs.fetch_add(1, Ordering::SeqCst) > 0 {
            return self.inner.run_batches(tx, shutdown).await;
        }
        let run = shutdown.child_token();
        let trigger = self.trigger.clone();
        let cancel = run.clone();
        tokio::spawn(async move {
            trigger.cancelled().await;
            cancel.cancel();
        });
        self.inner.run_batches(tx, run).await?;
        anyhow::bail!("injected failure: the drain ended")
    }
}

/// The supervisor restarts a failed kernel source: the restart attaches its programs
/// again and drains the same ring, and status counts the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_restarts_a_failed_kernel_source() {
    if !kernel_or_skip("the_supervisor_restarts_a_failed_kernel_source") {
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().canonicalize().unwrap().display().to_string();
    let mut actor = Actor::spawn(&path);
    let programs = KernelPrograms::load(KernelConfig {
        include_only: true,
        ..KernelConfig::default()
    })
    .expect("load kernel programs");
    programs.include_pid(actor.0.pid).unwrap();
    let trigger = tokio_util::sync::CancellationToken::new();
    let source = FailsOnce {
        inner: KernelSource::new(programs.clone(), KernelDomain::Filesystem)
            .expect("filesystem source"),
        trigger: trigger.clone(),
        runs: Default::default(),
    };
    let config = CollectorConfig::default()
        .with_source_restart_limit(3)
        .with_source_restart_backoff(Duration::from_millis(200));
    let mut collector = Collector::new(config).unwrap();
    collector.register_batch_source(Box::new(source)).unwrap();
    let opens = Arc::new(Opens {
        pid: actor.0.pid,
        path: path.clone(),
        seen: Mutex::new(0),
    });
    collector.add_sink(opens.clone());
    let handle = collector.handle();
    let run = tokio::spawn(collector.run());

    actor.round();
    opens.wait_past(0, "first run").await;
    trigger.cancel();
    // The restart loads (verifies) every filesystem program again: seconds under load.
    let restarted = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let status = handle.status();
            let fs = status.sources[0].clone();
            // Attached again: the new run has started.
            if fs.restarts == 1
                && !programs
                    .attached_programs(KernelDomain::Filesystem)
                    .is_empty()
            {
                return fs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("restarted within 60 s");
    assert!(
        restarted
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("injected failure")),
        "{restarted:?}"
    );
    let before = opens.seen();
    actor.round();
    opens.wait_past(before, "after the restart").await;
    assert_eq!(
        handle.status().sources[0].health,
        HealthState::Healthy,
        "its first batch made the new run healthy"
    );

    handle.shutdown();
    run.await.unwrap().unwrap();
}
