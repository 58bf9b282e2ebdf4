//! Exec events from the real kernel reach the process source with the right pids.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use collector_core::event::ProcessEventKind;
use collector_core::{CollectionEvent, EventSource};
use collector_tests::kernel_or_skip;
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms, KernelSource};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_of_bin_true_arrives_with_child_and_parent_pids() {
    if !kernel_or_skip("exec_of_bin_true_arrives_with_child_and_parent_pids") {
        return;
    }
    let programs = KernelPrograms::load(KernelConfig::default()).expect("load kernel programs");
    assert!(
        programs.kernel_logging(),
        "aya-log is wired for kernel diagnostics"
    );
    let source =
        Arc::new(KernelSource::new(programs, KernelDomain::Process).expect("process source"));
    let (tx, mut rx) = mpsc::channel(4096);
    let shutdown = Arc::new(AtomicBool::new(false));
    let task = {
        let source = source.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { source.start(tx, shutdown).await })
    };

    let marker = format!("collector-marker-{}", std::process::id());
    let mut child = std::process::Command::new("/bin/true")
        .arg(&marker)
        .arg("second arg")
        .spawn()
        .expect("spawn /bin/true");
    let child_pid = child.id();
    child.wait().unwrap();

    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = rx.recv().await {
            if let CollectionEvent::Process(p) = ev {
                if p.kind == ProcessEventKind::Exec && p.command_line.iter().any(|a| a == &marker) {
                    return Some(p);
                }
            }
        }
        None
    })
    .await
    .expect("no exec event within 10 s")
    .expect("channel closed");

    assert_eq!(found.pid, child_pid, "exec event pid is the child's");
    assert_eq!(
        found.ppid,
        Some(std::process::id()),
        "ppid is this test process"
    );
    // The file the kernel loaded (`/bin` is a symlink on merged-/usr systems).
    let true_path = std::fs::canonicalize("/bin/true").unwrap();
    assert_eq!(found.executable_path.as_deref(), true_path.to_str());
    assert_eq!(
        found.command_line,
        ["/bin/true", marker.as_str(), "second arg"]
    );
    assert_eq!(found.uid, Some(0));
    assert_eq!(found.name.as_deref(), Some("true"));

    source.stop().await.unwrap();
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    task.await.unwrap().unwrap();
}

async fn collect_until<F>(
    rx: &mut mpsc::Receiver<CollectionEvent>,
    mut done: F,
) -> Vec<CollectionEvent>
where
    F: FnMut(&[CollectionEvent]) -> bool,
{
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = rx.recv().await {
            seen.push(ev);
            if done(&seen) {
                return;
            }
        }
    })
    .await;
    seen
}

fn start(
    source: Arc<KernelSource>,
) -> (
    mpsc::Receiver<CollectionEvent>,
    Arc<AtomicBool>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (tx, rx) = mpsc::channel(4096);
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = shutdown.clone();
    let task = tokio::spawn(async move { source.start(tx, flag).await });
    (rx, shutdown, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_and_exit_code_3_observed_failed_exec_not_reported() {
    if !kernel_or_skip("fork_and_exit_code_3_observed_failed_exec_not_reported") {
        return;
    }
    let programs = KernelPrograms::load(KernelConfig::default()).expect("load kernel programs");
    let source =
        Arc::new(KernelSource::new(programs, KernelDomain::Process).expect("process source"));
    let (mut rx, shutdown, task) = start(source.clone());

    // The shell forks a subshell (a fork by a process that is not the collector) which
    // exits with 3, then tries to exec a file that does not exist.
    let missing = format!("/nonexistent/collector-missing-{}", std::process::id());
    let mut sh = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("(exit 3); {missing} 2>/dev/null; exit 0"))
        .spawn()
        .expect("spawn sh");
    let sh_pid = sh.id();
    sh.wait().unwrap();

    let seen = collect_until(&mut rx, |seen| {
        seen.iter().any(|e| matches!(e, CollectionEvent::Process(p) if p.kind == ProcessEventKind::Exit && p.pid == sh_pid))
    })
    .await;
    let procs: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            CollectionEvent::Process(p) => Some(p),
            _ => None,
        })
        .collect();
    let fork = procs
        .iter()
        .find(|p| p.kind == ProcessEventKind::Fork && p.pid == sh_pid)
        .expect("fork by the shell observed");
    let child = fork.child_pid.expect("fork names the child");
    let child_exit = procs
        .iter()
        .find(|p| p.kind == ProcessEventKind::Exit && p.pid == child)
        .expect("exit of the forked child observed");
    assert_eq!(child_exit.exit_code, Some(3));
    // Enriched: the forked subshell never exec'd, so it ran the shell's image.
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    assert_eq!(child_exit.executable_path.as_deref(), sh.to_str());
    assert_eq!(
        child_exit.command_line.first().map(String::as_str),
        Some("/bin/sh")
    );
    assert_eq!(child_exit.ppid, Some(sh_pid));
    let sh_exit = procs
        .iter()
        .find(|p| p.kind == ProcessEventKind::Exit && p.pid == sh_pid)
        .unwrap();
    assert_eq!(sh_exit.exit_code, Some(0));
    assert!(
        !procs.iter().any(|p| p.kind == ProcessEventKind::Exec
            && p.executable_path.as_deref() == Some(missing.as_str())),
        "a failed exec was reported as an exec"
    );
    source.stop().await.unwrap();
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_comm_is_dropped_in_the_kernel() {
    if !kernel_or_skip("excluded_comm_is_dropped_in_the_kernel") {
        return;
    }
    let programs = KernelPrograms::load(KernelConfig {
        excluded_comms: vec!["true".into()],
        ..KernelConfig::default()
    })
    .expect("load kernel programs");
    let source =
        Arc::new(KernelSource::new(programs, KernelDomain::Process).expect("process source"));
    let (mut rx, shutdown, task) = start(source.clone());
    let marker = format!("exclusion-marker-{}", std::process::id());
    for program in ["/bin/true", "/bin/echo"] {
        let status = std::process::Command::new(program)
            .arg(&marker)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let seen = collect_until(&mut rx, |seen| {
        seen.iter().any(|e| matches!(e, CollectionEvent::Process(p) if p.kind == ProcessEventKind::Exec && p.name.as_deref() == Some("echo") && p.command_line.contains(&marker)))
    })
    .await;
    let execs: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            CollectionEvent::Process(p)
                if p.kind == ProcessEventKind::Exec && p.command_line.contains(&marker) =>
            {
                Some(p.name.clone().unwrap_or_default())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        execs,
        ["echo"],
        "the excluded comm `true` was filtered in the kernel"
    );
    source.stop().await.unwrap();
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    task.await.unwrap().unwrap();
}

/// An unprivileged process that chroots inside its own user namespace and execs a
/// program there: the exec is reported with the executable's real path and cwd, not the
/// `/bin/ldconfig` and `/` the jail shows it. (A jail's `/usr/bin/sudo` must not read as
/// the host's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_in_a_chroot_is_reported_with_the_real_executable_path() {
    if !kernel_or_skip("an_exec_in_a_chroot_is_reported_with_the_real_executable_path") {
        return;
    }
    let programs = KernelPrograms::load(KernelConfig::default()).expect("load kernel programs");
    let source =
        Arc::new(KernelSource::new(programs, KernelDomain::Process).expect("process source"));
    let (mut rx, shutdown, task) = start(source.clone());
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let dir = tmp.path().canonicalize().unwrap().display().to_string();
    let out = collector_tests::run_actor(
        env!("CARGO_BIN_EXE_kfile-actor"),
        &["chroot-exec", &dir, "nobody"],
    );
    assert_eq!(out["uid"], "65534", "actor runs unprivileged");
    assert_eq!(out["status"], "0", "ldconfig ran in the jail: {out:?}");
    let child: u32 = out["child"].parse().unwrap();
    let jail = out["jail"].clone();
    let seen = collect_until(&mut rx, |seen| {
        seen.iter().any(|e| {
            matches!(e, CollectionEvent::Process(p) if p.kind == ProcessEventKind::Exec && p.pid == child)
        })
    })
    .await;
    let exec = seen
        .iter()
        .find_map(|e| match e {
            CollectionEvent::Process(p) if p.kind == ProcessEventKind::Exec && p.pid == child => {
                Some(p)
            }
            _ => None,
        })
        .expect("the exec in the jail is reported");
    assert_eq!(
        exec.executable_path.as_deref(),
        Some(format!("{jail}/bin/ldconfig").as_str()),
        "{exec:?}"
    );
    assert!(!exec.executable_path_user_supplied, "{exec:?}");
    assert_eq!(exec.cwd.as_deref(), Some(jail.as_str()), "{exec:?}");
    assert_eq!(
        exec.command_line,
        ["/bin/ldconfig", "--version"],
        "{exec:?}"
    );
    assert_eq!(exec.uid, Some(65534), "{exec:?}");
    source.stop().await.unwrap();
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    task.await.unwrap().unwrap();
}
