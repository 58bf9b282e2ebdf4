//! Fills what a kernel record lacks from what the process source has already seen: an
//! exit carries the executable and command line of its exec, a fork's child inherits
//! its parent's image, and processes that started before the collector are looked up in
//! `/proc` the first time they appear.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use collector_core::event::{ProcessEvent, ProcessEventKind};

/// Most processes remembered; past it the table is cleared (and the clears counted),
/// which only costs enrichment, never events.
const MAX_PROCESSES: usize = 65_536;

/// A process's image as its exec (or /proc) showed it. Shared: a fork's child holds its
/// parent's until it execs, and an exit takes it out of the cache, so an exec cycle
/// copies argv and the path once (into the cache at the exec), not at every event.
#[derive(Debug, Clone, Default)]
struct Image {
    executable_path: Option<String>,
    command_line: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Known {
    image: Arc<Image>,
    start_time: Option<DateTime<Utc>>,
}

/// Directories visited at most per cgroup scan (a host has hundreds to thousands).
const MAX_CGROUPS: usize = 100_000;
/// A miss rescans at most this often (cgroups created since the last scan).
const CGROUP_RESCAN: Duration = Duration::from_secs(1);

/// cgroup v2 id -> path under the cgroup2 mount. The id the kernel reports
/// (`bpf_get_current_cgroup_id`) is the inode number of the cgroup's directory in
/// cgroupfs, so one walk of the mount maps every id; a miss triggers a new walk at most
/// once per [`CGROUP_RESCAN`]. A cgroup removed before its events are read has no path.
#[derive(Debug)]
pub struct CgroupPaths {
    root: Option<PathBuf>,
    by_id: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

impl Default for CgroupPaths {
    fn default() -> Self {
        // Unified hierarchy at /sys/fs/cgroup, or under it on hybrid systems.
        let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.join("cgroup.controllers").exists());
        Self::with_root(root)
    }
}

impl CgroupPaths {
    /// Resolves ids against the cgroup2 tree at `root` (`None`: never resolves).
    pub fn with_root(root: Option<PathBuf>) -> Self {
        Self {
            root,
            by_id: HashMap::new(),
            last_scan: None,
        }
    }

    /// The path of cgroup `id`, `/` for the root.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.by_id.get(&id) {
            return Some(p.clone());
        }
        if self.last_scan.is_some_and(|t| t.elapsed() < CGROUP_RESCAN) {
            return None;
        }
        self.rescan();
        self.by_id.get(&id).cloned()
    }

    fn rescan(&mut self) {
        use std::os::unix::fs::MetadataExt;
        self.last_scan = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        self.by_id.clear();
        let mut stack: Vec<PathBuf> = vec![root.clone()];
        let mut visited = 0;
        while let Some(dir) = stack.pop() {
            visited += 1;
            if visited > MAX_CGROUPS {
                break;
            }
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            self.by_id.insert(meta.ino(), relative(&root, &dir));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
}

fn relative(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => "/".to_string(),
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => dir.display().to_string(),
    }
}

/// pid -> image, as seen by exec and fork events.
#[derive(Debug, Default)]
pub struct ProcessCache {
    /// foldhash: a lookup per process event (std's SipHash showed in the profile).
    by_pid: HashMap<u32, Known, foldhash::fast::RandomState>,
    cgroups: CgroupPaths,
    /// Times the table hit its cap and was cleared.
    pub resets: u64,
}

fn from_proc(pid: u32) -> Option<Known> {
    let exe = crate::procfs::read::executable(pid)?;
    let cmdline = crate::procfs::read::cmdline_bytes(pid).unwrap_or_default();
    Some(Known {
        image: Arc::new(Image {
            executable_path: Some(exe.display().to_string()),
            command_line: super::decode::split_args(&cmdline),
        }),
        start_time: None,
    })
}

impl ProcessCache {
    fn remember(&mut self, pid: u32, known: Known) {
        if self.by_pid.len() >= MAX_PROCESSES && !self.by_pid.contains_key(&pid) {
            self.by_pid.clear();
            self.resets += 1;
        }
        self.by_pid.insert(pid, known);
    }

    fn lookup(&mut self, pid: u32) -> Option<Known> {
        if let Some(k) = self.by_pid.get(&pid) {
            return Some(k.clone());
        }
        let k = from_proc(pid)?;
        self.remember(pid, k.clone());
        Some(k)
    }

    /// Updates the cache from `ev` and fills its missing fields.
    pub fn enrich(&mut self, ev: &mut ProcessEvent) {
        if let (Some(id), None) = (ev.cgroup_id, &ev.cgroup_path) {
            ev.cgroup_path = self.cgroups.path(id);
        }
        match ev.kind {
            ProcessEventKind::Exec | ProcessEventKind::Snapshot => {
                self.remember(
                    ev.pid,
                    Known {
                        image: Arc::new(Image {
                            executable_path: ev.executable_path.clone(),
                            command_line: ev.command_line.clone(),
                        }),
                        start_time: ev.start_time,
                    },
                );
            }
            ProcessEventKind::Fork => {
                let parent = self.lookup(ev.pid);
                if let (Some(child), Some(parent)) = (ev.child_pid, parent) {
                    // A fork copies the parent's image (shared, not copied); its own exec,
                    // if any, replaces it.
                    self.remember(
                        child,
                        Known {
                            image: parent.image.clone(),
                            start_time: None,
                        },
                    );
                    fill(ev, &parent);
                }
            }
            ProcessEventKind::Exit => {
                let known = self.by_pid.remove(&ev.pid).or_else(|| from_proc(ev.pid));
                if let Some(known) = known {
                    fill_taking(ev, known);
                }
            }
            ProcessEventKind::CredChange => {
                // Which image changed its credentials; the image itself is unchanged.
                if let Some(known) = self.lookup(ev.pid) {
                    fill(ev, &known);
                }
            }
            // `executable_path` is the path that failed: nothing to fill.
            ProcessEventKind::ExecFailed => {}
        }
    }
}

fn fill(ev: &mut ProcessEvent, known: &Known) {
    if ev.executable_path.is_none() {
        ev.executable_path = known.image.executable_path.clone();
    }
    if ev.command_line.is_empty() {
        ev.command_line = known.image.command_line.clone();
    }
    if ev.start_time.is_none() {
        ev.start_time = known.start_time;
    }
}

/// `fill` with an image leaving the cache: moved into the event when nothing else holds
/// it (a child that exits without exec still shares its parent's).
fn fill_taking(ev: &mut ProcessEvent, known: Known) {
    if ev.start_time.is_none() {
        ev.start_time = known.start_time;
    }
    if ev.executable_path.is_some() && !ev.command_line.is_empty() {
        return;
    }
    let image = Arc::try_unwrap(known.image).unwrap_or_else(|shared| (*shared).clone());
    if ev.executable_path.is_none() {
        ev.executable_path = image.executable_path;
    }
    if ev.command_line.is_empty() {
        ev.command_line = image.command_line;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_ids_resolve_to_paths_by_directory_inode() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let leaf = root.path().join("system.slice").join("ssh.service");
        std::fs::create_dir_all(&leaf).unwrap();
        let mut paths = CgroupPaths::with_root(Some(root.path().to_path_buf()));
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            paths.path(ino(&leaf)).as_deref(),
            Some("/system.slice/ssh.service")
        );
        assert_eq!(paths.path(ino(root.path())).as_deref(), Some("/"));
        // A cgroup created after the scan is found once the rescan interval passed;
        // before that a miss costs no walk.
        let late = root.path().join("late");
        std::fs::create_dir(&late).unwrap();
        assert_eq!(paths.path(ino(&late)), None);
        paths.last_scan = Some(Instant::now() - CGROUP_RESCAN);
        assert_eq!(paths.path(ino(&late)).as_deref(), Some("/late"));
        assert_eq!(CgroupPaths::with_root(None).path(1), None);
    }

    fn ev(kind: ProcessEventKind, pid: u32) -> ProcessEvent {
        ProcessEvent::new(kind, Utc::now(), pid, "t")
    }

    #[test]
    fn exit_carries_its_exec_and_fork_child_inherits() {
        let mut cache = ProcessCache::default();
        // A pid that cannot exist, so nothing comes from /proc.
        let pid = u32::MAX - 7;
        let mut exec = ev(ProcessEventKind::Exec, pid);
        exec.executable_path = Some("/bin/sleep".into());
        exec.command_line = vec!["sleep".into(), "1".into()];
        cache.enrich(&mut exec);

        let mut fork = ev(ProcessEventKind::Fork, pid);
        fork.child_pid = Some(pid - 1);
        cache.enrich(&mut fork);
        assert_eq!(fork.executable_path.as_deref(), Some("/bin/sleep"));

        let mut child_exit = ev(ProcessEventKind::Exit, pid - 1);
        cache.enrich(&mut child_exit);
        assert_eq!(child_exit.command_line, ["sleep", "1"]);

        let mut exit = ev(ProcessEventKind::Exit, pid);
        cache.enrich(&mut exit);
        assert_eq!(exit.executable_path.as_deref(), Some("/bin/sleep"));
        // Forgotten after exit.
        let mut again = ev(ProcessEventKind::Exit, pid);
        cache.enrich(&mut again);
        assert!(again.executable_path.is_none());
    }

    #[test]
    fn unknown_live_process_is_read_from_proc() {
        let mut cache = ProcessCache::default();
        let mut fork = ev(ProcessEventKind::Fork, std::process::id());
        fork.child_pid = Some(u32::MAX - 3);
        cache.enrich(&mut fork);
        let exe = std::env::current_exe().unwrap().display().to_string();
        assert_eq!(fork.executable_path.as_deref(), Some(exe.as_str()));
    }
}
