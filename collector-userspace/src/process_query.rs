//! Answers `EnumerateProcesses` from the daemon's [`ProcessTable`] (and, for history, its
//! [`ProcessStore`]), in pages that fit one frame.
//!
//! - live processes (default), or `exited` / `since_seconds`: those that ended recently;
//! - `pid` + `ancestry`: the process and its ancestors up to pid 1;
//! - `pid` + `since_seconds` with a store: the process's history rows (exec, exit, by
//!   process key) in that window, merged with the table's rows.
//!
//! Paging: rows are ordered by process key (history rows by their sequence number); a
//! page stops before its encoded size passes the budget, and `next_cursor` names the last
//! row sent. The next query starts after it, so a row is never sent twice even when the
//! table changed in between.
//!
//! A non-root peer sees the executable path only of its own processes: the rule the
//! kernel applies to `/proc/<pid>/exe` (ptrace access), so the table tells no more than
//! `/proc` would.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use collector_core::ipc::convert::timestamp_to_proto;
use collector_core::ipc::proto as pb;
use collector_core::ipc::Peer;
use prost::Message;

use crate::ptable::{ProcessKey, ProcessRow, ProcessTable, Selection};
use crate::store::{HistoryRow, ProcessStore};

/// Page budget when the client names none: well under the default 1 MiB frame.
pub const DEFAULT_PAGE_BYTES: usize = 512 * 1024;

/// Room kept in a page for the envelope, the result's task id and the cursor.
const PAGE_OVERHEAD_BYTES: usize = 4 * 1024;

/// Smallest page a client may ask for (one large row must still fit).
const MIN_PAGE_BYTES: usize = 16 * 1024;

/// What answers process queries from the table.
#[derive(Clone)]
pub struct ProcessQuery {
    /// The live table.
    pub table: Arc<ProcessTable>,
    /// The store, for history rows.
    pub store: Option<Arc<ProcessStore>>,
    /// The server's frame limit: no page is larger.
    pub max_frame_bytes: usize,
}

impl std::fmt::Debug for ProcessQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessQuery")
            .field("store", &self.store.as_ref().map(|s| s.path().to_owned()))
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish()
    }
}

impl ProcessQuery {
    fn page_budget(&self, q: &pb::EnumerateProcesses) -> usize {
        let server = self.max_frame_bytes.saturating_sub(PAGE_OVERHEAD_BYTES);
        let asked = match q.max_page_bytes {
            0 => DEFAULT_PAGE_BYTES,
            n => (n as usize).saturating_sub(PAGE_OVERHEAD_BYTES),
        };
        asked.min(server).max(MIN_PAGE_BYTES.min(server))
    }

    /// One page of the answer to `q` for `peer`.
    pub fn answer(
        &self,
        q: &pb::EnumerateProcesses,
        peer: &Peer,
    ) -> Result<pb::ProcessList, String> {
        let budget = self.page_budget(q);
        let since = q.since_seconds.map(|s| {
            Utc::now() - chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
        });
        if let (Some(pid), Some(since)) = (q.pid, since) {
            if let Some(store) = &self.store {
                return self.history_page(store, pid, since, q, peer, budget);
            }
        }
        let mut list = pb::ProcessList::default();
        let mut used = 0;
        // Adds a row unless the page is full; false once it is (the row is left for the
        // next page, which starts after the last row sent).
        let mut add = |row: &ProcessRow| -> bool {
            let mut info = row_to_info(row, peer);
            let len = fit_row(&mut info, budget);
            if used + len > budget && !list.processes.is_empty() {
                list.next_cursor = list
                    .processes
                    .last()
                    .and_then(|p| p.process_key.clone())
                    .unwrap_or_default();
                return false;
            }
            used += len;
            list.processes.push(info);
            true
        };
        match (q.pid, q.ancestry) {
            (Some(pid), true) => {
                // An ancestry chain is one page (at most 512 rows).
                if q.cursor.is_empty() {
                    for row in self.table.ancestry(pid) {
                        add(&row);
                    }
                    list.next_cursor.clear();
                }
            }
            _ => {
                let selection = match (q.exited, since) {
                    (_, Some(t)) => Selection::ExitedSince(t),
                    (true, None) => Selection::ExitedSince(DateTime::<Utc>::MIN_UTC),
                    (false, None) => Selection::Live,
                };
                let after = if q.cursor.is_empty() {
                    None
                } else {
                    Some(
                        ProcessKey::parse(&q.cursor)
                            .ok_or_else(|| format!("bad cursor {:?}", q.cursor))?,
                    )
                };
                self.table
                    .visit_sorted(selection, after, |r| matches_filters(r, q), &mut add);
            }
        }
        Ok(list)
    }

    fn history_page(
        &self,
        store: &ProcessStore,
        pid: u32,
        since: DateTime<Utc>,
        q: &pb::EnumerateProcesses,
        peer: &Peer,
        budget: usize,
    ) -> Result<pb::ProcessList, String> {
        let after = if q.cursor.is_empty() {
            None
        } else {
            Some(
                q.cursor
                    .parse::<u64>()
                    .map_err(|_| format!("bad cursor {:?}", q.cursor))?,
            )
        };
        let rows = store
            .history(pid, since, after)
            .map_err(|e| format!("cannot read the process history: {e}"))?;
        let mut list = pb::ProcessList::default();
        let mut used = 0;
        let mut last_seq = None;
        for row in rows {
            let mut info = history_to_info(&row, peer);
            let len = fit_row(&mut info, budget);
            if used + len > budget && !list.processes.is_empty() {
                list.next_cursor = last_seq.map(|s: u64| s.to_string()).unwrap_or_default();
                break;
            }
            used += len;
            last_seq = Some(row.seq);
            list.processes.push(info);
        }
        Ok(list)
    }
}

/// Cuts the command line of a row that alone is larger than a page (a process can
/// have megabytes of arguments; the page budget can be as small as a frame limit of
/// 1 KiB allows) until it fits, and says so in `command_line_truncated`: the row is sent
/// shortened rather than the whole listing failing. Returns the row's entry length.
fn fit_row(info: &mut pb::ProcessInfo, budget: usize) -> usize {
    let mut len = entry_len(info);
    while len > budget {
        let excess = len - budget;
        let Some(last) = info.command_line.last_mut() else {
            break; // nothing left to cut: the other fields are bounded (PATH_MAX, comm)
        };
        info.command_line_truncated = true;
        if last.len() > excess {
            // Shorten the last argument at a character boundary; a length prefix that
            // shrinks is re-measured by the loop.
            let mut keep = last.len() - excess;
            while !last.is_char_boundary(keep) {
                keep -= 1;
            }
            last.truncate(keep);
        } else {
            info.command_line.pop();
        }
        len = entry_len(info);
    }
    len
}

fn entry_len(info: &pb::ProcessInfo) -> usize {
    let len = info.encoded_len();
    // Tag and length prefix of the repeated field.
    1 + prost::length_delimiter_len(len) + len
}

fn matches_filters(r: &ProcessRow, q: &pb::EnumerateProcesses) -> bool {
    if q.pid.is_some_and(|pid| pid != r.key.pid) {
        return false;
    }
    if let Some(want) = &q.executable {
        if r.executable_path.as_deref() != Some(want.as_str()) {
            return false;
        }
    }
    if let Some(want) = &q.name {
        let base = r
            .executable_path
            .as_deref()
            .and_then(|e| Path::new(e).file_name());
        if r.name.as_deref() != Some(want.as_str()) && base.is_none_or(|b| b != want.as_str()) {
            return false;
        }
    }
    true
}

/// Whether `peer` may see the executable of a process of `uid`.
fn may_see_executable(peer: &Peer, uid: Option<u32>) -> bool {
    peer.is_root() || uid == Some(peer.uid)
}

/// A table row as the IPC message, with the field meanings of process events.
pub fn row_to_info(r: &ProcessRow, peer: &Peer) -> pb::ProcessInfo {
    // The executable and its digest: only to root and the process's owner.
    let visible = may_see_executable(peer, r.uid);
    pb::ProcessInfo {
        pid: r.key.pid,
        ppid: r.ppid,
        name: r.name.clone().unwrap_or_default(),
        executable: r.executable_path.clone().filter(|_| visible),
        command_line: r.command_line.to_vec(),
        uid: r.uid,
        start_time: r.start_time.map(timestamp_to_proto),
        process_key: Some(r.key.to_string()),
        parent_process_key: r.parent_key.map(|k| k.to_string()),
        gid: r.gid,
        exit_time: r.exit_time.map(timestamp_to_proto),
        exit_code: r.exit_code,
        last_event: r.last_event.as_str().to_string(),
        updated_at: Some(timestamp_to_proto(r.updated_at)),
        exec_name: r.exec_name.clone(),
        // Set by `fit_row` when the row has to be cut to fit a page.
        command_line_truncated: false,
        executable_hash: r.executable_hash.clone().filter(|_| visible),
        hash_algorithm: r.hash_algorithm.clone().filter(|_| visible),
    }
}

fn history_to_info(h: &HistoryRow, peer: &Peer) -> pb::ProcessInfo {
    let r = &h.record;
    let visible = may_see_executable(peer, r.uid);
    pb::ProcessInfo {
        pid: r.pid,
        ppid: r.ppid,
        name: r.name.clone().unwrap_or_default(),
        executable: r.executable_path.clone().filter(|_| visible),
        command_line: r.command_line.clone(),
        uid: r.uid,
        start_time: r.start_time.map(timestamp_to_proto),
        process_key: r.process_key.clone(),
        parent_process_key: None,
        gid: r.gid,
        exit_time: (r.last_event == collector_core::event::ProcessEventKind::Exit)
            .then(|| timestamp_to_proto(r.updated_at)),
        exit_code: r.exit_code,
        last_event: r.last_event.as_str().to_string(),
        updated_at: Some(timestamp_to_proto(r.updated_at)),
        exec_name: None,
        // Set by `fit_row` when the row has to be cut to fit a page.
        command_line_truncated: false,
        executable_hash: r.executable_hash.clone().filter(|_| visible),
        hash_algorithm: r.hash_algorithm.clone().filter(|_| visible),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptable::TableConfig;
    use collector_core::event::{ProcessEvent, ProcessEventKind};

    fn query_with(rows: &[(u32, u32, &str)]) -> ProcessQuery {
        let table = Arc::new(ProcessTable::new(TableConfig::default()));
        for &(pid, uid, exe) in rows {
            let mut ev = ProcessEvent::new(ProcessEventKind::Exec, Utc::now(), pid, "t");
            ev.process_key = Some(format!("{pid}:{pid}000").into());
            ev.uid = Some(uid);
            ev.ppid = Some(1);
            ev.executable_path = Some(exe.into());
            ev.name = Some(exe.rsplit('/').next().unwrap().into());
            table.apply(&ev);
        }
        ProcessQuery {
            table,
            store: None,
            max_frame_bytes: 1 << 20,
        }
    }

    /// A non-root peer sees the executable of its own processes only, as `/proc` would
    /// show it; root sees all.
    #[test]
    fn a_non_root_peer_sees_only_its_own_executables() {
        let q = query_with(&[(100, 0, "/usr/sbin/sshd"), (200, 65534, "/usr/bin/nc")]);
        let nobody = Peer {
            uid: 65534,
            gid: 65534,
            pid: None,
            groups: Vec::new(),
        };
        let list = q
            .answer(&pb::EnumerateProcesses::default(), &nobody)
            .unwrap();
        let exe = |pid: u32| {
            list.processes
                .iter()
                .find(|p| p.pid == pid)
                .unwrap()
                .executable
                .clone()
        };
        assert_eq!(exe(100), None);
        assert_eq!(exe(200).as_deref(), Some("/usr/bin/nc"));
        let list = q
            .answer(&pb::EnumerateProcesses::default(), &Peer::root())
            .unwrap();
        assert!(list.processes.iter().all(|p| p.executable.is_some()));
    }

    /// A row larger than a page is cut to fit, marked, and listed: the listing never
    /// fails because one process has a huge command line.
    #[test]
    fn a_row_larger_than_a_page_is_cut_to_fit() {
        let table = Arc::new(ProcessTable::new(TableConfig::default()));
        for pid in [100u32, 200, 300] {
            let mut ev = ProcessEvent::new(ProcessEventKind::Exec, Utc::now(), pid, "t");
            ev.process_key = Some(format!("{pid}:{pid}000").into());
            ev.command_line = match pid {
                // Many arguments, then one multi-byte argument: both ways of cutting.
                200 => (0..2000).map(|i| format!("arg{i}")).collect(),
                300 => vec!["sh".into(), "é".repeat(50_000)],
                _ => vec!["small".into()],
            };
            table.apply(&ev);
        }
        let q = ProcessQuery {
            table,
            store: None,
            max_frame_bytes: 32 * 1024,
        };
        let (mut rows, mut cursor, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let list = q
                .answer(
                    &pb::EnumerateProcesses {
                        cursor: cursor.clone(),
                        max_page_bytes: 20_000,
                        ..Default::default()
                    },
                    &Peer::root(),
                )
                .unwrap();
            assert!(list.encoded_len() <= 20_000, "{}", list.encoded_len());
            pages += 1;
            rows.extend(list.processes);
            if list.next_cursor.is_empty() {
                break;
            }
            cursor = list.next_cursor;
        }
        assert_eq!(rows.len(), 3, "every row, in {pages} pages");
        let row = |pid: u32| rows.iter().find(|r| r.pid == pid).unwrap();
        assert!(!row(100).command_line_truncated);
        assert_eq!(row(100).command_line, ["small"]);
        let many = row(200);
        assert!(many.command_line_truncated);
        assert!(many.command_line.len() > 100 && many.command_line.len() < 2000);
        assert_eq!(many.command_line[0], "arg0");
        let wide = row(300);
        assert!(wide.command_line_truncated);
        assert_eq!(wide.command_line[0], "sh");
        assert!(wide.command_line[1].chars().all(|c| c == 'é'));
        assert!(wide.command_line[1].len() > 10_000);
    }

    #[test]
    fn filters_and_a_bad_cursor() {
        let q = query_with(&[(100, 0, "/usr/sbin/sshd"), (200, 0, "/usr/bin/nc")]);
        let by_name = q
            .answer(
                &pb::EnumerateProcesses {
                    name: Some("nc".into()),
                    ..Default::default()
                },
                &Peer::root(),
            )
            .unwrap();
        assert_eq!(by_name.processes.len(), 1);
        assert_eq!(
            by_name.processes[0].process_key.as_deref(),
            Some("200:200000")
        );
        assert!(by_name.next_cursor.is_empty());
        let err = q
            .answer(
                &pb::EnumerateProcesses {
                    cursor: "garbage".into(),
                    ..Default::default()
                },
                &Peer::root(),
            )
            .unwrap_err();
        assert!(err.contains("bad cursor"), "{err}");
    }
}
