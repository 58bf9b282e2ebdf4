//! [`ProcessDiff`]: turns successive process table scans into lifecycle events.
//!
//! Polling only sees what is alive at each scan, so a process that starts and exits
//! between two scans is never seen, and a fork without exec looks like an exec of the
//! parent's program. That is the price of the fallback; the kernel sources see both.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use collector_core::event::{ProcessEvent, ProcessEventKind, SourceName};

use super::scan::ProcessSnapshot;

/// The previous scan, and the rule that compares the next one with it.
#[derive(Debug, Default)]
pub struct ProcessDiff {
    previous: Option<HashMap<u32, ProcessSnapshot>>,
}

impl ProcessDiff {
    /// A diff that has seen no scan yet: the first [`apply`](Self::apply) reports every
    /// process as a `snapshot`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Processes of the last applied scan.
    pub fn len(&self) -> usize {
        self.previous.as_ref().map_or(0, HashMap::len)
    }

    /// Whether the last applied scan listed `pid`.
    pub fn contains(&self, pid: u32) -> bool {
        self.previous.as_ref().is_some_and(|p| p.contains_key(&pid))
    }

    /// Whether the last applied scan was empty (or there was none).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Compares `scan` with the previous one and returns what changed, stamped `now`:
    ///
    /// - first scan: `snapshot` for every process;
    /// - a pid not seen before: `exec`;
    /// - a pid gone: `exit` (exit code unknown), with what was known of the process;
    /// - a pid whose start time or executable changed (pid reuse, or execve):
    ///   `exit` of the old image, then `exec` of the new one.
    ///
    /// Exits come first, then execs in start order, so a reused pid reads in order.
    pub fn apply(
        &mut self,
        scan: Vec<ProcessSnapshot>,
        now: DateTime<Utc>,
        source: &SourceName,
    ) -> Vec<ProcessEvent> {
        let current: HashMap<u32, ProcessSnapshot> =
            scan.into_iter().map(|row| (row.pid, row)).collect();
        let Some(mut previous) = self.previous.take() else {
            let mut rows: Vec<&ProcessSnapshot> = current.values().collect();
            rows.sort_by_key(|row| row.pid);
            let events = rows
                .into_iter()
                .map(|row| row.to_event(ProcessEventKind::Snapshot, now, source))
                .collect();
            self.previous = Some(current);
            return events;
        };

        let mut exits: Vec<ProcessSnapshot> = Vec::new();
        let mut execs: Vec<&ProcessSnapshot> = Vec::new();
        for (pid, row) in &current {
            match previous.remove(pid) {
                None => execs.push(row),
                Some(old) if !old.same_image(row) => {
                    exits.push(old);
                    execs.push(row);
                }
                Some(_) => {}
            }
        }
        // What is left of the previous scan is gone.
        exits.extend(previous.into_values());
        exits.sort_by_key(|row| row.pid);
        execs.sort_by_key(|row| (row.start_time_secs, row.pid));

        let mut events = Vec::with_capacity(exits.len() + execs.len());
        events.extend(
            exits
                .iter()
                .map(|row| row.to_event(ProcessEventKind::Exit, now, source)),
        );
        events.extend(
            execs
                .into_iter()
                .map(|row| row.to_event(ProcessEventKind::Exec, now, source)),
        );
        self.previous = Some(current);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: SourceName = SourceName::Borrowed("procfs-process");

    fn row(pid: u32, start: u64, exe: &str) -> ProcessSnapshot {
        ProcessSnapshot {
            pid,
            ppid: Some(1),
            uid: Some(1000),
            gid: Some(1000),
            name: exe.rsplit('/').next().unwrap().into(),
            executable_path: Some(exe.into()),
            command_line: vec![exe.into(), "--flag".into()],
            start_time_secs: start,
        }
    }

    fn kinds(events: &[ProcessEvent]) -> Vec<(ProcessEventKind, u32)> {
        events.iter().map(|e| (e.kind, e.pid)).collect()
    }

    use ProcessEventKind::{Exec, Exit, Snapshot};

    #[test]
    fn first_scan_is_a_snapshot_of_everything() {
        let mut diff = ProcessDiff::new();
        let now = Utc::now();
        let events = diff.apply(
            vec![row(30, 5, "/bin/c"), row(1, 1, "/sbin/init")],
            now,
            &SOURCE,
        );
        assert_eq!(kinds(&events), [(Snapshot, 1), (Snapshot, 30)]);
        let e = &events[1];
        assert_eq!(e.timestamp, now);
        assert_eq!(e.source, "procfs-process");
        assert_eq!(e.ppid, Some(1));
        assert_eq!((e.uid, e.gid), (Some(1000), Some(1000)));
        assert_eq!(e.name.as_deref(), Some("c"));
        assert_eq!(e.executable_path.as_deref(), Some("/bin/c"));
        assert_eq!(e.command_line, ["/bin/c", "--flag"]);
        assert_eq!(e.start_time, DateTime::from_timestamp(5, 0));
        assert_eq!(e.exit_code, None);
        assert_eq!(diff.len(), 2);
    }

    #[test]
    fn unchanged_table_emits_nothing() {
        let mut diff = ProcessDiff::new();
        let table = vec![row(1, 1, "/sbin/init"), row(2, 2, "/bin/sh")];
        diff.apply(table.clone(), Utc::now(), &SOURCE);
        assert!(diff.apply(table, Utc::now(), &SOURCE).is_empty());
    }

    #[test]
    fn new_pid_is_an_exec_and_vanished_pid_an_exit() {
        let mut diff = ProcessDiff::new();
        diff.apply(
            vec![row(1, 1, "/sbin/init"), row(2, 2, "/bin/sh")],
            Utc::now(),
            &SOURCE,
        );
        let events = diff.apply(
            vec![row(1, 1, "/sbin/init"), row(3, 9, "/bin/ls")],
            Utc::now(),
            &SOURCE,
        );
        assert_eq!(kinds(&events), [(Exit, 2), (Exec, 3)]);
        // The exit carries what was known of the process; the code is unknown.
        assert_eq!(events[0].executable_path.as_deref(), Some("/bin/sh"));
        assert_eq!(events[0].exit_code, None);
        assert_eq!(events[1].executable_path.as_deref(), Some("/bin/ls"));
        assert_eq!(diff.len(), 2);
    }

    #[test]
    fn reused_pid_is_an_exit_then_an_exec() {
        let mut diff = ProcessDiff::new();
        diff.apply(vec![row(42, 100, "/bin/old")], Utc::now(), &SOURCE);
        let events = diff.apply(vec![row(42, 160, "/bin/new")], Utc::now(), &SOURCE);
        assert_eq!(kinds(&events), [(Exit, 42), (Exec, 42)]);
        assert_eq!(events[0].executable_path.as_deref(), Some("/bin/old"));
        assert_eq!(events[0].start_time, DateTime::from_timestamp(100, 0));
        assert_eq!(events[1].executable_path.as_deref(), Some("/bin/new"));
        assert_eq!(events[1].start_time, DateTime::from_timestamp(160, 0));
    }

    #[test]
    fn reused_pid_with_the_same_program_is_still_seen() {
        let mut diff = ProcessDiff::new();
        diff.apply(vec![row(42, 100, "/bin/sh")], Utc::now(), &SOURCE);
        let events = diff.apply(vec![row(42, 101, "/bin/sh")], Utc::now(), &SOURCE);
        assert_eq!(kinds(&events), [(Exit, 42), (Exec, 42)]);
    }

    #[test]
    fn execve_in_place_is_an_exit_then_an_exec() {
        let mut diff = ProcessDiff::new();
        diff.apply(vec![row(42, 100, "/bin/sh")], Utc::now(), &SOURCE);
        let events = diff.apply(vec![row(42, 100, "/usr/bin/env")], Utc::now(), &SOURCE);
        assert_eq!(kinds(&events), [(Exit, 42), (Exec, 42)]);
    }

    #[test]
    fn unreadable_executable_is_not_an_exec() {
        let mut diff = ProcessDiff::new();
        diff.apply(vec![row(42, 100, "/bin/sh")], Utc::now(), &SOURCE);
        let mut hidden = row(42, 100, "/bin/sh");
        hidden.executable_path = None;
        assert!(diff.apply(vec![hidden], Utc::now(), &SOURCE).is_empty());
    }

    #[test]
    fn execs_are_ordered_by_start_time() {
        let mut diff = ProcessDiff::new();
        diff.apply(vec![], Utc::now(), &SOURCE);
        let events = diff.apply(
            vec![row(9, 20, "/bin/child"), row(50, 10, "/bin/parent")],
            Utc::now(),
            &SOURCE,
        );
        assert_eq!(kinds(&events), [(Exec, 50), (Exec, 9)]);
    }
}
