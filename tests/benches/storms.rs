//! Storm benchmarks against the real kernel (root): an actor process generates
//! activity first untraced, then while the whole collector runs in this process
//! (kernel programs -> sources -> runtime -> IPC server -> one IPC subscriber).
//! Reports, per storm: untraced and traced rates, the ratio, events delivered to the
//! subscriber, and every loss by place and reason.
//!
//! `cargo xtask bench` runs it; `STORM_SCALE=0.1` shrinks every storm for a quick look,
//! `STORM_REPEAT=N` sets the untraced/traced pairs per storm (default 3), and a storm
//! name (`exec`, `open`, `connect`, `fileops`) as argument runs only that storm.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use collector_core::event::Domain;
use collector_core::ipc::{
    CollectorIpcClient, CollectorIpcServer, IpcServerConfig, IpcSink, StatusProvider,
    SubscriptionItem,
};
use collector_core::{CollectionEvent, Collector, CollectorConfig};
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms, KernelSource};
use futures::StreamExt;

const ACTOR: &str = env!("CARGO_BIN_EXE_collector-test-actor");

type KeyFn = Arc<dyn Fn(&CollectionEvent) -> Option<u32> + Send + Sync>;

struct Storm {
    name: &'static str,
    domain: KernelDomain,
    count: u64,
    args: Vec<String>,
    /// Key of a storm event: the pid it belongs to (the actor's, known only after the
    /// run), or 0 for events matched by content; `None` for other events.
    key: KeyFn,
    /// Whether events are keyed by content (0) rather than by the actor's pid.
    by_content: bool,
    /// Events expected per storm iteration.
    per_iteration: u64,
    /// Events expected once per storm.
    extra: u64,
}

fn run_actor(args: &[String]) -> (u32, f64) {
    let out = std::process::Command::new(ACTOR)
        .args(args)
        .output()
        .expect("run actor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let kv: BTreeMap<&str, &str> = text
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    (kv["pid"].parse().unwrap(), kv["seconds"].parse().unwrap())
}

async fn traced(storm: &Storm, socket: PathBuf) -> serde_json::Value {
    let mut kernel = KernelConfig::default();
    if let Some(b) = std::env::var("STORM_PROCESS_WAKEUP_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        kernel.process_wakeup_bytes = b;
    }
    if let Some(b) = std::env::var("STORM_FILE_WAKEUP_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        kernel.file_wakeup_bytes = b;
    }
    if let Some(b) = std::env::var("STORM_NETWORK_WAKEUP_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        kernel.network_wakeup_bytes = b;
    }
    let programs = KernelPrograms::load(kernel).expect("load kernel programs");
    let source = KernelSource::new(programs.clone(), storm.domain).expect("attach");
    let mut collector = Collector::new(CollectorConfig::default()).unwrap();
    collector.register_batch_source(Box::new(source)).unwrap();
    let sink = IpcSink::new(CollectorConfig::default().subscriber_queue_batches);
    collector.add_sink(Arc::new(sink.clone()));
    let handle = collector.handle();
    let server = CollectorIpcServer::bind(
        IpcServerConfig {
            socket_path: socket.clone(),
            ..IpcServerConfig::from_collector_config(&CollectorConfig::default())
        },
        Arc::new(handle.clone()) as Arc<dyn StatusProvider>,
        sink,
        None,
    )
    .await
    .unwrap();
    let token = handle.shutdown_token();
    let server_task = tokio::spawn(server.run(async move { token.cancelled().await }));
    let collector_task = tokio::spawn(collector.run());

    let domain = match storm.domain {
        KernelDomain::Process => Domain::Process,
        KernelDomain::Network => Domain::Network,
        KernelDomain::Filesystem => Domain::Filesystem,
    };
    let client = CollectorIpcClient::connect(&socket).await.unwrap();
    let stream = client.subscribe::<&str>(&[domain], &[]).await.unwrap();
    let all = Arc::new(AtomicU64::new(0));
    let keyed = Arc::new(std::sync::Mutex::new(
        std::collections::HashMap::<u32, u64>::new(),
    ));
    let lagged = Arc::new(AtomicU64::new(0));
    let counter = {
        let (all, keyed, lagged) = (all.clone(), keyed.clone(), lagged.clone());
        let key = storm.key.clone();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(SubscriptionItem::Event(ev)) => {
                        all.fetch_add(1, Ordering::Relaxed);
                        if let Some(k) = key(&ev) {
                            *keyed.lock().unwrap().entry(k).or_default() += 1;
                        }
                    }
                    Ok(SubscriptionItem::Lagged { missed_events }) => {
                        lagged.fetch_add(missed_events, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let args = storm.args.clone();
    let actor = tokio::task::spawn_blocking(move || {
        let child = std::process::Command::new(ACTOR)
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        (pid, child.wait_with_output().unwrap())
    });
    let (pid, output) = actor.await.unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let seconds: f64 = text
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("seconds="))
        .unwrap()
        .parse()
        .unwrap();
    // Drain: until the subscriber has been quiet for a second.
    let mut last = u64::MAX;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = all.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let status = handle.status();
    handle.shutdown();
    let _ = collector_task.await;
    let _ = server_task.await;
    counter.abort();
    let key = if storm.by_content { 0 } else { pid };
    let ours = keyed.lock().unwrap().get(&key).copied().unwrap_or(0);
    serde_json::json!({
        "delivered": ours,
        "seconds": seconds,
        "subscriber_events": all.load(Ordering::Relaxed),
        "lagged": lagged.load(Ordering::Relaxed),
        "status": status,
        "pid": pid,
    })
}

fn main() {
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("skipping storm benchmarks: they load eBPF programs and need root");
        return;
    }
    let scale: f64 = std::env::var("STORM_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |base: u64| ((base as f64 * scale) as u64).max(10);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap().display().to_string();
    let open_target = format!("{dir}/open-target");
    std::fs::write(&open_target, b"x").unwrap();

    let storms = [
        Storm {
            name: "exec",
            domain: KernelDomain::Process,
            count: n(5000),
            args: {
                let mut a = vec!["exec-storm".to_string(), n(5000).to_string()];
                a.extend((1..=8).map(|i| format!("storm-arg-{i}")));
                a
            },
            key: Arc::new(|ev| {
                matches!(ev, CollectionEvent::Process(p) if p.kind == collector_core::event::ProcessEventKind::Exec
                    && p.command_line.len() == 9 && p.command_line[8] == "storm-arg-8")
                .then_some(0)
            }),
            by_content: true,
            per_iteration: 1,
            extra: 0,
        },
        Storm {
            name: "open",
            domain: KernelDomain::Filesystem,
            count: n(1_000_000),
            args: vec![
                "opens".into(),
                open_target.clone(),
                n(1_000_000).to_string(),
            ],
            key: {
                let target = open_target.clone();
                Arc::new(move |ev| match ev {
                    CollectionEvent::Filesystem(f) if f.path == target => Some(f.pid),
                    _ => None,
                })
            },
            by_content: false,
            per_iteration: 1,
            extra: 0,
        },
        Storm {
            name: "connect",
            domain: KernelDomain::Network,
            count: n(20_000),
            args: vec!["connect-storm".into(), n(20_000).to_string()],
            // Only events with both ports set count as delivered: a close with local
            // port 0 (the port released before the close tracepoint) is not.
            key: Arc::new(|ev| match ev {
                CollectionEvent::Network(e)
                    if e.source_addr.port() != 0 && e.dest_addr.port() != 0 =>
                {
                    Some(e.pid)
                }
                _ => None,
            }),
            by_content: false,
            // connect, accept, two closes; one bind and one listen
            per_iteration: 4,
            extra: 2,
        },
        Storm {
            name: "fileops",
            domain: KernelDomain::Filesystem,
            count: n(100_000),
            args: vec!["fileops-storm".into(), dir.clone(), n(100_000).to_string()],
            key: {
                let dir = dir.clone();
                Arc::new(move |ev| match ev {
                    CollectionEvent::Filesystem(f) if f.path.starts_with(&dir) => Some(f.pid),
                    _ => None,
                })
            },
            by_content: false,
            // create, rename, unlink
            per_iteration: 3,
            extra: 0,
        },
    ];

    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("storm      count  untraced/s   traced/s  ratio  expected  delivered  delivered%  kernel_lost  pipeline_dropped  lagged");
    let repeat: usize = std::env::var("STORM_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for storm in storms
        .iter()
        .filter(|s| only.as_deref().is_none_or(|o| o == s.name))
    {
        // Untraced and traced runs alternate so machine noise hits both alike; rates are
        // medians, deliveries and losses are totals over all traced runs.
        let mut untraced = Vec::new();
        let mut traced_rates = Vec::new();
        let (mut delivered, mut kernel_lost, mut pipeline_dropped, mut lagged) = (0, 0, 0, 0);
        for rep in 0..repeat {
            let (_, untraced_s) = run_actor(&storm.args);
            untraced.push(storm.count as f64 / untraced_s);
            let socket = tmp.path().join(format!("{}-{rep}.sock", storm.name));
            let report = runtime.block_on(traced(storm, socket));
            traced_rates.push(storm.count as f64 / report["seconds"].as_f64().unwrap());
            let status = &report["status"];
            let source = &status["sources"][0];
            let sum = |v: &serde_json::Value| -> u64 {
                v.as_object()
                    .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
                    .unwrap_or(0)
            };
            kernel_lost += sum(&source["stats"]["kernel_lost"]);
            pipeline_dropped +=
                sum(&status["counters"]["dropped"]) + sum(&source["stats"]["dropped"]);
            lagged += report["lagged"].as_u64().unwrap_or(0);
            delivered += report["delivered"].as_u64().unwrap();
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (u, t) = (median(&mut untraced), median(&mut traced_rates));
        let expected = (storm.count * storm.per_iteration + storm.extra) * repeat as u64;
        println!(
            "{:<8} {:>7} {:>11.0} {:>10.0} {:>5.1}% {:>9} {:>10} {:>10.3}% {:>12} {:>17} {:>7}",
            storm.name,
            storm.count,
            u,
            t,
            100.0 * t / u,
            expected,
            delivered,
            100.0 * delivered as f64 / expected as f64,
            kernel_lost,
            pipeline_dropped,
            lagged,
        );
    }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
