//! `export-feeder`: drives the exporter without a kernel, for the export tests and the
//! benchmarks in docs/fleet.md.
//!
//! It feeds `--events` synthetic exec events (pid = `--first-pid` + index, so a consumer
//! can check each arrived once) through the export sink in batches, as the pipeline
//! would, prints `appended <next pid>` to stdout after each batch is in the spool, then
//! with `--drain` waits until JetStream acknowledged the whole spool and prints the
//! exporter status as one JSON line prefixed `status `.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use collector_core::config::{ExportConfig, ExportPayload};
use collector_core::event::{ProcessEvent, ProcessEventKind};
use collector_core::{CollectionEvent, EventBatch, EventSink};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// NATS server URL.
    #[arg(long)]
    nats: String,
    /// Data directory (the spool goes in `export-spool` under it).
    #[arg(long)]
    data_dir: PathBuf,
    /// Events to feed.
    #[arg(long, default_value_t = 0)]
    events: u32,
    /// First pid.
    #[arg(long, default_value_t = 0)]
    first_pid: u32,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Pause between batches, in microseconds.
    #[arg(long, default_value_t = 0)]
    pause_us: u64,
    /// Wait until the spool is fully acknowledged, then print the status.
    #[arg(long)]
    drain: bool,
    /// Give up draining after this many seconds.
    #[arg(long, default_value_t = 120)]
    drain_timeout_s: u64,
    /// Spool bound in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    spool_max_bytes: u64,
    /// JSON payloads instead of protobuf.
    #[arg(long)]
    json: bool,
    /// Stream name.
    #[arg(long, default_value = "COLLECTOR")]
    stream: String,
    /// Events packed per message (export.max_events_per_message).
    #[arg(long, default_value_t = 1)]
    per_message: usize,
}

/// A synthetic exec with the fields a real one carries.
fn exec(pid: u32) -> CollectionEvent {
    let mut e = ProcessEvent::new(
        ProcessEventKind::Exec,
        chrono::Utc::now(),
        pid,
        "export-feeder",
    );
    e.ppid = Some(1);
    e.uid = Some(1000);
    e.gid = Some(1000);
    e.name = Some("curl".into());
    e.executable_path = Some("/usr/bin/curl".into());
    e.command_line = vec![
        "curl".into(),
        "-s".into(),
        "https://example.invalid/a/b".into(),
    ];
    CollectionEvent::from(e)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = ExportConfig {
        nats_servers: vec![args.nats.clone()],
        stream: args.stream.clone(),
        spool_max_bytes: args.spool_max_bytes,
        payload: if args.json {
            ExportPayload::Json
        } else {
            ExportPayload::Protobuf
        },
        host_id: Some("feeder-host".into()),
        max_events_per_message: args.per_message,
        ..ExportConfig::default()
    };
    config.validate()?;
    let shutdown = CancellationToken::new();
    let exporter = collector_export::Exporter::start(&config, &args.data_dir, shutdown.clone())
        .context("opening the export spool")?;
    let sink = exporter.sink();
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    let end = args.first_pid + args.events;
    let mut pid = args.first_pid;
    while pid < end {
        let n = (end - pid).min(args.batch as u32);
        let batch: EventBatch = (pid..pid + n).map(exec).collect::<Vec<_>>().into();
        sink.deliver(&batch);
        pid += n;
        writeln!(out, "appended {pid}")?;
        if args.pause_us > 0 {
            out.flush()?;
            tokio::time::sleep(Duration::from_micros(args.pause_us)).await;
        }
    }
    out.flush()?;
    let fed = started.elapsed();
    eprintln!(
        "fed {} events in {:.3}s ({:.0}/s into the spool)",
        args.events,
        fed.as_secs_f64(),
        f64::from(args.events) / fed.as_secs_f64().max(1e-9)
    );
    if args.drain {
        let deadline = Instant::now() + Duration::from_secs(args.drain_timeout_s);
        let mut connected_at: Option<(Instant, u64)> = None;
        loop {
            let status = exporter.status();
            if connected_at.is_none() && status.connected {
                connected_at = Some((Instant::now(), status.acked_events));
            }
            if status.spool_events == 0 || Instant::now() > deadline {
                eprintln!(
                    "drained in {:.3}s after start ({:.0} events/s acknowledged)",
                    started.elapsed().as_secs_f64(),
                    status.acked_events as f64 / started.elapsed().as_secs_f64()
                );
                if let Some((at, acked_then)) = connected_at {
                    let secs = at.elapsed().as_secs_f64();
                    eprintln!(
                        "{} events acknowledged in {secs:.3}s after the connection came up ({:.0}/s)",
                        status.acked_events - acked_then,
                        (status.acked_events - acked_then) as f64 / secs.max(1e-9)
                    );
                }
                writeln!(out, "status {}", serde_json::to_string(&status)?)?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    out.flush()?;
    shutdown.cancel();
    exporter.join().await;
    Ok(())
}
