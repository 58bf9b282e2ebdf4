//! collector-export: fleet export of collected events to NATS JetStream, at least once.
//!
//! Data flow, one module each:
//!
//! * [`sink`] — [`ExportSink`], the pipeline's sink: encodes each batch ([`message`]:
//!   subject from the template, protobuf or JSON payload) and appends it to the spool.
//!   That one write is all the work on the collection path.
//! * [`spool`] — the on-disk segment log under `<data_dir>/export-spool`, bounded in
//!   size, with the ack cursor; it survives restarts and SIGKILL.
//! * [`publisher`] — the task that connects, creates or checks the stream, publishes the
//!   spool in order with many messages in flight (`Nats-Msg-Id` = host id, spool epoch,
//!   sequence) and advances the ack cursor as acknowledgements arrive.
//! * [`consume`] — reads a stream back as JSON lines (`collector consume`).
//!
//! ```no_run
//! # async fn demo(collector: &mut collector_core::Collector) -> anyhow::Result<()> {
//! use collector_core::config::ExportConfig;
//! let config = ExportConfig {
//!     nats_servers: vec!["nats://127.0.0.1:4222".into()],
//!     ..ExportConfig::default()
//! };
//! let token = collector.handle().shutdown_token();
//! let exporter = collector_export::Exporter::start(&config, "/var/lib/collector".as_ref(), token)?;
//! collector.add_sink(exporter.sink());
//! // ... collector.run().await ...; exporter.status() for `collector status`
//! exporter.join().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod consume;
pub mod message;
pub mod nats_error;
pub mod publisher;
pub mod sink;
pub mod spool;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use collector_core::config::ExportConfig;
use collector_core::event::{ProcessEvent, ProcessEventKind};
use collector_core::{CollectionEvent, ExportStatus};
use tokio_util::sync::CancellationToken;

pub use message::SubjectTemplate;
pub use publisher::ExportError;
pub use sink::ExportSink;
pub use spool::{Spool, SpoolError};

/// The spool's directory under the collector's data directory.
pub fn spool_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("export-spool")
}

/// A running exporter: the sink to add to the collector, and the publisher task.
pub struct Exporter {
    sink: Arc<ExportSink>,
    status: ExportStatusHandle,
    task: tokio::task::JoinHandle<()>,
}

/// Reads the exporter's figures; cheap to clone, for status providers and metrics.
#[derive(Clone)]
pub struct ExportStatusHandle {
    spool: Arc<Spool>,
    state: Arc<publisher::PublishState>,
    servers: Vec<String>,
    stream: String,
}

impl Exporter {
    /// Opens the spool under `data_dir` and starts publishing (on the current tokio
    /// runtime) until `shutdown`. Fails only when the spool cannot be opened: a server
    /// that is down, refuses us or lacks JetStream is reported in [`status`](Self::status)
    /// and the log, and retried, while events keep going to the spool.
    pub fn start(
        config: &ExportConfig,
        data_dir: &Path,
        shutdown: CancellationToken,
    ) -> Result<Self, SpoolError> {
        let spool = Spool::open(&spool_dir(data_dir), config.spool_max_bytes)?;
        let host_id = config
            .host_id
            .clone()
            .unwrap_or_else(message::default_host_id);
        let template =
            SubjectTemplate::new(&config.subject_template, &message::hostname(), &host_id);
        let sample = CollectionEvent::from(ProcessEvent::new(
            ProcessEventKind::Exec,
            chrono::Utc::now(),
            1,
            "collector",
        ));
        let publisher_config = publisher::PublisherConfig {
            export: config.clone(),
            host_id: message::subject_token(&host_id),
            sample_subject: template.render(&sample),
        };
        let state = Arc::new(publisher::PublishState::default());
        let sink = Arc::new(ExportSink::new(
            Arc::clone(&spool),
            template,
            config.payload,
        ));
        let task = tokio::spawn(publisher::run(
            Arc::clone(&spool),
            publisher_config,
            Arc::clone(&state),
            shutdown,
        ));
        Ok(Self {
            sink,
            status: ExportStatusHandle {
                spool,
                state,
                servers: config.nats_servers.clone(),
                stream: config.stream.clone(),
            },
            task,
        })
    }

    /// The sink to register with the collector.
    pub fn sink(&self) -> Arc<ExportSink> {
        Arc::clone(&self.sink)
    }

    /// The spool (for tests and benchmarks).
    pub fn spool(&self) -> &Arc<Spool> {
        &self.status.spool
    }

    /// A handle that reads [`status`](ExportStatusHandle::status).
    pub fn status_handle(&self) -> ExportStatusHandle {
        self.status.clone()
    }

    /// Connection, spool and publish figures, as `collector status` shows them.
    pub fn status(&self) -> ExportStatus {
        self.status.status()
    }

    /// Waits for the publisher to stop (after the shutdown token fires).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

impl ExportStatusHandle {
    /// Connection, spool and publish figures, as `collector status` shows them.
    pub fn status(&self) -> ExportStatus {
        let spool = self.spool.stats();
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let mut dropped = std::collections::BTreeMap::new();
        if spool.dropped_full > 0 {
            dropped.insert("export_spool_full".to_owned(), spool.dropped_full);
        }
        ExportStatus {
            connected: self.state.connected.load(Ordering::Relaxed),
            servers: self.servers.clone(),
            stream: self.stream.clone(),
            spool_bytes: spool.bytes,
            spool_events: spool.unacked_events,
            oldest_unacked_age_seconds: spool
                .oldest_unacked_ns
                .map_or(0.0, |t| (now.saturating_sub(t)).max(0) as f64 / 1e9),
            spooled: spool.appended,
            published: self.state.published.load(Ordering::Relaxed),
            acked: self.state.acked.load(Ordering::Relaxed),
            published_events: self.state.published_events.load(Ordering::Relaxed),
            acked_events: self.state.acked_events.load(Ordering::Relaxed),
            duplicates: self.state.duplicates.load(Ordering::Relaxed),
            dropped,
            last_error: self
                .state
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
