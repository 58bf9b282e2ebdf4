//! SIGTERM to a real `collector run` in the middle of a storm loses nothing uncounted:
//! the subscriber receives exactly what the collector queued for it, then an
//! end-of-stream message, and every event the kernel emitted is either delivered or in
//! a loss counter of the final metrics.
//!
//! Needs root and BTF (it loads the kernel programs); skips otherwise, and fails instead
//! of skipping under `COLLECTOR_REQUIRE_KERNEL=1`.

mod common;

use common::kernel_or_skip;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use collector_core::event::Domain;
use collector_core::ipc::{CollectorIpcClient, SubscriptionItem};
use futures::StreamExt;

/// Sums of the Prometheus samples of `name`, keyed by the label text (`{...}`).
fn samples(text: &str, name: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (labels, v) = r.split_once("} ")?;
                    (labels.to_owned(), v)
                }
                None => (String::new(), rest.strip_prefix(' ')?),
            };
            Some((labels, value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

fn total(text: &str, name: &str) -> u64 {
    samples(text, name).values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_storm_delivers_everything_queued_and_counts_the_rest() {
    if !kernel_or_skip("sigterm_mid_storm_delivers_everything_queued_and_counts_the_rest") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let socket = dir.join("collector.sock");
    let metrics = dir.join("metrics.prom");
    let target = dir.join("storm-target");
    std::fs::write(&target, b"x").unwrap();

    let mut daemon = Command::new(env!("CARGO_BIN_EXE_collector"))
        .arg("run")
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--metrics-file")
        .arg(&metrics)
        .args(["--no-stdout", "--domain", "filesystem"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start collector run");

    // Loading and attaching the programs takes a while on a busy host.
    let started = Instant::now();
    let client = loop {
        if let Ok(c) = CollectorIpcClient::connect(&socket).await {
            break c;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "collector did not serve IPC within 60s"
        );
        if let Some(status) = daemon.try_wait().unwrap() {
            panic!("collector exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stream = client
        .subscribe::<&str>(&[Domain::Filesystem], &[])
        .await
        .unwrap();
    futures::pin_mut!(stream);

    // The storm: opens as fast as one thread goes, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let (stop, target) = (stop.clone(), target.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                drop(std::fs::File::open(&target).unwrap());
                n += 1;
            }
            n
        })
    };

    let (mut received, mut lagged, mut storm_events) = (0u64, 0u64, 0u64);
    let mut end = None;
    let mut terminated = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let item = match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
            Ok(item) => item,
            Err(_) => panic!("no item for 30s after {received} events"),
        };
        match item {
            Some(Ok(SubscriptionItem::Event(ev))) => {
                received += 1;
                if let collector_core::CollectionEvent::Filesystem(f) = &ev {
                    storm_events += u64::from(Path::new(&f.path) == target);
                }
            }
            Some(Ok(SubscriptionItem::Lagged { missed_events })) => lagged += missed_events,
            Some(Ok(SubscriptionItem::EndOfStream { events_queued })) => {
                end = Some(events_queued);
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("stream failed after {received} events: {e}"),
            None => panic!("stream ended without end-of-stream after {received} events"),
        }
        // SIGTERM in the middle of the storm, once events are flowing.
        if !terminated && storm_events >= 20_000 {
            let status = Command::new("kill")
                .args(["-TERM", &daemon.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            terminated = true;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let opens = storm.join().unwrap();
    assert!(
        terminated,
        "the storm never produced 20000 events ({storm_events})"
    );
    let events_queued = end.expect("end-of-stream received");

    let exit = tokio::task::spawn_blocking(move || daemon.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "collector run exited with {exit}");

    // What the collector queued for this subscriber arrived, all of it.
    assert_eq!(received, events_queued, "lagged {lagged}, opens {opens}");

    let text = std::fs::read_to_string(&metrics).expect("final metrics written");
    let emitted = total(&text, "collector_kernel_events_emitted_total");
    let kernel_lost = total(&text, "collector_kernel_events_lost_total");
    // The kernel source's own: `collector_events_delivered_total` counts every source's
    // events, and the performance source's samples (one within a second of the start,
    // then every 10 s) are not the kernel's.
    let of_kernel_source = |name: &str| -> u64 {
        samples(&text, name)
            .iter()
            .filter(|(labels, _)| labels.contains(r#"source="ebpf-filesystem""#))
            .map(|(_, n)| n)
            .sum()
    };
    let others = |name: &str| total(&text, name) - of_kernel_source(name);
    // What the other sources handed over reached the sinks unless dropped on the way.
    let others_delivered = others("collector_source_events_received_total")
        - others("collector_source_events_dropped_total");
    let source_dropped = of_kernel_source("collector_source_events_dropped_total");
    let delivered = total(&text, "collector_events_delivered_total") - others_delivered;
    let ipc_dropped: u64 = samples(&text, "collector_sink_events_dropped_total")
        .iter()
        .filter(|(labels, _)| labels.contains(r#"sink="ipc""#))
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "opens {opens} storm events {storm_events} received {received} lagged {lagged} \
         emitted {emitted} kernel_lost {kernel_lost} source_dropped {source_dropped} \
         delivered {delivered} ipc_dropped {ipc_dropped}"
    );
    // Every loss of this subscriber was counted once, by the IPC sink and the notices.
    assert_eq!(ipc_dropped, lagged);
    // Every event the kernel emitted was delivered to the sinks or is in a loss counter,
    // and nothing was delivered that the kernel did not emit. Known gap, measured here:
    // the unlink/rename programs keep counting records for a while after the domain is
    // detached (seen on 6.18 while other tests ran), records the drain, which ended
    // after reading every record submitted by then, cannot see. The storm's kind (open)
    // is exact, so it is checked as a lower bound.
    let open_emitted = samples(&text, "collector_kernel_events_emitted_total")
        .iter()
        .filter(|(labels, _)| labels.contains(r#"kind="open""#))
        .map(|(_, n)| n)
        .sum::<u64>();
    let open_lost = samples(&text, "collector_kernel_events_lost_total")
        .iter()
        .filter(|(labels, _)| labels.contains(r#"kind="open""#))
        .map(|(_, n)| n)
        .sum::<u64>();
    assert!(open_emitted > 0);
    assert!(
        delivered + source_dropped <= emitted - kernel_lost,
        "delivered {delivered} + dropped {source_dropped} > kernel emitted {emitted} - lost {kernel_lost}"
    );
    assert!(
        delivered + source_dropped >= open_emitted - open_lost,
        "opens: kernel emitted {open_emitted} - lost {open_lost} > delivered {delivered} + dropped {source_dropped}"
    );
}
