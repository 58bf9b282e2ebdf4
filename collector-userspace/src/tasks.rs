//! [`HostTaskHandler`]: answers IPC detection tasks from this host's procfs and filesystem.
//!
//! - process: enumerate processes (pid / name / executable filters); SHA-256 of an
//!   executable, streamed so large binaries never sit in memory.
//! - network: TCP sockets from `/proc/net/tcp` and `/proc/net/tcp6`.
//! - filesystem: `stat`/`lstat` of a path.
//! - performance: load average and memory.
//!
//! All work that touches the disk runs on the blocking pool.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use collector_core::ipc::convert::timestamp_to_proto;
use collector_core::ipc::proto as pb;
use collector_core::ipc::proto::detection_result::Result as Answer;
use collector_core::ipc::proto::detection_task::Task;
use collector_core::ipc::task::error_result;
use collector_core::ipc::{Peer, TaskHandler};
use procfs::Current;

use crate::hash::{hash_open_file, open_nonblocking, FileHash, HashLimits};
use crate::process_query::ProcessQuery;

/// Answers detection tasks from the host.
///
/// Every task runs with the asking peer's file-system credentials (see [`as_peer`]): a
/// non-root peer gets only what it could read itself. Hashes read only regular files,
/// opened `O_NOFOLLOW | O_NONBLOCK`, with a size cap and a deadline checked while
/// reading ([`crate::hash`]).
#[derive(Debug, Clone, Default)]
pub struct HostTaskHandler {
    limits: HashLimits,
    processes: Option<ProcessQuery>,
}

impl HostTaskHandler {
    /// A handler reading the host's `/proc`, with the default hash limits (512 MiB,
    /// 20 s: under the IPC server's 30 s task timeout, so the work ends before or
    /// soon after the timeout answers).
    pub fn new() -> Self {
        Self::default()
    }

    /// A handler with these hash limits.
    pub fn with_limits(limits: HashLimits) -> Self {
        Self {
            limits,
            processes: None,
        }
    }

    /// Answers process enumerations from the daemon's process table (and its store's
    /// history) instead of a `/proc` scan: see [`crate::process_query`].
    pub fn with_process_table(mut self, query: ProcessQuery) -> Self {
        self.processes = Some(query);
        self
    }
}

#[async_trait]
impl TaskHandler for HostTaskHandler {
    /// As root (in-process callers).
    async fn handle(&self, task: pb::DetectionTask) -> pb::DetectionResult {
        self.handle_as(task, &Peer::root()).await
    }

    async fn handle_as(&self, task: pb::DetectionTask, peer: &Peer) -> pb::DetectionResult {
        let task_id = task.task_id.clone();
        let Some(body) = task.task else {
            return error_result(task_id, pb::ErrorCode::BadRequest, "the task has no body");
        };
        let (peer, limits) = (peer.clone(), self.limits);
        if let (Task::EnumerateProcesses(q), Some(query)) = (&body, &self.processes) {
            // The table holds what the peer may see of each row (no file is opened for
            // it); the store is read on the blocking pool.
            let (q, query) = (q.clone(), query.clone());
            let answer = tokio::task::spawn_blocking(move || {
                let page = query.answer(&q, &peer);
                // A page of a large table is a few MB of short-lived rows.
                crate::daemon::release_freed_heap();
                page
            })
            .await;
            return match answer {
                Ok(Ok(list)) => pb::DetectionResult {
                    task_id,
                    result: Some(Answer::Processes(list)),
                },
                Ok(Err(message)) => error_result(task_id, pb::ErrorCode::TaskFailed, message),
                Err(_) => error_result(task_id, pb::ErrorCode::Internal, "the task panicked"),
            };
        }
        let answer =
            tokio::task::spawn_blocking(move || as_peer(&peer, move || run(body, limits))?).await;
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

/// Runs `work` on a fresh thread that holds `peer`'s file-system identity: its fsuid,
/// fsgid and supplementary groups, and no capabilities. Every open, `/proc/<pid>/exe`
/// link and directory search is then checked by the kernel as if the peer made it, at
/// the moment it is made (no check-then-use race). The thread ends with the work, so
/// the changed credentials never leak into the runtime's threads. For root, `work` runs
/// here unchanged.
///
/// Raw syscalls on purpose: glibc's `setgroups` would change every thread of the
/// process; the kernel's calls change only the caller.
pub fn as_peer<T: Send>(peer: &Peer, work: impl FnOnce() -> T + Send) -> Result<T, String> {
    if peer.is_root() {
        return Ok(work());
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                take_identity(peer)?;
                Ok(work())
            })
            .join()
            .map_err(|_| "the task panicked".to_string())?
    })
}

fn take_identity(peer: &Peer) -> Result<(), String> {
    let fail = |what: &str| {
        format!(
            "cannot take the identity of uid {} ({what}: {}); refusing the task",
            peer.uid,
            std::io::Error::last_os_error()
        )
    };
    // SAFETY: plain syscalls on this thread's credentials with valid pointers/lengths.
    unsafe {
        if libc::syscall(
            libc::SYS_setgroups,
            peer.groups.len() as libc::c_long,
            peer.groups.as_ptr(),
        ) != 0
        {
            return Err(fail("setgroups"));
        }
        libc::syscall(libc::SYS_setfsgid, peer.gid as libc::c_long);
        libc::syscall(libc::SYS_setfsuid, peer.uid as libc::c_long);
        // setfs*id return the previous value and cannot fail visibly: ask again to check.
        if libc::syscall(libc::SYS_setfsgid, -1 as libc::c_long) as u32 != peer.gid
            || libc::syscall(libc::SYS_setfsuid, -1 as libc::c_long) as u32 != peer.uid
        {
            return Err(fail("setfsuid/setfsgid"));
        }
        // Drop every capability (CAP_SYS_PTRACE would still open others' /proc/<pid>/exe).
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
            return Err(fail("capset"));
        }
    }
    Ok(())
}

fn run(task: Task, limits: HashLimits) -> Result<Answer, String> {
    match task {
        Task::EnumerateProcesses(q) => enumerate_processes(&q).map(Answer::Processes),
        Task::CheckExecutableHash(q) => hash_executable(&q, limits).map(Answer::ExecutableHash),
        Task::ListNetworkConnections(q) => list_tcp(&q).map(Answer::Connections),
        Task::StatPath(q) => stat_path(&q).map(Answer::FileStat),
        Task::SampleSystemMetrics(_) => sample_metrics().map(Answer::Metrics),
    }
}

/// Processes matching every filter of `q`. Processes that exit mid-scan, or whose
/// details we may not read, are reported with what could be read.
pub fn enumerate_processes(q: &pb::EnumerateProcesses) -> Result<pb::ProcessList, String> {
    let all = crate::procfs::read::processes(q.pid)
        .map_err(|e| format!("cannot list /proc: {}", collector_core::Report(&e)))?;
    let boot = crate::procfs::read::boot_time_secs();
    let mut processes = Vec::new();
    for proc in all {
        let exe = proc.executable_path.clone();
        if let Some(want) = &q.executable {
            if exe.as_deref() != Some(want.as_str()) {
                continue;
            }
        }
        if let Some(want) = &q.name {
            let base = exe.as_deref().and_then(|e| Path::new(e).file_name());
            if proc.comm != *want && base.is_none_or(|b| b != want.as_str()) {
                continue;
            }
        }
        let start_time = boot.and_then(|boot| {
            let since_boot = i64::try_from(proc.start_ns_since_boot()).ok()?;
            DateTime::<Utc>::from_timestamp(boot as i64, 0)
                .map(|b| b + chrono::Duration::nanoseconds(since_boot))
        });
        processes.push(pb::ProcessInfo {
            pid: proc.pid,
            ppid: Some(proc.ppid),
            name: proc.comm,
            executable: exe,
            command_line: proc.command_line,
            uid: proc.ruid,
            start_time: start_time.map(timestamp_to_proto),
            ..Default::default()
        });
    }
    Ok(pb::ProcessList {
        processes,
        next_cursor: String::new(),
    })
}

/// SHA-256 of `q.path`, or of the executable of `q.pid` when the path is empty. Only a
/// regular file, opened without following a final symlink (`/proc/<pid>/exe` is
/// followed: it is how a pid's image is reached), within `limits`.
pub fn hash_executable(
    q: &pb::CheckExecutableHash,
    limits: HashLimits,
) -> Result<pb::ExecutableHash, String> {
    let (path, follow) = match (q.path.is_empty(), q.pid) {
        (false, _) => (PathBuf::from(&q.path), false),
        (true, Some(pid)) => (PathBuf::from(format!("/proc/{pid}/exe")), true),
        (true, None) => return Err("give a path or a pid to hash".to_string()),
    };
    // For /proc/PID/exe, report where it points; the bytes are read through the link,
    // which still works when the file was deleted or replaced on disk.
    let shown = std::fs::read_link(&path)
        .ok()
        .filter(|_| path.starts_with("/proc"))
        .unwrap_or_else(|| path.clone());
    let mut file = open_nonblocking(&path, follow).map_err(|e| collector_core::report(&e))?;
    let FileHash {
        hex_digest,
        size_bytes,
        ..
    } = hash_open_file(&mut file, &path, limits).map_err(|e| collector_core::report(&e))?;
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

/// `stat` (or `lstat`) of a path, through an `O_PATH` descriptor: opening one never
/// touches the file itself (a FIFO or a device does not block or react), needs only the
/// search permission on the directories (what stat(2) needs), and the descriptor's
/// `fstat` and `readlinkat` describe exactly what was opened.
pub fn stat_path(q: &pb::StatPath) -> Result<pb::FileStat, String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    if q.path.is_empty() {
        return Err("give a path to stat".to_string());
    }
    let path = Path::new(&q.path);
    let mut flags = libc::O_PATH | libc::O_CLOEXEC;
    if q.no_follow {
        flags |= libc::O_NOFOLLOW;
    }
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    let meta = fd
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    let link_target = || {
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: `buf` has `buf.len()` writable bytes; an empty path reads the link `fd`
        // itself refers to (O_PATH | O_NOFOLLOW).
        let n = unsafe {
            libc::readlinkat(
                fd.as_raw_fd(),
                c"".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        (n >= 0).then(|| String::from_utf8_lossy(&buf[..n as usize]).into_owned())
    };
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
        symlink_target: ft.is_symlink().then(link_target).flatten(),
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
        let h = hash_executable(
            &pb::CheckExecutableHash {
                path: path.to_string_lossy().into_owned(),
                pid: None,
                expected_sha256: Some(
                    "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD".into(),
                ),
            },
            HashLimits::default(),
        )
        .unwrap();
        assert_eq!(
            h.hex_digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.size_bytes, 3);
        assert_eq!(h.matches_expected, Some(true));
        assert!(
            hash_executable(&pb::CheckExecutableHash::default(), HashLimits::default()).is_err()
        );
    }

    #[test]
    fn hashes_own_executable_by_pid() {
        let h = hash_executable(
            &pb::CheckExecutableHash {
                pid: Some(std::process::id()),
                ..Default::default()
            },
            HashLimits::default(),
        )
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

/// Detection tasks asked as an attacker would: an allowed non-root uid (`nobody`), and
/// files that block or never end. Needs root (to take another identity); skipped
/// otherwise.
#[cfg(test)]
mod adversarial {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    use collector_core::ipc::proto as pb;
    use collector_core::ipc::proto::detection_result::Result as Answer;
    use collector_core::ipc::proto::detection_task::Task;
    use collector_core::ipc::{Peer, TaskHandler};

    use super::HostTaskHandler;

    const NOBODY: u32 = 65534;

    fn nobody(groups: Vec<u32>) -> Peer {
        Peer {
            uid: NOBODY,
            gid: NOBODY,
            pid: None,
            groups,
        }
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    async fn ask(peer: &Peer, task: Task) -> Answer {
        let handler = HostTaskHandler::new();
        let started = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            handler.handle_as(
                pb::DetectionTask {
                    task_id: "t".into(),
                    task: Some(task),
                },
                peer,
            ),
        )
        .await
        .expect("the task answers within 10 s");
        assert!(started.elapsed() < Duration::from_secs(10));
        result.result.expect("a result")
    }

    fn hash_path(path: &str, expected: Option<&str>) -> Task {
        Task::CheckExecutableHash(pb::CheckExecutableHash {
            path: path.into(),
            pid: None,
            expected_sha256: expected.map(Into::into),
        })
    }

    fn error(answer: Answer) -> String {
        match answer {
            Answer::Error(e) => e.message,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// A 0755 directory with a 0600 root-only secret and a 0640 file of group 4242.
    fn files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"hunter2").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let shared = dir.path().join("shared");
        std::fs::write(&shared, b"abc").unwrap();
        std::os::unix::fs::chown(&shared, Some(0), Some(4242)).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.path().join("shadow-link")).unwrap();
        dir
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nobody_gets_only_what_it_could_read_itself() {
        if !is_root() {
            eprintln!("skipped: needs root to take another uid");
            return;
        }
        let dir = files();
        let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let sha_hunter2 = "f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7";

        // The shadow file, directly and through a symlink.
        let e = error(ask(&nobody(vec![]), hash_path("/etc/shadow", None)).await);
        assert!(e.contains("Permission denied"), "{e}");
        let e = error(ask(&nobody(vec![]), hash_path(&p("shadow-link"), None)).await);
        assert!(e.contains("cannot open"), "{e}");
        // Guessing a secret with expected_sha256 gets no answer either.
        let e = error(ask(&nobody(vec![]), hash_path(&p("secret"), Some(sha_hunter2))).await);
        assert!(e.contains("Permission denied"), "{e}");
        // Root's process image (pid 1) is not nobody's to read.
        let e = error(
            ask(
                &nobody(vec![]),
                Task::CheckExecutableHash(pb::CheckExecutableHash {
                    pid: Some(1),
                    ..Default::default()
                }),
            )
            .await,
        );
        assert!(e.contains("cannot open"), "{e}");
        // Group-readable: denied without the group, allowed with it as a supplementary one.
        let e = error(ask(&nobody(vec![]), hash_path(&p("shared"), None)).await);
        assert!(e.contains("Permission denied"), "{e}");
        match ask(&nobody(vec![4242]), hash_path(&p("shared"), None)).await {
            Answer::ExecutableHash(h) => assert_eq!(
                h.hex_digest,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            ),
            other => panic!("{other:?}"),
        }
        // Root still gets the secret, and the guess is confirmed for root only.
        match ask(&Peer::root(), hash_path(&p("secret"), Some(sha_hunter2))).await {
            Answer::ExecutableHash(h) => assert_eq!(h.matches_expected, Some(true)),
            other => panic!("{other:?}"),
        }
        // stat is what stat(1) gives nobody: the link itself without following, and a
        // refusal behind a directory nobody may search.
        match ask(
            &nobody(vec![]),
            Task::StatPath(pb::StatPath {
                path: p("shadow-link"),
                no_follow: true,
            }),
        )
        .await
        {
            Answer::FileStat(s) => {
                assert_eq!(s.file_type, "symlink");
                assert_eq!(s.symlink_target.as_deref(), Some("/etc/shadow"));
            }
            other => panic!("{other:?}"),
        }
        let closed = tempfile::tempdir().unwrap();
        std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(closed.path().join("f"), b"x").unwrap();
        let e = error(
            ask(
                &nobody(vec![]),
                Task::StatPath(pb::StatPath {
                    path: closed.path().join("f").to_string_lossy().into_owned(),
                    no_follow: false,
                }),
            )
            .await,
        );
        assert!(e.contains("Permission denied"), "{e}");
        // The process list shows nobody no executable of root's processes.
        match ask(
            &nobody(vec![]),
            Task::EnumerateProcesses(pb::EnumerateProcesses {
                pid: Some(1),
                ..Default::default()
            }),
        )
        .await
        {
            Answer::Processes(l) => {
                assert_eq!(l.processes.len(), 1);
                assert_eq!(l.processes[0].executable, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifos_devices_and_huge_files_get_a_clear_error_fast() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let big = dir.path().join("sparse-10g");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(10 * 1024 * 1024 * 1024)
            .unwrap();
        let root = Peer::root();
        let started = Instant::now();
        let e = error(ask(&root, hash_path(fifo.to_str().unwrap(), None)).await);
        assert!(e.contains("not a regular file (fifo)"), "{e}");
        let e = error(ask(&root, hash_path("/dev/zero", None)).await);
        assert!(e.contains("not a regular file (char)"), "{e}");
        let e = error(ask(&root, hash_path(big.to_str().unwrap(), None)).await);
        assert!(e.contains("over the"), "{e}");
        // stat of a FIFO answers (O_PATH never opens it for I/O) and does not block.
        match ask(
            &root,
            Task::StatPath(pb::StatPath {
                path: fifo.to_string_lossy().into_owned(),
                no_follow: false,
            }),
        )
        .await
        {
            Answer::FileStat(s) => assert_eq!(s.file_type, "fifo"),
            other => panic!("{other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
