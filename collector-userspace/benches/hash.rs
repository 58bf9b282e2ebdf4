//! Executable hashing with the cache cold and warm (issue 11's benchmark).
//!
//! - cold: a fresh cache, so the file is read and hashed (SHA-256), page cache warm;
//! - warm, by path: open + fstat + cache lookup (what a worker does for a request whose
//!   file version was hashed before);
//! - warm, on the event: the lookup by the version the kernel read at the exec (what the
//!   drain does for each exec event).
//!
//! `cargo xtask bench` runs it; `HASH_FILE_MIB=N` sets the file size (default 32).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use collector_userspace::hash::{ExecutableHasher, FileKey, HashLimits};

fn main() {
    let mib: usize = std::env::var("HASH_FILE_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("binary");
    let mut f = std::fs::File::create(&path).unwrap();
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for _ in 0..mib {
        f.write_all(&block).unwrap();
    }
    drop(f);

    let rounds = 5;
    let started = Instant::now();
    for _ in 0..rounds {
        let hasher = ExecutableHasher::new(HashLimits::default(), 16);
        hasher.hash_path(&path, false).unwrap();
    }
    let cold = started.elapsed() / rounds;
    let mib_s = mib as f64 / cold.as_secs_f64();

    let hasher = ExecutableHasher::new(HashLimits::default(), 16);
    hasher.hash_path(&path, false).unwrap();
    let n = 100_000u32;
    let started = Instant::now();
    for _ in 0..n {
        hasher.hash_path(&path, false).unwrap();
    }
    let warm_path = started.elapsed() / n;

    let meta = std::fs::metadata(&path).unwrap();
    let key = FileKey::of(&meta);
    let started = Instant::now();
    for _ in 0..n {
        assert!(hasher.cached(std::hint::black_box(&key)).is_some());
    }
    let warm_event = started.elapsed() / n;
    println!(
        "hash: {mib} MiB file ({} bytes): cold {:.1} ms ({mib_s:.0} MiB/s); warm by path {:.2} µs; \
         warm on the event (lookup by the kernel's version) {:.3} µs",
        meta.size(),
        cold.as_secs_f64() * 1e3,
        warm_path.as_secs_f64() * 1e6,
        warm_event.as_secs_f64() * 1e6,
    );
}
