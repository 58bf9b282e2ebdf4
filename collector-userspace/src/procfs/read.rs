//! The one reader of `/proc` in this crate: the `procfs` crate, plus a parser of our own
//! for each file whose text a process controls (its name in `status`, its arguments in
//! `cmdline`). The crate reads those files as UTF-8 and fails on other bytes, so a
//! process could hide its ids or its arguments from a scan by renaming itself with
//! `prctl(PR_SET_NAME, "\xff")` or passing a non-UTF-8 argument; these parsers take
//! the bytes and replace what is not UTF-8.
//!
//! Every `/proc` read of the polling sources, the process table, the detection tasks
//! and the loader goes through here. Blocking: async callers use `spawn_blocking`.

use std::io::Read;
use std::path::PathBuf;

use procfs::process::Process;
pub use procfs::ProcError;
use procfs::{Current, CurrentSI, FromRead};

/// `PF_KTHREAD` in `/proc/<pid>/stat`'s flags: a kernel thread.
const PF_KTHREAD: u32 = 0x0020_0000;

/// One process (thread group) as `/proc/<pid>` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEntry {
    /// Process id (thread-group id).
    pub pid: u32,
    /// Parent process id (0 for the init process and kernel threads' root).
    pub ppid: u32,
    /// Real uid; `None` when `status` could not be read (the process is gone).
    pub ruid: Option<u32>,
    /// Real gid, likewise.
    pub rgid: Option<u32>,
    /// Task name (`comm`), non-UTF-8 bytes replaced.
    pub comm: String,
    /// Path of the executable; `None` when `exe` is unreadable (another user's process
    /// without privileges, a kernel thread, a zombie).
    pub executable_path: Option<String>,
    /// Arguments, argv[0] first, non-UTF-8 bytes replaced.
    pub command_line: Vec<String>,
    /// Start, in clock ticks after boot (`stat` field 22).
    pub start_ticks: u64,
    /// A kernel thread (`PF_KTHREAD`).
    pub kernel_thread: bool,
    /// Exited, waiting to be reaped (state `Z`).
    pub zombie: bool,
}

impl ProcessEntry {
    /// The start in nanoseconds after boot.
    pub fn start_ns_since_boot(&self) -> u64 {
        let ticks = u128::from(ticks_per_second());
        u64::try_from(u128::from(self.start_ticks) * 1_000_000_000 / ticks).unwrap_or(u64::MAX)
    }

    /// The start in whole seconds since the epoch; `None` without the boot time.
    pub fn start_time_secs(&self) -> Option<u64> {
        let boot = boot_time_secs()?;
        Some(boot + self.start_ticks / ticks_per_second())
    }
}

/// The processes in `/proc` (thread groups only: `/proc` lists no threads), or just
/// `only` when given. A process that exits mid-scan is left out.
pub fn processes(only: Option<u32>) -> Result<Vec<ProcessEntry>, ProcError> {
    if let Some(pid) = only {
        let entry = i32::try_from(pid)
            .ok()
            .and_then(|pid| Process::new(pid).ok())
            .and_then(|p| entry(&p));
        return Ok(entry.into_iter().collect());
    }
    Ok(procfs::process::all_processes()?
        .flatten()
        .filter_map(|p| entry(&p))
        .collect())
}

fn entry(process: &Process) -> Option<ProcessEntry> {
    // `stat` is parsed lossily by the crate; without it there is no process.
    let stat = process.stat().ok()?;
    let ids = process.read::<_, StatusIds>("status").ok();
    Some(ProcessEntry {
        pid: u32::try_from(stat.pid).ok()?,
        ppid: u32::try_from(stat.ppid).unwrap_or(0),
        ruid: ids.as_ref().and_then(|ids| ids.ruid),
        rgid: ids.as_ref().and_then(|ids| ids.rgid),
        comm: stat.comm,
        executable_path: process
            .exe()
            .ok()
            .map(|path| path.to_string_lossy().into_owned()),
        command_line: process
            .read::<_, Cmdline>("cmdline")
            .map(|c| c.0)
            .unwrap_or_default(),
        start_ticks: stat.starttime,
        kernel_thread: stat.flags & PF_KTHREAD != 0,
        zombie: stat.state == 'Z',
    })
}

/// The real uid and gid from `/proc/<pid>/status`, read as bytes: its `Name:` line
/// holds the task name unescaped, which need not be UTF-8.
#[derive(Debug, Default, PartialEq, Eq)]
struct StatusIds {
    ruid: Option<u32>,
    rgid: Option<u32>,
}

impl StatusIds {
    fn parse(text: &[u8]) -> Self {
        // "Uid:\treal\teffective\tsaved\tfs"
        let first = |label: &[u8]| {
            text.split(|&b| b == b'\n')
                .find_map(|line| line.strip_prefix(label))
                .and_then(|rest| std::str::from_utf8(rest).ok())
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|id| id.parse().ok())
        };
        Self {
            ruid: first(b"Uid:"),
            rgid: first(b"Gid:"),
        }
    }
}

impl FromRead for StatusIds {
    fn from_read<R: Read>(mut r: R) -> procfs::ProcResult<Self> {
        let mut text = Vec::new();
        r.read_to_end(&mut text)?;
        Ok(Self::parse(&text))
    }
}

/// `/proc/<pid>/cmdline` as arguments, read as bytes.
struct Cmdline(Vec<String>);

impl FromRead for Cmdline {
    fn from_read<R: Read>(mut r: R) -> procfs::ProcResult<Self> {
        let mut block = Vec::new();
        r.read_to_end(&mut block)?;
        Ok(Self(crate::ebpf::decode::split_args(&block)))
    }
}

/// The executable `pid` runs (`/proc/<pid>/exe`); `None` when gone or unreadable.
pub fn executable(pid: u32) -> Option<PathBuf> {
    Process::new(i32::try_from(pid).ok()?).ok()?.exe().ok()
}

/// The raw argument block of `pid` (`/proc/<pid>/cmdline`); `None` when gone.
pub fn cmdline_bytes(pid: u32) -> Option<Vec<u8>> {
    let process = Process::new(i32::try_from(pid).ok()?).ok()?;
    let mut block = Vec::new();
    process
        .open_relative("cmdline")
        .ok()?
        .read_to_end(&mut block)
        .ok()?;
    Some(block)
}

/// The pids in `/proc` (thread groups), in no order; empty when `/proc` is unreadable.
pub fn pids() -> Vec<u32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.flatten()
        .filter_map(|p| u32::try_from(p.pid()).ok())
        .collect()
}

/// Whether a process with this pid exists now (a zombie counts).
pub fn exists(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| Process::new(pid).is_ok())
}

/// The (device, inode) of this process's pid namespace (`stat` of
/// `/proc/self/ns/pid`), as `bpf_get_ns_current_pid_tgid` compares them.
pub fn own_pid_namespace() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/proc/self/ns/pid").ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Clock ticks per second, the unit of `stat`'s times.
pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second().max(1)
}

/// The boot time in seconds since the epoch (`btime` of `/proc/stat`).
pub fn boot_time_secs() -> Option<u64> {
    procfs::boot_time_secs().ok()
}

/// CPU seconds (user + system) and resident bytes of this process, from /proc/self.
pub fn own_usage() -> Option<(f64, u64)> {
    let me = Process::myself().ok()?;
    let stat = me.stat().ok()?;
    let cpu = (stat.utime + stat.stime) as f64 / ticks_per_second() as f64;
    let rss = stat.rss * procfs::page_size();
    Some((cpu, rss))
}

/// Cumulative CPU time of all CPUs, in clock ticks (the `cpu` line of `/proc/stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Ticks spent working: user, nice, system, irq, softirq, steal, guest.
    pub busy: u64,
    /// All ticks: busy, idle and iowait.
    pub total: u64,
}

impl CpuTimes {
    /// Reads `/proc/stat`.
    pub fn read() -> Result<Self, ProcError> {
        let t = procfs::KernelStats::current()?.total;
        let busy = [
            t.user,
            t.nice,
            t.system,
            t.irq.unwrap_or(0),
            t.softirq.unwrap_or(0),
            t.steal.unwrap_or(0),
            t.guest.unwrap_or(0),
            t.guest_nice.unwrap_or(0),
        ]
        .iter()
        .fold(0u64, |a, &b| a.saturating_add(b));
        let idle = t.idle.saturating_add(t.iowait.unwrap_or(0));
        Ok(Self {
            busy,
            total: busy.saturating_add(idle),
        })
    }

    /// Percent of all CPUs busy between `earlier` and `self`, at most 100.
    pub fn usage_percent_since(&self, earlier: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1);
        let busy = self.busy.saturating_sub(earlier.busy);
        (busy as f64 / total as f64 * 100.0).min(100.0)
    }
}

/// Host memory in bytes: (total, used), used being total less `MemAvailable` (or, on
/// kernels before 3.14, its estimate from free, buffers and cache).
pub fn memory() -> Result<(u64, u64), ProcError> {
    let m = procfs::Meminfo::current()?;
    let available = m.mem_available.unwrap_or_else(|| {
        (m.mem_free + m.buffers + m.cached + m.s_reclaimable.unwrap_or(0))
            .saturating_sub(m.shmem.unwrap_or(0))
    });
    Ok((m.mem_total, m.mem_total.saturating_sub(available)))
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn load_average_1m() -> Option<f64> {
    procfs::LoadAverage::current()
        .ok()
        .map(|l| f64::from(l.one))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ids_are_read_past_a_name_that_is_not_utf8() {
        let status = b"Name:\t\xff\xfe evil\nUmask:\t0022\nState:\tS (sleeping)\n\
            Uid:\t65534\t0\t0\t0\nGid:\t65533\t0\t0\t0\n";
        assert_eq!(
            StatusIds::parse(status),
            StatusIds {
                ruid: Some(65534),
                rgid: Some(65533)
            }
        );
        assert_eq!(StatusIds::parse(b"Name:\tx\n"), StatusIds::default());
    }

    #[test]
    fn this_process_is_listed_with_its_ids_arguments_and_start() {
        let own = std::process::id();
        let all = processes(None).unwrap();
        let me = all.iter().find(|p| p.pid == own).expect("own pid listed");
        assert_eq!(processes(Some(own)).unwrap(), vec![me.clone()]);
        // SAFETY: getuid/getgid cannot fail.
        assert_eq!(me.ruid, Some(unsafe { libc::getuid() }));
        assert_eq!(me.rgid, Some(unsafe { libc::getgid() }));
        let exe = std::env::current_exe().unwrap();
        assert_eq!(me.executable_path.as_deref(), exe.to_str());
        let args: Vec<String> = std::env::args().collect();
        assert_eq!(me.command_line, args);
        assert!(!me.kernel_thread && !me.zombie);
        assert!(me.start_time_secs().is_some_and(|s| s > 1_600_000_000));
        assert!(all.iter().any(|p| p.kernel_thread), "kthreadd and its kids");
    }

    /// A process named and called with bytes that are not UTF-8 (its comm comes from the
    /// executable's file name at exec): listed, with its ids and arguments.
    #[test]
    fn a_process_with_a_non_utf8_name_and_arguments_is_listed_whole() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let shell = dir.path().join(OsStr::from_bytes(b"\xff\xfesh"));
        std::os::unix::fs::symlink("/bin/sh", &shell).unwrap();
        let mut child = std::process::Command::new(&shell)
            .arg("-c")
            .arg("sleep 30; :")
            .arg("zero")
            .arg(OsStr::from_bytes(b"\xffarg"))
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let entry = loop {
            // Until the child has exec'd (its comm is then the link's name).
            let found = processes(None)
                .unwrap()
                .into_iter()
                .find(|p| p.pid == pid && p.comm.starts_with('\u{fffd}'));
            if let Some(found) = found {
                break found;
            }
            assert!(std::time::Instant::now() < deadline, "child {pid} not seen");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(entry.comm, "\u{fffd}\u{fffd}sh");
        // SAFETY: getuid cannot fail.
        assert_eq!(entry.ruid, Some(unsafe { libc::getuid() }));
        assert!(entry.rgid.is_some());
        assert_eq!(entry.command_line.len(), 5, "{:?}", entry.command_line);
        assert_eq!(entry.command_line[4], "\u{fffd}arg");
        assert!(entry.start_time_secs().is_some());
    }

    #[test]
    fn cpu_memory_and_load_read() {
        let before = CpuTimes::read().unwrap();
        assert!(before.total >= before.busy && before.total > 0);
        let (total, used) = memory().unwrap();
        assert!(total > 0 && used <= total);
        assert!(load_average_1m().is_some());
        assert!(own_usage().is_some_and(|(_, rss)| rss > 0));
    }
}
