//! `collector run --metrics-addr`: a real daemon (procfs mode, no privilege needed) serves
//! /metrics that promtool accepts and whose counters rise, /healthz, and refuses bad
//! requests while it keeps serving.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn http(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(raw);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get(addr: SocketAddr, path: &str) -> String {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_endpoint_serves_valid_rising_metrics_and_survives_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_collector"))
        .args([
            "--log-format",
            "json",
            "run",
            "--procfs",
            "--no-stdout",
            "--no-ipc",
        ])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("COLLECTOR_LOG", "info")
        .env("COLLECTOR_HEALTH_CHECK_INTERVAL", "1s")
        .env("XDG_CONFIG_HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _daemon = Daemon(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr: SocketAddr = loop {
        assert!(
            Instant::now() < deadline,
            "the daemon never said where it serves"
        );
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(addr) = v["fields"]["addr"].as_str() {
            break addr.parse().unwrap();
        }
    };

    let first = get(addr, "/metrics");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let body = first.split("\r\n\r\n").nth(1).unwrap().to_owned();
    assert!(
        body.contains("collector_process_resident_memory_bytes "),
        "{body}"
    );
    assert!(body.contains("collector_process_cpu_seconds "), "{body}");

    // Bad requests get a 4xx (or the connection closed), and the daemon keeps serving.
    assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let answer = http(addr, huge.as_bytes());
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer:.100}"
    );

    // The procfs process source reports what changed: a new process makes the received
    // counter rise (a quiet machine may start none of its own).
    let mut witness = Command::new("sleep").arg("120").spawn().unwrap();
    let received = |text: &str| {
        sample(
            text,
            "collector_source_events_received_total{source=\"procfs-process\"}",
        )
        .unwrap_or(0.0)
    };
    let before = received(&body);
    let deadline = Instant::now() + Duration::from_secs(30);
    let later = loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = get(addr, "/metrics");
        if received(&now) > before {
            break now;
        }
        assert!(Instant::now() < deadline, "counters never rose:\n{now}");
    };
    let _ = witness.kill();
    let _ = witness.wait();
    let later = later.split("\r\n\r\n").nth(1).unwrap();

    // Healthy once every source has passed a health check (sources start as `starting`).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = get(addr, "/healthz");
        if health.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            health.starts_with("HTTP/1.1 503") && Instant::now() < deadline,
            "{health}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let promtool = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    assert!(
        promtool.is_some() || std::env::var("COLLECTOR_REQUIRE_KERNEL").as_deref() != Ok("1"),
        "promtool is missing in CI: `cargo xtask setup` installs Debian's prometheus"
    );
    if let Some(promtool) = promtool {
        let mut check = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(later.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        let report = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && report.trim().is_empty(),
            "promtool: {report}\n{later}"
        );
    }
}
