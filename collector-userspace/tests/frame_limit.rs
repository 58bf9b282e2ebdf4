//! The negotiated frame limit end to end: a real `collector run --procfs` configured with
//! `max_frame_bytes` = 8 MiB serves the CLI with its defaults (`collector status`,
//! `collector processes`, `collector events`), frames above 1 MiB included; a daemon
//! limited to 64 KiB pages a large process list completely, every page within its limit.
//!
//! The procfs fallback needs no kernel programs; the witnesses are `sh` processes with
//! long command lines, which the process poll turns into exec events and table rows.

mod common;

use common::Daemon;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collector_core::config::MAX_FRAME_BYTES;
use collector_core::ipc::proto::{self as pb, envelope::Body};
use collector_core::ipc::{CollectorIpcClient, EnvelopeCodec, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use prost::Message;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

const MIB: usize = 1 << 20;

fn collector() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_collector"));
    // Only the explicit flags and variables: no host or user configuration leaks in.
    cmd.env("XDG_CONFIG_HOME", "/nonexistent")
        .env("HOME", "/nonexistent");
    cmd
}

/// `collector run --procfs` on a socket in `dir`, with `max_frame_bytes`; returns once
/// it serves IPC.
async fn daemon(dir: &Path, max_frame_bytes: usize) -> (Daemon, PathBuf) {
    let socket = dir.join("collector.sock");
    let mut daemon = Daemon(
        collector()
            .args(["run", "--procfs", "--no-stdout", "--domain", "process"])
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("COLLECTOR_MAX_FRAME_BYTES", max_frame_bytes.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("start collector run"),
    );
    let started = Instant::now();
    while CollectorIpcClient::connect(&socket).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "collector did not serve IPC within 60 s"
        );
        if let Some(status) = daemon.0.try_wait().unwrap() {
            panic!("collector exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (daemon, socket)
}

/// `sh` processes blocked on reading their stdin, each with a long last argument; they
/// end when dropped, or with the test (their stdin closes).
struct Witnesses(Vec<Child>);

impl Witnesses {
    fn spawn(n: usize, arg_bytes: usize) -> Self {
        Self(
            (0..n)
                .map(|i| {
                    Command::new("sh")
                        .args(["-c", "read x", "frame-witness"])
                        .arg(format!("{i:05}{}", "w".repeat(arg_bytes)))
                        .stdin(Stdio::piped())
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("spawn sh")
                })
                .collect(),
        )
    }

    /// pid -> the long argument it was started with.
    fn args(&self, arg_bytes: usize) -> BTreeMap<u32, String> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id(), format!("{i:05}{}", "w".repeat(arg_bytes))))
            .collect()
    }
}

impl Drop for Witnesses {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a CLI subcommand to completion and returns its stdout lines as JSON.
fn cli_json_lines(args: &[&str], socket: &Path) -> Vec<serde_json::Value> {
    let out = collector()
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "collector {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The witnesses among `collector processes` rows: pid -> its last argument, each once.
fn witness_rows(rows: &[serde_json::Value], want: &BTreeMap<u32, String>) -> BTreeMap<u32, String> {
    let mut seen = BTreeMap::new();
    for row in rows {
        let pid = row["pid"].as_u64().unwrap() as u32;
        if want.contains_key(&pid) && row["name"] == "sh" {
            let arg = row["command_line"]
                .as_array()
                .and_then(|a| a.last())
                .and_then(|a| a.as_str())
                .unwrap_or_default()
                .to_owned();
            assert!(seen.insert(pid, arg).is_none(), "pid {pid} listed twice");
        }
    }
    seen
}

/// Lists processes through the library client, page by page, as the CLI does; returns
/// the rows and each page's encoded size.
async fn pages(socket: &Path) -> (Vec<pb::ProcessInfo>, Vec<usize>) {
    let mut client = CollectorIpcClient::connect(socket).await.unwrap();
    let (mut rows, mut sizes) = (Vec::new(), Vec::new());
    let mut cursor = String::new();
    loop {
        let task = pb::DetectionTask {
            task_id: "frame-limit".into(),
            task: Some(pb::detection_task::Task::EnumerateProcesses(
                pb::EnumerateProcesses {
                    cursor: cursor.clone(),
                    ..Default::default()
                },
            )),
        };
        let result = client.run_task(task).await.unwrap();
        let Some(pb::detection_result::Result::Processes(list)) = result.result else {
            panic!("expected a process list, got {result:?}");
        };
        sizes.push(list.encoded_len());
        rows.extend(list.processes);
        if list.next_cursor.is_empty() {
            return (rows, sizes);
        }
        assert_ne!(list.next_cursor, cursor, "the cursor advances");
        cursor = list.next_cursor;
        assert!(sizes.len() < 10_000, "paging does not end");
    }
}

/// Waits until `collector processes` lists every witness.
async fn wait_listed(socket: &Path, want: &BTreeMap<u32, String>) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = cli_json_lines(&["processes"], socket);
        if witness_rows(&rows, want).len() == want.len() || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_mib_daemon_serves_the_default_cli_frames_above_1_mib() {
    const ARG: usize = 64 * 1024;
    const N: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, socket) = daemon(dir.path(), 8 * MIB).await;

    // `collector status`, with the CLI's defaults.
    let out = collector()
        .arg("status")
        .arg("--socket")
        .arg(&socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["sources"].is_array(), "{status}");

    // Two subscribers before the witnesses start: the CLI, and a frame-level one that
    // declares what the CLI declares and records each frame's size.
    let mut events_cli = collector()
        .args(["events", "--domain", "process", "--kind", "exec"])
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut raw = Framed::new(
        UnixStream::connect(&socket).await.unwrap(),
        EnvelopeCodec::new(MAX_FRAME_BYTES),
    );
    for body in [
        Body::CapabilityRequest(pb::CapabilityRequest {
            protocol_version: PROTOCOL_VERSION,
            client_id: "frame-sizes".into(),
            requested_domains: vec![],
            max_frame_bytes: MAX_FRAME_BYTES as u32,
        }),
        Body::Subscribe(pb::Subscribe {
            domains: vec![pb::Domain::Process as i32],
            kinds: vec!["exec".into()],
        }),
    ] {
        raw.send(pb::Envelope {
            request_id: 1,
            body: Some(body),
        })
        .await
        .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), raw.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                reply.body,
                Some(Body::CapabilityResponse(_) | Body::SubscribeAck(_))
            ),
            "{reply:?}"
        );
    }
    // Let the CLI subscribe too (its exec events of processes started later are what
    // is checked, so a late subscription would only make the test wait).
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 60 processes with 64 KiB arguments, started within one poll or two: their exec
    // events make batches of several MiB.
    let witnesses = Witnesses::spawn(N, ARG);
    let want = witnesses.args(ARG);

    // The frame-level subscriber: every witness's exec, and a frame above 1 MiB.
    let mut max_frame = 0;
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < N {
        let left = deadline.saturating_duration_since(Instant::now());
        let env = tokio::time::timeout(left, raw.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {N} witnesses seen", seen.len()))
            .unwrap()
            .unwrap();
        max_frame = max_frame.max(env.encoded_len());
        if let Some(Body::EventBatch(b)) = env.body {
            for ev in b.events {
                if let Some(pb::event::Event::Process(p)) = ev.event {
                    if let Some(arg) = want.get(&p.pid) {
                        if p.command_line.last() == Some(arg) {
                            seen.insert(p.pid, ());
                        }
                    }
                }
            }
        }
    }
    assert!(
        max_frame > MIB && max_frame <= 8 * MIB,
        "a frame above 1 MiB, within 8 MiB: largest {max_frame}"
    );

    // `collector events` (defaults) got the same batches: every witness, intact.
    let stdout = events_cli.stdout.take().unwrap();
    let want_events = want.clone();
    let reader = std::thread::spawn(move || {
        let mut seen = BTreeMap::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
            let pid = ev["pid"].as_u64().unwrap_or_default() as u32;
            let last = ev["command_line"]
                .as_array()
                .and_then(|a| a.last())
                .and_then(|a| a.as_str());
            if want_events.get(&pid).map(String::as_str) == last {
                seen.insert(pid, ());
                if seen.len() == want_events.len() {
                    break;
                }
            }
        }
        seen.len()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = events_cli.kill();
    let out = events_cli.wait_with_output().unwrap();
    assert_eq!(
        reader.join().unwrap(),
        N,
        "collector events printed every witness's exec; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `collector processes` (defaults): every witness once, with its full argument, in
    // pages the size of the negotiated limit, so above 1 MiB.
    let rows = wait_listed(&socket, &want).await;
    assert_eq!(witness_rows(&rows, &want), want);
    let (_, sizes) = pages(&socket).await;
    assert!(
        sizes[0] > MIB && sizes.iter().all(|&s| s <= 8 * MIB),
        "page sizes {sizes:?}"
    );
    drop(witnesses);
    let _ = std::io::stderr().flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_kib_daemon_pages_a_large_process_list_completely() {
    const ARG: usize = 2048;
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, socket) = daemon(dir.path(), 64 * 1024).await;
    let witnesses = Witnesses::spawn(N, ARG);
    let want = witnesses.args(ARG);
    // And one whose command line alone is larger than a frame.
    let huge = Witnesses::spawn(1, 100 * 1024);
    let huge_pid = huge.0[0].id();

    // The CLI with its defaults: every witness once, with its full argument.
    let rows = wait_listed(&socket, &want).await;
    assert_eq!(witness_rows(&rows, &want), want);
    // The huge one is listed too, its command line cut to fit a page, and marked.
    let deadline = Instant::now() + Duration::from_secs(30);
    let huge_row = loop {
        let rows = cli_json_lines(&["processes", "--pid", &huge_pid.to_string()], &socket);
        if let Some(row) = rows.into_iter().find(|r| r["pid"] == huge_pid) {
            break row;
        }
        assert!(Instant::now() < deadline, "pid {huge_pid} never listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(huge_row["command_line_truncated"], true, "{huge_row}");
    let kept = huge_row["command_line"].as_array().unwrap();
    assert_eq!(kept[0], "sh");
    assert!(
        kept.iter()
            .map(|a| a.as_str().unwrap().len())
            .sum::<usize>()
            < 64 * 1024
    );

    // Page by page: over 600 KiB of witnesses alone, so ten pages or more, each within
    // the daemon's 64 KiB, and no row twice.
    let (rows, sizes) = pages(&socket).await;
    assert!(sizes.len() >= 10, "pages {sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 64 * 1024), "pages {sizes:?}");
    let mut keys: Vec<_> = rows.iter().map(|r| r.process_key.clone()).collect();
    let total = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total, "no row twice");
    let listed = rows
        .iter()
        .filter(|r| {
            want.get(&r.pid)
                .is_some_and(|a| r.command_line.last() == Some(a))
        })
        .count();
    assert_eq!(listed, N);
    drop((witnesses, huge));
}
