//! Events the benches share.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use collector_core::event::{FilesystemEvent, FilesystemEventKind, ProcessContext};
use collector_core::CollectionEvent;

/// An open as the kernel source reports it in an open storm: the path resolved in the
/// kernel, the opener's context shared with its other events.
pub fn open_event(path: String, process: Arc<ProcessContext>) -> CollectionEvent {
    let ts = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
    let kind = FilesystemEventKind::Open;
    let mut open = FilesystemEvent::new(kind, ts, 4244, "ebpf-filesystem", path);
    (open.flags, open.mode, open.result, open.uid) = (Some(0), Some(0), Some(3), Some(1000));
    open.name = Some("collector-test".into());
    open.path_user_supplied = false;
    open.process_key = Some("4244:987654323000".into());
    open.process = Some(process);
    CollectionEvent::from(open)
}
