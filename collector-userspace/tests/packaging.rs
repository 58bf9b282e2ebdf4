//! What an operator installs: the systemd unit verifies, and the daemon's JSON logs are
//! one JSON object per line (what journald and log shippers ingest).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = include_str!("../../packaging/collector.service");

/// `systemd-analyze verify` accepts the unit (with ExecStart pointed at the binary this
/// test built, since verify checks that the executable exists). Where systemd is not
/// installed the test says so and checks what it can without it.
#[test]
fn service_unit_verifies_and_keeps_only_the_capabilities_it_needs() {
    let caps_line = UNIT
        .lines()
        .find(|l| l.starts_with("CapabilityBoundingSet="))
        .expect("the unit bounds its capabilities");
    let caps: Vec<&str> = caps_line["CapabilityBoundingSet=".len()..]
        .split_whitespace()
        .collect();
    assert!(caps.contains(&"CAP_BPF") && caps.contains(&"CAP_PERFMON"));
    assert!(
        !caps.contains(&"CAP_SYS_ADMIN"),
        "CAP_SYS_ADMIN is only for the tracefs mount, in a `+` ExecStartPre"
    );
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ] {
        assert!(
            UNIT.lines().any(|l| l == hardening),
            "unit has `{hardening}`"
        );
    }

    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("skipping systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = UNIT.replace(
        "ExecStart=/usr/local/bin/collector",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_collector")),
    );
    let path = dir.path().join("collector.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about *other* units on the host (verify loads dependencies) are not ours.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("collector.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

/// `--log-format json`: every line the daemon logs is a JSON object with a level and a
/// message (here: the procfs fallback, which needs no privilege).
#[test]
fn json_logs_are_one_object_per_line() {
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
        .arg("--data-dir")
        .arg(dir.path())
        .env("COLLECTOR_LOG", "info")
        .env("XDG_CONFIG_HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while lines.len() < 2 && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
    }
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        lines.push(line);
    }
    assert!(!lines.is_empty(), "the daemon logged something ({status})");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    assert!(Path::new(dir.path()).exists());
}
