//! Exec -> subscriber latency against the real kernel (root), with the design's default
//! configuration: the whole collector runs in this process (kernel programs -> source
//! -> runtime -> IPC server), one IPC subscriber receives the process domain, and this
//! bench runs `/bin/true` with a marker argument at a slow, idle-host pace. Latency is
//! the subscriber's arrival time minus the event's kernel timestamp (converted to wall
//! clock by the source), reported as p50/p99/max.
//!
//! `cargo xtask bench` runs it; `LATENCY_EXECS=N` sets the number of execs (default 300).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use collector_core::event::{Domain, ProcessEventKind};
use collector_core::ipc::{
    CollectorIpcClient, CollectorIpcServer, IpcServerConfig, IpcSink, StatusProvider,
    SubscriptionItem,
};
use collector_core::{CollectionEvent, Collector, CollectorConfig};
use collector_userspace::ebpf::{KernelConfig, KernelDomain, KernelPrograms, KernelSource};
use futures::StreamExt;

const MARKER: &str = "collector-latency-bench";

async fn measure(execs: usize, socket: std::path::PathBuf) -> Vec<u64> {
    let programs = KernelPrograms::load(KernelConfig::default()).expect("load kernel programs");
    let source = KernelSource::new(programs, KernelDomain::Process).expect("attach");
    let config = CollectorConfig::default();
    let mut collector = Collector::new(config.clone()).unwrap();
    collector.register_batch_source(Box::new(source)).unwrap();
    let sink = IpcSink::new(config.subscriber_queue_batches);
    collector.add_sink(Arc::new(sink.clone()));
    let handle = collector.handle();
    let server = CollectorIpcServer::bind(
        IpcServerConfig {
            socket_path: socket.clone(),
            ..IpcServerConfig::from_collector_config(&config)
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

    let client = CollectorIpcClient::connect(&socket).await.unwrap();
    let stream = client
        .subscribe::<&str>(&[Domain::Process], &[])
        .await
        .unwrap();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(execs)));
    let counter = {
        let latencies = latencies.clone();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                let Ok(SubscriptionItem::Event(CollectionEvent::Process(p))) = item else {
                    continue;
                };
                let arrived = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as i128;
                if p.kind != ProcessEventKind::Exec
                    || p.command_line.last().map(String::as_str) != Some(MARKER)
                {
                    continue;
                }
                let at = i128::from(p.timestamp.timestamp_nanos_opt().unwrap_or(0));
                latencies
                    .lock()
                    .unwrap()
                    .push(u64::try_from(arrived - at).unwrap_or(0));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..execs {
        // An idle host: one exec at a time, well apart, so each event travels alone.
        tokio::task::spawn_blocking(|| {
            std::process::Command::new("/bin/true")
                .arg(MARKER)
                .status()
                .unwrap()
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while latencies.lock().unwrap().len() < execs && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown();
    let _ = collector_task.await;
    let _ = server_task.await;
    counter.abort();
    let v = latencies.lock().unwrap().clone();
    v
}

fn main() {
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("skipping the latency benchmark: it loads eBPF programs and needs root");
        return;
    }
    let execs: usize = std::env::var("LATENCY_EXECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut v = runtime.block_on(measure(execs, tmp.path().join("latency.sock")));
    v.sort_unstable();
    if v.is_empty() {
        println!("exec->subscriber latency: no events received");
        return;
    }
    let pct = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "exec->subscriber latency (defaults, {} of {execs} execs): p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        v.len(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*v.last().unwrap()),
    );
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
