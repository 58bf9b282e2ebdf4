//! What the filesystem kernel tests share: a world-writable scratch directory for an
//! unprivileged actor, and the filesystem source running in this process, from which the
//! events of one pid are collected.
// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_core::event::FilesystemEvent;
use collector_core::{CollectionEvent, EventSource};
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms, KernelSource};
use tokio::sync::mpsc;

/// A temporary directory any user may write (the actor runs as `nobody`), and its
/// canonical path.
pub fn shared_dir() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dir = tmp.path().canonicalize().unwrap().display().to_string();
    (tmp, dir)
}

/// An actor run as `nobody` in a fresh [`shared_dir`], watched by the filesystem source.
pub struct ActorRun {
    /// The shared directory (removed when this is dropped).
    pub tmp: tempfile::TempDir,
    /// The actor's `key=value` output.
    pub out: std::collections::HashMap<String, String>,
    /// The actor's pid.
    pub pid: u32,
    /// The source that watched it, loaded before the actor started.
    pub watch: FsWatch,
}

/// Starts the filesystem source under `config`, runs `actor SCENARIO DIR nobody` in a
/// fresh shared directory, and checks that it ran unprivileged and that each of
/// `results` (call, result) is in its output.
pub fn run_watched(
    actor: &str,
    config: KernelConfig,
    scenario: &str,
    results: &[(&str, &str)],
) -> ActorRun {
    let (tmp, dir) = shared_dir();
    let watch = FsWatch::start(config);
    let out = collector_tests::run_actor(actor, &[scenario, &dir, "nobody"]);
    assert_eq!(out["uid"], "65534", "actor runs unprivileged");
    for (call, result) in results {
        assert_eq!(out[*call], *result, "{call}: {out:?}");
    }
    let pid = out["pid"].parse().expect("actor pid");
    ActorRun {
        tmp,
        out,
        pid,
        watch,
    }
}

/// The filesystem source, loaded with `config` and draining into a channel.
pub struct FsWatch {
    /// The loaded programs (their hooks, once the source has attached them).
    pub programs: Arc<KernelPrograms>,
    source: Arc<KernelSource>,
    rx: mpsc::Receiver<CollectionEvent>,
    shutdown: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl FsWatch {
    /// Loads the programs and starts the source.
    pub fn start(config: KernelConfig) -> Self {
        let programs = KernelPrograms::load(config).expect("load kernel programs");
        let source = Arc::new(
            KernelSource::new(programs.clone(), KernelDomain::Filesystem)
                .expect("filesystem source"),
        );
        let (tx, rx) = mpsc::channel(65536);
        let shutdown = Arc::new(AtomicBool::new(false));
        let task = {
            let (source, shutdown) = (source.clone(), shutdown.clone());
            tokio::spawn(async move { source.start(tx, shutdown).await })
        };
        Self {
            programs,
            source,
            rx,
            shutdown,
            task,
        }
    }

    /// File events of `pid` that `keep` accepts, in order, until `last` says the actor's
    /// last one arrived (bounded: 10 s); then stops the source.
    pub async fn collect(
        mut self,
        pid: u32,
        keep: impl Fn(&FilesystemEvent) -> bool,
        last: impl Fn(&FilesystemEvent) -> bool,
    ) -> Vec<FilesystemEvent> {
        let mut events = Vec::new();
        let rx = &mut self.rx;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(ev) = rx.recv().await {
                if let CollectionEvent::Filesystem(f) = ev {
                    if f.pid == pid && keep(&f) {
                        let done = last(&f);
                        events.push(*f);
                        if done {
                            return;
                        }
                    }
                }
            }
        })
        .await;
        self.source.stop().await.unwrap();
        self.shutdown.store(true, Ordering::Relaxed);
        self.task.await.unwrap().unwrap();
        // Printed with a failing test's output: whether a missing event was counted lost
        // (in the kernel, by reason, or by the drain) or vanished.
        let stats = self.source.stats();
        let nonzero = |m: std::collections::BTreeMap<String, u64>| {
            m.into_iter().filter(|&(_, n)| n > 0).collect::<Vec<_>>()
        };
        eprintln!(
            "filesystem source losses: kernel {:?}, drain {:?}",
            nonzero(stats.kernel_lost),
            nonzero(stats.dropped)
        );
        events
    }
}

/// A kernel source started by [`start_kernel_sources`]: its domain, the source, and
/// the task running it.
pub type RunningSource = (
    KernelDomain,
    Arc<KernelSource>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

/// The kernel sources of `domains` on one set of loaded programs, each attached and
/// started into `tx` (in this order), stopping when `shutdown` is set.
pub fn start_kernel_sources(
    programs: &Arc<KernelPrograms>,
    domains: &[KernelDomain],
    tx: &mpsc::Sender<CollectionEvent>,
    shutdown: &Arc<AtomicBool>,
) -> Vec<RunningSource> {
    domains
        .iter()
        .map(|&domain| {
            let source = Arc::new(
                KernelSource::new(programs.clone(), domain)
                    .expect("attach the domain's kernel programs"),
            );
            let (s, tx, flag) = (source.clone(), tx.clone(), shutdown.clone());
            let task = tokio::spawn(async move { s.start(tx, flag).await });
            (domain, source, task)
        })
        .collect()
}
