//! A real `nats-server` for the export tests: started on a free port, JetStream on a
//! temporary store directory, killed with the test.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use collector_core::event::{ProcessEvent, ProcessEventKind};
use collector_core::CollectionEvent;

/// The server binary, or `None` (then the test says why it skips, and fails under
/// `COLLECTOR_REQUIRE_KERNEL=1`, as CI sets, since `cargo xtask test` installs it).
pub fn nats_server_or_skip(test: &str) -> Option<PathBuf> {
    let found = ["/usr/bin/nats-server", "/usr/sbin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            Command::new("nats-server")
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| PathBuf::from("nats-server"))
        });
    if found.is_none() {
        if std::env::var_os("COLLECTOR_REQUIRE_KERNEL").is_some() {
            panic!("{test}: nats-server is not installed (run `cargo xtask setup`)");
        }
        eprintln!("skipping {test}: nats-server is not installed (`apt-get install nats-server`)");
    }
    found
}

/// A free TCP port on the loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server.
pub struct NatsServer {
    bin: PathBuf,
    pub port: u16,
    pub store: tempfile::TempDir,
    extra: Vec<String>,
    jetstream: bool,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with JetStream.
    pub fn start(bin: &Path) -> Self {
        Self::start_with(bin, true, &[])
    }

    /// Starts a server, with JetStream or not, with extra arguments.
    pub fn start_with(bin: &Path, jetstream: bool, extra: &[&str]) -> Self {
        Self::start_on(bin, free_port(), jetstream, extra)
    }

    /// Starts a server on `port`.
    pub fn start_on(bin: &Path, port: u16, jetstream: bool, extra: &[&str]) -> Self {
        let mut server = Self {
            bin: bin.to_owned(),
            port,
            store: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            jetstream,
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)starts on the same port and store.
    pub fn restart(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.jetstream {
            cmd.arg("-js").arg("-sd").arg(self.store.path());
        }
        cmd.args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("start nats-server"));
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A synthetic exec event whose pid identifies it.
pub fn exec(pid: u32) -> CollectionEvent {
    let mut e = ProcessEvent::new(ProcessEventKind::Exec, Utc::now(), pid, "export-test");
    e.name = Some("curl".into());
    e.command_line = vec![
        "curl".into(),
        "-s".into(),
        "https://example.invalid/".into(),
    ];
    CollectionEvent::from(e)
}

/// An `exec` for even pids and an `exit` for odd ones: two subjects interleaved.
pub fn exec_or_exit(pid: u32) -> CollectionEvent {
    let mut event = exec(pid);
    if pid % 2 == 1 {
        if let CollectionEvent::Process(p) = &mut event {
            p.kind = ProcessEventKind::Exit;
            p.exit_code = Some(0);
        }
    }
    event
}

/// Polls `done` every 10 ms until it holds or `within` passes; returns whether it held.
pub async fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every event on `subject` in `stream`, read back through `collector consume`'s code:
/// the pids, in stream order.
pub async fn consumed_pids(url: &str, stream: &str) -> Vec<u32> {
    let opts = collector_export::consume::ConsumeOptions {
        servers: vec![url.to_owned()],
        subject: "collector.>".into(),
        stream: stream.into(),
        limit: None,
        idle_exit: Some(Duration::from_secs(2)),
        creds_file: None,
    };
    let mut out = Vec::new();
    let summary = collector_export::consume::consume(&opts, &mut out)
        .await
        .expect("consume");
    assert_eq!(summary.undecodable, 0);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            // `exec` for even pids, `exit` for odd ones in the mixed-subject tests.
            assert!(v["kind"] == "exec" || v["kind"] == "exit", "{l}");
            v["pid"].as_u64().unwrap() as u32
        })
        .collect()
}

/// Asserts `pids` holds each of `expected` exactly once.
pub fn assert_each_once(pids: &[u32], expected: std::ops::Range<u32>) {
    let mut seen = vec![0u8; expected.end as usize];
    for &p in pids {
        assert!(expected.contains(&p), "unexpected pid {p}");
        seen[p as usize] += 1;
    }
    let missing: Vec<u32> = expected
        .clone()
        .filter(|&p| seen[p as usize] == 0)
        .collect();
    let twice: Vec<u32> = expected.filter(|&p| seen[p as usize] > 1).collect();
    assert!(
        missing.is_empty(),
        "{} missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        twice.is_empty(),
        "{} duplicated, first {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
}
