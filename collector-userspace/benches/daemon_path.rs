//! The daemon's CPU per kernel event, without the kernel and the runtime's hops: what a
//! filesystem source's drain loop does with each open record the kernel submitted
//! (decode, the process table's context), and what an IPC connection does with each
//! batch of 100 (encode, frame with its CRC32). One process opening files, as in
//! the open storm: once a process the table knows (its exec was seen), once one it does
//! not (a daemon with the filesystem domain alone, as `cargo xtask storm open` runs it).
//!
//! `cargo bench -p collector-userspace --bench daemon_path` (`DAEMON_PATH_EVENTS=N`,
//! default 1 M). Deterministic enough for `valgrind --tool=callgrind` (instructions per
//! event), which the VM's noise is not.

use std::time::Instant;

use bytes::BytesMut;
use chrono::{TimeZone, Utc};
use collector_common::{FileRecord, RecordHeader, RecordKind};
use collector_core::event::{ProcessEvent, ProcessEventKind, SourceName};
use collector_core::ipc::codec::EnvelopeCodec;
use collector_core::ipc::wire::{BatchEntries, EventBatchFrame};
use collector_core::CollectionEvent;
use collector_userspace::ebpf::clock::BootClock;
use collector_userspace::ebpf::decode::decode_filesystem;
use collector_userspace::ptable::{ContextMemo, ProcessTable, TableConfig};
use tokio_util::codec::Encoder;

/// The allocator the daemon ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PID: u32 = 4244;
const START_NS: u64 = 987_654_323_000;
const BATCH: usize = 100;

/// The bytes the kernel submits for a successful `open` of `path`.
fn open_record(path: &str) -> Vec<u8> {
    let mut comm = [0u8; 16];
    comm[..14].copy_from_slice(b"collector-test");
    let record = FileRecord {
        header: RecordHeader {
            kind: RecordKind::Open as u32,
            flags: 0,
            ktime_ns: 5_000_000_000,
            pid: PID,
            tid: PID,
            uid: 1000,
            gid: 1000,
            cgroup_id: 4242,
            process_start_ns: START_NS,
            comm,
        },
        result: 3,
        open_flags: 0,
        mode: 0,
        dirfd: -100,
        path_len: path.len() as u32,
        path_flags: 0,
        file_flags: 0,
        owner_uid: 0,
        owner_gid: 0,
    };
    // SAFETY: the record is plain old data, as the kernel writes it.
    let mut bytes = unsafe {
        std::slice::from_raw_parts((&raw const record).cast::<u8>(), size_of::<FileRecord>())
    }
    .to_vec();
    bytes.extend_from_slice(path.as_bytes());
    bytes
}

/// The opener's exec, as the process source applies it to the table.
fn exec() -> ProcessEvent {
    let ts = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let mut e = ProcessEvent::new(ProcessEventKind::Exec, ts, PID, "ebpf-process");
    e.ppid = Some(4242);
    e.start_time = Some(ts);
    e.process_key = Some(format!("{PID}:{START_NS}").into());
    e.executable_path = Some("/usr/bin/collector-test-actor".into());
    e.name = Some("collector-test".into());
    e.command_line = vec!["collector-test-actor".into(), "opens".into()];
    e
}

fn main() {
    let n: usize = std::env::var("DAEMON_PATH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let records: Vec<Vec<u8>> = (0..1024)
        .map(|i| open_record(&format!("/tmp/collector-storm/file-{i}")))
        .collect();
    run(&records, n, true);
    run(&records, n, false);
}

/// `n` events of `records` through the path, by a process the table knows or not.
fn run(records: &[Vec<u8>], n: usize, known: bool) {
    let table = ProcessTable::new(TableConfig::default());
    if known {
        table.apply(&exec());
    }
    let clock = BootClock::new();
    let source: SourceName = "ebpf-filesystem".into();
    let mut memo = ContextMemo::default();
    let mut codec = EnvelopeCodec::default();
    let mut frame = BytesMut::with_capacity(1 << 20);
    let mut batch: Vec<CollectionEvent> = Vec::with_capacity(BATCH);
    let mut entries = BatchEntries::new();
    let (mut enriched, mut bytes) = (0usize, 0usize);
    let started = Instant::now();
    for i in 0..n {
        let mut ev = decode_filesystem(&records[i % records.len()], &clock, &source)
            .expect("a well-formed record");
        table.enrich_with(&mut memo, &mut ev);
        if matches!(&ev, CollectionEvent::Filesystem(f) if f.process.is_some()) {
            enriched += 1;
        }
        batch.push(ev);
        if batch.len() == BATCH || i + 1 == n {
            entries.clear();
            entries.extend(&batch);
            codec
                .encode(EventBatchFrame::new(entries.as_bytes()), &mut frame)
                .expect("a frame under the size limit");
            bytes += frame.len();
            frame.clear();
            batch.clear();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(enriched, if known { n } else { 0 }, "the table's answer");
    let whose = if known { "known" } else { "unknown" };
    println!(
        "daemon path (decode, context, encode), {whose} process: {n} open events in {secs:.3} s = {:.0} ns/event, {:.2} M events/s on one core ({:.0} frame bytes/event)",
        secs * 1e9 / n as f64,
        n as f64 / secs / 1e6,
        bytes as f64 / n as f64
    );
}
