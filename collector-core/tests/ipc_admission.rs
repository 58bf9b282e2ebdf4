//! IPC admission that one peer cannot monopolise, with peers of other uids: each
//! connection is made from a thread that took another identity with raw (per-thread)
//! syscalls, so the kernel records that identity in `SO_PEERCRED`/`SO_PEERGROUPS`.
//! Needs root; skipped otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use collector_core::ipc::proto::{self as pb, envelope::Body};
use collector_core::ipc::{
    CollectorIpcServer, EnvelopeCodec, IpcServerConfig, IpcSink, ManualStatus, PeerPolicy,
    PROTOCOL_VERSION,
};
use collector_core::SourceCaps;
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio_util::codec::Framed;

const WAIT: Duration = Duration::from_secs(10);
const NOBODY: u32 = 65534;

type Raw = Framed<UnixStream, EnvelopeCodec>;

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

struct Server {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(tweak: impl FnOnce(&mut IpcServerConfig)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("run/collector.sock");
    let mut config = IpcServerConfig {
        socket_path: path.clone(),
        ..IpcServerConfig::default()
    };
    tweak(&mut config);
    let status = ManualStatus::new(SourceCaps::PROCESS);
    let server = CollectorIpcServer::bind(config, Arc::new(status), IpcSink::new(16), None)
        .await
        .unwrap();
    // Let other uids reach the socket: the peer policy is what is under test.
    std::fs::set_permissions(
        path.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Server {
        _dir: dir,
        path,
        stop,
        task,
    }
}

impl Server {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Connects as `uid`/`gid` with supplementary `groups` (uid 0: as we are).
async fn connect_as(path: &Path, uid: u32, gid: u32, groups: Vec<u32>) -> Raw {
    let path = path.to_owned();
    let stream = std::thread::spawn(move || {
        if uid != 0 {
            // SAFETY: raw syscalls changing only this thread's credentials.
            unsafe {
                assert_eq!(
                    libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()),
                    0
                );
                assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
                assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
            }
        }
        let s = std::os::unix::net::UnixStream::connect(&path).unwrap();
        s.set_nonblocking(true).unwrap();
        s
    })
    .join()
    .unwrap();
    Framed::new(
        UnixStream::from_std(stream).unwrap(),
        EnvelopeCodec::default(),
    )
}

async fn recv(conn: &mut Raw) -> Option<pb::Envelope> {
    tokio::time::timeout(WAIT, conn.next())
        .await
        .expect("reply in time")
        .map(|r| r.unwrap())
}

/// Negotiates; returns the refusal's error code if the server refused instead.
async fn negotiate(conn: &mut Raw) -> Result<(), (pb::ErrorCode, String)> {
    let _ = conn
        .send(pb::Envelope {
            request_id: 1,
            body: Some(Body::CapabilityRequest(pb::CapabilityRequest {
                protocol_version: PROTOCOL_VERSION,
                client_id: "admission".into(),
                requested_domains: vec![],
                // As a client from before frame-limit negotiation.
                max_frame_bytes: 0,
            })),
        })
        .await;
    match recv(conn).await.map(|e| e.body) {
        Some(Some(Body::CapabilityResponse(_))) => Ok(()),
        Some(Some(Body::Error(e))) => Err((pb::ErrorCode::try_from(e.code).unwrap(), e.message)),
        other => panic!("unexpected {other:?}"),
    }
}

fn policy(uids: Vec<u32>, gids: Vec<u32>) -> PeerPolicy {
    PeerPolicy {
        allow_root: true,
        allow_own_uid: true,
        allowed_uids: uids,
        allowed_gids: gids,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_uid_cannot_take_every_slot_and_root_always_gets_in() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let server = start(|c| {
        c.max_connections = 4;
        c.max_connections_per_uid = 2;
        c.root_reserved_connections = 1;
        c.peer_policy = policy(vec![NOBODY, NOBODY - 1], vec![]);
    })
    .await;
    let mut nobody = Vec::new();
    for _ in 0..2 {
        let mut c = connect_as(&server.path, NOBODY, NOBODY, vec![]).await;
        negotiate(&mut c).await.unwrap();
        nobody.push(c);
    }
    let mut third = connect_as(&server.path, NOBODY, NOBODY, vec![]).await;
    let (code, msg) = negotiate(&mut third).await.unwrap_err();
    assert_eq!(code, pb::ErrorCode::TooManyConnections);
    assert!(msg.contains("uid 65534 already holds 2"), "{msg}");

    // A second uid fills the shared slots...
    let mut other = Vec::new();
    for _ in 0..2 {
        let mut c = connect_as(&server.path, NOBODY - 1, NOBODY - 1, vec![]).await;
        negotiate(&mut c).await.unwrap();
        other.push(c);
    }
    // ...and root still gets in, on the reserved slot; a second root connection does not.
    let mut root = connect_as(&server.path, 0, 0, vec![]).await;
    negotiate(&mut root).await.unwrap();
    let mut root2 = connect_as(&server.path, 0, 0, vec![]).await;
    let (code, _) = negotiate(&mut root2).await.unwrap_err();
    assert_eq!(code, pb::ErrorCode::TooManyConnections);

    // Closing one of nobody's connections gives its uid a slot back.
    drop(nobody.pop());
    tokio::time::timeout(WAIT, async {
        loop {
            let mut c = connect_as(&server.path, NOBODY, NOBODY, vec![]).await;
            match negotiate(&mut c).await {
                Ok(()) => break,
                Err((pb::ErrorCode::TooManyConnections, _)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    })
    .await
    .expect("the slot comes back");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_gids_count_supplementary_groups() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let server = start(|c| c.peer_policy = policy(vec![], vec![4243])).await;
    let mut member = connect_as(&server.path, NOBODY, NOBODY, vec![100, 4243]).await;
    negotiate(&mut member).await.unwrap();
    let mut outsider = connect_as(&server.path, NOBODY, NOBODY, vec![100]).await;
    let (code, _) = negotiate(&mut outsider).await.unwrap_err();
    assert_eq!(code, pb::ErrorCode::PermissionDenied);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_receives_nothing_is_closed_after_its_idle_timeout() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let server = start(|c| {
        c.subscriber_idle_timeout = Duration::from_millis(300);
        c.peer_policy = policy(vec![NOBODY], vec![]);
    })
    .await;
    let mut sub = connect_as(&server.path, NOBODY, NOBODY, vec![]).await;
    negotiate(&mut sub).await.unwrap();
    sub.send(pb::Envelope {
        request_id: 2,
        body: Some(Body::Subscribe(pb::Subscribe {
            domains: vec![pb::Domain::Network as i32],
            kinds: vec![],
        })),
    })
    .await
    .unwrap();
    assert!(matches!(
        recv(&mut sub).await.unwrap().body,
        Some(Body::SubscribeAck(_))
    ));
    let started = std::time::Instant::now();
    match recv(&mut sub).await.map(|e| e.body) {
        Some(Some(Body::Error(e))) => {
            assert_eq!(e.code, pb::ErrorCode::Timeout as i32);
            assert!(
                e.message.contains("subscriber idle timeout"),
                "{}",
                e.message
            );
        }
        other => panic!("expected the idle close, got {other:?}"),
    }
    assert!(recv(&mut sub).await.is_none(), "closed after the notice");
    assert!(started.elapsed() < Duration::from_secs(5));
    server.shutdown().await;
}
