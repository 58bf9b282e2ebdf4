//! What the IPC server needs from the running collector: its status and live capabilities.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::caps::SourceCaps;
use crate::status::{PipelineCounters, StatusSnapshot};

/// Read access to the collector for the IPC server.
pub trait StatusProvider: Send + Sync + 'static {
    /// A current status snapshot.
    fn status(&self) -> StatusSnapshot;

    /// The aggregated capabilities, updated when a source registers or unregisters.
    fn watch_capabilities(&self) -> watch::Receiver<SourceCaps>;

    /// Told the number of connected subscribers whenever it changes, for the status
    /// `counters.subscribers` gauge. The default ignores it.
    fn set_subscribers(&self, _subscribers: u64) {}
}

impl StatusProvider for crate::collector::CollectorHandle {
    fn status(&self) -> StatusSnapshot {
        crate::collector::CollectorHandle::status(self)
    }

    fn watch_capabilities(&self) -> watch::Receiver<SourceCaps> {
        crate::collector::CollectorHandle::watch_capabilities(self)
    }

    fn set_subscribers(&self, subscribers: u64) {
        crate::collector::CollectorHandle::set_subscribers(self, subscribers);
    }
}

/// A [`StatusProvider`] whose values are set by hand: for tests, benchmarks and embedding
/// the IPC server without a full collector.
#[derive(Clone)]
pub struct ManualStatus {
    caps: Arc<watch::Sender<SourceCaps>>,
    snapshot: Arc<Mutex<StatusSnapshot>>,
}

impl ManualStatus {
    /// Starts with `caps` and an otherwise empty status.
    pub fn new(caps: SourceCaps) -> Self {
        let snapshot = StatusSnapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            component_name: "collector".to_string(),
            uptime_seconds: 0.0,
            capabilities: caps,
            sources: Vec::new(),
            counters: PipelineCounters::default(),
            export: None,
            domains: Vec::new(),
            processes: None,
        };
        Self {
            caps: Arc::new(watch::Sender::new(caps)),
            snapshot: Arc::new(Mutex::new(snapshot)),
        }
    }

    /// Changes the capabilities (subscribers get a `CapabilityUpdate`).
    pub fn set_capabilities(&self, caps: SourceCaps) {
        self.lock().capabilities = caps;
        self.caps.send_replace(caps);
    }

    /// Replaces the snapshot (its capabilities are published too).
    pub fn set_status(&self, snapshot: StatusSnapshot) {
        let caps = snapshot.capabilities;
        *self.lock() = snapshot;
        self.caps.send_replace(caps);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusSnapshot> {
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StatusProvider for ManualStatus {
    fn status(&self) -> StatusSnapshot {
        self.lock().clone()
    }

    fn watch_capabilities(&self) -> watch::Receiver<SourceCaps> {
        self.caps.subscribe()
    }
}
