//! Reading the process table: [`ProcessSnapshot`] rows from a [`ProcessTable`], the real
//! one being [`ProcfsProcessTable`] (over `/proc`). Tests substitute scripted
//! tables, so the diff and the source loop run without a real `/proc`.

use chrono::{DateTime, Utc};
use collector_core::event::{ProcessEvent, ProcessEventKind, SourceName};

use super::read;

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
    /// Start time in whole seconds since the epoch (boot time plus `stat`'s start).
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
        ev.name = Some(self.name.as_str().into());
        ev.executable_path = self.executable_path.clone();
        ev.command_line = self.command_line.clone();
        ev.start_time = self.start_time();
        ev
    }
}

/// Errors of a process table scan.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// `/proc/stat` (boot time, CPU times) could not be read.
    #[error("cannot read /proc/stat (procfs polling needs Linux with /proc mounted)")]
    Init {
        /// What the reader reported.
        #[source]
        source: read::ProcError,
    },
    /// `/proc` could not be listed.
    #[error("cannot list the processes in /proc (is /proc mounted and readable?)")]
    List {
        /// What the reader reported.
        #[source]
        source: read::ProcError,
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

/// The host's process table from `/proc/<pid>/{stat,status,exe,cmdline}` (see
/// [`super::read`]).
///
/// Kernel threads are left out (they never exec, and kworkers come and go all the
/// time); so are zombies, which have exited and only wait to be reaped: a process that
/// becomes a zombie is reported as exited by the next scan.
pub struct ProcfsProcessTable {
    boot_time_secs: u64,
}

impl ProcfsProcessTable {
    /// A table over this host's `/proc`; fails when `/proc` is not mounted.
    pub fn new() -> Result<Self, ScanError> {
        // Start times are counted from boot: without the boot time none can be told.
        let boot_time_secs =
            procfs::boot_time_secs().map_err(|source| ScanError::Init { source })?;
        Ok(Self { boot_time_secs })
    }
}

impl ProcessTable for ProcfsProcessTable {
    fn scan(&mut self) -> Result<Vec<ProcessSnapshot>, ScanError> {
        let ticks = read::ticks_per_second();
        let rows: Vec<ProcessSnapshot> = read::processes(None)
            .map_err(|source| ScanError::List { source })?
            .into_iter()
            .filter(|p| !p.kernel_thread && !p.zombie)
            .map(|p| ProcessSnapshot {
                pid: p.pid,
                ppid: (p.ppid != 0).then_some(p.ppid),
                uid: p.ruid,
                gid: p.rgid,
                name: p.comm,
                executable_path: p.executable_path,
                command_line: p.command_line,
                start_time_secs: self.boot_time_secs + p.start_ticks / ticks,
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
        let mut table = ProcfsProcessTable::new().unwrap();
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
