//! The IPC client subcommands of the `collector` binary: `events`, `status`, `processes`.
//!
//! Each has a clap [`Args`](clap::Args) struct and an async `run_*` function printing to
//! stdout; the `*_to` variants take the writers, for tests. Output:
//! - `events`: one JSON object per line, the event schema of `docs/events.md`; `Lagged`
//!   notices and reconnections go to stderr.
//! - `status`: one JSON object (the status snapshot).
//! - `processes`: one JSON object per line per process.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use collector_core::event::Domain;
use collector_core::ipc::proto as pb;
use collector_core::ipc::{CollectorIpcClient, SubscriptionItem, DEFAULT_SOCKET_PATH};
use futures::StreamExt;
use serde::Serialize;

/// `--socket PATH`, shared by every IPC subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct SocketArgs {
    /// The collector's IPC socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET_PATH)]
    pub socket: PathBuf,
}

/// `collector events`: stream events as JSON lines until interrupted (or `--limit`).
#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArgs,
    /// Only this domain (process, network, filesystem, performance); repeatable.
    #[arg(long = "domain", value_name = "D")]
    pub domains: Vec<Domain>,
    /// Only this event kind (exec, fork, exit, connect, open, metric, ...); repeatable.
    #[arg(long = "kind", value_name = "K")]
    pub kinds: Vec<String>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

/// `collector status`: print the collector's status as one JSON object.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Json)]
    pub format: StatusFormat,
}

/// How `collector status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// One JSON object.
    Json,
    /// Prometheus text exposition.
    Prometheus,
}

/// `collector processes`: print the process table as JSON lines.
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessesArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArgs,
    /// Only this pid, with its ancestors up to pid 1 (the process first). With
    /// `--since`: its history rows (exec, exit) from the store in that window.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Processes that exited (kept for `process_exited_retention`) instead of live ones.
    #[arg(long)]
    pub exited: bool,
    /// Only processes that exited within this long (e.g. `90s`, `1h`); implies
    /// `--exited`. With `--pid`, the window of its history rows.
    #[arg(long, value_name = "DURATION", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Largest page the collector may send in one frame (bytes; default its own choice).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub max_page_bytes: u32,
    /// Only processes with this name (task name or executable basename).
    #[arg(long)]
    pub name: Option<String>,
    /// Only processes running this executable (full path).
    #[arg(long, value_name = "PATH")]
    pub exe: Option<String>,
}

/// Runs `collector events`, printing to stdout and stderr.
pub async fn run_events(args: &EventsArgs) -> anyhow::Result<()> {
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    events_to(
        args,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
        interrupted,
    )
    .await
}

/// `collector events` with explicit writers; stops when `stop` completes.
pub async fn events_to(
    args: &EventsArgs,
    out: &mut (impl Write + Send),
    err: &mut (impl Write + Send),
    stop: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    if args.limit == Some(0) {
        return Ok(());
    }
    let client = connect(&args.socket).await?;
    let stream = client
        .subscribe(&args.domains, &args.kinds)
        .await
        .context("the collector refused the subscription")?;
    futures::pin_mut!(stream, stop);
    let mut printed = 0u64;
    // Lines gather in one reused buffer and go out in one write when the stream has
    // nothing more ready (or the buffer is large): a write and flush per wakeup, not
    // per event, and no allocation per event.
    let mut buf: Vec<u8> = Vec::with_capacity(OUT_CHUNK);
    loop {
        let item = match futures::FutureExt::now_or_never(stream.next()) {
            Some(item) => item,
            None => {
                if !flush_lines(out, &mut buf)? {
                    return Ok(());
                }
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    item = stream.next() => item,
                }
            }
        };
        if !matches!(item, Some(Ok(SubscriptionItem::Event(_)))) && !flush_lines(out, &mut buf)? {
            return Ok(());
        }
        match item {
            None => bail!("the collector closed the event stream"),
            Some(Err(e)) => return Err(e).context("event stream failed"),
            Some(Ok(SubscriptionItem::Event(ev))) => {
                ev.write_json_line(&mut buf);
                printed += 1;
                if args.limit.is_some_and(|n| printed >= n) {
                    flush_lines(out, &mut buf)?;
                    return Ok(());
                }
                if buf.len() >= OUT_CHUNK && !flush_lines(out, &mut buf)? {
                    return Ok(());
                }
            }
            Some(Ok(SubscriptionItem::Lagged { missed_events })) => {
                let _ = writeln!(
                    err,
                    "collector: this subscriber fell behind; {missed_events} events were dropped"
                );
            }
            Some(Ok(SubscriptionItem::Reconnected)) => {
                let _ = writeln!(
                    err,
                    "collector: reconnected; events during the outage were not seen"
                );
            }
            Some(Ok(SubscriptionItem::CapabilitiesChanged(caps))) => {
                let _ = writeln!(err, "collector: capabilities now {:?}", caps.names());
            }
            Some(Ok(SubscriptionItem::EndOfStream { .. })) => {
                // Everything queued for us was sent (and written above): a clean end.
                let _ = writeln!(err, "collector: shut down; end of the event stream");
                return Ok(());
            }
        }
    }
}

/// Bytes of JSON lines gathered before writing them out.
const OUT_CHUNK: usize = 64 << 10;

/// Writes and flushes `buf` (then clears it); false when the reader went away.
fn flush_lines(out: &mut impl Write, buf: &mut Vec<u8>) -> anyhow::Result<bool> {
    if buf.is_empty() {
        return Ok(true);
    }
    let result = out.write_all(buf).and_then(|()| out.flush());
    buf.clear();
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write output"),
    }
}

/// Runs `collector status`, printing to stdout.
pub async fn run_status(args: &StatusArgs) -> anyhow::Result<()> {
    status_to(args, &mut std::io::stdout()).await
}

/// `collector status` with an explicit writer.
pub async fn status_to(args: &StatusArgs, out: &mut (impl Write + Send)) -> anyhow::Result<()> {
    let mut client = connect(&args.socket).await?;
    let status = client.status().await.context("status request failed")?;
    let text = match args.format {
        StatusFormat::Json => {
            serde_json::to_string_pretty(&status).context("cannot render status")?
        }
        StatusFormat::Prometheus => collector_core::metrics::render_prometheus(&status),
    };
    write_line(out, text.trim_end())?;
    Ok(())
}

/// One line of `collector processes`, with the field names of process events.
#[derive(Debug, Serialize)]
struct ProcessLine {
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ppid: Option<u32>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    exec_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    executable_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    executable_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_algorithm: Option<String>,
    command_line: Vec<String>,
    /// The collector cut `command_line` to fit the row in one page.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    command_line_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_process_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    last_event: String,
}

fn rfc3339(t: Option<pb::Timestamp>) -> Option<String> {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

/// Runs `collector processes`, printing to stdout.
pub async fn run_processes(args: &ProcessesArgs) -> anyhow::Result<()> {
    processes_to(args, &mut std::io::stdout()).await
}

/// `collector processes` with an explicit writer.
pub async fn processes_to(
    args: &ProcessesArgs,
    out: &mut (impl Write + Send),
) -> anyhow::Result<()> {
    let mut client = connect(&args.socket).await?;
    let mut query = pb::EnumerateProcesses {
        pid: args.pid,
        name: args.name.clone(),
        executable: args.exe.clone(),
        exited: args.exited,
        since_seconds: args.since.map(|d| d.as_secs().max(1)),
        ancestry: args.pid.is_some() && args.since.is_none(),
        cursor: String::new(),
        max_page_bytes: args.max_page_bytes,
    };
    // Pages until the collector sends no cursor: a large table never has to fit in one
    // frame.
    loop {
        let task = pb::DetectionTask {
            task_id: format!("cli-processes-{}", std::process::id()),
            task: Some(pb::detection_task::Task::EnumerateProcesses(query.clone())),
        };
        let result = client
            .run_task(task)
            .await
            .context("process query failed")?;
        let list = match result.result {
            Some(pb::detection_result::Result::Processes(list)) => list,
            Some(pb::detection_result::Result::Error(e)) => {
                bail!("the collector could not list processes: {}", e.message)
            }
            other => bail!("unexpected answer to a process query: {other:?}"),
        };
        for p in list.processes {
            let line = ProcessLine {
                pid: p.pid,
                ppid: p.ppid,
                name: p.name,
                exec_name: p.exec_name,
                executable_path: p.executable,
                executable_hash: p.executable_hash,
                hash_algorithm: p.hash_algorithm,
                command_line: p.command_line,
                command_line_truncated: p.command_line_truncated,
                uid: p.uid,
                gid: p.gid,
                start_time: rfc3339(p.start_time),
                process_key: p.process_key,
                parent_process_key: p.parent_process_key,
                exit_time: rfc3339(p.exit_time),
                exit_code: p.exit_code,
                last_event: p.last_event,
            };
            if !write_line(out, &serde_json::to_string(&line)?)? {
                return Ok(());
            }
        }
        if list.next_cursor.is_empty() {
            return Ok(());
        }
        if list.next_cursor == query.cursor {
            bail!("the collector repeated page cursor {:?}", query.cursor);
        }
        query.cursor = list.next_cursor;
    }
}

async fn connect(socket: &SocketArgs) -> anyhow::Result<CollectorIpcClient> {
    CollectorIpcClient::connect(&socket.socket)
        .await
        .with_context(|| format!("cannot reach the collector at {}", socket.socket.display()))
}

/// Writes one line; `Ok(false)` when the reader went away (`| head`), which is a normal
/// way for these commands to end.
fn write_line(out: &mut impl Write, line: &str) -> anyhow::Result<bool> {
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write output"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::Utc;
    use collector_core::event::{CollectionEvent, ProcessEvent, ProcessEventKind};
    use collector_core::ipc::{CollectorIpcServer, IpcServerConfig, IpcSink, ManualStatus};
    use collector_core::{EventSink, SourceCaps};

    use super::*;
    use crate::tasks::HostTaskHandler;

    async fn server() -> (tempfile::TempDir, PathBuf, IpcSink) {
        server_with(HostTaskHandler::new()).await
    }

    async fn server_with(handler: HostTaskHandler) -> (tempfile::TempDir, PathBuf, IpcSink) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let sink = IpcSink::default();
        let server = CollectorIpcServer::bind(
            IpcServerConfig {
                socket_path: path.clone(),
                ..IpcServerConfig::default()
            },
            Arc::new(ManualStatus::new(SourceCaps::PROCESS | SourceCaps::NETWORK)),
            sink.clone(),
            Some(Arc::new(handler)),
        )
        .await
        .unwrap();
        tokio::spawn(server.run(std::future::pending()));
        (dir, path, sink)
    }

    #[tokio::test]
    async fn processes_prints_one_json_line_per_process() {
        let (_dir, path, _) = server().await;
        let mut out = Vec::new();
        let args = ProcessesArgs {
            socket: SocketArgs { socket: path },
            pid: Some(std::process::id()),
            name: None,
            exe: None,
            exited: false,
            since: None,
            max_page_bytes: 0,
        };
        processes_to(&args, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["pid"], std::process::id());
        assert!(lines[0]["command_line"].is_array());
        assert!(lines[0]["executable_path"].is_string());
        assert!(lines[0]["start_time"].as_str().unwrap().ends_with('Z'));
    }

    fn lines_of(out: Vec<u8>) -> Vec<serde_json::Value> {
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn args(path: &std::path::Path) -> ProcessesArgs {
        ProcessesArgs {
            socket: SocketArgs {
                socket: path.to_owned(),
            },
            pid: None,
            name: None,
            exe: None,
            exited: false,
            since: None,
            max_page_bytes: 0,
        }
    }

    /// 6,000 processes with 400-byte command lines are ~3 MB: more than one 1 MiB frame.
    /// The reply is paged and the CLI prints every row once, with its key.
    #[tokio::test]
    async fn a_table_larger_than_a_frame_is_paged_and_reassembled() {
        use crate::process_query::ProcessQuery;
        use crate::ptable::{ProcessTable, TableConfig};
        let table = Arc::new(ProcessTable::new(TableConfig::default()));
        let now = Utc::now();
        for pid in 10_000..16_000u32 {
            let mut ev = ProcessEvent::new(ProcessEventKind::Exec, now, pid, "ebpf-process");
            ev.process_key = Some(format!("{pid}:{}", u64::from(pid) * 1000).into());
            ev.ppid = Some(1);
            ev.uid = Some(0);
            ev.executable_path = Some("/usr/bin/sleep".into());
            ev.command_line = vec!["sleep".into(), "x".repeat(400)];
            table.apply(&ev);
        }
        let handler = HostTaskHandler::new().with_process_table(ProcessQuery {
            table,
            store: None,
            max_frame_bytes: 1 << 20,
        });
        let (_dir, path, _) = server_with(handler).await;
        let mut out = Vec::new();
        processes_to(&args(&path), &mut out).await.unwrap();
        let lines = lines_of(out);
        assert_eq!(lines.len(), 6_000);
        let keys: std::collections::BTreeSet<String> = lines
            .iter()
            .map(|l| l["process_key"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(keys.len(), 6_000, "every row once");
        assert_eq!(lines[0]["pid"], 10_000);
        assert_eq!(lines[0]["process_key"], "10000:10000000");
        assert_eq!(lines[0]["executable_path"], "/usr/bin/sleep");
        assert_eq!(lines[0]["last_event"], "exec");
        // A small page size makes many more pages, same rows.
        let mut out = Vec::new();
        let small = ProcessesArgs {
            max_page_bytes: 20_000,
            ..args(&path)
        };
        processes_to(&small, &mut out).await.unwrap();
        assert_eq!(lines_of(out).len(), 6_000);
    }

    #[tokio::test]
    async fn status_prints_one_object_with_capability_names() {
        let (_dir, path, _) = server().await;
        let mut out = Vec::new();
        status_to(
            &StatusArgs {
                socket: SocketArgs {
                    socket: path.clone(),
                },
                format: StatusFormat::Json,
            },
            &mut out,
        )
        .await
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["capabilities"], serde_json::json!(["PROCESS", "NETWORK"]));
        assert!(v["sources"].is_array());
        assert!(v["counters"]["subscribers"].is_u64());

        let mut out = Vec::new();
        status_to(
            &StatusArgs {
                socket: SocketArgs { socket: path },
                format: StatusFormat::Prometheus,
            },
            &mut out,
        )
        .await
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("# TYPE collector_uptime_seconds gauge"),
            "{text}"
        );
        // The classic text format (what promtool and node_exporter parse): no `# EOF`,
        // and counters' help and type name the `_total` samples.
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("# TYPE collector_events_delivered_total counter"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn events_prints_json_lines_up_to_the_limit() {
        let (_dir, path, sink) = server().await;
        let args = EventsArgs {
            socket: SocketArgs { socket: path },
            domains: vec![Domain::Process],
            kinds: vec![],
            limit: Some(2),
        };
        let feed = async {
            while sink.subscriber_count() == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let batch: collector_core::EventBatch = (1..=3)
                .map(|pid| {
                    CollectionEvent::from(ProcessEvent::new(
                        ProcessEventKind::Exec,
                        Utc::now(),
                        pid,
                        "test",
                    ))
                })
                .collect();
            sink.deliver(&batch);
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let run = events_to(&args, &mut out, &mut err, std::future::pending());
        let (res, ()) =
            tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(run, feed) })
                .await
                .unwrap();
        res.unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["domain"], "process");
        assert_eq!(lines[1]["pid"], 2);
    }

    #[tokio::test]
    async fn events_writes_everything_queued_then_exits_cleanly_at_end_of_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let sink = IpcSink::default();
        let server = CollectorIpcServer::bind(
            IpcServerConfig {
                socket_path: path.clone(),
                ..IpcServerConfig::default()
            },
            Arc::new(ManualStatus::new(SourceCaps::PROCESS)),
            sink.clone(),
            None,
        )
        .await
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let args = EventsArgs {
            socket: SocketArgs { socket: path },
            domains: vec![],
            kinds: vec![],
            limit: None,
        };
        let feed = async {
            while sink.subscriber_count() == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for b in 0..20u32 {
                let batch: collector_core::EventBatch = (0..100)
                    .map(|i| {
                        CollectionEvent::from(ProcessEvent::new(
                            ProcessEventKind::Exec,
                            Utc::now(),
                            b * 100 + i,
                            "test",
                        ))
                    })
                    .collect();
                sink.deliver(&batch);
            }
            // Shut down with everything still queued.
            stop.send(()).unwrap();
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let run = events_to(&args, &mut out, &mut err, std::future::pending());
        let (res, ()) =
            tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(run, feed) })
                .await
                .unwrap();
        res.unwrap();
        server.await.unwrap();
        let pids: Vec<u64> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["pid"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(pids, (0..2000).collect::<Vec<u64>>());
        assert!(String::from_utf8(err)
            .unwrap()
            .contains("end of the event stream"));
    }
}
