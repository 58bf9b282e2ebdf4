//! Which events a subscriber asked for (`Subscribe.domains`, `Subscribe.kinds`).
//!
//! A filter is two bitmasks so checking an event costs a couple of instructions: it runs
//! on the pipeline task for every batch and every subscriber.

use collector_proto::v1 as pb;

use crate::event::{
    CollectionEvent, Domain, FilesystemEventKind, NetworkEventKind, PerformanceEventKind,
    ProcessEventKind,
};
use crate::ipc::convert::{domain_from_proto, domain_to_proto};

/// Every kind name, in bit order. Kind names are unique across domains.
pub(crate) const KIND_NAMES: [&str; 29] = [
    "exec",
    "fork",
    "exit",
    "snapshot", // process
    "connect",
    "accept",
    "close",
    "listen", // network
    "create",
    "open",
    "unlink",
    "rename", // filesystem
    "metric", // performance
    "bind",
    "udp_send", // network, added later
    "cred_change",
    "exec_failed", // process, added later
    "mkdir",
    "rmdir",
    "chmod",
    "chown",
    "link",
    "symlink",
    "memfd_create",      // filesystem, added later
    "tmpfile",           // filesystem, added later
    "open_by_handle_at", // filesystem, added later
    "mknod",             // filesystem, added later
    "truncate",          // filesystem, added later
    "setxattr",          // filesystem, added later
];

/// The domain of each kind in [`KIND_NAMES`] (same order; the length is checked).
pub(crate) const KIND_DOMAINS: [&str; KIND_NAMES.len()] = [
    "process",
    "process",
    "process",
    "process", // exec fork exit snapshot
    "network",
    "network",
    "network",
    "network", // connect accept close listen
    "filesystem",
    "filesystem",
    "filesystem",
    "filesystem",  // create open unlink rename
    "performance", // metric
    "network",
    "network", // bind udp_send
    "process",
    "process",    // cred_change exec_failed
    "filesystem", // mkdir
    "filesystem", // rmdir
    "filesystem", // chmod
    "filesystem", // chown
    "filesystem", // link
    "filesystem", // symlink
    "filesystem", // memfd_create
    "filesystem", // tmpfile
    "filesystem", // open_by_handle_at
    "filesystem", // mknod
    "filesystem", // truncate
    "filesystem", // setxattr
];

/// A subscriber's selection: empty masks select everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventFilter {
    domains: u8,
    kinds: u32,
}

/// A `Subscribe` that names something that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Unknown domain value.
    #[error("unknown domain {0} (expected process, network, filesystem or performance)")]
    Domain(i32),
    /// Unknown kind name.
    #[error("unknown event kind `{0}` (expected one of: {list})", list = KIND_NAMES.join(", "))]
    Kind(String),
}

impl EventFilter {
    /// Selects every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Selects the given domains and kind names (each empty = all).
    pub fn new<S: AsRef<str>>(domains: &[Domain], kinds: &[S]) -> Result<Self, FilterError> {
        let mut filter = Self::default();
        for d in domains {
            filter.domains |= domain_bit(*d);
        }
        for k in kinds {
            let k = k.as_ref();
            let idx = KIND_NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(k))
                .ok_or_else(|| FilterError::Kind(k.to_string()))?;
            filter.kinds |= 1 << idx;
        }
        Ok(filter)
    }

    /// The filter a `Subscribe` message asks for.
    pub fn from_proto(sub: &pb::Subscribe) -> Result<Self, FilterError> {
        let domains = sub
            .domains
            .iter()
            .map(|&d| domain_from_proto(d).map_err(|_| FilterError::Domain(d)))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(&domains, &sub.kinds)
    }

    /// The `Subscribe` message for this filter.
    pub fn to_proto(&self) -> pb::Subscribe {
        pb::Subscribe {
            domains: Domain::ALL
                .into_iter()
                .filter(|d| self.domains & domain_bit(*d) != 0)
                .map(|d| domain_to_proto(d) as i32)
                .collect(),
            kinds: KIND_NAMES
                .iter()
                .enumerate()
                .filter(|(i, _)| self.kinds & (1 << i) != 0)
                .map(|(_, n)| n.to_string())
                .collect(),
        }
    }

    /// Whether `ev` is selected.
    #[inline]
    pub fn matches(&self, ev: &CollectionEvent) -> bool {
        (self.domains == 0 || self.domains & domain_bit(ev.domain()) != 0)
            && (self.kinds == 0 || self.kinds & kind_bit(ev) != 0)
    }

    /// Whether every event is selected (no per-event check needed).
    pub fn is_all(&self) -> bool {
        self.domains == 0 && self.kinds == 0
    }
}

fn domain_bit(d: Domain) -> u8 {
    1 << (d as u8)
}

/// Index of the event's kind in [`KIND_NAMES`].
pub(crate) fn kind_index(ev: &CollectionEvent) -> usize {
    kind_bit(ev).trailing_zeros() as usize
}

fn kind_bit(ev: &CollectionEvent) -> u32 {
    // Indices into KIND_NAMES (`kind_bits_match_kind_names` keeps them in step).
    let idx = match ev {
        CollectionEvent::Process(e) => match e.kind {
            ProcessEventKind::Exec => 0,
            ProcessEventKind::Fork => 1,
            ProcessEventKind::Exit => 2,
            ProcessEventKind::Snapshot => 3,
            ProcessEventKind::CredChange => 15,
            ProcessEventKind::ExecFailed => 16,
        },
        CollectionEvent::Network(e) => match e.kind {
            NetworkEventKind::Connect => 4,
            NetworkEventKind::Accept => 5,
            NetworkEventKind::Close => 6,
            NetworkEventKind::Listen => 7,
            NetworkEventKind::Bind => 13,
            NetworkEventKind::UdpSend => 14,
        },
        CollectionEvent::Filesystem(e) => match e.kind {
            FilesystemEventKind::Create => 8,
            FilesystemEventKind::Open => 9,
            FilesystemEventKind::Unlink => 10,
            FilesystemEventKind::Rename => 11,
            FilesystemEventKind::Mkdir => 17,
            FilesystemEventKind::Rmdir => 18,
            FilesystemEventKind::Chmod => 19,
            FilesystemEventKind::Chown => 20,
            FilesystemEventKind::Link => 21,
            FilesystemEventKind::Symlink => 22,
            FilesystemEventKind::MemfdCreate => 23,
            FilesystemEventKind::Tmpfile => 24,
            FilesystemEventKind::OpenByHandleAt => 25,
            FilesystemEventKind::Mknod => 26,
            FilesystemEventKind::Truncate => 27,
            FilesystemEventKind::Setxattr => 28,
        },
        CollectionEvent::Performance(e) => match e.kind {
            PerformanceEventKind::Metric => 12,
        },
    };
    1 << idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ProcessEvent, ProcessEventKind};
    use chrono::Utc;

    fn exec() -> CollectionEvent {
        CollectionEvent::Process(
            ProcessEvent::new(ProcessEventKind::Exec, Utc::now(), 1, "t").into(),
        )
    }

    #[test]
    fn kind_names_agree_with_event_kind_names() {
        for kind in [
            ProcessEventKind::Exec,
            ProcessEventKind::Fork,
            ProcessEventKind::Exit,
            ProcessEventKind::Snapshot,
            ProcessEventKind::CredChange,
            ProcessEventKind::ExecFailed,
        ] {
            let ev: CollectionEvent = ProcessEvent::new(kind, Utc::now(), 1, "t").into();
            assert_eq!(
                KIND_NAMES[kind_bit(&ev).trailing_zeros() as usize],
                ev.kind_name()
            );
        }
    }

    #[test]
    fn filters_by_domain_and_kind() {
        assert!(EventFilter::all().matches(&exec()));
        let net = EventFilter::new::<&str>(&[Domain::Network], &[]).unwrap();
        assert!(!net.matches(&exec()));
        let fork = EventFilter::new(&[], &["fork"]).unwrap();
        assert!(!fork.matches(&exec()));
        let exec_f = EventFilter::new(&[Domain::Process], &["EXEC"]).unwrap();
        assert!(exec_f.matches(&exec()));
        assert_eq!(EventFilter::from_proto(&exec_f.to_proto()).unwrap(), exec_f);
        assert!(matches!(
            EventFilter::new::<&str>(&[], &["boot"]),
            Err(FilterError::Kind(_))
        ));
    }
}
