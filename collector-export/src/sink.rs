//! The exporter's face to the pipeline: an [`EventSink`] whose only work per batch is
//! encoding it and appending it to the spool in one write. Publishing happens on the
//! publisher's task, so a slow or absent NATS server never slows collection.

use std::sync::{Arc, Mutex};

use collector_core::config::ExportPayload;
use collector_core::{Delivery, EventBatch, EventSink};

use crate::message::{encode_payload, SubjectTemplate};
use crate::spool::{RecordBatch, Spool};

/// Appends every batch to the export spool.
pub struct ExportSink {
    spool: Arc<Spool>,
    template: SubjectTemplate,
    payload: ExportPayload,
    /// Reused buffers; only the pipeline's task delivers, so the lock is uncontended.
    scratch: Mutex<(RecordBatch, String)>,
}

impl ExportSink {
    /// A sink that spools into `spool`.
    pub fn new(spool: Arc<Spool>, template: SubjectTemplate, payload: ExportPayload) -> Self {
        Self {
            spool,
            template,
            payload,
            scratch: Mutex::new((RecordBatch::new(), String::new())),
        }
    }
}

impl EventSink for ExportSink {
    fn name(&self) -> &str {
        "export"
    }

    fn deliver(&self, batch: &EventBatch) -> Delivery {
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let (records, subject) = &mut *scratch;
        records.clear();
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let mut unencodable = 0;
        for event in batch.iter() {
            self.template.render_into(event, subject);
            if records
                .push(now, subject, |buf| encode_payload(self.payload, event, buf))
                .is_err()
            {
                // A subject over 64 KiB (a huge `source` name): not publishable.
                unencodable += 1;
            }
        }
        match self.spool.append(records) {
            Ok(_) if unencodable == 0 => Delivery::Accepted,
            Ok(_) => Delivery::Dropped(unencodable),
            Err(e) => {
                // Counted by the pipeline as this sink's drops (`sink_dropped.export`).
                tracing::error!("{}", collector_core::Report(&e));
                Delivery::Dropped(batch.len())
            }
        }
    }
}
