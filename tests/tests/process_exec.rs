//! Exec events from the real kernel reach the process source with the right pids.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use collector_core::event::ProcessEventKind;
use collector_core::{CollectionEvent, EventSource};
use collector_tests::kernel_or_skip;
use collector_userspace::ebpf::{KernelConfig, KernelPrograms, ProcessKernelSource};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_of_bin_true_arrives_with_child_and_parent_pids() {
    if !kernel_or_skip("exec_of_bin_true_arrives_with_child_and_parent_pids") {
        return;
    }
    let programs = KernelPrograms::load(KernelConfig::default()).expect("load kernel programs");
    let source = Arc::new(ProcessKernelSource::new(programs).expect("process source"));
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
    assert_eq!(found.ppid, Some(std::process::id()), "ppid is this test process");
    assert_eq!(found.executable_path.as_deref(), Some("/bin/true"));
    assert_eq!(found.command_line, ["/bin/true", marker.as_str(), "second arg"]);
    assert_eq!(found.uid, Some(0));
    assert_eq!(found.name.as_deref(), Some("true"));

    source.stop().await.unwrap();
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    task.await.unwrap().unwrap();
}
