//! Process store writes per second, in batches, as the pipeline hands them over (issue
//! 11's benchmark: at least 50,000 records/s). Each process gets an exec (a record, an exec
//! log row and a history row) and an exit (a history row); every transaction is durable.
//!
//! `cargo xtask bench` runs it; `STORE_EXECS=N` sets the number of processes (default
//! 100,000), `STORE_BATCH=N` the batch size (default 1,000).

use std::time::Instant;

use chrono::Utc;
use collector_core::event::{ProcessEvent, ProcessEventKind};
use collector_core::{CollectionEvent, Delivery, EventBatch, EventSink};
use collector_userspace::store::{ProcessStore, StoreConfig};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let execs = env("STORE_EXECS", 100_000);
    let batch_size = env("STORE_BATCH", 1_000);
    let dir = tempfile::tempdir().unwrap();
    let store = ProcessStore::open_in(
        dir.path(),
        StoreConfig {
            history_max_records: 10_000_000,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let now = Utc::now();
    let mut events = Vec::with_capacity(execs * 2);
    for i in 0..execs {
        let pid = 10_000 + i as u32;
        let mut exec = ProcessEvent::new(ProcessEventKind::Exec, now, pid, "ebpf-process");
        exec.ppid = Some(1);
        exec.uid = Some(1000);
        exec.gid = Some(1000);
        exec.name = Some("worker".into());
        exec.executable_path = Some("/usr/bin/worker".into());
        exec.command_line = vec!["worker".into(), "--id".into(), i.to_string()];
        exec.start_time = Some(now);
        exec.process_key = Some(format!("{pid}:{}", 1_000_000 + i).into());
        let mut exit = ProcessEvent::new(ProcessEventKind::Exit, now, pid, "ebpf-process");
        exit.exit_code = Some(0);
        exit.start_time = Some(now);
        exit.process_key = exec.process_key.clone();
        events.push(CollectionEvent::from(exec));
        events.push(CollectionEvent::from(exit));
    }
    let batches: Vec<EventBatch> = events
        .chunks(batch_size)
        .map(|c| c.to_vec().into())
        .collect();
    let started = Instant::now();
    let mut refused = 0;
    for batch in &batches {
        // The pipeline never waits on a sink; a full queue is a counted drop. Here the
        // producer retries, to measure what the writer sustains.
        while let Delivery::Dropped(_) = store.deliver(batch) {
            refused += 1;
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
    store.flush();
    let took = started.elapsed();
    let written = store
        .counters()
        .written_events
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(written as usize, events.len());
    println!(
        "store: {} records ({execs} execs + exits) in batches of {batch_size}: {:.2} s, {:.0} records/s ({refused} full-queue retries)",
        events.len(),
        took.as_secs_f64(),
        events.len() as f64 / took.as_secs_f64()
    );
}
