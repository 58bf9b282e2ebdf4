//! On shutdown no BPF program or link of ours is left: this process holds no descriptor
//! of either. Counted from /proc/self/fdinfo (`prog_id:` / `link_id:`), not from the
//! kernel-wide lists, which other collectors on the same machine change at any time
//! (and where the kernel frees a detached raw-tracepoint program only after an RCU grace
//! period).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_core::EventSource;
use collector_tests::kernel_or_skip;
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms, KernelSource};
use tokio::sync::mpsc;

/// Ids of the BPF objects of one sort (`prog_id` or `link_id`) this process holds a
/// descriptor of.
fn own_bpf_ids(key: &str) -> Vec<u32> {
    let mut ids: Vec<u32> = std::fs::read_dir("/proc/self/fdinfo")
        .expect("read /proc/self/fdinfo")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.trim_start_matches(':').trim().parse().ok())
            })
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_no_program_or_link_behind() {
    if !kernel_or_skip("shutdown_leaves_no_program_or_link_behind") {
        return;
    }
    assert!(own_bpf_ids("prog_id").is_empty(), "no program before");
    {
        let programs = KernelPrograms::load(KernelConfig::default()).expect("load kernel programs");
        let mut sources = Vec::new();
        for domain in KernelDomain::ALL {
            sources.push(Arc::new(
                KernelSource::new(programs.clone(), domain).expect("attach"),
            ));
        }
        // Distinct programs: the domains share their `sys_exit` program (one link).
        let expected = KernelDomain::ALL
            .iter()
            .flat_map(|&d| programs.attached_programs(d))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        drop(programs);
        let loaded = own_bpf_ids("prog_id");
        assert!(
            loaded.len() >= expected,
            "all {expected} programs are loaded while running: {loaded:?}"
        );
        assert!(
            own_bpf_ids("link_id").len() >= expected,
            "a link per attached program while running"
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
    assert_eq!(
        own_bpf_ids("prog_id"),
        Vec::<u32>::new(),
        "programs left behind after shutdown"
    );
    assert_eq!(
        own_bpf_ids("link_id"),
        Vec::<u32>::new(),
        "links left behind after shutdown"
    );
}
