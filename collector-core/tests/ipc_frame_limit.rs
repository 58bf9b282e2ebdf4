//! Frame-limit negotiation over real Unix sockets (no root needed): each end declares
//! the largest frame it accepts, the server frames to the smaller of the two, a client
//! follows a server with a limit above 1 MiB, an old client (no declared limit) keeps
//! getting frames of at most 1 MiB, and oversize requests and replies are refused with
//! errors naming both sizes instead of broken connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use collector_core::config::MAX_FRAME_BYTES;
use collector_core::event::{CollectionEvent, Domain, ProcessEvent, ProcessEventKind};
use collector_core::ipc::proto::{self as pb, envelope::Body};
use collector_core::ipc::{
    ClientConfig, ClientError, CollectorIpcClient, CollectorIpcServer, EnvelopeCodec,
    IpcServerConfig, IpcSink, ManualStatus, SubscriptionItem, TaskHandler, PROTOCOL_VERSION,
};
use collector_core::{EventBatch, EventSink, SourceCaps};
use futures::{SinkExt, StreamExt};
use prost::Message;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

const WAIT: Duration = Duration::from_secs(10);
const MIB: usize = 1 << 20;

struct TestServer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    sink: IpcSink,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    async fn start(max_frame_bytes: usize, tasks: Option<Arc<dyn TaskHandler>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collector.sock");
        let config = IpcServerConfig {
            socket_path: path.clone(),
            max_frame_bytes,
            ..IpcServerConfig::default()
        };
        let sink = IpcSink::new(64);
        let status = ManualStatus::new(SourceCaps::PROCESS | SourceCaps::REALTIME);
        let server = CollectorIpcServer::bind(config, Arc::new(status), sink.clone(), tasks)
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

/// A frame-level connection that reads frames up to the hard cap, whatever it declared,
/// so a frame larger than the declared limit would be seen rather than refused.
type Raw = Framed<UnixStream, EnvelopeCodec>;

async fn raw(path: &Path, declared: u32) -> Raw {
    let mut conn = Framed::new(
        UnixStream::connect(path).await.unwrap(),
        EnvelopeCodec::new(MAX_FRAME_BYTES),
    );
    conn.send(pb::Envelope {
        request_id: 1,
        body: Some(Body::CapabilityRequest(pb::CapabilityRequest {
            protocol_version: PROTOCOL_VERSION,
            client_id: "raw".into(),
            requested_domains: vec![],
            max_frame_bytes: declared,
        })),
    })
    .await
    .unwrap();
    match recv(&mut conn).await.body {
        Some(Body::CapabilityResponse(_)) => conn,
        other => panic!("expected CapabilityResponse, got {other:?}"),
    }
}

async fn recv(conn: &mut Raw) -> pb::Envelope {
    tokio::time::timeout(WAIT, conn.next())
        .await
        .expect("reply in time")
        .expect("connection open")
        .unwrap()
}

async fn raw_subscribe(conn: &mut Raw) {
    conn.send(pb::Envelope {
        request_id: 2,
        body: Some(Body::Subscribe(pb::Subscribe::default())),
    })
    .await
    .unwrap();
    assert!(matches!(recv(conn).await.body, Some(Body::SubscribeAck(_))));
}

/// Reads event-batch frames until `events` events came; returns each frame's payload size.
async fn raw_frames(conn: &mut Raw, events: usize) -> Vec<usize> {
    let (mut seen, mut sizes) = (0, Vec::new());
    while seen < events {
        let env = recv(conn).await;
        match &env.body {
            Some(Body::EventBatch(b)) => {
                seen += b.events.len();
                sizes.push(env.encoded_len());
            }
            other => panic!("expected an event batch, got {other:?}"),
        }
    }
    sizes
}

/// `n` exec events whose command lines make each about `arg_bytes` long on the wire.
fn big_batch(n: u32, arg_bytes: usize) -> EventBatch {
    (0..n)
        .map(|i| {
            let mut ev = ProcessEvent::new(ProcessEventKind::Exec, Utc::now(), 1000 + i, "test");
            ev.command_line = vec!["sh".into(), format!("{i:06}{}", "x".repeat(arg_bytes))];
            CollectionEvent::Process(ev.into())
        })
        .collect()
}

async fn client_events(
    stream: &mut (impl futures::Stream<Item = Result<SubscriptionItem, ClientError>> + Unpin),
    n: usize,
) -> Vec<CollectionEvent> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
            Some(Ok(SubscriptionItem::Event(ev))) => got.push(ev),
            other => panic!("expected an event, got {other:?}"),
        }
    }
    got
}

#[tokio::test]
async fn a_default_client_follows_a_server_limit_above_one_mib() {
    let server = TestServer::start(8 * MIB, None).await;
    let client = CollectorIpcClient::connect(&server.path).await.unwrap();
    assert_eq!(client.negotiated().max_frame_bytes, 8 * MIB as u32);
    assert_eq!(client.frame_limits(), (8 * MIB, 8 * MIB));
    let stream = client
        .subscribe::<&str>(&[Domain::Process], &[])
        .await
        .unwrap();
    futures::pin_mut!(stream);
    // A raw subscriber declaring what the default client declares sees the frame sizes.
    let mut witness = raw(&server.path, MAX_FRAME_BYTES as u32).await;
    raw_subscribe(&mut witness).await;
    server.wait_subscribers(2).await;

    // 600 events of about 4 KiB: 2.4 MiB, more than the old fixed 1 MiB client limit.
    let batch = big_batch(600, 4096);
    server.sink.deliver(&batch);
    let sizes = raw_frames(&mut witness, 600).await;
    assert!(
        sizes.iter().any(|&s| s > MIB) && sizes.iter().all(|&s| s <= 8 * MIB),
        "frames above 1 MiB and within 8 MiB: {sizes:?}"
    );
    let got = client_events(&mut stream, 600).await;
    assert_eq!(got[..], batch[..], "every event arrives intact, in order");
    server.shutdown().await;
}

#[tokio::test]
async fn an_old_client_keeps_getting_frames_of_at_most_one_mib() {
    let server = TestServer::start(8 * MIB, None).await;
    let mut old = raw(&server.path, 0).await;
    raw_subscribe(&mut old).await;
    server.wait_subscribers(1).await;
    server.sink.deliver(&big_batch(600, 4096));
    let sizes = raw_frames(&mut old, 600).await;
    assert!(sizes.len() >= 3, "paged: {sizes:?}");
    assert!(sizes.iter().all(|&s| s <= MIB), "{sizes:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_with_a_small_limit_gets_frames_that_fit_it() {
    let server = TestServer::start(MIB, None).await;
    let config = ClientConfig {
        socket_path: server.path.clone(),
        max_frame_bytes: 16 * 1024,
        ..ClientConfig::default()
    };
    let client = CollectorIpcClient::connect_with(config).await.unwrap();
    assert_eq!(client.frame_limits(), (16 * 1024, MIB));
    let stream = client.subscribe::<&str>(&[], &[]).await.unwrap();
    futures::pin_mut!(stream);
    let mut witness = raw(&server.path, 16 * 1024).await;
    raw_subscribe(&mut witness).await;
    server.wait_subscribers(2).await;

    let batch = big_batch(100, 4096);
    server.sink.deliver(&batch);
    let sizes = raw_frames(&mut witness, 100).await;
    assert!(sizes.len() >= 25, "paged into small frames: {sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 16 * 1024), "{sizes:?}");
    assert_eq!(client_events(&mut stream, 100).await[..], batch[..]);
    server.shutdown().await;
}

/// Answers every task with a process list of `rows` rows of about 1 KiB, and records the
/// `max_page_bytes` each `EnumerateProcesses` arrived with.
struct BigAnswers {
    rows: usize,
    pages_asked: Mutex<Vec<u32>>,
}

#[async_trait]
impl TaskHandler for BigAnswers {
    async fn handle(&self, task: pb::DetectionTask) -> pb::DetectionResult {
        if let Some(pb::detection_task::Task::EnumerateProcesses(q)) = &task.task {
            self.pages_asked.lock().await.push(q.max_page_bytes);
        }
        let processes = (0..self.rows)
            .map(|i| pb::ProcessInfo {
                pid: i as u32,
                name: "x".repeat(1024),
                ..Default::default()
            })
            .collect();
        pb::DetectionResult {
            task_id: task.task_id,
            result: Some(pb::detection_result::Result::Processes(pb::ProcessList {
                processes,
                next_cursor: String::new(),
            })),
        }
    }
}

fn enumerate(max_page_bytes: u32) -> pb::DetectionTask {
    pb::DetectionTask {
        task_id: "t".into(),
        task: Some(pb::detection_task::Task::EnumerateProcesses(
            pb::EnumerateProcesses {
                max_page_bytes,
                ..Default::default()
            },
        )),
    }
}

#[tokio::test]
async fn process_pages_default_to_the_negotiated_limit() {
    let handler = Arc::new(BigAnswers {
        rows: 1,
        pages_asked: Mutex::new(Vec::new()),
    });
    let server = TestServer::start(8 * MIB, Some(handler.clone())).await;
    let mut client = CollectorIpcClient::connect(&server.path).await.unwrap();
    client.run_task(enumerate(0)).await.unwrap();
    client.run_task(enumerate(20_000)).await.unwrap();
    let small = ClientConfig {
        socket_path: server.path.clone(),
        max_frame_bytes: 64 * 1024,
        ..ClientConfig::default()
    };
    let mut small = CollectorIpcClient::connect_with(small).await.unwrap();
    small.run_task(enumerate(0)).await.unwrap();
    let mut old = raw(&server.path, 0).await;
    old.send(pb::Envelope {
        request_id: 7,
        body: Some(Body::DetectionTask(enumerate(0))),
    })
    .await
    .unwrap();
    assert!(matches!(
        recv(&mut old).await.body,
        Some(Body::DetectionResult(_))
    ));
    assert_eq!(
        *handler.pages_asked.lock().await,
        vec![8 * MIB as u32, 20_000, 64 * 1024, MIB as u32],
        "unset: the connection's limit; set: the client's choice"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_reply_above_the_limit_is_an_error_and_the_connection_stays() {
    // 100 rows of 1 KiB: about 100 KiB, above the client's 16 KiB.
    let handler = Arc::new(BigAnswers {
        rows: 100,
        pages_asked: Mutex::new(Vec::new()),
    });
    let server = TestServer::start(MIB, Some(handler)).await;
    let config = ClientConfig {
        socket_path: server.path.clone(),
        max_frame_bytes: 16 * 1024,
        ..ClientConfig::default()
    };
    let mut client = CollectorIpcClient::connect_with(config).await.unwrap();
    match client.run_task(enumerate(0)).await {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, pb::ErrorCode::Internal);
            assert!(
                message.contains("16384") && message.contains("frame limit"),
                "{message}"
            );
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    client.status().await.expect("the connection still serves");
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_above_the_server_limit_is_refused_before_it_is_sent() {
    let server = TestServer::start(4096, None).await;
    let mut client = CollectorIpcClient::connect(&server.path).await.unwrap();
    assert_eq!(client.frame_limits(), (4096, 4096));
    let task = pb::DetectionTask {
        task_id: "big".into(),
        task: Some(pb::detection_task::Task::StatPath(pb::StatPath {
            path: "/".repeat(10_000),
            ..Default::default()
        })),
    };
    let err = client.run_task(task).await.unwrap_err();
    let ClientError::RequestTooLarge { len, server_max } = err else {
        panic!("expected RequestTooLarge, got {err:?}");
    };
    assert_eq!(server_max, 4096);
    assert!(len > 10_000, "{len}");
    let text = err.to_string();
    assert!(
        text.contains(&len.to_string()) && text.contains("4096"),
        "names both sizes: {text}"
    );
    client.status().await.expect("the connection still serves");
    server.shutdown().await;
}
