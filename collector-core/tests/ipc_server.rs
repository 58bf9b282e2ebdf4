//! IPC server behaviour over real Unix sockets in a temporary directory (no root needed).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use collector_core::event::{CollectionEvent, Domain, ProcessEvent, ProcessEventKind};
use collector_core::ipc::proto::{self as pb, envelope::Body};
use collector_core::ipc::{
    ClientError, CollectorIpcClient, CollectorIpcServer, EnvelopeCodec, IpcServerConfig, IpcSink,
    ManualStatus, PeerPolicy, ServerError, SubscriptionItem, TaskHandler, PROTOCOL_VERSION,
};
use collector_core::{Delivery, EventBatch, EventSink, SourceCaps};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

const WAIT: Duration = Duration::from_secs(10);

struct TestServer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    sink: IpcSink,
    status: ManualStatus,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    async fn start(tweak: impl FnOnce(&mut IpcServerConfig)) -> Self {
        Self::start_with(tweak, 16, None).await
    }

    async fn start_with(
        tweak: impl FnOnce(&mut IpcServerConfig),
        queue_batches: usize,
        tasks: Option<Arc<dyn TaskHandler>>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/collector.sock");
        let mut config = IpcServerConfig {
            socket_path: path.clone(),
            ..IpcServerConfig::default()
        };
        tweak(&mut config);
        let sink = IpcSink::new(queue_batches);
        let status = ManualStatus::new(SourceCaps::PROCESS | SourceCaps::REALTIME);
        let server =
            CollectorIpcServer::bind(config, Arc::new(status.clone()), sink.clone(), tasks)
                .await
                .unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            _dir: dir,
            path,
            sink,
            status,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task.take().unwrap())
            .await
            .expect("server stops")
            .unwrap();
    }

    async fn client(&self) -> CollectorIpcClient {
        CollectorIpcClient::connect(&self.path).await.unwrap()
    }

    async fn wait_subscribers(&self, n: usize) {
        tokio::time::timeout(WAIT, async {
            while self.sink.subscriber_count() != n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("subscriber count reached");
    }
}

type Raw = Framed<UnixStream, EnvelopeCodec>;

async fn raw(path: &Path) -> Raw {
    Framed::new(
        UnixStream::connect(path).await.unwrap(),
        EnvelopeCodec::default(),
    )
}

async fn recv(conn: &mut Raw) -> Option<pb::Envelope> {
    tokio::time::timeout(WAIT, conn.next())
        .await
        .expect("reply in time")
        .map(|r| r.unwrap())
}

async fn negotiate(conn: &mut Raw) {
    conn.send(pb::Envelope {
        request_id: 1,
        body: Some(Body::CapabilityRequest(pb::CapabilityRequest {
            protocol_version: PROTOCOL_VERSION,
            client_id: "raw".into(),
            requested_domains: vec![],
            // As a client from before frame-limit negotiation.
            max_frame_bytes: 0,
        })),
    })
    .await
    .unwrap();
    assert!(matches!(
        recv(conn).await.unwrap().body,
        Some(Body::CapabilityResponse(_))
    ));
}

fn error_code(env: &pb::Envelope) -> pb::ErrorCode {
    match &env.body {
        Some(Body::Error(e)) => pb::ErrorCode::try_from(e.code).unwrap(),
        other => panic!("expected an Error, got {other:?}"),
    }
}

fn batch(start: u32, n: u32) -> EventBatch {
    (start..start + n)
        .map(|pid| {
            CollectionEvent::Process(
                ProcessEvent::new(ProcessEventKind::Exec, Utc::now(), pid, "test-source").into(),
            )
        })
        .collect()
}

#[tokio::test]
async fn negotiation_reports_live_capabilities() {
    let server = TestServer::start(|_| {}).await;
    let client = server.client().await;
    assert_eq!(
        client.capabilities(),
        SourceCaps::PROCESS | SourceCaps::REALTIME
    );
    assert_eq!(client.negotiated().protocol_version, PROTOCOL_VERSION);
    assert_eq!(
        client.negotiated().granted_domains,
        vec![pb::Domain::Process as i32]
    );

    server.status.set_capabilities(SourceCaps::NETWORK);
    let client = server.client().await;
    assert_eq!(client.capabilities(), SourceCaps::NETWORK);
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_protocol_version_and_missing_negotiation_are_refused() {
    let server = TestServer::start(|_| {}).await;
    let mut conn = raw(&server.path).await;
    conn.send(pb::Envelope {
        request_id: 5,
        body: Some(Body::CapabilityRequest(pb::CapabilityRequest {
            protocol_version: 99,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let reply = recv(&mut conn).await.unwrap();
    assert_eq!(reply.request_id, 5);
    assert_eq!(error_code(&reply), pb::ErrorCode::UnsupportedVersion);
    assert!(recv(&mut conn).await.is_none(), "connection closed");

    let mut conn = raw(&server.path).await;
    conn.send(pb::Envelope {
        request_id: 1,
        body: Some(Body::StatusRequest(pb::StatusRequest {})),
    })
    .await
    .unwrap();
    assert_eq!(
        error_code(&recv(&mut conn).await.unwrap()),
        pb::ErrorCode::NotNegotiated
    );
    server.shutdown().await;
}

#[tokio::test]
async fn subscriber_receives_filtered_events_and_capability_updates() {
    let server = TestServer::start(|_| {}).await;
    let stream = server
        .client()
        .await
        .subscribe(&[Domain::Process], &["exec"])
        .await
        .unwrap();
    futures::pin_mut!(stream);
    server.wait_subscribers(1).await;

    let mut mixed: Vec<CollectionEvent> = batch(100, 3).to_vec();
    let mut fork = ProcessEvent::new(ProcessEventKind::Fork, Utc::now(), 7, "test-source");
    fork.child_pid = Some(8);
    mixed.insert(1, CollectionEvent::Process(fork.into()));
    assert_eq!(server.sink.deliver(&mixed.into()), Delivery::Accepted);

    let mut pids = Vec::new();
    while pids.len() < 3 {
        match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
            Some(Ok(SubscriptionItem::Event(ev))) => {
                assert_eq!(ev.kind_name(), "exec");
                pids.push(ev.pid());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pids, vec![100, 101, 102]);

    server
        .status
        .set_capabilities(SourceCaps::PROCESS | SourceCaps::NETWORK);
    match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        Some(Ok(SubscriptionItem::CapabilitiesChanged(caps))) => {
            assert_eq!(caps, SourceCaps::PROCESS | SourceCaps::NETWORK)
        }
        other => panic!("expected a capability update, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn lagging_subscriber_gets_lagged_while_another_misses_nothing() {
    // Queues of 2 batches; the slow subscriber never reads until the end, so once the
    // socket buffer and its queue fill, its batches are dropped.
    let server = TestServer::start_with(|_| {}, 2, None).await;
    let mut slow = raw(&server.path).await;
    negotiate(&mut slow).await;
    slow.send(pb::Envelope {
        request_id: 2,
        body: Some(Body::Subscribe(pb::Subscribe::default())),
    })
    .await
    .unwrap();
    assert!(matches!(
        recv(&mut slow).await.unwrap().body,
        Some(Body::SubscribeAck(_))
    ));
    let fast = server
        .client()
        .await
        .subscribe::<&str>(&[], &[])
        .await
        .unwrap();
    futures::pin_mut!(fast);
    server.wait_subscribers(2).await;

    const BATCHES: u32 = 200;
    const PER_BATCH: u32 = 100;
    let mut fast_seen = 0u32;
    for i in 0..BATCHES {
        // One batch at a time for the fast subscriber, so it never lags.
        server.sink.deliver(&batch(i * PER_BATCH, PER_BATCH));
        while fast_seen < (i + 1) * PER_BATCH {
            match tokio::time::timeout(WAIT, fast.next()).await.unwrap() {
                Some(Ok(SubscriptionItem::Event(ev))) => {
                    assert_eq!(ev.pid(), fast_seen, "fast subscriber missed or reordered");
                    fast_seen += 1;
                }
                other => panic!("fast subscriber got {other:?}"),
            }
        }
    }
    assert!(
        server.sink.dropped_events() > 0,
        "the slow subscriber lagged"
    );

    // Now drain the slow one: what it got plus what it was told it missed is everything.
    let total = (BATCHES * PER_BATCH) as u64;
    let (mut got, mut missed) = (0u64, 0u64);
    while got + missed < total {
        match recv(&mut slow).await.unwrap().body {
            Some(Body::EventBatch(b)) => got += b.events.len() as u64,
            Some(Body::Lagged(l)) => missed += l.missed_events,
            other => panic!("slow subscriber got {other:?}"),
        }
    }
    assert_eq!(got + missed, total);
    assert!(missed > 0);
    assert_eq!(missed, server.sink.dropped_events());
    server.shutdown().await;
}

#[tokio::test]
async fn connection_cap_refuses_with_an_error_frame() {
    // We connect as root: without reserved root slots the shared cap is what refuses.
    let server = TestServer::start(|c| {
        c.max_connections = 1;
        c.root_reserved_connections = 0;
    })
    .await;
    let first = server.client().await;
    let mut second = raw(&server.path).await;
    let refusal = recv(&mut second).await.unwrap();
    assert_eq!(error_code(&refusal), pb::ErrorCode::TooManyConnections);
    assert!(recv(&mut second).await.is_none());

    drop(first);
    // The permit returns once the server notices the close.
    let mut third = tokio::time::timeout(WAIT, async {
        loop {
            match CollectorIpcClient::connect(&server.path).await {
                Ok(c) => break c,
                Err(ClientError::Server {
                    code: pb::ErrorCode::TooManyConnections,
                    ..
                }) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap();
    third.status().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn peer_not_in_policy_is_refused() {
    // We run as root, so drop root and own-uid admission: nobody is allowed.
    let server = TestServer::start(|c| {
        c.peer_policy = PeerPolicy {
            allow_root: false,
            allow_own_uid: false,
            allowed_uids: vec![u32::MAX - 1],
            allowed_gids: vec![],
        }
    })
    .await;
    let mut conn = raw(&server.path).await;
    let refusal = recv(&mut conn).await.unwrap();
    assert_eq!(error_code(&refusal), pb::ErrorCode::PermissionDenied);
    match CollectorIpcClient::connect(&server.path).await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, pb::ErrorCode::PermissionDenied),
        other => panic!("expected a refusal, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn hostile_bytes_do_not_affect_other_clients() {
    let server = TestServer::start(|_| {}).await;
    let mut bystander = server.client().await;

    // Bad checksum: an Error frame, then the connection closes.
    let mut conn = raw(&server.path).await;
    let mut frame = collector_core::ipc::codec::encode_frame(&pb::Envelope {
        request_id: 1,
        body: Some(Body::StatusRequest(pb::StatusRequest {})),
    })
    .unwrap();
    let last = frame.len() - 1;
    frame[last] ^= 0x55;
    conn.get_mut().write_all(&frame).await.unwrap();
    assert_eq!(
        error_code(&recv(&mut conn).await.unwrap()),
        pb::ErrorCode::BadFrame
    );
    assert!(recv(&mut conn).await.is_none());

    // A 4 GiB length: refused from the header alone.
    let mut conn = raw(&server.path).await;
    conn.get_mut()
        .write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])
        .await
        .unwrap();
    assert_eq!(
        error_code(&recv(&mut conn).await.unwrap()),
        pb::ErrorCode::BadFrame
    );

    // Noise, then a hang-up mid-frame.
    let mut conn = UnixStream::connect(&server.path).await.unwrap();
    conn.write_all(&[3, 0, 0, 0, 1, 2]).await.unwrap();
    drop(conn);

    bystander.status().await.unwrap();
    let mut fresh = server.client().await;
    let status = fresh.status().await.unwrap();
    assert_eq!(
        status.capabilities,
        SourceCaps::PROCESS | SourceCaps::REALTIME
    );
    server.shutdown().await;
}

#[tokio::test]
async fn status_carries_the_snapshot_and_subscriber_count() {
    let server = TestServer::start(|_| {}).await;
    let _sub = server
        .client()
        .await
        .subscribe::<&str>(&[], &[])
        .await
        .unwrap();
    server.wait_subscribers(1).await;
    let status = server.client().await.status().await.unwrap();
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.counters.subscribers, 1);
    server.shutdown().await;
}

struct EchoTasks;

#[async_trait]
impl TaskHandler for EchoTasks {
    async fn handle(&self, task: pb::DetectionTask) -> pb::DetectionResult {
        pb::DetectionResult {
            task_id: task.task_id,
            result: Some(pb::detection_result::Result::Processes(pb::ProcessList {
                processes: vec![pb::ProcessInfo {
                    pid: 1,
                    name: "init".into(),
                    ..Default::default()
                }],
                next_cursor: String::new(),
            })),
        }
    }
}

fn task(id: &str, body: pb::detection_task::Task) -> pb::DetectionTask {
    pb::DetectionTask {
        task_id: id.into(),
        task: Some(body),
    }
}

#[tokio::test]
async fn tasks_are_routed_and_unsupported_domains_get_an_error_result() {
    let server = TestServer::start_with(|_| {}, 16, Some(Arc::new(EchoTasks))).await;
    let mut client = server.client().await;

    let ok = client
        .run_task(task(
            "t1",
            pb::detection_task::Task::EnumerateProcesses(Default::default()),
        ))
        .await
        .unwrap();
    assert_eq!(ok.task_id, "t1");
    assert!(matches!(
        ok.result,
        Some(pb::detection_result::Result::Processes(ref l)) if l.processes[0].name == "init"
    ));

    // No source has NETWORK.
    let refused = client
        .run_task(task(
            "t2",
            pb::detection_task::Task::ListNetworkConnections(Default::default()),
        ))
        .await
        .unwrap();
    match refused.result {
        Some(pb::detection_result::Result::Error(e)) => {
            assert_eq!(e.code, pb::ErrorCode::UnsupportedDomain as i32);
            assert!(e.message.contains("network"), "{}", e.message);
        }
        other => panic!("expected an error result, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn socket_file_modes_stale_replacement_and_removal() {
    let server = TestServer::start(|_| {}).await;
    let path = server.path.clone();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);

    // A live server is never replaced.
    let err = CollectorIpcServer::bind(
        IpcServerConfig {
            socket_path: path.clone(),
            ..IpcServerConfig::default()
        },
        Arc::new(ManualStatus::new(SourceCaps::empty())),
        IpcSink::default(),
        None,
    )
    .await
    .err()
    .expect("bind over a live socket fails");
    assert!(matches!(err, ServerError::InUse { .. }), "{err}");

    server.shutdown().await;
    assert!(!path.exists(), "socket removed on shutdown");

    // A stale socket (bound, nobody listening) is replaced; a regular file is not.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(listener);
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_socket());
    let status = Arc::new(ManualStatus::new(SourceCaps::empty()));
    let config = IpcServerConfig {
        socket_path: path.clone(),
        ..IpcServerConfig::default()
    };
    let replaced =
        CollectorIpcServer::bind(config.clone(), status.clone(), IpcSink::default(), None)
            .await
            .unwrap();
    drop(replaced);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"not a socket").unwrap();
    let err = CollectorIpcServer::bind(config, status, IpcSink::default(), None)
        .await
        .err()
        .expect("a regular file is never replaced");
    assert!(matches!(err, ServerError::NotASocket { .. }), "{err}");
}

#[tokio::test]
async fn subscription_reconnects_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.sock");
    let start = |sink: IpcSink| {
        let path = path.clone();
        async move {
            let server = CollectorIpcServer::bind(
                IpcServerConfig {
                    socket_path: path,
                    ..IpcServerConfig::default()
                },
                Arc::new(ManualStatus::new(SourceCaps::PROCESS)),
                sink,
                None,
            )
            .await
            .unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(server.run(async {
                let _ = stopped.await;
            }));
            (stop, task)
        }
    };
    let (stop, task) = start(IpcSink::default()).await;
    let stream = CollectorIpcClient::connect(&path)
        .await
        .unwrap()
        .subscribe::<&str>(&[], &[])
        .await
        .unwrap();
    futures::pin_mut!(stream);
    stop.send(()).unwrap();
    task.await.unwrap();
    // A clean stop ends the stream's current connection with an end-of-stream notice.
    match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        Some(Ok(SubscriptionItem::EndOfStream { .. })) => {}
        other => panic!("expected EndOfStream, got {other:?}"),
    }

    let sink = IpcSink::default();
    let (_stop, _task) = start(sink.clone()).await;
    match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        Some(Ok(SubscriptionItem::Reconnected)) => {}
        other => panic!("expected Reconnected, got {other:?}"),
    }
    sink.deliver(&batch(9, 1));
    match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        Some(Ok(SubscriptionItem::Event(ev))) => assert_eq!(ev.pid(), 9),
        other => panic!("expected the event, got {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_sends_every_queued_batch_then_end_of_stream() {
    let server = TestServer::start_with(|_| {}, 64, None).await;
    let stream = server
        .client()
        .await
        .subscribe::<&str>(&[Domain::Process], &[])
        .await
        .unwrap();
    futures::pin_mut!(stream);
    server.wait_subscribers(1).await;

    // 50 batches queued for the subscriber, and the server told to stop at once: the
    // stop must not cut them off.
    for i in 0..50 {
        assert_eq!(
            server.sink.deliver(&batch(i * 100, 100)),
            Delivery::Accepted
        );
    }
    let stopping = tokio::spawn(server.shutdown());

    let mut pids = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
            Some(Ok(SubscriptionItem::Event(ev))) => pids.push(ev.pid()),
            Some(Ok(SubscriptionItem::EndOfStream { events_queued })) => {
                assert_eq!(events_queued, 5000);
                break;
            }
            other => panic!("unexpected {other:?} after {} events", pids.len()),
        }
    }
    assert_eq!(pids, (0..5000).collect::<Vec<u32>>());
    stopping.await.unwrap();
}
