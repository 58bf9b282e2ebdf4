//! CPU the daemon spends per kernel event on its own path, outside the kernel and the
//! runtime: a ring record of the open storm (`open("/etc/hostname")` by a process the
//! process table knows) decoded, enriched from the table, encoded into an IPC frame as
//! the server does for one subscriber, then dropped. Timed in thread CPU time, so the
//! figure holds on a busy machine better than wall time.
//!
//! ```text
//! cargo build --profile bench -p collector-userspace --example event_cost
//! target/release/examples/event_cost            # 4000 batches of 256 events
//! ```
//!
//! Prints nanoseconds of CPU per event for each stage and for the whole.

use std::time::Duration;

use chrono::Utc;
use collector_common::{FileRecord, RecordHeader, RecordKind, PATH_FLAG_USER};
use collector_core::event::{CollectionEvent, ProcessEvent, ProcessEventKind, SourceName};
use collector_core::ipc::wire::{BatchEntries, EventBatchFrame};
use collector_userspace::ebpf::clock::BootClock;
use collector_userspace::ebpf::decode::decode_filesystem;
use collector_userspace::ptable::{ProcessTable, TableConfig};

const BATCH: usize = 256;
const PID: u32 = 4242;
const START_NS: u64 = 987_654_321_000;

/// CPU time (user + system) of this thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The record the kernel program writes for `open("/etc/hostname", O_RDONLY)` = 3.
fn open_record(ktime_ns: u64) -> Vec<u8> {
    let path = b"/etc/hostname";
    let mut comm = [0u8; 16];
    comm[..9].copy_from_slice(b"openstorm");
    let r = FileRecord {
        header: RecordHeader {
            kind: RecordKind::Open as u32,
            flags: 0,
            ktime_ns,
            pid: PID,
            tid: PID,
            uid: 0,
            gid: 0,
            cgroup_id: 1,
            process_start_ns: START_NS,
            comm,
        },
        result: 3,
        open_flags: 0,
        mode: 0,
        dirfd: -100,
        path_len: path.len() as u32,
        path_flags: PATH_FLAG_USER,
        file_flags: 0,
        owner_uid: 0,
        owner_gid: 0,
    };
    // SAFETY: FileRecord is repr(C) plain data.
    let fixed = unsafe {
        std::slice::from_raw_parts(
            (&r as *const FileRecord).cast::<u8>(),
            std::mem::size_of::<FileRecord>(),
        )
    };
    [fixed, path].concat()
}

fn main() {
    let batches: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let clock = BootClock::new();
    let source = SourceName::from("ebpf-filesystem");
    let table = ProcessTable::new(TableConfig::default());
    let mut exec = ProcessEvent::new(ProcessEventKind::Exec, Utc::now(), PID, "ebpf-process");
    exec.process_key = Some(format!("{PID}:{START_NS}").into());
    exec.ppid = Some(1);
    exec.name = Some("openstorm".into());
    exec.executable_path = Some("/usr/local/bin/openstorm".into());
    table.apply(&exec);
    // Consecutive kernel timestamps, 1 µs apart, as in a storm.
    let records: Vec<Vec<u8>> = (0..BATCH as u64)
        .map(|i| open_record(1_000_000_000_000 + i * 1000))
        .collect();

    let mut frame: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut entries = BatchEntries::new();
    let (mut decode, mut enrich, mut encode, mut drop) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let mut bytes = 0usize;
    let mut events: Vec<CollectionEvent> = Vec::with_capacity(BATCH);
    for _ in 0..batches {
        let t0 = thread_cpu();
        for r in &records {
            events.push(decode_filesystem(r, &clock, &source).expect("decodes"));
        }
        let t1 = thread_cpu();
        for ev in &mut events {
            table.enrich(ev);
        }
        let t2 = thread_cpu();
        entries.clear();
        entries.extend(&events);
        let batch = EventBatchFrame::new(entries.as_bytes());
        frame.clear();
        batch.write_payload(&mut frame);
        bytes += frame.len();
        std::hint::black_box(&frame);
        let t3 = thread_cpu();
        events.clear();
        let t4 = thread_cpu();
        decode += t1 - t0;
        enrich += t2 - t1;
        encode += t3 - t2;
        drop += t4 - t3;
    }
    let n = (batches * BATCH) as f64;
    let per = |d: Duration| d.as_nanos() as f64 / n;
    println!(
        "open event: decode {:.1} + enrich {:.1} + encode {:.1} + drop {:.1} = {:.1} ns CPU/event \
         ({} events, {:.0} bytes/event on the wire)",
        per(decode),
        per(enrich),
        per(encode),
        per(drop),
        per(decode + enrich + encode + drop),
        n,
        bytes as f64 / n
    );
}
