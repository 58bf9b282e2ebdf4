//! One [`EventSource`] per kernel domain, draining that domain's ring buffer:
//! `ebpf-process` (exec, fork, exit), `ebpf-network` (connect, accept, listen, close),
//! `ebpf-filesystem` (open, create, unlink, rename).
//!
//! Hooks and minimum kernels are documented on the kernel programs
//! (`collector-ebpf/src/{process,net,file}.rs`); BTF tracepoints need Linux >= 5.5 with
//! `CONFIG_DEBUG_INFO_BTF`, ring buffers Linux >= 5.8.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aya::maps::{MapData, RingBuf};
use collector_core::event::SourceName;
use collector_core::{CollectionEvent, EventSource, SourceCaps, SourceStats};
use tokio::sync::mpsc;

use super::clock::BootClock;
use super::decode::{decode_filesystem, decode_network, decode_process, DecodeError};
use super::drain::{drain, DrainConfig, DrainStats};
use super::loader::{KernelDomain, KernelPrograms, LoadError};

type DecodeFn = fn(&[u8], &BootClock, &SourceName) -> Result<CollectionEvent, DecodeError>;

/// Events of one kernel domain.
pub struct KernelSource {
    domain: KernelDomain,
    programs: Arc<KernelPrograms>,
    ring: Mutex<Option<RingBuf<MapData>>>,
    stats: Arc<DrainStats>,
    stop: Arc<AtomicBool>,
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
        })
    }

    /// The domain.
    pub fn domain(&self) -> KernelDomain {
        self.domain
    }

    /// Userspace drain counters.
    pub fn drain_stats(&self) -> &DrainStats {
        &self.stats
    }

    fn decoder(&self) -> DecodeFn {
        match self.domain {
            KernelDomain::Process => decode_process,
            KernelDomain::Network => decode_network,
            KernelDomain::Filesystem => decode_filesystem,
        }
    }
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
        let name = self.name();
        let ring = self
            .ring
            .lock()
            .expect("ring lock poisoned")
            .take()
            .ok_or_else(|| anyhow::anyhow!("{name} was already started"))?;
        let config = self.programs.config();
        let source: SourceName = name.into();
        let decode = self.decoder();
        let enrich = self.domain == KernelDomain::Process;
        let mut cache = super::enrich::ProcessCache::default();
        drain(
            ring,
            move |bytes, clock| {
                let mut ev = decode(bytes, clock, &source)?;
                if enrich {
                    if let CollectionEvent::Process(p) = &mut ev {
                        cache.enrich(p);
                    }
                }
                Ok(ev)
            },
            tx,
            shutdown_signal,
            self.stop.clone(),
            self.stats.clone(),
            DrainConfig {
                poll_interval: config.poll_interval,
                max_send_wait: config.max_send_wait,
            },
        )
        .await
    }

    async fn stop(&self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.programs.detach(self.domain);
        Ok(())
    }

    async fn health_check(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            anyhow::bail!("stopped");
        }
        Ok(())
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
        }
        let s = &self.stats;
        for (reason, counter) in [
            ("decode_error", &s.decode_errors),
            ("backpressure", &s.backpressure_drops),
            ("closed", &s.closed_drops),
        ] {
            stats
                .dropped
                .insert(reason.into(), counter.load(Ordering::Relaxed));
        }
        let hooks = self.programs.hooks();
        stats.hooks = self
            .programs
            .attached_programs(self.domain)
            .into_iter()
            .filter_map(|p| hooks.get(p).map(|h| (p.to_string(), h.clone())))
            .collect();
        stats
    }
}
