//! On shutdown no BPF program or link of ours is left in the kernel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_core::EventSource;
use collector_tests::kernel_or_skip;
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms, KernelSource};
use tokio::sync::mpsc;

/// Our programs, as the kernel names them (BPF_OBJ_NAME_LEN: 15 bytes).
fn our_program_ids() -> Vec<u32> {
    let ours: Vec<&str> = KernelDomain::ALL
        .iter()
        .flat_map(|d| d.program_names())
        .collect();
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            let name = p.name_as_str().unwrap_or("");
            !name.is_empty() && ours.iter().any(|o| o.starts_with(name))
        })
        .map(|p| p.id())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_no_program_or_link_behind() {
    if !kernel_or_skip("shutdown_leaves_no_program_or_link_behind") {
        return;
    }
    let links_before = aya::programs::loaded_links().count();
    let before = our_program_ids();
    {
        let programs = KernelPrograms::load(KernelConfig::default()).expect("load kernel programs");
        let mut sources = Vec::new();
        for domain in KernelDomain::ALL {
            sources.push(Arc::new(
                KernelSource::new(programs.clone(), domain).expect("attach"),
            ));
        }
        let expected: usize = KernelDomain::ALL
            .iter()
            .map(|&d| programs.attached_programs(d).len())
            .sum();
        drop(programs);
        let loaded = our_program_ids();
        assert!(
            loaded.len() >= before.len() + expected,
            "all {expected} programs are loaded while running: {loaded:?}"
        );
        assert!(
            aya::programs::loaded_links().count() > links_before,
            "links exist while running"
        );

        let shutdown = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for s in &sources {
            let (tx, _rx) = mpsc::channel(16);
            let (s, shutdown) = (s.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move { s.start(tx, shutdown).await }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        shutdown.store(true, Ordering::Relaxed);
        for s in &sources {
            s.stop().await.unwrap();
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }
    // The kernel frees a detached raw-tracepoint program after an RCU grace period, not
    // at once: wait (bounded) for the ids to go before calling one left behind.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while our_program_ids() != before && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        our_program_ids(),
        before,
        "programs left behind after shutdown"
    );
    assert_eq!(
        aya::programs::loaded_links().count(),
        links_before,
        "links left behind after shutdown"
    );
}
