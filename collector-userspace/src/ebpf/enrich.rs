//! Fills what a kernel record lacks from what the process source has already seen: an
//! exit carries the executable and command line of its exec, a fork's child inherits
//! its parent's image, and processes that started before the collector are looked up in
//! `/proc` the first time they appear.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use collector_core::event::{ProcessEvent, ProcessEventKind};

/// Most processes remembered; past it the table is cleared (and the clears counted),
/// which only costs enrichment, never events.
const MAX_PROCESSES: usize = 65_536;

#[derive(Debug, Clone, Default)]
struct Known {
    executable_path: Option<String>,
    command_line: Vec<String>,
    start_time: Option<DateTime<Utc>>,
}

/// pid -> image, as seen by exec and fork events.
#[derive(Debug, Default)]
pub struct ProcessCache {
    by_pid: HashMap<u32, Known>,
    /// Times the table hit its cap and was cleared.
    pub resets: u64,
}

fn from_proc(pid: u32) -> Option<Known> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    Some(Known {
        executable_path: Some(exe.display().to_string()),
        command_line: super::decode::split_args(&cmdline),
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
        match ev.kind {
            ProcessEventKind::Exec | ProcessEventKind::Snapshot => {
                self.remember(
                    ev.pid,
                    Known {
                        executable_path: ev.executable_path.clone(),
                        command_line: ev.command_line.clone(),
                        start_time: ev.start_time,
                    },
                );
            }
            ProcessEventKind::Fork => {
                let parent = self.lookup(ev.pid);
                if let (Some(child), Some(parent)) = (ev.child_pid, parent) {
                    // A fork copies the parent's image; its own exec, if any, replaces it.
                    self.remember(
                        child,
                        Known {
                            start_time: None,
                            ..parent.clone()
                        },
                    );
                    fill(ev, &parent);
                }
            }
            ProcessEventKind::Exit => {
                let known = self.by_pid.remove(&ev.pid).or_else(|| from_proc(ev.pid));
                if let Some(known) = known {
                    fill(ev, &known);
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
        ev.executable_path = known.executable_path.clone();
    }
    if ev.command_line.is_empty() {
        ev.command_line = known.command_line.clone();
    }
    if ev.start_time.is_none() {
        ev.start_time = known.start_time;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
