//! CPU cost of the IPC hot path per event, for comparing builds on a busy machine where
//! criterion's wall-clock figures swing: a fixed amount of work, timed in CPU time
//! (`getrusage`), so other processes' load changes the result much less.
//!
//! ```text
//! cargo run --release -p collector-core --example ipc_cost            # both parts
//! perf stat -e instructions:u target/release/examples/ipc_cost codec  # instructions
//! ```
//!
//! - `codec`: 256-event batch frames encoded as the server does, then decoded and
//!   dropped as a subscriber does; nanoseconds of CPU per event for each side.
//! - `socket`: events through `IpcSink` -> server -> Unix socket -> client stream (the
//!   `ipc` bench's `events_to_one_subscriber`), CPU per event of the whole process and
//!   events per second of wall time.
//! - `socket-open`: the same with the open storm's events (see `subscriber`).
//! - `subscriber`: what `collector events` does per event of the open storm (a
//!   filesystem `open` with its process context): decode a 256-event frame, write each
//!   event as a JSON line into a reused buffer, drop it; nanoseconds of CPU per event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chrono::Utc;
use collector_core::event::{
    CollectionEvent, FilesystemEvent, FilesystemEventKind, ProcessContext, ProcessEvent,
    ProcessEventKind,
};
use collector_core::ipc::codec::{ClientCodec, EnvelopeCodec, Inbound};
use collector_core::ipc::wire::{BatchEntries, EventBatchFrame};
use collector_core::ipc::{
    CollectorIpcClient, CollectorIpcServer, IpcServerConfig, IpcSink, ManualStatus,
    SubscriptionItem,
};
use collector_core::{EventBatch, EventSink, SourceCaps};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::codec::{Decoder, Encoder};

const EVENTS_PER_BATCH: usize = 256;

fn exec_event(pid: u32) -> CollectionEvent {
    let mut e = ProcessEvent::new(ProcessEventKind::Exec, Utc::now(), pid, "ebpf-process");
    e.ppid = Some(1);
    e.uid = Some(1000);
    e.gid = Some(1000);
    e.name = Some("bash".into());
    e.executable_path = Some("/usr/bin/bash".into());
    e.command_line = vec!["bash".into(), "-c".into(), "true".into()];
    e.start_time = Some(Utc::now());
    e.cgroup_id = Some(4242);
    CollectionEvent::Process(e.into())
}

/// An event of the open storm: `open("/etc/hostname")` by a process the table knows.
fn open_event(n: u32, process: &Arc<ProcessContext>) -> CollectionEvent {
    CollectionEvent::from(FilesystemEvent {
        kind: FilesystemEventKind::Open,
        timestamp: Utc::now(),
        pid: 4242,
        source: "ebpf-filesystem".into(),
        path: "/etc/hostname".into(),
        new_path: None,
        path_relative: false,
        flags: Some(0),
        mode: Some(0),
        result: Some(3),
        uid: Some(0),
        name: Some("openstorm".into()),
        path_truncated: false,
        path_unreadable: false,
        path_user_supplied: n.is_multiple_of(2),
        compat_syscall: false,
        owner_uid: None,
        owner_gid: None,
        process_key: Some(process.process_key.as_str().into()),
        path_changed: false,
        new_path_truncated: false,
        new_path_unreadable: false,
        new_path_user_supplied: false,
        new_path_changed: false,
        io_uring: false,
        device_major: None,
        device_minor: None,
        length: None,
        xattr_name: None,
        fd_raced: false,
        process: Some(process.clone()),
    })
}

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

/// CPU time (user + system) of the whole process.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn codec(frames: usize) {
    let originals: Vec<CollectionEvent> = (0..EVENTS_PER_BATCH as u32).map(exec_event).collect();
    let mut server = EnvelopeCodec::default();
    let mut client = ClientCodec::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let (mut encode, mut decode) = (Duration::ZERO, Duration::ZERO);
    let mut entries = BatchEntries::new();
    for _ in 0..frames {
        let t0 = thread_cpu();
        entries.clear();
        entries.extend(&originals);
        server
            .encode(EventBatchFrame::new(entries.as_bytes()), &mut buf)
            .unwrap();
        let t1 = thread_cpu();
        match client.decode(&mut buf).unwrap().unwrap() {
            Inbound::Events(mut batch) => {
                // As a consumer does: takes each event, then drops it.
                for ev in batch.events.drain(..) {
                    std::hint::black_box(ev);
                }
                client.recycle(batch.events);
            }
            other => panic!("unexpected {other:?}"),
        }
        let t2 = thread_cpu();
        encode += t1 - t0;
        decode += t2 - t1;
    }
    let events = (frames * EVENTS_PER_BATCH) as f64;
    println!(
        "codec: encode {:.1} ns/event, decode+drop {:.1} ns/event ({} events)",
        encode.as_nanos() as f64 / events,
        decode.as_nanos() as f64 / events,
        events
    );
}

/// The open storm's process, as the daemon's table describes it.
fn storm_process() -> Arc<ProcessContext> {
    Arc::new(ProcessContext {
        process_key: "4242:987654321000".into(),
        executable_path: Some("/usr/local/bin/openstorm".into()),
        exec_name: Some("openstorm".into()),
        ppid: Some(1),
        parent_process_key: Some("1:5000000".into()),
    })
}

fn subscriber(frames: usize) {
    let process = storm_process();
    let originals: Vec<CollectionEvent> = (0..EVENTS_PER_BATCH as u32)
        .map(|n| open_event(n, &process))
        .collect();
    let mut entries = BatchEntries::new();
    entries.extend(&originals);
    let mut frame = BytesMut::new();
    EnvelopeCodec::default()
        .encode(EventBatchFrame::new(entries.as_bytes()), &mut frame)
        .unwrap();
    let frame = frame.freeze();
    let mut client = ClientCodec::default();
    let mut out: Vec<u8> = Vec::with_capacity(256 << 10);
    let (mut decode, mut json) = (Duration::ZERO, Duration::ZERO);
    let mut bytes = 0usize;
    for _ in 0..frames {
        let mut buf = BytesMut::from(&frame[..]);
        let t0 = thread_cpu();
        let batch = match client.decode(&mut buf).unwrap().unwrap() {
            Inbound::Events(batch) => batch,
            other => panic!("unexpected {other:?}"),
        };
        let t1 = thread_cpu();
        let mut events = batch.events;
        for ev in events.drain(..) {
            ev.write_json_line(&mut out);
        }
        client.recycle(events);
        bytes += out.len();
        std::hint::black_box(&out);
        out.clear();
        let t2 = thread_cpu();
        decode += t1 - t0;
        json += t2 - t1;
    }
    let events = (frames * EVENTS_PER_BATCH) as f64;
    println!(
        "subscriber (open events): decode {:.1} + JSON and drop {:.1} = {:.1} ns CPU/event \
         ({} events, {:.0} bytes/line)",
        decode.as_nanos() as f64 / events,
        json.as_nanos() as f64 / events,
        (decode + json).as_nanos() as f64 / events,
        events,
        bytes as f64 / events
    );
}

fn socket(batches: u64, template: EventBatch, what: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cost.sock");
    let sink = IpcSink::new(1024);
    let status = Arc::new(ManualStatus::new(SourceCaps::PROCESS));
    let config = IpcServerConfig {
        socket_path: path.clone(),
        ..IpcServerConfig::default()
    };
    let server = rt
        .block_on(CollectorIpcServer::bind(config, status, sink.clone(), None))
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_task = rt.spawn(server.run(async {
        let _ = stop_rx.await;
    }));
    let (wall, cpu, client_cpu) = rt.block_on(async {
        let client = CollectorIpcClient::connect(&path).await.unwrap();
        let stream = client.subscribe::<&str>(&[], &[]).await.unwrap();
        futures::pin_mut!(stream);
        while sink.subscriber_count() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (start, cpu0, client0) = (Instant::now(), process_cpu(), thread_cpu());
        // At most 64 batches in flight, well under the queue: no drops.
        let window = Arc::new(Semaphore::new(64));
        let producer = {
            let (window, sink, template) = (window.clone(), sink.clone(), template.clone());
            tokio::spawn(async move {
                for _ in 0..batches {
                    window.acquire().await.unwrap().forget();
                    assert_eq!(sink.deliver(&template), collector_core::Delivery::Accepted);
                }
            })
        };
        let want = batches * EVENTS_PER_BATCH as u64;
        let mut got = 0u64;
        while got < want {
            match stream.next().await {
                Some(Ok(SubscriptionItem::Event(ev))) => {
                    std::hint::black_box(ev);
                    got += 1;
                    if got.is_multiple_of(EVENTS_PER_BATCH as u64) {
                        window.add_permits(1);
                    }
                }
                other => panic!("unexpected item {other:?}"),
            }
        }
        producer.await.unwrap();
        (
            start.elapsed(),
            process_cpu() - cpu0,
            thread_cpu() - client0,
        )
    });
    let _ = stop_tx.send(());
    rt.block_on(server_task).unwrap();
    let events = (batches * EVENTS_PER_BATCH as u64) as f64;
    println!(
        "socket ({what}): {:.0} events/s wall, {:.1} ns CPU/event in all, {:.1} ns/event of it in the \
         client thread ({} events)",
        events / wall.as_secs_f64(),
        cpu.as_nanos() as f64 / events,
        client_cpu.as_nanos() as f64 / events,
        events
    );
}

fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();

    if what.is_empty() || what == "codec" {
        codec(4000);
    }
    if what.is_empty() || what == "subscriber" {
        subscriber(4000);
    }
    if what.is_empty() || what == "socket" {
        let exec: EventBatch = (0..EVENTS_PER_BATCH as u32).map(exec_event).collect();
        socket(8000, exec, "exec events");
    }
    if what.is_empty() || what == "socket-open" {
        let process = storm_process();
        let open: EventBatch = (0..EVENTS_PER_BATCH as u32)
            .map(|n| open_event(n, &process))
            .collect();
        socket(8000, open, "open events");
    }
}
