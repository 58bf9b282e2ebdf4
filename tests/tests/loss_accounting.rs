//! With a deliberately tiny ring buffer and a reader that starts late, every open the
//! actor made is either delivered or counted lost by the kernel: generated - delivered
//! = counted lost, exactly.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_common::RecordKind;
use collector_core::event::FilesystemEventKind;
use collector_core::{CollectionEvent, EventSource};
use collector_tests::{kernel_or_skip, Announced};
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms, KernelSource};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_ring_losses_are_counted_exactly() {
    if !kernel_or_skip("tiny_ring_losses_are_counted_exactly") {
        return;
    }
    const OPENS: u64 = 2000;
    let programs = KernelPrograms::load(KernelConfig {
        // One page: room for about a dozen file records.
        file_ring_bytes: 4096,
        // A watermark must sit below the ring's size (the loader refuses it otherwise).
        file_wakeup_bytes: 1024,
        include_only: true,
        ..KernelConfig::default()
    })
    .expect("load kernel programs");
    let source = Arc::new(
        KernelSource::new(programs.clone(), KernelDomain::Filesystem).expect("filesystem source"),
    );
    let (lost_before, emitted_before) = {
        let (e, l) = programs.kernel_counts(RecordKind::Open);
        (l, e)
    };

    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().display().to_string();
    let mut actor = Announced::spawn(
        env!("CARGO_BIN_EXE_collector-test-actor"),
        &["opens-after-go", &path, &OPENS.to_string()],
    );
    let pid = actor.pid;
    programs.include_pid(pid).unwrap();
    // The reader has not started: the ring fills after a dozen records.
    writeln!(actor.stdin, "go").unwrap();
    assert!(actor.child.wait().unwrap().success());

    let (tx, mut rx) = mpsc::channel(65536);
    let shutdown = Arc::new(AtomicBool::new(false));
    let task = {
        let (source, shutdown) = (source.clone(), shutdown.clone());
        tokio::spawn(async move { source.start(tx, shutdown).await })
    };
    let mut delivered = 0u64;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        if let CollectionEvent::Filesystem(f) = ev {
            if f.pid == pid && f.kind == FilesystemEventKind::Open && f.path == path {
                delivered += 1;
            }
        }
    }
    let (emitted_after, lost_after) = programs.kernel_counts(RecordKind::Open);
    let lost = lost_after - lost_before;
    let emitted = emitted_after - emitted_before;
    source.stop().await.unwrap();
    shutdown.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();

    assert!(lost > 0, "a 4 KiB ring must overflow under {OPENS} opens");
    assert!(delivered > 0, "the records that fit were delivered");
    assert_eq!(
        emitted, delivered,
        "every record the kernel submitted reached the source"
    );
    assert_eq!(
        OPENS - delivered,
        lost,
        "generated - delivered = counted lost"
    );
    let drops = source.stats().dropped;
    assert!(
        drops.values().all(|&n| n == 0),
        "no userspace drops: {drops:?}"
    );
}
