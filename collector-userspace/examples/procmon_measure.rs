//! Short measurements of the process monitor's building blocks (not a benchmark suite):
//!
//! - executable hashing: every distinct `/proc/<pid>/exe` hashed cold, then again from the
//!   cache;
//! - the process store: exec events written in batches of 1,000.
//!
//! `cargo run -p collector-userspace --example procmon_measure [--release]` (root sees every
//! executable).

use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::Utc;
use collector_core::event::{CollectionEvent, ProcessEvent, ProcessEventKind};
use collector_core::{EventBatch, EventSink};
use collector_userspace::hash::{ExecutableHasher, HashLimits};
use collector_userspace::store::{ProcessStore, StoreConfig};

fn main() -> anyhow::Result<()> {
    let pids: Vec<u32> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let hasher = ExecutableHasher::new(HashLimits::default(), 4096);
    for pass in ["cold", "warm"] {
        let started = Instant::now();
        let (mut ok, mut bytes) = (0u64, 0u64);
        for &pid in &pids {
            if let Ok(h) = hasher.hash_pid(pid) {
                ok += 1;
                bytes += h.size_bytes;
            }
        }
        let s = hasher.stats();
        println!(
            "hash {pass}: {ok} executables ({} MiB) in {:?}; cache hits {} misses {}",
            bytes / (1024 * 1024),
            started.elapsed(),
            s.hits.load(Ordering::Relaxed),
            s.misses.load(Ordering::Relaxed)
        );
    }

    let dir = tempfile::tempdir()?;
    let store = ProcessStore::open_in(dir.path(), StoreConfig::default())?;
    let (batches, per_batch) = (100u32, 1000u32);
    let started = Instant::now();
    for b in 0..batches {
        let batch: EventBatch = (0..per_batch)
            .map(|i| {
                let mut ev = ProcessEvent::new(
                    ProcessEventKind::Exec,
                    Utc::now(),
                    b * per_batch + i + 1,
                    "measure",
                );
                ev.executable_path = Some("/usr/bin/true".into());
                ev.command_line = vec!["true".into(), format!("{i}")];
                CollectionEvent::Process(ev.into())
            })
            .collect();
        while !matches!(store.deliver(&batch), collector_core::Delivery::Accepted) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    store.flush();
    let elapsed = started.elapsed();
    let n = u64::from(batches * per_batch);
    println!(
        "store: {n} exec records in {elapsed:?} = {:.0} records/s ({} written, {} commits)",
        n as f64 / elapsed.as_secs_f64(),
        store.counters().written_events.load(Ordering::Relaxed),
        store.counters().commits.load(Ordering::Relaxed)
    );
    Ok(())
}
