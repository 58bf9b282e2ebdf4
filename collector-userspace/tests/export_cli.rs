//! `collector run --export-nats` end to end: the daemon (procfs fallback, so no kernel
//! needed) exports to a real nats-server, `collector status` shows the exporter, and
//! `collector consume` prints the exported events as JSON lines.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server_or_skip() -> Option<PathBuf> {
    let found = ["/usr/bin/nats-server", "/usr/sbin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("COLLECTOR_REQUIRE_KERNEL").is_none(),
            "nats-server is not installed (run `cargo xtask setup`)"
        );
        eprintln!("skipping: nats-server is not installed (`apt-get install nats-server`)");
    }
    found
}

fn collector() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_collector"));
    // Only the explicit flags: no host or user configuration file leaks in.
    cmd.env("XDG_CONFIG_HOME", "/nonexistent")
        .env("HOME", "/nonexistent");
    cmd
}

fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn run_exports_and_status_and_consume_show_it() {
    let Some(bin) = nats_server_or_skip() else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = tempfile::tempdir().unwrap();
    let _server = Kill(
        Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for(Duration::from_secs(15), || TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_ok()));
    let url = format!("nats://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("collector.sock");
    let _daemon = Kill(
        collector()
            .args(["run", "--procfs", "--no-stdout", "--domain", "process"])
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--export-nats", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let status = || -> Option<serde_json::Value> {
        let out = collector()
            .arg("status")
            .arg("--socket")
            .arg(&socket)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    // The startup snapshot of /proc is exported once connected.
    assert!(
        wait_for(Duration::from_secs(30), || status().is_some_and(|s| {
            s["export"]["connected"] == true && s["export"]["acked"].as_u64() > Some(0)
        })),
        "{:?}",
        status()
    );
    // A process started now is seen by the next poll and exported.
    let sleeper = Kill(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = u64::from(sleeper.0.id());
    let consume = || -> Vec<serde_json::Value> {
        let out = collector()
            .args(["consume", "--nats", &url, "--idle-exit", "2s"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let mut events = Vec::new();
    assert!(
        wait_for(Duration::from_secs(30), || {
            events = consume();
            events
                .iter()
                .any(|e| e["pid"] == pid && e["kind"] == "exec")
        }),
        "pid {pid} not exported; {} events",
        events.len()
    );
    let exec = events
        .iter()
        .find(|e| e["pid"] == pid && e["kind"] == "exec")
        .unwrap();
    assert_eq!(exec["domain"], "process");
    assert_eq!(exec["source"], "procfs-process");
    assert_eq!(exec["name"], "sleep");
    let s = status().unwrap();
    let export = &s["export"];
    assert_eq!(export["stream"], "COLLECTOR");
    assert!(export["spool_bytes"].as_u64().is_some());
    assert!(export["published"].as_u64() >= export["acked"].as_u64());
    assert!(export["oldest_unacked_age_seconds"].as_f64().is_some());
}

/// `collector run` SIGKILLed while the server is down keeps what it spooled: restarted
/// on the same data directory with the server up, it publishes every event of its
/// first run, each once (the message ids stay the same across the restart).
#[test]
fn a_sigkilled_daemon_publishes_its_spool_after_a_restart() {
    let Some(bin) = nats_server_or_skip() else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("collector.sock");
    let daemon = || {
        Kill(
            collector()
                .args(["run", "--procfs", "--no-stdout", "--domain", "process"])
                .arg("--socket")
                .arg(&socket)
                .arg("--data-dir")
                .arg(dir.path())
                .args(["--export-nats", &url])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let status = || -> Option<serde_json::Value> {
        let out = collector()
            .arg("status")
            .arg("--socket")
            .arg(&socket)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };

    // No server: the startup snapshot of /proc goes to the spool only.
    let first = daemon();
    let mut spooled = 0;
    assert!(
        wait_for(Duration::from_secs(30), || {
            spooled = status()
                .and_then(|s| s["export"]["spooled"].as_u64())
                .unwrap_or(0);
            spooled > 0
        }),
        "nothing spooled: {:?}",
        status()
    );
    let s = status().unwrap();
    assert_eq!(s["export"]["connected"], false);
    assert_eq!(s["export"]["acked"], 0);
    let spooled = s["export"]["spooled"].as_u64().unwrap();
    // SIGKILL: no flush, no goodbye.
    drop(first);
    let killed_at = chrono::Utc::now();

    let store = tempfile::tempdir().unwrap();
    let _server = Kill(
        Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for(Duration::from_secs(15), || TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_ok()));
    let _second = daemon();

    // The first run's events (stamped before the kill) all arrive, each once.
    let consume = || -> Vec<serde_json::Value> {
        let out = collector()
            .args(["consume", "--nats", &url, "--idle-exit", "2s"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let mut before_kill = Vec::new();
    let arrived = wait_for(Duration::from_secs(60), || {
        before_kill = consume()
            .into_iter()
            .filter(|e| {
                e["timestamp"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t < killed_at)
            })
            .collect();
        before_kill.len() as u64 >= spooled
    });
    assert!(
        arrived,
        "{} of the {spooled} events spooled before the kill arrived",
        before_kill.len()
    );
    let mut keys: Vec<String> = before_kill
        .iter()
        .map(|e| format!("{} {} {}", e["pid"], e["kind"], e["timestamp"]))
        .collect();
    let all = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), all, "an event of the first run arrived twice");
}
