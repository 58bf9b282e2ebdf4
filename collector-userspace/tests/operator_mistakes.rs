//! Operator mistakes, tried on the real binary: each stops `collector run` at start with an
//! error that names the setting, instead of a panic, a silent fallback or a daemon running
//! without its store.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `collector run <args>` (procfs mode, no IPC) and returns its exit status and stderr.
fn run(args: &[&str], config: &str, uid: Option<u32>) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, config).unwrap();
    // Another uid may not reach target/ (a checkout under a 0700 directory): it runs a
    // copy of the binary from the test's own directory, which it may enter.
    let binary = match uid {
        Some(_) => {
            let copy = dir.path().join("collector");
            std::fs::copy(env!("CARGO_BIN_EXE_collector"), &copy).unwrap();
            std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            copy
        }
        None => env!("CARGO_BIN_EXE_collector").into(),
    };
    let mut cmd = Command::new(binary);
    cmd.args(["run", "--no-stdout", "--no-ipc", "--procfs"])
        .arg("--config")
        .arg(&file)
        .args(args)
        .env("XDG_CONFIG_HOME", dir.path())
        .env_remove("COLLECTOR_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(uid) = uid {
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        cmd.uid(uid).gid(uid);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`collector run {args:?}` with `{config}` kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

fn expect_refused(args: &[&str], config: &str, uid: Option<u32>, names: &str) {
    let (status, stderr) = run(args, config, uid);
    assert!(
        !status.success(),
        "{args:?} `{config}` was accepted:\n{stderr}"
    );
    assert!(
        stderr.contains(names),
        "{args:?} `{config}`: the error does not name `{names}`:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_settings_stop_the_daemon_naming_the_setting() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    for (args, config, names) in [
        (
            vec![],
            "event_buffer_size = 9223372036854775807",
            "event_buffer_size",
        ),
        (
            vec![],
            "max_ipc_connections = 9223372036854775807",
            "max_ipc_connections",
        ),
        (
            vec![],
            "shutdown_timeout = \"300000000000y\"",
            "shutdown_timeout",
        ),
        (vec![], "no_such_key = 1", "no_such_key"),
        (vec!["--process-ring-bytes", "0"], "", "process_ring_bytes"),
        (vec!["--file-ring-bytes", "12345"], "", "file_ring_bytes"),
        (vec!["--metrics-addr", "localhost"], "", "metrics_addr"),
        (vec![], "file_ring_bytes = 0", "file_ring_bytes"),
        (
            vec![],
            "process_wakeup_bytes = 99999999999",
            "process_wakeup_bytes",
        ),
        (vec![], "syscall_hooks = \"fast\"", "syscall_hooks"),
        (
            vec![],
            "excluded_comms = [\"a-name-longer-than-15\"]",
            "excluded_comms",
        ),
        (vec![], "kernel_domains = [\"disk\"]", "kernel_domains"),
    ] {
        let mut all = vec!["--data-dir", data_dir];
        all.extend(args.iter().copied());
        expect_refused(&all, config, None, names);
    }
}

#[test]
fn a_store_that_cannot_open_stops_the_daemon_unless_turned_off() {
    let data = tempfile::tempdir().unwrap();
    // A file where the data directory should be.
    let file = data.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    expect_refused(
        &["--data-dir", file.to_str().unwrap()],
        "",
        None,
        "data_dir",
    );

    // A directory another daemon holds (the store is locked while open).
    let held = data.path().join("held");
    let _store = collector_userspace::store::ProcessStore::open_in(
        &held,
        collector_userspace::store::StoreConfig::default(),
    )
    .unwrap();
    expect_refused(
        &["--data-dir", held.to_str().unwrap()],
        "",
        None,
        "data_dir",
    );

    // A directory the daemon may not write (root bypasses modes: run as nobody).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let readonly = data.path().join("readonly");
        std::fs::create_dir(&readonly).unwrap();
        std::fs::set_permissions(
            data.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        expect_refused(
            &["--data-dir", readonly.to_str().unwrap()],
            "",
            Some(65534),
            "data_dir",
        );
    }

    // Turned off, the same directory is fine: the daemon runs until SIGTERM.
    let mut child = Command::new(env!("CARGO_BIN_EXE_collector"))
        .args(["run", "--no-stdout", "--no-ipc", "--procfs", "--data-dir"])
        .arg(&file)
        .env("COLLECTOR_ENABLE_PROCESS_STORE", "false")
        .env("COLLECTOR_LOG", "info")
        .env("XDG_CONFIG_HOME", data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    // Wait until it runs (its SIGTERM handler is installed before "collector running").
    let mut seen = String::new();
    for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("collector running") {
            break;
        }
    }
    assert!(seen.contains("process store off"), "{seen}");
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success(), "{seen}");
}
