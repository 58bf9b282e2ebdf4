//! The process store survives SIGKILL: a real `collector run` (kernel process domain)
//! sees processes start and exit, `status` says the store committed their events, the
//! daemon is killed with SIGKILL, and a new daemon on the same data directory answers
//! `collector processes --pid N --since 1h` with every committed exec and exit row.
//!
//! Also shows the live table over IPC: the children appear in `--exited` with their
//! exit codes, and a live child's `--pid` answer carries its ancestry up to pid 1.
//!
//! Needs root and BTF; skips otherwise, and fails instead under
//! `COLLECTOR_REQUIRE_KERNEL=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collector_core::ipc::CollectorIpcClient;
use collector_userspace::ipc_cli::{processes_to, ProcessesArgs, SocketArgs};

fn kernel_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not root (kernel tests need CAP_BPF and CAP_PERFMON)")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no kernel BTF at /sys/kernel/btf/vmlinux")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            assert!(
                std::env::var("COLLECTOR_REQUIRE_KERNEL").as_deref() != Ok("1"),
                "{test}: cannot run ({why}) but COLLECTOR_REQUIRE_KERNEL=1 forbids skipping"
            );
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    async fn start(dir: &Path) -> Self {
        Self::start_with(dir, &["--domain", "process"]).await
    }

    async fn start_with(dir: &Path, domains: &[&str]) -> Self {
        let socket = dir.join("collector.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(env!("CARGO_BIN_EXE_collector"))
            .arg("run")
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--no-stdout")
            .args(domains)
            .stdout(Stdio::null())
            .spawn()
            .expect("start collector run");
        let mut daemon = Self { child, socket };
        let started = Instant::now();
        loop {
            if CollectorIpcClient::connect(&daemon.socket).await.is_ok() {
                return daemon;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "collector did not serve IPC within 90s"
            );
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("collector exited early: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn processes(
        &self,
        pid: Option<u32>,
        exited: bool,
        since: Option<Duration>,
    ) -> Vec<serde_json::Value> {
        let args = ProcessesArgs {
            socket: SocketArgs {
                socket: self.socket.clone(),
            },
            pid,
            name: None,
            exe: None,
            exited,
            since,
            max_page_bytes: 0,
        };
        let mut out = Vec::new();
        processes_to(&args, &mut out)
            .await
            .expect("collector processes");
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn status(&self) -> collector_core::ProcessTableStatus {
        let mut client = CollectorIpcClient::connect(&self.socket).await.unwrap();
        client
            .status()
            .await
            .unwrap()
            .processes
            .expect("status has the process table")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_process_record_survives_sigkill() {
    if !kernel_or_skip("every_committed_process_record_survives_sigkill") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let daemon = Daemon::start(&dir).await;
    let me = std::process::id();

    // Three children that exit without exec, as a shell's subshells do: each must leave
    // the store's table of live processes at its exit.
    let mut forked = Vec::new();
    for _ in 0..3 {
        // SAFETY: the child only calls _exit, which is async-signal-safe.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        forked.push(pid as u32);
    }

    // A live child (for ancestry) and ten that exit with their own codes.
    let mut sleeper = Command::new("/bin/sleep").arg("300").spawn().unwrap();
    let mut exited = Vec::new();
    for code in 1..=10 {
        let mut child = Command::new("/bin/sh")
            .args(["-c", &format!("exit {code}")])
            .spawn()
            .unwrap();
        let pid = child.id();
        assert_eq!(child.wait().unwrap().code(), Some(code));
        exited.push((pid, code));
    }

    // The live table lists them as exited, with the kernel's process key and code.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = daemon.processes(None, true, None).await;
        let found = exited
            .iter()
            .filter(|(pid, _)| {
                rows.iter()
                    .any(|r| r["pid"] == *pid && r["exit_code"].is_i64())
            })
            .count();
        if found == exited.len() {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "only {found} of {} exited children listed by --exited",
            exited.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (pid, code) in &exited {
        let row = rows
            .iter()
            .find(|r| r["pid"] == *pid && r["exit_code"].is_i64())
            .unwrap();
        assert_eq!(row["exit_code"], *code, "{row}");
        assert_eq!(row["ppid"], me, "{row}");
        // The file the kernel loaded: /bin/sh is a symlink (to dash on Debian).
        assert_eq!(row["executable_path"], sh_path(), "{row}");
        assert!(row["exit_time"].as_str().unwrap().ends_with('Z'), "{row}");
        let key = row["process_key"].as_str().unwrap();
        assert!(key.starts_with(&format!("{pid}:")), "{row}");
    }

    // `--pid` of the live child: it, then this test process, ..., up to pid 1.
    let chain = daemon.processes(Some(sleeper.id()), false, None).await;
    assert_eq!(chain[0]["pid"], sleeper.id(), "{chain:?}");
    assert!(
        chain[0]["executable_path"]
            .as_str()
            .unwrap()
            .ends_with("/sleep"),
        "{chain:?}"
    );
    assert_eq!(chain[1]["pid"], me, "{chain:?}");
    assert_eq!(
        chain[0]["parent_process_key"], chain[1]["process_key"],
        "{chain:?}"
    );
    assert_eq!(chain.last().unwrap()["pid"], 1, "{chain:?}");
    for pair in chain.windows(2) {
        assert_eq!(pair[0]["ppid"], pair[1]["pid"], "{chain:?}");
    }

    // Wait until the store has committed every process event the table has seen (the
    // table is offered each batch before the store, and the store writes in order).
    let seen = daemon.status().await.events;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = daemon.status().await;
        assert_eq!(
            (s.store_dropped_events, s.store_failed_events),
            (0, 0),
            "{s:?}"
        );
        if s.store_written_events >= seen {
            break;
        }
        assert!(Instant::now() < deadline, "store did not commit: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SIGKILL: no shutdown path runs.
    let mut daemon = daemon;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(daemon.child.id() as i32, libc::SIGKILL) },
        0
    );
    let status = daemon.child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    drop(daemon);

    // The store's table of live processes, as committed: the sleeper is there, the
    // children that exited are not (a forked child that never exec'd used to stay, its
    // exit taken for a stale one).
    {
        let store = collector_userspace::store::ProcessStore::open(
            &dir.join("data")
                .join(collector_userspace::store::STORE_FILE),
        )
        .expect("open the store after SIGKILL");
        assert!(store.process(sleeper.id()).unwrap().is_some());
        for pid in forked.iter().chain(exited.iter().map(|(pid, _)| pid)) {
            assert!(
                store.process(*pid).unwrap().is_none(),
                "exited child {pid} still in the store's live table"
            );
        }
    }

    let daemon = Daemon::start(&dir).await;
    for (pid, code) in &exited {
        let rows = daemon
            .processes(Some(*pid), false, Some(Duration::from_secs(3600)))
            .await;
        let exec = rows
            .iter()
            .find(|r| r["last_event"] == "exec" && r["executable_path"] == sh_path())
            .unwrap_or_else(|| panic!("no exec row of {pid} after the restart: {rows:?}"));
        let exit = rows
            .iter()
            .find(|r| r["last_event"] == "exit" && r["process_key"] == exec["process_key"])
            .unwrap_or_else(|| panic!("no exit row of {pid} after the restart: {rows:?}"));
        assert_eq!(exec["pid"], *pid);
        assert_eq!(exec["ppid"], me, "{exec}");
        assert_eq!(
            exec["command_line"],
            serde_json::json!(["/bin/sh", "-c", format!("exit {code}")])
        );
        assert_eq!(exit["exit_code"], *code, "{exit}");
        assert!(exit["exit_time"].as_str().unwrap().ends_with('Z'), "{exit}");
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// File and network events get their process from the table: a shell that execs,
/// waits, then opens a file (a redirect: the shell itself opens it) and connects to a
/// local listener. Both events carry the shell's process key, its executable, its exec
/// name and its parent (this test) with the parent's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_network_events_carry_the_process_from_the_table() {
    use collector_core::event::Domain;
    use collector_core::ipc::SubscriptionItem;
    use collector_core::CollectionEvent;
    use futures::StreamExt;

    if !kernel_or_skip("file_and_network_events_carry_the_process_from_the_table") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let daemon = Daemon::start_with(
        &dir,
        &[
            "--domain",
            "process",
            "--domain",
            "filesystem",
            "--domain",
            "network",
        ],
    )
    .await;
    let client = CollectorIpcClient::connect(&daemon.socket).await.unwrap();
    let stream = client
        .subscribe::<&str>(&[Domain::Filesystem, Domain::Network], &[])
        .await
        .unwrap();
    futures::pin_mut!(stream);

    let target = dir.join("enrich-target");
    std::fs::write(&target, b"x").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let me = std::process::id();
    // Up to three attempts: on a host busy with other tests this subscriber can lag (the
    // collector drops what it cannot queue, and says so), and a lagged attempt proves
    // nothing either way.
    let mut found = None;
    for attempt in 0..3 {
        let go = dir.join(format!("go-{attempt}"));
        // bash's /dev/tcp connects from the shell itself. The shell waits (with `[ -e ]`,
        // a stat, no open) until the test has seen its exec in the table, so the events
        // below are not raced against the exec's own trip through the pipeline.
        let script = format!(
            "while [ ! -e {go} ]; do sleep 0.05; done; read x < {target}; \
             exec 3<>/dev/tcp/127.0.0.1/{port}; exit 0",
            go = go.display(),
            target = target.display()
        );
        let mut shell = Command::new("/bin/bash")
            .args(["-c", &script])
            .spawn()
            .unwrap();
        let shell_pid = shell.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = daemon.processes(Some(shell_pid), false, None).await;
            if rows.first().is_some_and(|r| {
                r["pid"] == shell_pid
                    && r["executable_path"]
                        .as_str()
                        .is_some_and(|e| e.ends_with("/bash"))
            }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the table never saw the shell's exec"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::write(&go, b"").unwrap();

        let (mut file, mut net, mut lagged) = (None, None, false);
        let deadline = Instant::now() + Duration::from_secs(20);
        while (file.is_none() || net.is_none()) && Instant::now() < deadline {
            let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await
            else {
                continue;
            };
            match item.unwrap() {
                SubscriptionItem::Event(CollectionEvent::Filesystem(f))
                    if f.pid == shell_pid && Path::new(&f.path) == target =>
                {
                    file.get_or_insert(f.process.clone());
                }
                SubscriptionItem::Event(CollectionEvent::Network(n))
                    if n.pid == shell_pid && n.dest_addr.port() == port =>
                {
                    net.get_or_insert(n.process.clone());
                }
                SubscriptionItem::Lagged { .. } => lagged = true,
                _ => {}
            }
        }
        assert!(shell.wait().unwrap().success());
        match (file, net) {
            (Some(file), Some(net)) => {
                found = Some((
                    shell_pid,
                    file.expect("the shell's open carries its process"),
                    net.expect("the shell's connect carries its process"),
                ));
                break;
            }
            _ if lagged => eprintln!("attempt {attempt}: the subscriber lagged; again"),
            (file, net) => panic!("no event of the shell: open {file:?}, connect {net:?}"),
        }
    }
    drop(listener);
    let (shell_pid, file, net) = found.expect("three attempts lagged");
    assert_eq!(file, net, "one process, one context");
    assert!(
        file.process_key.starts_with(&format!("{shell_pid}:")),
        "{file:?}"
    );
    assert!(
        file.executable_path.as_deref().unwrap().ends_with("/bash"),
        "{file:?}"
    );
    assert_eq!(file.exec_name.as_deref(), Some("bash"), "{file:?}");
    assert_eq!(file.ppid, Some(me), "{file:?}");
    let parent = daemon.processes(Some(me), false, None).await;
    assert_eq!(
        file.parent_process_key.as_deref(),
        parent[0]["process_key"].as_str(),
        "{file:?} / {parent:?}"
    );
}

/// `/bin/sh` resolved, as the kernel reports the executable it loaded.
fn sh_path() -> String {
    std::fs::canonicalize("/bin/sh")
        .unwrap()
        .display()
        .to_string()
}
