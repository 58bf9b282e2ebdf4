//! `ebpf-process`: exec, fork and exit events from the kernel programs.
//!
//! Hooks: `tp_btf/sched_process_{exec,fork,exit}` (Linux >= 5.5, kernel BTF required).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aya::maps::{MapData, RingBuf};
use collector_common::RecordKind;
use collector_core::event::SourceName;
use collector_core::{CollectionEvent, EventSource, SourceCaps, SourceStats};
use tokio::sync::mpsc;

use super::decode::decode_process;
use super::drain::{drain, DrainConfig, DrainStats};
use super::loader::{KernelPrograms, LoadError, PROCESS_PROGRAMS};

/// Source name.
pub const NAME: &str = "ebpf-process";

/// Process lifecycle from the kernel.
pub struct ProcessKernelSource {
    programs: Arc<KernelPrograms>,
    ring: Mutex<Option<RingBuf<MapData>>>,
    stats: Arc<DrainStats>,
    stop: Arc<AtomicBool>,
}

impl ProcessKernelSource {
    /// Takes the process ring buffer of loaded programs.
    pub fn new(programs: Arc<KernelPrograms>) -> Result<Self, LoadError> {
        let ring = programs.take_ring("PROCESS_EVENTS")?;
        Ok(Self {
            programs,
            ring: Mutex::new(Some(ring)),
            stats: Arc::default(),
            stop: Arc::default(),
        })
    }
}

#[async_trait]
impl EventSource for ProcessKernelSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> SourceCaps {
        SourceCaps::PROCESS | SourceCaps::KERNEL_LEVEL | SourceCaps::REALTIME | SourceCaps::SYSTEM_WIDE
    }

    async fn start(
        &self,
        tx: mpsc::Sender<CollectionEvent>,
        shutdown_signal: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        let ring = self
            .ring
            .lock()
            .expect("ring lock poisoned")
            .take()
            .ok_or_else(|| anyhow::anyhow!("{NAME} was already started"))?;
        let config = self.programs.config();
        let source: SourceName = NAME.into();
        drain(
            ring,
            move |bytes, clock| decode_process(bytes, clock, &source),
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
        self.programs.unload(PROCESS_PROGRAMS);
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
        for (kind, name) in [
            (RecordKind::Exec, "exec"),
            (RecordKind::Fork, "fork"),
            (RecordKind::Exit, "exit"),
        ] {
            let (emitted, lost) = self.programs.kernel_counts(kind);
            stats.kernel_emitted.insert(name.into(), emitted);
            stats.kernel_lost.insert(name.into(), lost);
        }
        let s = &self.stats;
        for (reason, counter) in [
            ("decode_error", &s.decode_errors),
            ("backpressure", &s.backpressure_drops),
            ("closed", &s.closed_drops),
        ] {
            stats.dropped.insert(reason.into(), counter.load(Ordering::Relaxed));
        }
        let hooks = self.programs.hooks();
        stats.hooks = PROCESS_PROGRAMS
            .iter()
            .filter_map(|p| hooks.get(p.name).map(|h| (p.name.to_string(), h.clone())))
            .collect();
        stats
    }
}
