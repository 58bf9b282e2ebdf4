//! IPC throughput: frames encoded+decoded per second (through prost messages, and on the
//! direct path the server and client use), and events per second delivered to one
//! subscriber over a real Unix socket (sink -> server -> socket -> client stream).
//!
//! With mimalloc, the allocator the `collector` binary ships with (its daemon and its
//! `collector events` subscriber): decoding allocates each event, and glibc's malloc was
//! a third of the client's time here.
//!
//! `cargo bench -p collector-core --bench ipc`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chrono::Utc;
mod common;

use collector_core::event::{CollectionEvent, ProcessContext, ProcessEvent, ProcessEventKind};
use collector_core::ipc::codec::{ClientCodec, EnvelopeCodec, Inbound};
use collector_core::ipc::convert::event_to_proto;
use collector_core::ipc::proto::{envelope::Body, Envelope, EventBatch as PbBatch};
use collector_core::ipc::wire::{BatchEntries, EventBatchFrame};
use collector_core::ipc::{
    CollectorIpcClient, CollectorIpcServer, IpcServerConfig, IpcSink, ManualStatus,
    SubscriptionItem,
};
use collector_core::{EventBatch, EventSink, SourceCaps};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::codec::{Decoder, Encoder};

/// The allocator the `collector` binary (daemon and `collector events`) ships with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn batch() -> EventBatch {
    (0..EVENTS_PER_BATCH as u32).map(exec_event).collect()
}

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("ipc_frames");
    for events in [1usize, EVENTS_PER_BATCH] {
        let env = Envelope {
            request_id: 0,
            body: Some(Body::EventBatch(PbBatch {
                events: (0..events as u32)
                    .map(|i| event_to_proto(&exec_event(i)))
                    .collect(),
            })),
        };
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("encode_decode_{events}_events_per_frame"), |b| {
            let mut codec = EnvelopeCodec::default();
            let mut buf = BytesMut::with_capacity(64 * 1024);
            b.iter(|| {
                codec.encode(&env, &mut buf).unwrap();
                let back = codec.decode(&mut buf).unwrap().unwrap();
                std::hint::black_box(back);
            });
        });
        // What the server and client do: events -> frame -> events, no prost messages.
        let originals: Vec<CollectionEvent> = (0..events as u32).map(exec_event).collect();
        group.bench_function(
            format!("direct_encode_decode_{events}_events_per_frame"),
            |b| {
                let mut server = EnvelopeCodec::default();
                let mut client = ClientCodec::default();
                let mut buf = BytesMut::with_capacity(64 * 1024);
                let mut entries = BatchEntries::new();
                b.iter(|| {
                    entries.clear();
                    entries.extend(&originals);
                    server
                        .encode(EventBatchFrame::new(entries.as_bytes()), &mut buf)
                        .unwrap();
                    match client.decode(&mut buf).unwrap().unwrap() {
                        // As the subscription stream does once it has handed the events out.
                        Inbound::Events(batch) => {
                            client.recycle(std::hint::black_box(batch).events)
                        }
                        other => panic!("unexpected {other:?}"),
                    };
                });
            },
        );
    }
    // An open storm's shape: file events of one process, all sharing its context.
    let context = Arc::new(ProcessContext {
        process_key: "4244:987654323000".into(),
        executable_path: Some("/usr/bin/collector-test-actor".into()),
        exec_name: Some("collector-test".into()),
        ppid: Some(4242),
        parent_process_key: Some("4242:987654321000".into()),
    });
    let opens: Vec<CollectionEvent> = (0..EVENTS_PER_BATCH as u32)
        .map(|i| common::open_event(format!("/tmp/storm/file-{i}"), context.clone()))
        .collect();
    group.throughput(Throughput::Elements(EVENTS_PER_BATCH as u64));
    group.bench_function("direct_encode_256_open_events_one_context", |b| {
        let mut server = EnvelopeCodec::default();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut entries = BatchEntries::new();
        b.iter(|| {
            entries.clear();
            entries.extend(&opens);
            server
                .encode(EventBatchFrame::new(entries.as_bytes()), &mut buf)
                .unwrap();
            buf.clear();
        });
    });
    group.finish();
}

fn socket_events(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.sock");
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
    let client = rt.block_on(CollectorIpcClient::connect(&path)).unwrap();
    let stream = rt.block_on(client.subscribe::<&str>(&[], &[])).unwrap();
    let mut stream = Box::pin(stream);
    // The subscription is live once the server counts it.
    rt.block_on(async {
        while sink.subscriber_count() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let template = batch();

    let mut group = c.benchmark_group("ipc_socket");
    group.throughput(Throughput::Elements(EVENTS_PER_BATCH as u64));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("events_to_one_subscriber", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                // At most 64 batches in flight, well under the 1024-batch queue, so the
                // measurement never includes drops.
                let window = Arc::new(Semaphore::new(64));
                let producer = {
                    let window = window.clone();
                    let sink = sink.clone();
                    let template = template.clone();
                    tokio::spawn(async move {
                        for _ in 0..iters {
                            window.acquire().await.unwrap().forget();
                            assert_eq!(sink.deliver(&template), collector_core::Delivery::Accepted);
                        }
                    })
                };
                let start = Instant::now();
                let want = iters * EVENTS_PER_BATCH as u64;
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
                let elapsed = start.elapsed();
                producer.await.unwrap();
                elapsed
            })
        });
    });
    group.finish();
    let _ = stop_tx.send(());
    rt.block_on(server_task).unwrap();
}

criterion_group!(benches, frames, socket_events);
criterion_main!(benches);
