//! One [`EventSource`] per kernel domain, draining that domain's ring buffer:
//! `ebpf-process` (exec, fork, exit), `ebpf-network` (connect, accept, listen, close),
//! `ebpf-filesystem` (open, create, unlink, rename).
//!
//! Hooks and minimum kernels are documented on the kernel programs
//! (`collector-ebpf/src/{process,net,file}.rs`); BTF tracepoints need Linux >= 5.5 with
//! `CONFIG_DEBUG_INFO_BTF`, ring buffers Linux >= 5.8.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aya::maps::{MapData, RingBuf};
use collector_core::event::{ProcessEvent, ProcessEventKind, SourceName};
use collector_core::{
    BatchSender, BatchSource, CollectionEvent, EventSource, SourceCaps, SourceStats,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::catalogue::Shared;
use super::clock::BootClock;
use super::decode::{decode_filesystem, decode_network, decode_process, DecodeError};
use super::drain::{drain, ChannelOutlet, DrainConfig, DrainStats, KernelRing, Outlet};
use super::loader::{KernelDomain, KernelPrograms, LoadError};
use crate::exec_hash::HashService;
use crate::hash::FileKey;
use crate::ptable::ProcessTable;

type DecodeFn = fn(&[u8], &BootClock, &SourceName) -> Result<CollectionEvent, DecodeError>;

/// Events of one kernel domain.
pub struct KernelSource {
    domain: KernelDomain,
    programs: Arc<KernelPrograms>,
    ring: Mutex<Option<RingBuf<MapData>>>,
    stats: Arc<DrainStats>,
    stop: Arc<AtomicBool>,
    /// Cancelled by `stop`, so the drain wakes at once instead of at its next poll; a
    /// fresh one for each run (a restart after a failure).
    stop_token: Mutex<CancellationToken>,
    /// Fills network and filesystem events' `process` as they are decoded.
    process_table: Mutex<Option<Arc<ProcessTable>>>,
    /// Fills exec events' `executable_hash` (process domain, `compute_executable_hashes`).
    hashes: Mutex<Option<Arc<HashService>>>,
}

/// Holds the ring while a drain runs and gives it back to the source when the run ends
/// however it ends (an error, a panic, an abort), so that a restart drains the same ring:
/// what the programs submitted after a failed run and before `stop` detached them is
/// read by the next run.
struct RingLoan<'a> {
    home: &'a Mutex<Option<RingBuf<MapData>>>,
    ring: Option<KernelRing>,
}

impl Drop for RingLoan<'_> {
    fn drop(&mut self) {
        if let Some(ring) = self.ring.take() {
            *self.home.lock().unwrap_or_else(|e| e.into_inner()) = Some(ring.into_inner());
        }
    }
}

impl KernelSource {
    /// Attaches `domain`'s programs and takes its ring buffer.
    pub fn new(programs: Arc<KernelPrograms>, domain: KernelDomain) -> Result<Self, LoadError> {
        programs.attach(domain)?;
        let ring = programs.take_ring(domain.ring())?;
        Ok(Self {
            domain,
            programs,
            ring: Mutex::new(Some(ring)),
            stats: Arc::default(),
            stop: Arc::default(),
            stop_token: Mutex::new(CancellationToken::new()),
            process_table: Mutex::new(None),
            hashes: Mutex::new(None),
        })
    }

    /// Network and filesystem events get their `process` (key, image, parent) from
    /// `table` as they are decoded. Set before the source starts.
    pub fn set_process_table(&self, table: Arc<ProcessTable>) {
        *self.process_table.lock().unwrap_or_else(|e| e.into_inner()) = Some(table);
    }

    /// Exec events get their executable's digest from `hashes`' cache as they are
    /// decoded, or a hash request. Set before the source starts; process domain only.
    pub fn set_hash_service(&self, hashes: Arc<HashService>) {
        *self.hashes.lock().unwrap_or_else(|e| e.into_inner()) = Some(hashes);
    }

    /// The loaded kernel programs this source drains (shared by every domain).
    pub fn programs(&self) -> &Arc<KernelPrograms> {
        &self.programs
    }

    /// The domain.
    pub fn domain(&self) -> KernelDomain {
        self.domain
    }

    /// Userspace drain counters.
    pub fn drain_stats(&self) -> &DrainStats {
        &self.stats
    }

    /// The token `stop` cancels, fresh for this run when the last one was cancelled.
    fn fresh_stop_token(&self) -> CancellationToken {
        let mut token = self.stop_token.lock().unwrap_or_else(|e| e.into_inner());
        if token.is_cancelled() {
            *token = CancellationToken::new();
        }
        token.clone()
    }

    fn decoder(&self) -> DecodeFn {
        match self.domain {
            KernelDomain::Process => decode_process,
            KernelDomain::Network => decode_network,
            KernelDomain::Filesystem => decode_filesystem,
        }
    }
}

impl KernelSource {
    /// Takes the ring (once) and drains it into `out` until `stop` or `flag`.
    async fn run_drain(
        &self,
        out: impl Outlet,
        stop: impl std::future::Future<Output = ()> + Send,
        flag: Option<Arc<AtomicBool>>,
    ) -> anyhow::Result<()> {
        let name = self.name();
        let ring = self
            .ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| anyhow::anyhow!("{name} is already running"))?;
        let mut loan = RingLoan {
            home: &self.ring,
            ring: None,
        };
        let parker = super::drain::Parker::new(self.programs.clone(), self.domain.parked_slot());
        let ring = match KernelRing::new(ring) {
            Ok(ring) => loan.ring.insert(ring.with_parker(parker)),
            Err(e) => anyhow::bail!("cannot poll the {name} ring buffer: {e}"),
        };
        // A run after a failure: `stop` detached the programs; the ring kept what they
        // submitted before.
        if self.programs.attached_programs(self.domain).is_empty() {
            self.programs.attach(self.domain)?;
            tracing::info!(source = name, "kernel programs attached again");
        }
        self.stop.store(false, Ordering::Relaxed);
        let config = self.programs.config();
        let source: SourceName = name.into();
        let decode = self.decoder();
        let enrich = self.domain == KernelDomain::Process;
        let mut cache = super::enrich::ProcessCache::default();
        let mut memo = crate::ptable::ContextMemo::default();
        let table = match self.domain {
            KernelDomain::Process => None,
            _ => self
                .process_table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        let hashes = match self.domain {
            KernelDomain::Process => self
                .hashes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            _ => None,
        };
        let (domain, programs) = (self.domain, self.programs.clone());
        drain(
            ring,
            move |bytes, clock| {
                let version = hashes
                    .as_ref()
                    .and_then(|_| super::decode::exec_file_version(bytes));
                let mut ev = decode(bytes, clock, &source)?;
                if enrich {
                    if let CollectionEvent::Process(p) = &mut ev {
                        cache.enrich(p);
                        if let Some(hashes) = &hashes {
                            hash_exec(hashes, p, version);
                        }
                    }
                }
                if let Some(table) = &table {
                    table.enrich_with(&mut memo, &mut ev);
                }
                Ok(ev)
            },
            out,
            stop,
            flag,
            Some(Box::new(move || {
                domain
                    .kinds()
                    .iter()
                    .map(|&(kind, _)| programs.kernel_counts(kind).0)
                    .sum()
            })),
            self.stats.clone(),
            DrainConfig {
                poll_interval: config.poll_interval,
                parked_check: config.parked_check,
                max_send_wait: config.max_send_wait,
            },
        )
        .await
    }
}

/// The digest of an exec's executable from the cache, or a request for it. A script's
/// running image is its interpreter: the script file itself is hashed, by path, and its
/// digest always follows the event.
fn hash_exec(hashes: &HashService, ev: &mut ProcessEvent, version: Option<FileKey>) {
    if ev.kind != ProcessEventKind::Exec {
        return;
    }
    let path = ev.executable_path.clone().map(PathBuf::from);
    match (ev.interpreter.is_some(), path) {
        (true, Some(script)) => hashes.fill_script(ev, &script),
        (true, None) => {}
        // A path the kernel resolved is where the image is once the process is gone; a
        // string the caller passed (the walk failed) is not trusted for that.
        (false, path) => {
            let path = path.filter(|_| !ev.executable_path_user_supplied);
            hashes.fill(ev, version, path.as_deref());
        }
    }
}

/// One hop: batches go straight into the collector's shared queue.
#[async_trait]
impl BatchSource for KernelSource {
    async fn run_batches(
        &self,
        tx: BatchSender,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        // The programs were attached when the source was made, and the drain starts
        // now: up, even if the host is quiet and no record comes for a while.
        tx.ready();
        let own = self.fresh_stop_token();
        let stop = async move {
            tokio::select! {
                // Detach before the drain's last pass, so every record the programs
                // submitted is read (and nothing is submitted after it).
                () = shutdown.cancelled() => self.programs.detach(self.domain),
                () = own.cancelled() => {}
            }
        };
        self.run_drain(tx, stop, None).await
    }
}

/// The status line for programs found detached.
fn describe_link_check(check: &super::loader::LinkCheck) -> String {
    let mut parts = Vec::new();
    if !check.reattached.is_empty() {
        parts.push(format!(
            "kernel programs found detached from their hooks and attached again: {}",
            check.reattached.join(", ")
        ));
    }
    for (program, error) in &check.failed {
        parts.push(format!(
            "kernel program {program} is detached and could not be attached again: {error}"
        ));
    }
    parts.push("events their hooks saw while detached are lost and cannot be counted".to_owned());
    parts.join("; ")
}

/// Name of the source for `domain`.
pub fn source_name(domain: KernelDomain) -> &'static str {
    match domain {
        KernelDomain::Process => "ebpf-process",
        KernelDomain::Network => "ebpf-network",
        KernelDomain::Filesystem => "ebpf-filesystem",
    }
}

#[async_trait]
impl EventSource for KernelSource {
    fn name(&self) -> &'static str {
        source_name(self.domain)
    }

    fn capabilities(&self) -> SourceCaps {
        let domain = match self.domain {
            KernelDomain::Process => SourceCaps::PROCESS,
            KernelDomain::Network => SourceCaps::NETWORK,
            KernelDomain::Filesystem => SourceCaps::FILESYSTEM,
        };
        domain | SourceCaps::KERNEL_LEVEL | SourceCaps::REALTIME | SourceCaps::SYSTEM_WIDE
    }

    async fn start(
        &self,
        tx: mpsc::Sender<CollectionEvent>,
        shutdown_signal: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        let out = ChannelOutlet {
            tx,
            max_wait: self.programs.config().max_send_wait,
        };
        let stop = self.fresh_stop_token();
        self.run_drain(
            out,
            async move { stop.cancelled().await },
            Some(shutdown_signal),
        )
        .await
    }

    async fn stop(&self) -> anyhow::Result<()> {
        // Detach first: the drain's last pass then reads everything ever submitted.
        self.programs.detach(self.domain);
        self.stop.store(true, Ordering::Relaxed);
        self.stop_token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancel();
        Ok(())
    }

    /// Also checks that every program still has its link in the kernel, and attaches
    /// again any that lost it: the check that finds one fails (the source shows
    /// `degraded` with the programs named, until the next check passes).
    async fn health_check(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            anyhow::bail!("stopped");
        }
        let check = self.programs.check_links(self.domain)?;
        if check.is_clean() {
            return Ok(());
        }
        let message = describe_link_check(&check);
        tracing::warn!(source = self.name(), "{message}");
        anyhow::bail!(message)
    }

    fn stats(&self) -> SourceStats {
        let mut stats = SourceStats::default();
        for &(kind, name) in self.domain.kinds() {
            let (emitted, lost) = self.programs.kernel_counts(kind);
            stats.kernel_emitted.insert(name.into(), emitted);
            stats.kernel_lost.insert(name.into(), lost);
            // Other reasons, each under its own key (the plain name stays "ring full").
            let losses = self.programs.kernel_losses(kind);
            stats
                .kernel_lost
                .insert(format!("{name}/stash_full"), losses.stash_full);
            stats
                .kernel_lost
                .insert(format!("{name}/path_unreadable"), losses.path_unreadable);
            if kind == collector_common::RecordKind::Accept {
                stats
                    .kernel_lost
                    .insert(format!("{name}/fd_gone"), losses.fd_gone);
            }
        }
        if self.domain == KernelDomain::Network {
            // Losses that are not per record kind: a close that cannot be attributed,
            // a socket call not remembered, and closes the kernel skipped because
            // another BPF program was running on that CPU.
            for (name, n) in self.programs.network_counters() {
                if name == "owner_stale_evicted" {
                    // Not a loss: the entry of a freed sock, dropped so that it is never
                    // attributed to the sock born at the same address.
                    stats.dropped.insert(name.into(), n);
                } else {
                    stats.kernel_lost.insert(name.into(), n);
                }
            }
            if let Some(n) = self.programs.recursion_misses("inet_sock_set_state") {
                stats
                    .kernel_lost
                    .insert("inet_sock_set_state_recursion_misses".into(), n);
            }
        }
        let s = &self.stats;
        stats.dropped.insert(
            "decode_error".into(),
            s.decode_errors.load(Ordering::Relaxed),
        );
        // Only run through the plain trait does the drain itself drop for these reasons;
        // registered as a batch source the runtime counts them, and showing a second,
        // always-zero `backpressure` here would only confuse.
        for (reason, counter) in [
            ("backpressure", &s.backpressure_drops),
            ("closed", &s.closed_drops),
        ] {
            let n = counter.load(Ordering::Relaxed);
            if n > 0 {
                stats.dropped.insert(reason.into(), n);
            }
        }
        let reattached = self.programs.reattach_counts();
        // Its attached programs: a shared syscall program's reattaches count under
        // every source that uses it (each lost what its part would have seen).
        for program in self.programs.attached_programs(self.domain) {
            if let Some(&n) = reattached.get(program) {
                stats.reattached.insert(program.to_owned(), n);
            }
        }
        let hooks = self.programs.hooks();
        stats.hooks = self
            .programs
            .attached_programs(self.domain)
            .into_iter()
            // Its parts of the shared syscall programs, when it has them in their slots.
            .chain(
                Shared::ALL
                    .into_iter()
                    .filter_map(|s| self.domain.shared_part(s)),
            )
            .filter_map(|p| hooks.get(p).map(|h| (p.to_string(), h.clone())))
            .collect();
        stats
    }
}
