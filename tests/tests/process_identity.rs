//! Who really ran what, from the real kernel: credentials on exec (a setuid binary run by
//! `nobody`), credential changes through both syscall entries, failed execs with their
//! errno, the process key, and exit/exec semantics of multi-threaded processes.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_core::event::{ProcessEvent, ProcessEventKind};
use collector_core::{CollectionEvent, EventSource};
use collector_tests::{kernel_or_skip, run_actor, Announced};
use collector_userspace::ebpf::{
    KernelConfig, KernelDomain, KernelPrograms, KernelSource, SelfTgid,
};
use tokio::sync::mpsc;

const ACTOR: &str = env!("CARGO_BIN_EXE_collector-proc-actor");
const NOBODY: u32 = 65534;

struct Running {
    source: Arc<KernelSource>,
    rx: mpsc::Receiver<CollectionEvent>,
    shutdown: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    seen: Vec<ProcessEvent>,
    self_tgid: SelfTgid,
}

impl Running {
    fn start() -> Self {
        Self::start_with(KernelConfig::default())
    }

    fn start_with(config: KernelConfig) -> Self {
        let programs = KernelPrograms::load(config).expect("load kernel programs");
        let self_tgid = programs.self_tgid();
        let source =
            Arc::new(KernelSource::new(programs, KernelDomain::Process).expect("process source"));
        let (tx, rx) = mpsc::channel(65_536);
        let shutdown = Arc::new(AtomicBool::new(false));
        let task = {
            let (source, flag) = (source.clone(), shutdown.clone());
            tokio::spawn(async move { source.start(tx, flag).await })
        };
        Self {
            source,
            rx,
            shutdown,
            task,
            seen: Vec::new(),
            self_tgid,
        }
    }

    /// Collects process events until `done` holds for what was seen (10 s at most).
    async fn until(&mut self, mut done: impl FnMut(&[ProcessEvent]) -> bool) -> &[ProcessEvent] {
        let (rx, seen) = (&mut self.rx, &mut self.seen);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            if done(seen) {
                return;
            }
            while let Some(ev) = rx.recv().await {
                if let CollectionEvent::Process(p) = ev {
                    seen.push(*p);
                    if done(seen) {
                        return;
                    }
                }
            }
        })
        .await;
        &self.seen
    }

    /// Keeps collecting for `ms` milliseconds (to see what should NOT come).
    async fn settle(&mut self, ms: u64) {
        let (rx, seen) = (&mut self.rx, &mut self.seen);
        let _ = tokio::time::timeout(Duration::from_millis(ms), async {
            while let Some(ev) = rx.recv().await {
                if let CollectionEvent::Process(p) = ev {
                    seen.push(*p);
                }
            }
        })
        .await;
    }

    async fn stop(self) {
        self.source.stop().await.unwrap();
        self.shutdown.store(true, Ordering::Relaxed);
        self.task.await.unwrap().unwrap();
    }
}

fn is(p: &ProcessEvent, kind: ProcessEventKind, pid: u32) -> bool {
    p.kind == kind && p.pid == pid
}

fn pid_of(out: &std::collections::HashMap<String, String>) -> u32 {
    out["pid"].parse().expect("actor pid")
}

/// A directory `nobody` can enter (tempdirs are 0700).
/// The `cred_change` events of `pid`, in order.
fn cred_changes(seen: &[ProcessEvent], pid: u32) -> Vec<&ProcessEvent> {
    seen.iter()
        .filter(|p| is(p, ProcessEventKind::CredChange, pid))
        .collect()
}

/// Real, effective and saved uids.
type Uids = Option<(u32, u32, u32)>;

/// (old, new) uids of a `cred_change`.
fn uid_change(c: &ProcessEvent) -> (Uids, Uids) {
    (
        c.old_credentials.map(|o| (o.uid, o.euid, o.suid)),
        c.credentials.map(|n| (n.uid, n.euid, n.suid)),
    )
}

/// A copy of `id` in `dir`, setuid root: any user who runs it gets euid 0.
fn setuid_copy_of_id(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let id = dir.path().join("id-setuid");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o4755)).unwrap();
    id
}

fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuid_copy_of_id_run_by_nobody_shows_euid_0_and_uid_65534() {
    if !kernel_or_skip("setuid_copy_of_id_run_by_nobody_shows_euid_0_and_uid_65534") {
        return;
    }
    let dir = open_tempdir();
    let id = setuid_copy_of_id(&dir);

    let mut run = Running::start();
    let mut child = std::process::Command::new(&id)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the setuid copy of id as nobody");
    let pid = child.id();
    let out = {
        use std::io::Read;
        let mut s = String::new();
        child.stdout.take().unwrap().read_to_string(&mut s).unwrap();
        s
    };
    assert!(child.wait().unwrap().success());
    assert!(
        out.contains("euid=0"),
        "the kernel honoured the setuid bit: {out}"
    );

    let seen = run
        .until(|s| s.iter().any(|p| is(p, ProcessEventKind::Exit, pid)))
        .await;
    let exec = seen
        .iter()
        .find(|p| is(p, ProcessEventKind::Exec, pid))
        .expect("exec of the setuid copy");
    let creds = exec.credentials.expect("exec carries credentials");
    assert_eq!(creds.uid, NOBODY, "real uid is the caller's");
    assert_eq!(creds.euid, 0, "effective uid is the file owner's");
    assert_eq!(creds.suid, 0);
    assert_eq!(creds.gid, NOBODY);
    assert_eq!(creds.egid, NOBODY, "no setgid bit");
    assert!(exec.secure_exec, "a setuid exec is a secure exec");
    assert_eq!(exec.uid, Some(NOBODY));
    // The same privilege gain as a credentials change of the execve.
    let change = seen
        .iter()
        .find(|p| is(p, ProcessEventKind::CredChange, pid) && p.syscall_nr == Some(59))
        .expect("cred_change of the setuid execve");
    let (old, new) = (change.old_credentials.unwrap(), change.credentials.unwrap());
    assert_eq!((old.uid, old.euid), (NOBODY, NOBODY));
    assert_eq!((new.uid, new.euid), (NOBODY, 0));
    // Identity: one process key for the exec and the exit, from the leader's start time.
    let exit = seen
        .iter()
        .find(|p| is(p, ProcessEventKind::Exit, pid))
        .unwrap();
    let key = exec.process_key.clone().expect("process key on exec");
    assert!(key.starts_with(&format!("{pid}:")), "{key}");
    assert_eq!(exit.process_key.as_ref(), Some(&key));
    assert_eq!(exit.start_time, exec.start_time);
    assert_eq!(exit.credentials.map(|c| c.euid), Some(0));
    // And in JSON.
    let json = serde_json::to_value(exec).unwrap();
    assert_eq!(json["credentials"]["euid"], 0);
    assert_eq!(json["credentials"]["uid"], NOBODY);
    assert_eq!(json["secure_exec"], true);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setresuid_gives_one_cred_change_with_old_and_new_ids_on_both_entries() {
    if !kernel_or_skip("setresuid_gives_one_cred_change_with_old_and_new_ids_on_both_entries") {
        return;
    }
    let mut run = Running::start();
    for (mode, nr, compat) in [("setresuid", 117, false), ("setresuid32", 208, true)] {
        let out = run_actor(ACTOR, &[mode, "65534"]);
        assert_eq!(out["uid_after"], "65534", "{mode}: {out:?}");
        let pid = pid_of(&out);
        let seen = run
            .until(|s| s.iter().any(|p| is(p, ProcessEventKind::Exit, pid)))
            .await;
        let changes = cred_changes(seen, pid);
        assert_eq!(changes.len(), 1, "{mode}: one change: {changes:#?}");
        let c = changes[0];
        assert_eq!(c.syscall_nr, Some(nr), "{mode}");
        assert_eq!(c.compat_syscall, compat, "{mode}");
        let (old, new) = (c.old_credentials.unwrap(), c.credentials.unwrap());
        assert_eq!(
            (old.uid, old.euid, old.suid, old.fsuid),
            (0, 0, 0, 0),
            "{mode}"
        );
        assert_eq!(
            (new.uid, new.euid, new.suid, new.fsuid),
            (NOBODY, NOBODY, NOBODY, NOBODY),
            "{mode}"
        );
        assert_ne!(old.cap_effective, 0, "{mode}: root had capabilities");
        assert_eq!(new.cap_effective, 0, "{mode}: leaving uid 0 clears them");
        assert_eq!(new.cap_permitted, 0, "{mode}");
        assert_eq!(c.uid, Some(NOBODY), "{mode}: header is after the change");
        let exit = seen
            .iter()
            .find(|p| is(p, ProcessEventKind::Exit, pid))
            .unwrap();
        assert_eq!(exit.credentials.map(|c| c.uid), Some(NOBODY));
    }
    run.stop().await;
}

/// Credentials belong to threads: a change by one worker thread is compared with that
/// thread's own earlier credentials (the kernel side keeps them per thread from its
/// creation), a no-op call by another thread is not a change, and the worker's change
/// back through the 32-bit entry has the first change's result as its old side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threads_cred_changes_are_its_own_on_both_entries() {
    if !kernel_or_skip("a_threads_cred_changes_are_its_own_on_both_entries") {
        return;
    }
    let mut run = Running::start();
    let out = run_actor(ACTOR, &["thread-creds"]);
    assert_eq!(out["ok"], "1", "{out:?}");
    let pid = pid_of(&out);
    let seen = run
        .until(|s| s.iter().any(|p| is(p, ProcessEventKind::Exit, pid)))
        .await;
    let changes = cred_changes(seen, pid);
    assert_eq!(
        changes.len(),
        2,
        "the worker's two changes only: {changes:#?}"
    );
    assert_eq!(
        uid_change(changes[0]),
        (Some((0, 0, 0)), Some((0, NOBODY, 0))),
        "native drop of euid"
    );
    assert_eq!(
        (changes[0].syscall_nr, changes[0].compat_syscall),
        (Some(117), false)
    );
    assert_eq!(
        uid_change(changes[1]),
        (Some((0, NOBODY, 0)), Some((0, 0, 0))),
        "32-bit entry: euid back"
    );
    assert_eq!(
        (changes[1].syscall_nr, changes[1].compat_syscall),
        (Some(208), true)
    );
    run.stop().await;
}

/// A thread that predates the collector: its first change says the old credentials are
/// unknown (absent), never that they equal the new ones; from then on it is known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_older_than_the_collector_reports_unknown_then_known_old_credentials() {
    if !kernel_or_skip(
        "a_thread_older_than_the_collector_reports_unknown_then_known_old_credentials",
    ) {
        return;
    }
    use std::io::{BufRead, Write};
    // Its stdout is kept open: the actor prints its result line at the end.
    let mut actor = Announced::spawn(ACTOR, &["euid-after-go", "65534"]);
    let pid = actor.pid;
    let mut run = Running::start();
    writeln!(actor.stdin, "go").unwrap();
    let mut result = String::new();
    actor.stdout.read_line(&mut result).unwrap();
    assert!(actor.child.wait().unwrap().success());
    assert!(result.contains("ok=1"), "{result}");
    let seen = run
        .until(|s| s.iter().any(|p| is(p, ProcessEventKind::Exit, pid)))
        .await;
    let changes = cred_changes(seen, pid);
    assert_eq!(changes.len(), 2, "{changes:#?}");
    assert_eq!(changes[0].old_credentials, None, "never seen: unknown");
    assert_eq!(changes[0].credentials.map(|c| c.euid), Some(NOBODY));
    assert_eq!(
        changes[1].old_credentials.map(|c| (c.uid, c.euid)),
        Some((0, NOBODY)),
        "known since its first change"
    );
    assert_eq!(changes[1].credentials.map(|c| c.euid), Some(0));
    run.stop().await;
}

/// A setuid exec by a process the kernel side never saw (it predates the collector;
/// emptying one's slot through pid reuse looks the same) is still a credentials change,
/// with the old side unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setuid_exec_by_a_process_older_than_the_collector_is_a_cred_change() {
    if !kernel_or_skip("a_setuid_exec_by_a_process_older_than_the_collector_is_a_cred_change") {
        return;
    }
    use std::io::{Read, Write};
    let dir = open_tempdir();
    let id = setuid_copy_of_id(&dir);
    let mut shell = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("read go; exec {}", id.display()))
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = shell.id();
    let mut run = Running::start();
    writeln!(shell.stdin.take().unwrap(), "go").unwrap();
    let mut out = String::new();
    shell
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(shell.wait().unwrap().success());
    assert!(out.contains("euid=0"), "{out}");
    let seen = run
        .until(|s| s.iter().any(|p| is(p, ProcessEventKind::Exit, pid)))
        .await;
    let change = seen
        .iter()
        .find(|p| is(p, ProcessEventKind::CredChange, pid))
        .expect("cred_change of the setuid exec");
    assert_eq!(change.old_credentials, None, "never seen: unknown");
    assert_eq!(
        change.credentials.map(|c| (c.uid, c.euid)),
        Some((NOBODY, 0))
    );
    run.stop().await;
}

/// An exec from a worker thread whose credentials differ from the leader's: the exec
/// takes the leader's thread id, and its change is compared with the worker's own
/// credentials, not the leader's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_from_a_thread_is_compared_with_that_threads_credentials() {
    if !kernel_or_skip("an_exec_from_a_thread_is_compared_with_that_threads_credentials") {
        return;
    }
    let mut run = Running::start();
    let mut actor = std::process::Command::new(ACTOR)
        .args(["thread-euid-exec", "65534"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = actor.id();
    assert!(actor.wait().unwrap().success());
    let seen = run
        .until(|s| s.iter().any(|p| is(p, ProcessEventKind::Exit, pid)))
        .await;
    let changes = cred_changes(seen, pid);
    assert_eq!(changes.len(), 2, "{changes:#?}");
    assert_eq!(changes[0].syscall_nr, Some(117));
    assert_eq!(
        uid_change(changes[0]),
        (Some((0, 0, 0)), Some((0, NOBODY, 0)))
    );
    // The exec sets the saved uid to the effective one; the old side is the worker's.
    assert_eq!(
        uid_change(changes[1]),
        (Some((0, NOBODY, 0)), Some((0, NOBODY, NOBODY))),
        "compared with the exec'ing thread's credentials"
    );
    run.stop().await;
}

/// After a gap in the fork hook (the source stopped and started again, as the
/// supervisor restarts it), credentials known from before the gap are not trusted: a
/// thread created before it could hold the id of one that ended during it. The next
/// change of a thread seen before the gap has its old side unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_known_before_a_gap_in_the_fork_hook_are_not_trusted_after_it() {
    if !kernel_or_skip("credentials_known_before_a_gap_in_the_fork_hook_are_not_trusted_after_it") {
        return;
    }
    use std::io::{BufRead, Write};
    let programs = KernelPrograms::load(KernelConfig::default()).expect("load kernel programs");
    let source = Arc::new(
        KernelSource::new(programs.clone(), KernelDomain::Process).expect("process source"),
    );
    // Created while the fork hook is attached: its credentials are known.
    let mut actor = Announced::spawn(ACTOR, &["euid-after-go", "65534"]);
    let pid = actor.pid;
    // The gap: stopped (detached), then started again (attached again).
    source.stop().await.unwrap();
    let (tx, mut rx) = mpsc::channel(65_536);
    let shutdown = Arc::new(AtomicBool::new(false));
    let task = {
        let (source, flag) = (source.clone(), shutdown.clone());
        tokio::spawn(async move { source.start(tx, flag).await })
    };
    let attached = tokio::time::timeout(Duration::from_secs(60), async {
        while !programs
            .attached_programs(KernelDomain::Process)
            .contains(&"sched_process_fork")
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(attached.is_ok(), "attached again within 60 s");
    writeln!(actor.stdin, "go").unwrap();
    let mut result = String::new();
    actor.stdout.read_line(&mut result).unwrap();
    assert!(actor.child.wait().unwrap().success());
    assert!(result.contains("ok=1"), "{result}");
    let mut changes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = rx.recv().await {
            if let CollectionEvent::Process(p) = ev {
                if p.pid == pid && p.kind == ProcessEventKind::CredChange {
                    changes.push(*p);
                }
                if changes.len() == 2 {
                    return;
                }
            }
        }
    })
    .await;
    assert_eq!(changes.len(), 2, "{changes:#?}");
    assert_eq!(
        changes[0].old_credentials, None,
        "known only from before the gap: unknown"
    );
    assert_eq!(
        changes[1].old_credentials.map(|c| c.euid),
        Some(NOBODY),
        "known again since its first change"
    );
    source.stop().await.unwrap();
    shutdown.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();
}

/// execveat's path is its second argument: a failed one is reported with that path,
/// read at exit from the saved registers of either entry (`si` for x86_64, `cx` for
/// i386), not the directory fd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_execveats_carry_the_path_argument_on_both_entries() {
    if !kernel_or_skip("failed_execveats_carry_the_path_argument_on_both_entries") {
        return;
    }
    let missing = format!("/nonexistent/collector-execveat-{}", std::process::id());
    let missing32 = format!("{missing}-i386");
    let mut run = Running::start();
    let out = run_actor(ACTOR, &["execveat-both", &missing]);
    assert_eq!((out["errno"].as_str(), out["errno32"].as_str()), ("2", "2"));
    let pid = pid_of(&out);
    let seen = run
        .until(|s| {
            s.iter()
                .filter(|p| is(p, ProcessEventKind::ExecFailed, pid))
                .count()
                >= 2
        })
        .await;
    let failed: Vec<_> = seen
        .iter()
        .filter(|p| is(p, ProcessEventKind::ExecFailed, pid))
        .map(|p| {
            (
                p.executable_path.as_deref(),
                p.syscall_nr,
                p.compat_syscall,
                p.errno,
            )
        })
        .collect();
    assert_eq!(
        failed,
        [
            (Some(missing.as_str()), Some(322), false, Some(2)),
            (Some(missing32.as_str()), Some(358), true, Some(2)),
        ]
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_execs_carry_their_errno_on_both_entries_and_as_nobody() {
    if !kernel_or_skip("failed_execs_carry_their_errno_on_both_entries_and_as_nobody") {
        return;
    }
    let dir = open_tempdir();
    let missing = format!("/nonexistent/collector-missing-{}", std::process::id());
    let not_exec = dir.path().join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&not_exec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let not_exec = not_exec.to_str().unwrap().to_string();
    let missing32 = format!("{missing}-i386");

    let mut run = Running::start();
    assert!(std::process::Command::new(&missing).spawn().is_err());
    assert!(std::process::Command::new(&not_exec)
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .is_err());
    let out = run_actor(ACTOR, &["execve32", &missing32]);
    assert_eq!(out["errno"], "2");
    let actor = pid_of(&out);

    let paths = [missing.as_str(), not_exec.as_str(), missing32.as_str()];
    let seen = run
        .until(|s| {
            paths.iter().all(|path| {
                s.iter().any(|p| {
                    p.kind == ProcessEventKind::ExecFailed
                        && p.executable_path.as_deref() == Some(path)
                })
            })
        })
        .await;
    let failed = |path: &str| {
        seen.iter()
            .find(|p| {
                p.kind == ProcessEventKind::ExecFailed && p.executable_path.as_deref() == Some(path)
            })
            .unwrap_or_else(|| panic!("no exec_failed for {path}"))
    };
    let enoent = failed(&missing);
    assert_eq!(enoent.errno, Some(2));
    assert_eq!(enoent.syscall_nr, Some(59));
    assert!(!enoent.compat_syscall);
    let eacces = failed(&not_exec);
    assert_eq!(eacces.errno, Some(13));
    assert_eq!(eacces.uid, Some(NOBODY));
    assert_eq!(
        eacces.credentials, None,
        "failed execs carry the header ids only"
    );
    let compat = failed(&missing32);
    assert_eq!(compat.errno, Some(2));
    assert_eq!(compat.pid, actor);
    assert_eq!(compat.syscall_nr, Some(11), "i386 execve");
    assert!(compat.compat_syscall);
    assert!(
        !seen.iter().any(|p| p.kind == ProcessEventKind::Exec
            && paths.contains(&p.executable_path.as_deref().unwrap_or(""))),
        "a failed exec was reported as an exec"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_is_reported_once_when_the_last_thread_ends_not_when_the_leader_does() {
    if !kernel_or_skip("exit_is_reported_once_when_the_last_thread_ends_not_when_the_leader_does") {
        return;
    }
    // Both ways of telling the last thread: `group_dead` (6.16+) and `signal->live`.
    for by_live in [false, true] {
        leader_exits_first(by_live).await;
    }
}

async fn leader_exits_first(exit_by_signal_live: bool) {
    let mut run = Running::start_with(KernelConfig {
        exit_by_signal_live,
        ..KernelConfig::default()
    });
    let out = run_actor(ACTOR, &["leader-exits-first", "300"]);
    let pid = pid_of(&out);
    run.until(|s| s.iter().any(|p| is(p, ProcessEventKind::Exit, pid)))
        .await;
    // Give a second (wrong) exit the time to arrive too.
    run.settle(500).await;
    let seen = &run.seen;
    let exits: Vec<_> = seen
        .iter()
        .enumerate()
        .filter(|(_, p)| is(p, ProcessEventKind::Exit, pid))
        .collect();
    assert_eq!(
        exits.len(),
        1,
        "signal->live: {exit_by_signal_live}; one exit: {exits:#?}"
    );
    let (exit_at, exit) = exits[0];
    assert_eq!(exit.exit_code, Some(0));
    // The worker forked /bin/true 300 ms after the leader left: that fork precedes the
    // process's exit.
    let fork_at = seen
        .iter()
        .position(|p| is(p, ProcessEventKind::Fork, pid))
        .expect("the worker's fork, after the leader exited");
    assert!(
        fork_at < exit_at,
        "exit reported before the last thread ended"
    );
    // The fork names the child's key: its start time is the child's exec's.
    let fork = &seen[fork_at];
    let child = fork.child_pid.unwrap();
    let child_exec = seen
        .iter()
        .find(|p| is(p, ProcessEventKind::Exec, child))
        .expect("the worker's /bin/true exec");
    assert_eq!(
        child_exec.command_line,
        ["/bin/true", "worker-still-running"]
    );
    assert!(fork.child_start_time.is_some());
    assert_eq!(fork.child_start_time, child_exec.start_time);
    assert_eq!(
        child_exec.process_key.as_deref().map(str::to_owned),
        Some(format!(
            "{child}:{}",
            child_exec
                .process_key
                .as_deref()
                .unwrap()
                .split(':')
                .nth(1)
                .unwrap()
        ))
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_from_a_worker_thread_gives_one_exec_and_no_exit_before_it() {
    if !kernel_or_skip("exec_from_a_worker_thread_gives_one_exec_and_no_exit_before_it") {
        return;
    }
    for by_live in [false, true] {
        exec_from_thread(by_live).await;
    }
}

async fn exec_from_thread(exit_by_signal_live: bool) {
    let marker = format!("thread-exec-{}", std::process::id());
    let mut run = Running::start_with(KernelConfig {
        exit_by_signal_live,
        ..KernelConfig::default()
    });
    let out = run_actor(ACTOR, &["exec-from-thread", &marker]);
    let pid = pid_of(&out);
    run.until(|s| s.iter().any(|p| is(p, ProcessEventKind::Exit, pid)))
        .await;
    run.settle(300).await;
    let seen = &run.seen;
    // The actor's own exec (by the test) comes first; then the worker's.
    let true_path = std::fs::canonicalize("/bin/true").unwrap();
    let execs: Vec<_> = seen
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            is(p, ProcessEventKind::Exec, pid) && p.executable_path.as_deref() == true_path.to_str()
        })
        .collect();
    assert_eq!(execs.len(), 1, "one exec from the thread: {execs:#?}");
    let (exec_at, exec) = execs[0];
    assert_eq!(exec.command_line, ["/bin/true", marker.as_str()]);
    let exits: Vec<_> = seen
        .iter()
        .enumerate()
        .filter(|(_, p)| is(p, ProcessEventKind::Exit, pid))
        .collect();
    assert_eq!(
        exits.len(),
        1,
        "signal->live: {exit_by_signal_live}; one exit, the image's: {exits:#?}"
    );
    assert!(exits[0].0 > exec_at, "no exit before the exec");
    assert_eq!(exits[0].1.process_key, exec.process_key);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_comm_to_an_excluded_name_does_not_hide_a_process() {
    if !kernel_or_skip("renaming_comm_to_an_excluded_name_does_not_hide_a_process") {
        return;
    }
    let marker = format!("renamed-{}", std::process::id());
    let mut run = Running::start_with(KernelConfig {
        excluded_comms: vec!["noisyd".into(), "true".into()],
        ..KernelConfig::default()
    });
    let out = run_actor(ACTOR, &["rename-then-fork", "noisyd", &marker]);
    assert_eq!(out["comm"], "noisyd", "the rename took effect");
    let pid = pid_of(&out);
    let seen = run
        .until(|s| s.iter().any(|p| is(p, ProcessEventKind::Exit, pid)))
        .await;
    // Recorded although its comm now reads `noisyd`: the exclusion follows the image.
    let fork = seen
        .iter()
        .find(|p| is(p, ProcessEventKind::Fork, pid))
        .expect("the renamed process's fork is recorded");
    assert_eq!(fork.name.as_deref(), Some("noisyd"));
    let exit = seen
        .iter()
        .find(|p| is(p, ProcessEventKind::Exit, pid))
        .unwrap();
    assert_eq!(exit.name.as_deref(), Some("noisyd"));
    // Its child execs /bin/true, an excluded image: that exec and exit stay dropped.
    let child = fork.child_pid.unwrap();
    run.settle(300).await;
    assert!(
        !run.seen
            .iter()
            .any(|p| p.pid == child
                && matches!(p.kind, ProcessEventKind::Exec | ProcessEventKind::Exit)),
        "the excluded image `true` was recorded"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pid_exclusion_ends_at_exec() {
    if !kernel_or_skip("a_pid_exclusion_ends_at_exec") {
        return;
    }
    use std::io::Write;
    let marker = format!("pidx-{}", std::process::id());
    let mut actor = Announced::spawn(ACTOR, &["fork-exec-after-go", &marker]);
    let pid = actor.pid;
    let mut run = Running::start_with(KernelConfig {
        excluded_pids: vec![pid],
        ..KernelConfig::default()
    });
    writeln!(actor.stdin, "go").unwrap();
    assert!(actor.child.wait().unwrap().success());
    let exec_marker = format!("{marker}-exec");
    let seen = run
        .until(|s| s.iter().any(|p| is(p, ProcessEventKind::Exit, pid)))
        .await;
    assert!(
        !seen.iter().any(|p| is(p, ProcessEventKind::Fork, pid)),
        "the excluded pid's fork was recorded"
    );
    let exec = seen
        .iter()
        .find(|p| is(p, ProcessEventKind::Exec, pid))
        .expect("after its exec the pid runs another program and is recorded");
    assert_eq!(exec.command_line, ["/bin/true", exec_marker.as_str()]);
    run.stop().await;
}

/// Set in the environment of the copy of this test binary that runs in its own pid
/// namespace.
const IN_NAMESPACE: &str = "COLLECTOR_TEST_IN_PID_NAMESPACE";

#[test]
fn collector_in_its_own_pid_namespace_excludes_itself_and_only_itself() {
    if !kernel_or_skip("collector_in_its_own_pid_namespace_excludes_itself_and_only_itself") {
        return;
    }
    let out = std::process::Command::new("unshare")
        .args(["-p", "-f", "--mount-proc"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "inside_a_pid_namespace",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(IN_NAMESPACE, "1")
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "inside the namespace:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "the inner test did not run:\n{stdout}\n{stderr}"
    );
}

/// Runs only as the copy started by the test above, as pid 1 of a new pid namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started inside a pid namespace by collector_in_its_own_pid_namespace_*"]
async fn inside_a_pid_namespace() {
    assert_eq!(
        std::env::var(IN_NAMESPACE).as_deref(),
        Ok("1"),
        "run by collector_in_its_own_pid_namespace_excludes_itself_and_only_itself"
    );
    let ns_pid = std::process::id();
    let mut run = Running::start();
    let self_tgid = run_source_self_tgid(&run);
    assert_ne!(
        self_tgid, ns_pid,
        "the kernel's tgid of a process in a pid namespace is not its own pid"
    );
    let marker = format!("in-namespace-{self_tgid}");
    let status = std::process::Command::new("/bin/true")
        .arg(&marker)
        .status()
        .unwrap();
    assert!(status.success());
    run.until(|s| {
        s.iter()
            .any(|p| p.kind == ProcessEventKind::Exit && p.ppid == Some(self_tgid))
    })
    .await;
    run.settle(300).await;
    let seen = &run.seen;
    let exec = seen
        .iter()
        .find(|p| p.kind == ProcessEventKind::Exec && p.command_line.contains(&marker))
        .expect("the child's exec is recorded: only the collector is excluded");
    assert_eq!(
        exec.ppid,
        Some(self_tgid),
        "pids are the kernel's (host) pids"
    );
    assert!(
        !seen.iter().any(|p| p.pid == self_tgid),
        "the collector's own events were recorded: {:#?}",
        seen.iter()
            .filter(|p| p.pid == self_tgid)
            .collect::<Vec<_>>()
    );
    run.stop().await;
}

fn run_source_self_tgid(run: &Running) -> u32 {
    match run.self_tgid {
        SelfTgid::Kernel(t) => t,
        other => panic!("self tgid not seen by the kernel: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memfd_fexecve_is_flagged_fileless_with_its_name() {
    if !kernel_or_skip("memfd_fexecve_is_flagged_fileless_with_its_name") {
        return;
    }
    let name = format!("payload-{}", std::process::id());
    let mut run = Running::start();
    let out = run_actor(ACTOR, &["memfd-exec", &name, "from-memory"]);
    let pid = pid_of(&out);
    let seen = run
        .until(|s| s.iter().any(|p| is(p, ProcessEventKind::Exit, pid)))
        .await;
    let exec = seen
        .iter()
        .find(|p| {
            is(p, ProcessEventKind::Exec, pid)
                && p.command_line.first().map(String::as_str) == Some(name.as_str())
        })
        .expect("exec of the memfd");
    assert_eq!(exec.memfd_name.as_deref(), Some(name.as_str()), "{exec:#?}");
    assert!(exec.executable_deleted, "a memfd has no links");
    assert!(exec.executable_inode.is_some());
    assert_eq!(exec.interpreter, None);
    // The actor's own exec, from a file on disk, is not fileless.
    let actor_exec = seen
        .iter()
        .find(|p| {
            is(p, ProcessEventKind::Exec, pid)
                && p.command_line.first().map(String::as_str) == Some(ACTOR)
        })
        .expect("the actor's exec");
    assert_eq!(actor_exec.memfd_name, None);
    assert!(!actor_exec.executable_deleted);
    run.stop().await;
}

/// A process in a pid namespace of its own is reported with its pid there and that
/// namespace's inode, on its exec and its exit (host processes take a shortcut in the
/// kernel programs: this checks the other path). `unshare -p -f` makes the namespace;
/// its pid 1 prints the namespace's inode, then execs the marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_in_its_own_pid_namespace_shows_that_namespace() {
    if !kernel_or_skip("a_process_in_its_own_pid_namespace_shows_that_namespace") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let host = std::fs::metadata("/proc/self/ns/pid").unwrap().ino();
    let mut run = Running::start();
    let out = std::process::Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", "sh", "-c"])
        .arg("stat -L -c %i /proc/self/ns/pid; exec sleep 0.0421")
        .output()
        .expect("unshare");
    assert!(out.status.success(), "{out:?}");
    let inside: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_ne!(inside, host, "a new pid namespace");
    let is_marker = |p: &ProcessEvent| {
        p.kind == ProcessEventKind::Exec && p.command_line.iter().any(|a| a == "0.0421")
    };
    let seen = run
        .until(|s| {
            s.iter()
                .find(|p| is_marker(p))
                .is_some_and(|exec| s.iter().any(|p| is(p, ProcessEventKind::Exit, exec.pid)))
        })
        .await;
    let exec = seen.iter().find(|p| is_marker(p)).unwrap();
    let exit = seen
        .iter()
        .find(|p| is(p, ProcessEventKind::Exit, exec.pid))
        .unwrap();
    for event in [exec, exit] {
        assert_eq!(event.namespace_pid, Some(1), "{event:#?}");
        assert_eq!(event.pid_namespace_inode.map(u64::from), Some(inside));
        assert_ne!(event.pid, 1, "the host pid is the event's pid");
    }
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_shows_its_interpreter_and_the_interpreter_inode() {
    if !kernel_or_skip("a_script_shows_its_interpreter_and_the_interpreter_inode") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = open_tempdir();
    let script = dir.path().join("script.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // At sched_process_exec the kernel has swapped the script's file for the
    // interpreter's (exec_binprm), so the inode is the interpreter's.
    let meta = std::fs::metadata("/bin/sh").unwrap();
    let mut run = Running::start();
    let mut child = std::process::Command::new(&script)
        .arg("script-arg")
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let seen = run
        .until(|s| s.iter().any(|p| is(p, ProcessEventKind::Exit, pid)))
        .await;
    let exec = seen
        .iter()
        .find(|p| is(p, ProcessEventKind::Exec, pid))
        .expect("exec of the script");
    // The interpreter the kernel loaded, resolved (`/bin/sh` is a symlink on Debian).
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    assert_eq!(exec.interpreter.as_deref(), sh.to_str());
    assert_eq!(
        exec.executable_path.as_deref(),
        Some(script.to_str().unwrap())
    );
    // The kernel has let go of the script's file: its path is the string given.
    assert!(exec.executable_path_user_supplied, "{exec:#?}");
    assert_eq!(
        exec.executable_inode,
        Some(meta.ino()),
        "the script's inode"
    );
    // glibc's st_dev encoding -> (major, minor); the kernel's is major << 20 | minor.
    let st = meta.dev();
    let (major, minor) = (
        ((st >> 8) & 0xfff) | ((st >> 32) & !0xfff),
        (st & 0xff) | ((st >> 12) & !0xff),
    );
    let dev = u64::from(exec.executable_device.expect("device"));
    assert_eq!((dev >> 20, dev & 0xfffff), (major, minor));
    assert!(!exec.executable_deleted);
    assert_eq!(exec.memfd_name, None);
    // Namespace and cgroup attribution: the child shares this test's.
    assert_eq!(exec.namespace_pid, Some(pid), "host pid namespace");
    let pidns = std::fs::metadata("/proc/self/ns/pid").unwrap().ino();
    assert_eq!(exec.pid_namespace_inode.map(u64::from), Some(pidns));
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("cgroup v2");
    assert_eq!(
        exec.cgroup_path.as_deref(),
        Some(path),
        "{:?}",
        exec.cgroup_id
    );
    run.stop().await;
}

/// What ran is the file the kernel loaded, not the string given: an unprivileged exec
/// of `./link` (a relative symlink to `true`) and of the symlink by its absolute path
/// both show the resolved file, with the exec-time cwd; a relative script shows its
/// path made absolute against that cwd, without /proc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_and_symlinked_execs_show_the_file_the_kernel_loaded() {
    if !kernel_or_skip("relative_and_symlinked_execs_show_the_file_the_kernel_loaded") {
        return;
    }
    let dir = open_tempdir();
    let cwd = dir.path().canonicalize().unwrap();
    let target = std::fs::canonicalize("/bin/true").unwrap();
    std::os::unix::fs::symlink(&target, cwd.join("link")).unwrap();
    let script = cwd.join("rel.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut run = Running::start();
    let run_as_nobody = |program: &std::path::Path| {
        let mut child = std::process::Command::new(program)
            .current_dir(&cwd)
            .uid(NOBODY)
            .gid(NOBODY)
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(child.wait().unwrap().success());
        pid
    };
    let relative = run_as_nobody(std::path::Path::new("./link"));
    let absolute = run_as_nobody(&cwd.join("link"));
    let rel_script = run_as_nobody(std::path::Path::new("./rel.sh"));
    let pids = [relative, absolute, rel_script];
    let seen = run
        .until(|s| {
            pids.iter()
                .all(|&pid| s.iter().any(|p| is(p, ProcessEventKind::Exit, pid)))
        })
        .await;
    let exec = |pid: u32| {
        seen.iter()
            .find(|p| is(p, ProcessEventKind::Exec, pid))
            .unwrap_or_else(|| panic!("no exec of {pid} in {seen:#?}"))
    };
    for pid in [relative, absolute] {
        let e = exec(pid);
        assert_eq!(e.executable_path.as_deref(), target.to_str(), "{e:#?}");
        assert!(!e.executable_path_user_supplied, "{e:#?}");
        assert!(!e.executable_path_truncated, "{e:#?}");
        assert_eq!(e.cwd.as_deref(), cwd.to_str(), "{e:#?}");
        assert_eq!(e.credentials.as_ref().map(|c| c.euid), Some(NOBODY));
    }
    let e = exec(rel_script);
    assert_eq!(e.executable_path.as_deref(), script.to_str(), "{e:#?}");
    assert!(e.executable_path_user_supplied, "{e:#?}");
    assert_eq!(e.cwd.as_deref(), cwd.to_str(), "{e:#?}");
    run.stop().await;
}

/// An unprivileged process that makes a new user namespace holds every capability in
/// it: that is a `cred_change`, both for a child cloned into one (`CLONE_NEWUSER`: its
/// old credentials are its parent's) and for a process that enters one itself
/// (`unshare`). Ordinary forks in the same namespace give none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entering_a_new_user_namespace_is_a_cred_change() {
    if !kernel_or_skip("entering_a_new_user_namespace_is_a_cred_change") {
        return;
    }
    const CAP_SETUID: u64 = 1 << 7;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    let mut run = Running::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = run_actor(
        env!("CARGO_BIN_EXE_kfile-actor"),
        &["userns", tmp.path().to_str().unwrap(), "nobody"],
    );
    assert_eq!(out["unshare"], "0", "{out:?}");
    let (pid, child) = (pid_of(&out), out["clone_child"].parse::<u32>().unwrap());
    let seen = run
        .until(|seen| {
            seen.iter()
                .any(|p| is(p, ProcessEventKind::CredChange, pid) && p.syscall_nr == Some(272))
        })
        .await;
    let changes: Vec<_> = seen
        .iter()
        .filter(|p| p.kind == ProcessEventKind::CredChange && (p.pid == pid || p.pid == child))
        .collect();
    let by = |who: u32, nr: u32| {
        changes
            .iter()
            .find(|p| p.pid == who && p.syscall_nr == Some(nr))
            .unwrap_or_else(|| panic!("cred_change of {nr} by {who} in {changes:#?}"))
    };
    for (who, nr) in [(child, 56), (pid, 272)] {
        let c = by(who, nr);
        let (old, new) = (c.old_credentials.unwrap(), c.credentials.unwrap());
        assert_eq!(
            (old.uid, old.euid, old.cap_effective),
            (NOBODY, NOBODY, 0),
            "{c:?}"
        );
        // The same ids (kernel uids do not change), every capability in the namespace.
        assert_eq!((new.uid, new.euid), (NOBODY, NOBODY), "{c:?}");
        assert_eq!(
            new.cap_effective & (CAP_SETUID | CAP_SYS_ADMIN),
            CAP_SETUID | CAP_SYS_ADMIN,
            "{c:?}"
        );
    }
    // The drop to nobody (setresuid) and the two above, nothing for the exit.
    assert_eq!(
        changes.iter().filter(|p| p.pid == child).count(),
        1,
        "{changes:#?}"
    );
    run.stop().await;
}
