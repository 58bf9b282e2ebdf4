//! Reading the process table: [`ProcessSnapshot`] rows from a [`ProcessTable`], the real
//! one being [`SysinfoProcessTable`] (sysinfo over `/proc`). Tests substitute scripted
//! tables, so the diff and the source loop run without a real `/proc`.

use chrono::{DateTime, Utc};
use collector_core::event::{ProcessEvent, ProcessEventKind, SourceName};
use sysinfo::{ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind};

/// One live process as a scan saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSnapshot {
    /// Process id (thread-group id).
    pub pid: u32,
    /// Parent process id.
    pub ppid: Option<u32>,
    /// Real uid.
    pub uid: Option<u32>,
    /// Real gid.
    pub gid: Option<u32>,
    /// Task name (`comm`).
    pub name: String,
    /// Path of the executable; `None` when `/proc/<pid>/exe` is unreadable (another
    /// user's process without privileges).
    pub executable_path: Option<String>,
    /// Arguments, argv[0] first.
    pub command_line: Vec<String>,
    /// Start time in seconds since the epoch (sysinfo's precision).
    pub start_time_secs: u64,
}

impl ProcessSnapshot {
    /// Whether `later` (the same pid, seen by a later scan) is still the program image
    /// this snapshot saw. A different start time means the pid was reused; a different
    /// executable means the process called execve. An executable that became unreadable
    /// (a zombie, a process that dropped privileges) is not a new image.
    pub fn same_image(&self, later: &ProcessSnapshot) -> bool {
        if self.start_time_secs != later.start_time_secs {
            return false;
        }
        match (&self.executable_path, &later.executable_path) {
            (Some(before), Some(after)) => before == after,
            _ => true,
        }
    }

    /// The start time as a timestamp (`None` for 0, i.e. unknown).
    pub fn start_time(&self) -> Option<DateTime<Utc>> {
        if self.start_time_secs == 0 {
            return None;
        }
        DateTime::from_timestamp(i64::try_from(self.start_time_secs).ok()?, 0)
    }

    /// A [`ProcessEvent`] of `kind` describing this process.
    pub fn to_event(
        &self,
        kind: ProcessEventKind,
        timestamp: DateTime<Utc>,
        source: &SourceName,
    ) -> ProcessEvent {
        let mut ev = ProcessEvent::new(kind, timestamp, self.pid, source.clone());
        ev.ppid = self.ppid;
        ev.uid = self.uid;
        ev.gid = self.gid;
        ev.name = Some(self.name.clone());
        ev.executable_path = self.executable_path.clone();
        ev.command_line = self.command_line.clone();
        ev.start_time = self.start_time();
        ev
    }
}

/// Errors of a process table scan.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// sysinfo could not be initialized on this platform.
    #[error(
        "cannot read the process table: {source} (procfs polling needs Linux with /proc mounted)"
    )]
    Init {
        /// What sysinfo reported.
        #[source]
        source: sysinfo::Error,
    },
    /// The scan did not even see the collector's own process.
    #[error(
        "the process table scan did not list our own pid {pid} ({count} processes seen): \
         is /proc mounted and readable?"
    )]
    Incomplete {
        /// The collector's pid.
        pid: u32,
        /// How many processes the scan returned.
        count: usize,
    },
    /// The blocking scan task panicked or was cancelled.
    #[error("the process table scan task failed")]
    Task {
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Something that lists the live processes. Blocking: callers run it off the async
/// runtime (`spawn_blocking`).
pub trait ProcessTable: Send + 'static {
    /// Every live process, in any order. Zombies and threads are not processes here.
    fn scan(&mut self) -> Result<Vec<ProcessSnapshot>, ScanError>;
}

/// The host's process table via sysinfo (`/proc/<pid>/{stat,status,exe,cmdline}`).
///
/// Kernel threads are left out (they never exec, and kworkers come and go all the
/// time); so are zombies, which have exited and only wait to be reaped: a process that
/// becomes a zombie is reported as exited by the next scan.
pub struct SysinfoProcessTable {
    system: System,
}

impl SysinfoProcessTable {
    /// A table with nothing loaded yet; the first [`ProcessTable::scan`] reads `/proc`.
    pub fn new() -> Result<Self, ScanError> {
        let system = System::new().map_err(|source| ScanError::Init { source })?;
        Ok(Self { system })
    }

    fn refresh_kind() -> ProcessRefreshKind {
        // `Always`: a process that calls execve keeps its pid, so exe, cmdline and
        // (for setuid programs) the uid must be re-read on every scan to notice it.
        ProcessRefreshKind::nothing()
            .with_user(UpdateKind::Always)
            .with_exe(UpdateKind::Always)
            .with_cmd(UpdateKind::Always)
            .without_tasks()
    }
}

impl ProcessTable for SysinfoProcessTable {
    fn scan(&mut self) -> Result<Vec<ProcessSnapshot>, ScanError> {
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::All, true, Self::refresh_kind());
        let rows: Vec<ProcessSnapshot> = self
            .system
            .processes()
            .values()
            // thread_kind: Some for kernel threads and for threads of a process.
            .filter(|p| p.thread_kind().is_none() && p.status() != ProcessStatus::Zombie)
            .map(|p| ProcessSnapshot {
                pid: p.pid().as_u32(),
                ppid: p.parent().map(|pid| pid.as_u32()),
                uid: p.user_id().map(|uid| **uid),
                gid: p.group_id().map(|gid| *gid),
                name: p.name().to_string_lossy().into_owned(),
                executable_path: p.exe().map(|path| path.to_string_lossy().into_owned()),
                command_line: p
                    .cmd()
                    .iter()
                    .map(|arg| arg.to_string_lossy().into_owned())
                    .collect(),
                start_time_secs: p.start_time(),
            })
            .collect();
        let own = std::process::id();
        if !rows.iter().any(|row| row.pid == own) {
            return Err(ScanError::Incomplete {
                pid: own,
                count: rows.len(),
            });
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, start: u64, exe: Option<&str>) -> ProcessSnapshot {
        ProcessSnapshot {
            pid,
            ppid: Some(1),
            uid: Some(0),
            gid: Some(0),
            name: "x".into(),
            executable_path: exe.map(Into::into),
            command_line: vec![],
            start_time_secs: start,
        }
    }

    #[test]
    fn image_changes_on_new_start_or_new_executable_only() {
        let a = row(7, 100, Some("/bin/a"));
        assert!(a.same_image(&row(7, 100, Some("/bin/a"))));
        assert!(!a.same_image(&row(7, 101, Some("/bin/a"))));
        assert!(!a.same_image(&row(7, 100, Some("/bin/b"))));
        // Unreadable exe (zombie, dropped privileges): not an exec.
        assert!(a.same_image(&row(7, 100, None)));
        assert!(row(7, 100, None).same_image(&a));
    }

    #[test]
    fn real_scan_lists_this_process_with_its_executable() {
        let mut table = SysinfoProcessTable::new().unwrap();
        let rows = table.scan().unwrap();
        let me = rows
            .iter()
            .find(|r| r.pid == std::process::id())
            .expect("own pid in the scan");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(me.executable_path.as_deref(), exe.to_str());
        assert!(me.start_time().is_some());
        assert_eq!(me.uid, Some(real_uid()));
        // The test harness runs this test on a thread of its own: threads are not
        // processes.
        let threads: Vec<u32> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .filter(|&tid| tid != std::process::id())
            .collect();
        assert!(!threads.is_empty());
        assert!(
            rows.iter().all(|r| !threads.contains(&r.pid)),
            "threads listed as processes"
        );
    }

    fn real_uid() -> u32 {
        // /proc/self/status: "Uid: real effective saved fs"
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}
