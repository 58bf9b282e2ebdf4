//! `/metrics` of a real kernel-mode daemon scraped over HTTP during a file storm that
//! overflows a one-page ring: the counters rise from scrape to scrape, bad requests (a
//! wrong path, a huge header) are refused while the storm runs and the daemon keeps
//! serving, and the losses /metrics shows are the ones `collector status` shows.
//!
//! Needs root and BTF (it loads the kernel programs); skips otherwise, and fails instead
//! of skipping under `COLLECTOR_REQUIRE_KERNEL=1`.

mod common;

use common::kernel_or_skip;
use common::Daemon;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The body of a successful `GET /metrics`.
fn scrape(addr: SocketAddr) -> String {
    let answer = http(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
    answer.split("\r\n\r\n").nth(1).unwrap().to_owned()
}

/// Sum of the samples of `family` whose labels contain `source="<source>"`.
fn sum(text: &str, family: &str, source: &str) -> u64 {
    let label = format!("source=\"{source}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(family)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once("} ")?;
            labels
                .contains(&label)
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .map(|v| v as u64)
        .sum()
}

/// (kernel losses, userspace drops) of `source` in `collector status`.
fn status_losses(collector: &Path, socket: &Path, source: &str) -> (u64, u64) {
    let out = Command::new(collector)
        .args(["status", "--socket"])
        .arg(socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == source)
        .unwrap_or_else(|| panic!("no {source} in {status}"));
    let total = |v: &serde_json::Value| -> u64 {
        v.as_object()
            .map(|m| m.values().filter_map(|n| n.as_u64()).sum())
            .unwrap_or(0)
    };
    (
        total(&s["stats"]["kernel_lost"]),
        total(&s["dropped"]) + total(&s["stats"]["dropped"]),
    )
}

#[test]
fn metrics_during_a_kernel_storm_rise_match_status_and_survive_bad_requests() {
    if !kernel_or_skip("metrics_during_a_kernel_storm_rise_match_status_and_survive_bad_requests") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let socket = dir.join("collector.sock");
    let config = dir.join("c.toml");
    // One page of ring, woken at every record: the storm overflows it.
    std::fs::write(&config, "file_ring_bytes = 4096\nfile_wakeup_bytes = 0\n").unwrap();
    let collector = Path::new(env!("CARGO_BIN_EXE_collector"));
    let mut child = Command::new(collector)
        .args([
            "--log-format",
            "json",
            "run",
            "--domain",
            "filesystem",
            "--no-stdout",
        ])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("COLLECTOR_LOG", "info")
        .env("XDG_CONFIG_HOME", &dir)
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
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(addr) = v["fields"]["addr"].as_str() {
            break addr.parse().unwrap();
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no IPC socket");
        std::thread::sleep(Duration::from_millis(50));
    }

    const SOURCE: &str = "ebpf-filesystem";
    let emitted = |text: &str| sum(text, "collector_kernel_events_emitted_total", SOURCE);
    let lost = |text: &str| sum(text, "collector_kernel_events_lost_total", SOURCE);

    // The storm: this process opening a file as fast as it can, until told to stop.
    let target = dir.join("storm-target");
    std::fs::write(&target, b"x").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let (stop, target) = (stop.clone(), target.clone());
        std::thread::spawn(move || {
            let mut opens = 0u64;
            while !stop.load(Ordering::Relaxed) {
                drop(std::fs::File::open(&target).unwrap());
                opens += 1;
            }
            opens
        })
    };

    // Counters rise from scrape to scrape while it runs, and bad requests between them
    // are refused without stopping the server.
    let mut last = scrape(addr);
    for round in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let next = loop {
            std::thread::sleep(Duration::from_millis(200));
            let next = scrape(addr);
            if emitted(&next) > emitted(&last) && lost(&next) > lost(&last) {
                break next;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: emitted/lost never rose: {} -> {}, {} -> {}",
                emitted(&last),
                emitted(&next),
                lost(&last),
                lost(&next)
            );
        };
        let wrong = http(
            addr,
            b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(wrong.starts_with("HTTP/1.1 404"), "{wrong:.200}");
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1 << 20)
        );
        let answer = http(addr, huge.as_bytes());
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "a huge header is refused: {answer:.200}"
        );
        last = next;
    }
    stop.store(true, Ordering::Relaxed);
    let opens = storm.join().unwrap();
    assert!(opens > 0);

    // Drops in /metrics are the drops in status. The host's other file activity keeps
    // moving them (a one-page ring overflows on any open), so a scrape taken between two
    // status readings must lie between them, each counter on its own; under a busy host
    // the counters may never hold still long enough to compare them for equality.
    let before = status_losses(collector, &socket, SOURCE);
    let metrics = scrape(addr);
    let after = status_losses(collector, &socket, SOURCE);
    let shown = (
        lost(&metrics),
        sum(&metrics, "collector_source_events_dropped_total", SOURCE),
    );
    assert!(
        before.0 <= shown.0 && shown.0 <= after.0 && before.1 <= shown.1 && shown.1 <= after.1,
        "kernel losses and drops: /metrics {shown:?} outside status {before:?}..{after:?}"
    );
    assert!(before.0 > 0, "the one-page ring overflowed");
    // Still serving after all that.
    assert!(emitted(&scrape(addr)) > 0);
}
