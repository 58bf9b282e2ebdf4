//! An idle ring's reader parks (stops polling) and the programs wake it at the next
//! record: on the real kernel, the open that follows a quiet spell is delivered by that
//! wakeup, not found by a timer.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use collector_core::event::FilesystemEventKind;
use collector_core::{CollectionEvent, EventSource};
use collector_tests::{kernel_or_skip, Announced};
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms, KernelSource};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_reader_is_woken_by_the_next_open() {
    if !kernel_or_skip("a_parked_reader_is_woken_by_the_next_open") {
        return;
    }
    // Only the actor is recorded, so the ring is quiet until it opens: the reader parks
    // whatever else the host is doing. No parked check within the test: only the
    // programs' wakeup can deliver the open (under load a check could otherwise find the
    // record first, before the woken reader runs).
    let programs = KernelPrograms::load(KernelConfig {
        include_only: true,
        parked_check: Duration::from_secs(3600),
        ..KernelConfig::default()
    })
    .expect("load kernel programs");
    let source = Arc::new(
        KernelSource::new(programs.clone(), KernelDomain::Filesystem).expect("filesystem source"),
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().display().to_string();
    let Announced {
        mut child,
        pid,
        mut stdin,
        stdout: _stdout,
    } = Announced::spawn(
        env!("CARGO_BIN_EXE_collector-test-actor"),
        &["opens-per-line", &path],
    );
    programs.include_pid(pid).unwrap();

    let (tx, mut rx) = mpsc::channel(1024);
    let shutdown = Arc::new(AtomicBool::new(false));
    let task = {
        let (source, shutdown) = (source.clone(), shutdown.clone());
        tokio::spawn(async move { source.start(tx, shutdown).await })
    };
    let stats = || {
        let s = source.drain_stats();
        (
            s.parks.load(Ordering::Relaxed),
            s.parked_wakeups.load(Ordering::Relaxed),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats().0 == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        stats(),
        (1, 0),
        "parked once, after 10 empty ticks (10 ms each)"
    );
    // Parked: no timer runs.

    writeln!(stdin, "round").unwrap();
    let open = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = rx.recv().await {
            if let CollectionEvent::Filesystem(f) = ev {
                if f.pid == pid && f.path == path {
                    return Some(f);
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("the open after the quiet spell is delivered");
    assert_eq!(open.kind, FilesystemEventKind::Open);
    assert!(open.result.unwrap() >= 0);
    assert!(!open.path_user_supplied && !open.path_truncated && !open.path_unreadable);
    // The drain counts the wakeup after it has handed the event over.
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats().1 == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (parks, woken) = stats();
    assert_eq!(
        (parks, woken),
        (1, 1),
        "the open's record woke the parked reader (a parked check that found it would not count)"
    );

    drop(stdin);
    assert!(child.wait().unwrap().success());
    source.stop().await.unwrap();
    shutdown.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();
}
