//! `KernelPrograms::set_exclusions` on programs loaded with `live_exclusions`: a pid, a
//! task name or a path prefix excluded while the programs run stops that one's events
//! at once, and dropping it brings them back. Programs loaded without live exclusions
//! refuse the change instead of ignoring it.
//!
//! Each round the watched actor opens its file, then a control process (a shell, so
//! another image and pid) opens another: the control's event arriving means the actor's,
//! if recorded, arrived before it (it was submitted first).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_core::event::FilesystemEventKind;
use collector_core::{CollectionEvent, EventSource};
use collector_tests::kernel_or_skip;
use collector_userspace::ebpf::{
    Exclusions, KernelConfig, KernelDomain, KernelPrograms, KernelSource, LoadError,
};
use tokio::sync::mpsc;

/// A process that opens `path` once per line on its stdin, then prints `done`.
struct Opener {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
}

impl Opener {
    fn from(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let pid = child.id();
        Self {
            child,
            stdin,
            stdout,
            pid,
        }
    }

    /// The test actor (task name `collector-test-`, the first 15 bytes of its file name).
    fn actor(path: &str) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_collector-test-actor"));
        cmd.args(["opens-per-line", path]);
        let mut opener = Self::from(cmd);
        let mut line = String::new();
        opener.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), format!("pid={}", opener.pid));
        opener
    }

    /// A shell (the redirection makes the shell itself open `path`).
    fn shell(path: &str) -> Self {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"while read l; do : < "$1"; echo done; done"#)
            .arg("sh")
            .arg(path);
        Self::from(cmd)
    }

    fn round(&mut self) {
        writeln!(self.stdin, "go").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
    }
}

impl Drop for Opener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One round: the actor opens, then the control; whether the actor's open was recorded.
async fn actor_recorded(
    rx: &mut mpsc::Receiver<CollectionEvent>,
    actor: &mut Opener,
    control: &mut Opener,
) -> bool {
    actor.round();
    control.round();
    let mut seen = false;
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = rx.recv().await {
            if let CollectionEvent::Filesystem(f) = ev {
                if f.kind != FilesystemEventKind::Open {
                    continue;
                }
                if f.pid == actor.pid {
                    seen = true;
                } else if f.pid == control.pid {
                    return;
                }
            }
        }
    })
    .await;
    assert!(done.is_ok(), "the control's open arrives within 10 s");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusions_change_while_the_programs_run() {
    if !kernel_or_skip("exclusions_change_while_the_programs_run") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    std::fs::create_dir(dir.join("quiet")).unwrap();
    let watched = dir.join("quiet/a").display().to_string();
    let other = dir.join("b").display().to_string();
    std::fs::write(&watched, b"a").unwrap();
    std::fs::write(&other, b"b").unwrap();
    let mut actor = Opener::actor(&watched);
    let mut control = Opener::shell(&other);

    let programs = KernelPrograms::load(KernelConfig {
        include_only: true,
        live_exclusions: true,
        ..KernelConfig::default()
    })
    .expect("load kernel programs");
    programs.include_pid(actor.pid).unwrap();
    programs.include_pid(control.pid).unwrap();
    let source = Arc::new(
        KernelSource::new(programs.clone(), KernelDomain::Filesystem).expect("filesystem source"),
    );
    let (tx, mut rx) = mpsc::channel(4096);
    let shutdown = Arc::new(AtomicBool::new(false));
    let task = {
        let (source, shutdown) = (source.clone(), shutdown.clone());
        tokio::spawn(async move { source.start(tx, shutdown).await })
    };

    assert!(actor_recorded(&mut rx, &mut actor, &mut control).await);
    let cases = [
        (
            "pid",
            Exclusions {
                pids: vec![actor.pid],
                ..Exclusions::default()
            },
        ),
        (
            "task name",
            Exclusions {
                comms: vec!["collector-test-".into()],
                ..Exclusions::default()
            },
        ),
        (
            "path prefix",
            Exclusions {
                path_prefixes: vec![format!("{}/quiet/", dir.display())],
                ..Exclusions::default()
            },
        ),
    ];
    for (what, exclusions) in cases {
        programs.set_exclusions(exclusions.clone()).unwrap();
        assert_eq!(programs.exclusions(), exclusions);
        for round in 0..2 {
            assert!(
                !actor_recorded(&mut rx, &mut actor, &mut control).await,
                "{what} excluded, round {round}: the actor's open is dropped"
            );
        }
        programs.set_exclusions(Exclusions::default()).unwrap();
        assert!(
            actor_recorded(&mut rx, &mut actor, &mut control).await,
            "{what} no longer excluded: the actor's open is recorded again"
        );
    }

    // A bad value is refused naming the setting, and nothing changes.
    let err = programs
        .set_exclusions(Exclusions {
            path_prefixes: vec!["relative/".into()],
            ..Exclusions::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::InvalidSetting {
                setting: "excluded_path_prefixes",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(programs.exclusions(), Exclusions::default());

    source.stop().await.unwrap();
    shutdown.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_exclusions_refuse_a_change() {
    if !kernel_or_skip("fixed_exclusions_refuse_a_change") {
        return;
    }
    let programs = KernelPrograms::load(KernelConfig {
        include_only: true,
        ..KernelConfig::default()
    })
    .expect("load kernel programs");
    let err = programs
        .set_exclusions(Exclusions {
            pids: vec![1],
            ..Exclusions::default()
        })
        .unwrap_err();
    assert!(matches!(err, LoadError::ExclusionsFixed), "{err}");
    assert!(err.to_string().contains("restart"), "{err}");
}
