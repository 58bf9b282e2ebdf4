//! `socket_group`: members of the group can reach the socket, others cannot. Needs root
//! (to chown to a test gid and to run a client as another uid); skips without it, except
//! under `COLLECTOR_REQUIRE_KERNEL=1`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use collector_core::ipc::{
    Backoff, ClientConfig, CollectorIpcClient, CollectorIpcServer, IpcServerConfig, IpcSink,
    ManualStatus, PeerPolicy, ServerError,
};
use collector_core::SourceCaps;

/// A gid no account uses, and one next to it.
const GROUP: u32 = 4242;
const OTHER_GROUP: u32 = 4243;
/// `nobody`.
const OTHER_UID: u32 = 65534;
const HELPER: &str = "connect_as_another_user";
const HELPER_ENV: &str = "COLLECTOR_TEST_CONNECT";

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Runs [`connect_as_another_user`] (this test binary) as `uid`/`gid`.
///
/// The binary is run from a copy next to the socket's directory, which the test made
/// reachable by others: the checkout's `target/` may sit under a directory only root
/// may enter (a fresh clone under `mktemp -d`, mode 0700), where exec as `nobody`
/// fails with EACCES.
fn connect_as(uid: u32, gid: u32, socket: &Path) -> std::process::Output {
    let top = socket
        .ancestors()
        .nth(2)
        .expect("the socket sits two levels under the test's directory");
    let exe = top.join("ipc-socket-group-helper");
    if !exe.exists() {
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Command::new(&exe)
        .args(["--exact", HELPER, "--ignored", "--test-threads=1"])
        .env(HELPER_ENV, socket)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap()
}

/// The client half, run in a child process as another user by
/// `socket_group_lets_members_connect_and_keeps_others_out`.
#[tokio::test]
#[ignore = "helper: run as another uid by socket_group_lets_members_connect_and_keeps_others_out"]
async fn connect_as_another_user() {
    let socket = std::env::var_os(HELPER_ENV).expect("run by the socket_group test");
    let config = ClientConfig {
        socket_path: socket.into(),
        backoff: Backoff {
            max_attempts: Some(1),
            ..Backoff::default()
        },
        ..ClientConfig::default()
    };
    CollectorIpcClient::connect_with(config).await.unwrap();
}

#[tokio::test]
async fn socket_group_lets_members_connect_and_keeps_others_out() {
    if !is_root() {
        assert!(
            std::env::var("COLLECTOR_REQUIRE_KERNEL").as_deref() != Ok("1"),
            "COLLECTOR_REQUIRE_KERNEL=1 but not root: socket_group cannot be tested"
        );
        eprintln!("skipping: not root (cannot chown to a test gid or switch uid)");
        return;
    }
    let top = tempfile::tempdir().unwrap();
    // Others must be able to walk to the socket's directory.
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = top.path().join("run/collector.sock");
    let config = IpcServerConfig {
        socket_path: path.clone(),
        socket_group: Some(GROUP.to_string()),
        peer_policy: PeerPolicy {
            allowed_gids: vec![GROUP],
            ..PeerPolicy::default()
        },
        ..IpcServerConfig::default()
    };
    let status = Arc::new(ManualStatus::new(SourceCaps::PROCESS));
    let server = CollectorIpcServer::bind(config, status, IpcSink::default(), None)
        .await
        .unwrap();
    let dir = path.parent().unwrap();
    assert_eq!(mode(&path), 0o660);
    assert_eq!(std::fs::metadata(&path).unwrap().gid(), GROUP);
    assert_eq!(mode(dir), 0o750);
    assert_eq!(std::fs::metadata(dir).unwrap().gid(), GROUP);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let member = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || connect_as(OTHER_UID, GROUP, &path))
    }
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&member.stdout);
    assert!(
        member.status.success(),
        "a member of the socket group could not connect:\n{out}"
    );
    assert!(out.contains("1 passed"), "the helper did not run:\n{out}");
    let outsider = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || connect_as(OTHER_UID, OTHER_GROUP, &path))
    }
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&outsider.stdout);
    assert!(!outsider.status.success(), "an outsider connected:\n{out}");
    assert!(
        out.contains("Permission denied"),
        "refused for another reason:\n{out}"
    );

    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn unknown_socket_group_is_refused_before_binding() {
    let top = tempfile::tempdir().unwrap();
    let path = top.path().join("collector.sock");
    let config = IpcServerConfig {
        socket_path: path.clone(),
        socket_group: Some("no-such-group-4242".into()),
        ..IpcServerConfig::default()
    };
    let status = Arc::new(ManualStatus::new(SourceCaps::PROCESS));
    let err = CollectorIpcServer::bind(config, status, IpcSink::default(), None)
        .await
        .err()
        .expect("an unknown group is an error");
    assert!(matches!(err, ServerError::UnknownGroup { .. }), "{err}");
    assert!(!path.exists(), "nothing was bound");
}
