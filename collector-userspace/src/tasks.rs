//! [`HostTaskHandler`]: answers IPC detection tasks from this host's procfs and filesystem.
//!
//! - process: enumerate processes (pid / name / executable filters); SHA-256 of an
//!   executable, streamed so large binaries never sit in memory.
//! - network: TCP sockets from `/proc/net/tcp` and `/proc/net/tcp6`.
//! - filesystem: `stat`/`lstat` of a path.
//! - performance: load average and memory.
//!
//! All work that touches the disk runs on the blocking pool.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use collector_core::ipc::convert::timestamp_to_proto;
use collector_core::ipc::proto as pb;
use collector_core::ipc::proto::detection_result::Result as Answer;
use collector_core::ipc::proto::detection_task::Task;
use collector_core::ipc::task::error_result;
use collector_core::ipc::TaskHandler;
use procfs::Current;
use sha2::{Digest, Sha256};

/// Answers detection tasks from the host.
#[derive(Debug, Clone, Default)]
pub struct HostTaskHandler;

impl HostTaskHandler {
    /// A handler reading the host's `/proc`.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl TaskHandler for HostTaskHandler {
    async fn handle(&self, task: pb::DetectionTask) -> pb::DetectionResult {
        let task_id = task.task_id.clone();
        let Some(body) = task.task else {
            return error_result(task_id, pb::ErrorCode::BadRequest, "the task has no body");
        };
        let answer = tokio::task::spawn_blocking(move || run(body)).await;
        match answer {
            Ok(Ok(result)) => pb::DetectionResult {
                task_id,
                result: Some(result),
            },
            Ok(Err(message)) => error_result(task_id, pb::ErrorCode::TaskFailed, message),
            Err(_) => error_result(task_id, pb::ErrorCode::Internal, "the task panicked"),
        }
    }
}

fn run(task: Task) -> Result<Answer, String> {
    match task {
        Task::EnumerateProcesses(q) => enumerate_processes(&q).map(Answer::Processes),
        Task::CheckExecutableHash(q) => hash_executable(&q).map(Answer::ExecutableHash),
        Task::ListNetworkConnections(q) => list_tcp(&q).map(Answer::Connections),
        Task::StatPath(q) => stat_path(&q).map(Answer::FileStat),
        Task::SampleSystemMetrics(_) => sample_metrics().map(Answer::Metrics),
    }
}

/// Processes matching every filter of `q`. Processes that exit mid-scan, or whose
/// details we may not read, are reported with what could be read.
pub fn enumerate_processes(q: &pb::EnumerateProcesses) -> Result<pb::ProcessList, String> {
    let all = procfs::process::all_processes().map_err(|e| format!("cannot list /proc: {e}"))?;
    let boot = procfs::boot_time_secs().ok();
    let ticks = procfs::ticks_per_second();
    let mut processes = Vec::new();
    for proc in all.flatten() {
        if q.pid.is_some_and(|pid| pid as i32 != proc.pid) {
            continue;
        }
        let Ok(stat) = proc.stat() else { continue };
        let exe = proc.exe().ok().map(|p| p.to_string_lossy().into_owned());
        if let Some(want) = &q.executable {
            if exe.as_deref() != Some(want.as_str()) {
                continue;
            }
        }
        if let Some(want) = &q.name {
            let base = exe.as_deref().and_then(|e| Path::new(e).file_name());
            if stat.comm != *want && base.is_none_or(|b| b != want.as_str()) {
                continue;
            }
        }
        let start_time = boot.and_then(|boot| {
            let nanos = stat.starttime as u128 * 1_000_000_000 / ticks.max(1) as u128;
            let since_boot = i64::try_from(nanos).ok()?;
            DateTime::<Utc>::from_timestamp(boot as i64, 0)
                .map(|b| b + chrono::Duration::nanoseconds(since_boot))
        });
        processes.push(pb::ProcessInfo {
            pid: stat.pid as u32,
            ppid: Some(stat.ppid as u32),
            name: stat.comm,
            executable: exe,
            command_line: proc.cmdline().unwrap_or_default(),
            uid: proc.status().ok().map(|s| s.ruid),
            start_time: start_time.map(timestamp_to_proto),
        });
    }
    Ok(pb::ProcessList { processes })
}

/// SHA-256 of `q.path`, or of the executable of `q.pid` when the path is empty.
pub fn hash_executable(q: &pb::CheckExecutableHash) -> Result<pb::ExecutableHash, String> {
    let path = match (q.path.is_empty(), q.pid) {
        (false, _) => PathBuf::from(&q.path),
        (true, Some(pid)) => PathBuf::from(format!("/proc/{pid}/exe")),
        (true, None) => return Err("give a path or a pid to hash".to_string()),
    };
    // For /proc/PID/exe, report where it points; the bytes are read through the link,
    // which still works when the file was deleted or replaced on disk.
    let shown = std::fs::read_link(&path)
        .ok()
        .filter(|_| path.starts_with("/proc"))
        .unwrap_or_else(|| path.clone());
    let mut file =
        std::fs::File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size_bytes = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size_bytes += n as u64;
    }
    let hex_digest = format!("{:x}", hasher.finalize());
    let matches_expected = q
        .expected_sha256
        .as_ref()
        .map(|want| want.trim().eq_ignore_ascii_case(&hex_digest));
    Ok(pb::ExecutableHash {
        path: shown.to_string_lossy().into_owned(),
        algorithm: "sha256".to_string(),
        hex_digest,
        size_bytes,
        matches_expected,
    })
}

/// TCP sockets (IPv4 and IPv6), filtered by local port and state name.
pub fn list_tcp(q: &pb::ListNetworkConnections) -> Result<pb::ConnectionList, String> {
    let mut connections = Vec::new();
    let tables = [
        (pb::AddressFamily::Ipv4, procfs::net::tcp()),
        (pb::AddressFamily::Ipv6, procfs::net::tcp6()),
    ];
    for (family, table) in tables {
        // A kernel without IPv6 has no tcp6 table; that is not an error.
        let Ok(entries) = table else { continue };
        for e in entries {
            let state = tcp_state_name(&e.state);
            if q.local_port
                .is_some_and(|p| p != u32::from(e.local_address.port()))
            {
                continue;
            }
            if q.state
                .as_ref()
                .is_some_and(|s| !s.eq_ignore_ascii_case(state))
            {
                continue;
            }
            connections.push(pb::Connection {
                protocol: pb::TransportProtocol::Tcp as i32,
                family: family as i32,
                local_addr: Some(collector_core::ipc::convert::addr_to_proto(
                    &e.local_address,
                )),
                remote_addr: Some(collector_core::ipc::convert::addr_to_proto(
                    &e.remote_address,
                )),
                state: state.to_string(),
                uid: e.uid,
                inode: e.inode,
            });
        }
    }
    Ok(pb::ConnectionList { connections })
}

/// The kernel's name for a TCP state, as `ss` and the network events print it.
fn tcp_state_name(s: &procfs::net::TcpState) -> &'static str {
    use procfs::net::TcpState as S;
    match s {
        S::Established => "ESTABLISHED",
        S::SynSent => "SYN_SENT",
        S::SynRecv => "SYN_RECV",
        S::FinWait1 => "FIN_WAIT1",
        S::FinWait2 => "FIN_WAIT2",
        S::TimeWait => "TIME_WAIT",
        S::Close => "CLOSE",
        S::CloseWait => "CLOSE_WAIT",
        S::LastAck => "LAST_ACK",
        S::Listen => "LISTEN",
        S::Closing => "CLOSING",
        S::NewSynRecv => "NEW_SYN_RECV",
    }
}

/// `stat` (or `lstat`) of a path.
pub fn stat_path(q: &pb::StatPath) -> Result<pb::FileStat, String> {
    if q.path.is_empty() {
        return Err("give a path to stat".to_string());
    }
    let path = Path::new(&q.path);
    let meta = if q.no_follow {
        std::fs::symlink_metadata(path)
    } else {
        std::fs::metadata(path)
    }
    .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    let ft = meta.file_type();
    let file_type = if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_char_device() {
        "char"
    } else {
        "file"
    };
    Ok(pb::FileStat {
        path: q.path.clone(),
        file_type: file_type.to_string(),
        size_bytes: meta.size(),
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        inode: meta.ino(),
        modified: DateTime::<Utc>::from_timestamp(meta.mtime(), meta.mtime_nsec() as u32)
            .map(timestamp_to_proto),
        symlink_target: ft
            .is_symlink()
            .then(|| std::fs::read_link(path).ok())
            .flatten()
            .map(|t| t.to_string_lossy().into_owned()),
    })
}

/// Load averages and memory.
pub fn sample_metrics() -> Result<pb::MetricList, String> {
    let load = procfs::LoadAverage::current().map_err(|e| format!("cannot read loadavg: {e}"))?;
    let mem = procfs::Meminfo::current().map_err(|e| format!("cannot read meminfo: {e}"))?;
    let metric = |name: &str, value: f64, unit: &str| pb::Metric {
        name: name.to_string(),
        value,
        unit: unit.to_string(),
    };
    let mut metrics = vec![
        metric("load_1m", load.one.into(), "load"),
        metric("load_5m", load.five.into(), "load"),
        metric("load_15m", load.fifteen.into(), "load"),
        metric("memory_total", mem.mem_total as f64, "bytes"),
        metric("memory_free", mem.mem_free as f64, "bytes"),
    ];
    if let Some(avail) = mem.mem_available {
        metrics.push(metric("memory_available", avail as f64, "bytes"));
    }
    Ok(pb::MetricList { metrics })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_by_pid_and_name() {
        let me = std::process::id();
        let list = enumerate_processes(&pb::EnumerateProcesses {
            pid: Some(me),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(list.processes.len(), 1);
        let p = &list.processes[0];
        assert_eq!(p.pid, me);
        assert!(p.start_time.is_some());
        assert!(!p.command_line.is_empty());

        let by_name = enumerate_processes(&pb::EnumerateProcesses {
            name: Some(p.name.clone()),
            ..Default::default()
        })
        .unwrap();
        assert!(by_name.processes.iter().any(|q| q.pid == me));
    }

    #[test]
    fn hashes_a_file_streamed_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, b"abc").unwrap();
        let h = hash_executable(&pb::CheckExecutableHash {
            path: path.to_string_lossy().into_owned(),
            pid: None,
            expected_sha256: Some(
                "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD".into(),
            ),
        })
        .unwrap();
        assert_eq!(
            h.hex_digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.size_bytes, 3);
        assert_eq!(h.matches_expected, Some(true));
        assert!(hash_executable(&pb::CheckExecutableHash::default()).is_err());
    }

    #[test]
    fn hashes_own_executable_by_pid() {
        let h = hash_executable(&pb::CheckExecutableHash {
            pid: Some(std::process::id()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(h.hex_digest.len(), 64);
        assert_eq!(
            h.path,
            std::env::current_exe().unwrap().to_string_lossy().as_ref()
        );
    }

    #[test]
    fn stats_files_dirs_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let s = stat_path(&pb::StatPath {
            path: file.to_string_lossy().into_owned(),
            no_follow: false,
        })
        .unwrap();
        assert_eq!((s.file_type.as_str(), s.size_bytes), ("file", 5));
        let l = stat_path(&pb::StatPath {
            path: link.to_string_lossy().into_owned(),
            no_follow: true,
        })
        .unwrap();
        assert_eq!(l.file_type, "symlink");
        assert_eq!(l.symlink_target.as_deref(), file.to_str());
        assert!(stat_path(&pb::StatPath {
            path: dir.path().join("missing").to_string_lossy().into_owned(),
            no_follow: false
        })
        .is_err());
    }

    #[test]
    fn lists_a_listening_tcp_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let list = list_tcp(&pb::ListNetworkConnections {
            local_port: Some(port.into()),
            state: Some("listen".into()),
        })
        .unwrap();
        assert_eq!(list.connections.len(), 1);
        assert_eq!(list.connections[0].state, "LISTEN");
    }

    #[test]
    fn samples_metrics() {
        let m = sample_metrics().unwrap();
        assert!(m
            .metrics
            .iter()
            .any(|m| m.name == "memory_total" && m.value > 0.0));
    }

    #[tokio::test]
    async fn handler_reports_failures_in_band() {
        let r = HostTaskHandler::new()
            .handle(pb::DetectionTask {
                task_id: "x".into(),
                task: Some(Task::StatPath(pb::StatPath {
                    path: "/definitely/not/here".into(),
                    no_follow: false,
                })),
            })
            .await;
        assert_eq!(r.task_id, "x");
        match r.result {
            Some(Answer::Error(e)) => assert_eq!(e.code, pb::ErrorCode::TaskFailed as i32),
            other => panic!("expected an error, got {other:?}"),
        }
    }
}
