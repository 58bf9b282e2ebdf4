//! SIGHUP changes the kernel exclusions of a running daemon: started with none, a reload
//! that excludes a path prefix stops that prefix's file events (and only those), and a
//! reload that drops it brings them back; the log names the keys as applied, not as
//! needing a restart.
//!
//! Needs root and BTF (it loads the kernel programs); skips otherwise, and fails instead
//! of skipping under `COLLECTOR_REQUIRE_KERNEL=1`.

mod common;

use common::kernel_or_skip;
use common::Daemon;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// A shell that, per line on its stdin, opens `excluded` then `control` (builtins with a
/// redirection: the shell itself opens them, in that order) and says `done`.
struct Opener {
    _child: Daemon,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Opener {
    fn spawn(excluded: &Path, control: &Path) -> Self {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"while read l; do : < "$1"; : < "$2"; echo done; done"#)
            .arg("sh")
            .arg(excluded)
            .arg(control)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            _child: Daemon(child),
            stdin,
            stdout,
        }
    }

    fn round(&mut self) {
        writeln!(self.stdin, "go").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
    }
}

/// The next JSON log line whose message contains `needle`.
fn wait_for_log(lines: &Receiver<String>, needle: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no log line with `{needle}`");
        let Ok(line) = lines.recv_timeout(left) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(needle))
        {
            return v;
        }
    }
}

/// Which of the two paths the events of one round named, read up to the control
/// path's event (the excluded path's, if recorded, comes before it: same process,
/// opened first). `None` when the control event does not come within `wait`.
fn one_round(
    events: &Receiver<String>,
    excluded: &str,
    control: &str,
    wait: Duration,
) -> Option<bool> {
    let deadline = Instant::now() + wait;
    let mut saw_excluded = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = events.recv_timeout(left).ok()?;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["path"] == excluded {
            saw_excluded = true;
        } else if v["path"] == control {
            return Some(saw_excluded);
        }
    }
}

#[test]
fn sighup_applies_an_excluded_path_prefix_to_the_running_kernel_programs() {
    if !kernel_or_skip("sighup_applies_an_excluded_path_prefix_to_the_running_kernel_programs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let quiet = dir.join("quiet");
    std::fs::create_dir(&quiet).unwrap();
    let excluded = quiet.join("a");
    let control = dir.join("b");
    std::fs::write(&excluded, b"a").unwrap();
    std::fs::write(&control, b"b").unwrap();
    let (excluded_s, control_s) = (
        excluded.display().to_string(),
        control.display().to_string(),
    );
    let file = dir.join("c.toml");
    std::fs::write(&file, "").unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_collector"))
        .args([
            "--log-format",
            "json",
            "run",
            "--domain",
            "filesystem",
            "--no-ipc",
        ])
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("COLLECTOR_LOG")
        .env("XDG_CONFIG_HOME", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let pid = child.id() as i32;
    let _daemon = Daemon(child);
    let (log_tx, logs) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    // Every file event of the host comes out: keep the test's own.
    let (event_tx, events) = std::sync::mpsc::channel();
    let prefix = dir.display().to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&prefix) {
                let _ = event_tx.send(line);
            }
        }
    });
    wait_for_log(&logs, "SIGHUP reloads the configuration");

    let mut opener = Opener::spawn(&excluded, &control);
    // Up once the control file's open comes through.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        assert!(Instant::now() < deadline, "no file events within 30 s");
        opener.round();
        if let Some(saw) = one_round(&events, &excluded_s, &control_s, Duration::from_secs(1)) {
            break saw;
        }
    };
    assert!(first, "before the reload both paths are recorded");

    let reload = |config: &str| {
        std::fs::write(&file, config).unwrap();
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        let reloaded = wait_for_log(&logs, "configuration reloaded");
        assert_eq!(
            reloaded["fields"]["applied"], "[\"excluded_path_prefixes\"]",
            "{reloaded}"
        );
        assert_eq!(reloaded["fields"]["need_restart"], "[]", "{reloaded}");
    };

    reload(&format!(
        "excluded_path_prefixes = [\"{}/\"]\n",
        quiet.display()
    ));
    for round in 0..3 {
        opener.round();
        let saw = one_round(&events, &excluded_s, &control_s, Duration::from_secs(10))
            .expect("the control file's open arrives");
        assert!(
            !saw,
            "round {round}: the excluded prefix's open is dropped in the kernel"
        );
    }

    reload("");
    opener.round();
    let saw = one_round(&events, &excluded_s, &control_s, Duration::from_secs(10))
        .expect("the control file's open arrives");
    assert!(saw, "with the exclusion gone the path is recorded again");
}
