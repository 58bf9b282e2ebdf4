//! SIGHUP on a real daemon: a bad file keeps the running configuration and says why; a
//! good one applies the live keys and names the ones that need a restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// The next JSON log line whose message contains `needle`.
fn wait_for(lines: &Receiver<String>, needle: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no log line with `{needle}`");
        let Ok(line) = lines.recv_timeout(left) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(needle))
        {
            return v;
        }
    }
}

#[test]
fn sighup_keeps_a_bad_file_out_and_applies_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "enable_debug_logging = false\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_collector"))
        .args([
            "--log-format",
            "json",
            "run",
            "--procfs",
            "--no-stdout",
            "--no-ipc",
        ])
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("COLLECTOR_LOG")
        .env("XDG_CONFIG_HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let pid = child.id() as i32;
    let _daemon = Daemon(child);
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    wait_for(&lines, "SIGHUP reloads the configuration");

    std::fs::write(&file, "max_batch_size = 0\n").unwrap();
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let kept = wait_for(&lines, "keeping the running configuration");
    let message = kept["fields"]["message"].as_str().unwrap();
    assert!(message.contains("max_batch_size"), "{message}");
    assert_eq!(kept["level"], "WARN");

    std::fs::write(&file, "enable_debug_logging = true\nmax_batch_size = 50\n").unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let reloaded = wait_for(&lines, "configuration reloaded");
    assert_eq!(reloaded["fields"]["applied"], "[\"enable_debug_logging\"]");
    assert_eq!(reloaded["fields"]["need_restart"], "[\"max_batch_size\"]");
    // The daemon is still running after both reloads.
    // SAFETY: signal 0 only checks that the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0);
}
