//! The events sources emit ([`CollectionEvent`]) and their JSON form (a public contract,
//! documented in `docs/events.md`).
//!
//! Every event serializes to one flat JSON object with `domain`, `kind`, `timestamp`
//! (RFC 3339 with nanoseconds), `pid` and `source`, plus its domain's fields.

pub(crate) mod context_cache;
mod filesystem;
mod json;
mod network;
mod performance;
mod process;
mod unix_time;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use filesystem::{FilesystemEvent, FilesystemEventKind};
pub use network::{AddressFamily, NetworkEvent, NetworkEventKind, TransportProtocol};
pub use performance::{PerformanceEvent, PerformanceEventKind};
pub use process::{ProcessContext, ProcessCredentials, ProcessEvent, ProcessEventKind};
pub use unix_time::{unix_seconds, utc_from_unix};

/// The type of an event's short strings (process name, process key, TCP state): kept
/// inline up to 24 bytes, so decoding an event does not allocate for them.
pub use compact_str::CompactString;

use crate::caps::SourceCaps;

/// Name of the source that produced an event; static for built-in sources, so cloning
/// one per event costs nothing.
pub type SourceName = Cow<'static, str>;

/// One observed event, from any domain.
///
/// Every event is moved several times between a source and the sinks (into the source's
/// channel, out of it, into a batch), so its size is paid on every hop. A process event
/// is by far the largest (most of its fields are optional and unset for fork and exit)
/// and already owns heap data (command line, paths), so it is boxed: the enum is the size
/// of a network event instead. Boxing changes neither field names nor the JSON form.
/// Build one with `CollectionEvent::from(process_event)` or `process_event.into()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "domain", rename_all = "lowercase")]
#[non_exhaustive]
pub enum CollectionEvent {
    /// Process lifecycle.
    Process(Box<ProcessEvent>),
    /// Network connections (boxed like process events: with errno, states, unix path
    /// and UDP counts it is the second-largest event; inline it would set the size of
    /// every event moved through the pipeline).
    Network(Box<NetworkEvent>),
    /// File operations (boxed too: with two paths and their flags, the process key and
    /// context, it is larger than the metric event that now sets the inline size).
    Filesystem(Box<FilesystemEvent>),
    /// Metrics.
    Performance(PerformanceEvent),
}

/// The four event domains, matching the capability flags of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// [`CollectionEvent::Process`].
    Process,
    /// [`CollectionEvent::Network`].
    Network,
    /// [`CollectionEvent::Filesystem`].
    Filesystem,
    /// [`CollectionEvent::Performance`].
    Performance,
}

impl Domain {
    /// All domains, in order.
    pub const ALL: [Domain; 4] = [
        Domain::Process,
        Domain::Network,
        Domain::Filesystem,
        Domain::Performance,
    ];

    /// The capability flag for this domain.
    pub fn capability(self) -> SourceCaps {
        match self {
            Domain::Process => SourceCaps::PROCESS,
            Domain::Network => SourceCaps::NETWORK,
            Domain::Filesystem => SourceCaps::FILESYSTEM,
            Domain::Performance => SourceCaps::PERFORMANCE,
        }
    }

    /// Lower-case name as used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Process => "process",
            Domain::Network => "network",
            Domain::Filesystem => "filesystem",
            Domain::Performance => "performance",
        }
    }
}

impl std::str::FromStr for Domain {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown domain `{s}` (expected process, network, filesystem or performance)"
                )
            })
    }
}

impl From<ProcessEvent> for CollectionEvent {
    fn from(event: ProcessEvent) -> Self {
        CollectionEvent::Process(Box::new(event))
    }
}

impl From<NetworkEvent> for CollectionEvent {
    fn from(event: NetworkEvent) -> Self {
        CollectionEvent::Network(Box::new(event))
    }
}

impl From<FilesystemEvent> for CollectionEvent {
    fn from(event: FilesystemEvent) -> Self {
        CollectionEvent::Filesystem(Box::new(event))
    }
}

impl From<PerformanceEvent> for CollectionEvent {
    fn from(event: PerformanceEvent) -> Self {
        CollectionEvent::Performance(event)
    }
}

impl CollectionEvent {
    /// The event's domain.
    pub fn domain(&self) -> Domain {
        match self {
            CollectionEvent::Process(_) => Domain::Process,
            CollectionEvent::Network(_) => Domain::Network,
            CollectionEvent::Filesystem(_) => Domain::Filesystem,
            CollectionEvent::Performance(_) => Domain::Performance,
        }
    }

    /// The event's kind as its JSON name (`exec`, `connect`, ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            CollectionEvent::Process(e) => e.kind.as_str(),
            CollectionEvent::Network(e) => e.kind.as_str(),
            CollectionEvent::Filesystem(e) => e.kind.as_str(),
            CollectionEvent::Performance(e) => e.kind.as_str(),
        }
    }

    /// When the event happened.
    pub fn timestamp(&self) -> DateTime<Utc> {
        match self {
            CollectionEvent::Process(e) => e.timestamp,
            CollectionEvent::Network(e) => e.timestamp,
            CollectionEvent::Filesystem(e) => e.timestamp,
            CollectionEvent::Performance(e) => e.timestamp,
        }
    }

    /// The process the event is attributed to.
    pub fn pid(&self) -> u32 {
        match self {
            CollectionEvent::Process(e) => e.pid,
            CollectionEvent::Network(e) => e.pid,
            CollectionEvent::Filesystem(e) => e.pid,
            CollectionEvent::Performance(e) => e.pid,
        }
    }

    /// The name of the source that produced the event.
    pub fn source(&self) -> &str {
        match self {
            CollectionEvent::Process(e) => &e.source,
            CollectionEvent::Network(e) => &e.source,
            CollectionEvent::Filesystem(e) => &e.source,
            CollectionEvent::Performance(e) => &e.source,
        }
    }

    /// One JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        // Serialization of these types cannot fail: no maps with non-string keys, no
        // fallible Serialize impls.
        serde_json::to_string(self).expect("CollectionEvent serializes to JSON")
    }

    /// Appends this event's JSON and a newline to `buf`: the same line as
    /// [`to_json_line`](Self::to_json_line), without allocating when `buf` has room.
    pub fn write_json_line(&self, buf: &mut Vec<u8>) {
        match self {
            // Written by hand, the same bytes (see `json`); metrics are rare.
            CollectionEvent::Filesystem(e) => json::filesystem(e, buf),
            CollectionEvent::Process(e) => json::process(e, buf),
            CollectionEvent::Network(e) => json::network(e, buf),
            // Writing into a Vec cannot fail, and serialization cannot either (see above).
            _ => {
                serde_json::to_writer(&mut *buf, self).expect("CollectionEvent serializes to JSON")
            }
        }
        buf.push(b'\n');
    }
}

/// Serializes timestamps as RFC 3339 with exactly nine fractional digits, without
/// allocating (`#[serde(with = "collector_core::event::rfc3339_nanos")]`, or `::option`
/// for an `Option`); reads any RFC 3339 text.
pub mod rfc3339_nanos {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `ts` as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 30];
        match format(ts, &mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&ts.to_rfc3339_opts(SecondsFormat::Nanos, true)),
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` into `buf` without allocating: chrono's
    /// formatter allocates a String per call, which showed in `collector events`.
    /// `None` (use chrono) outside years 0..=9999 and on leap seconds.
    pub fn format<'a>(ts: &DateTime<Utc>, buf: &'a mut [u8; 30]) -> Option<&'a str> {
        super::unix_time::rfc3339_nanos(ts, buf)
    }

    /// Reads any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    /// The same for an `Option` (`None` is `null`).
    pub mod option {
        use super::*;
        use serde::Serialize;

        /// Writes `Some` as above, `None` as `null`.
        pub fn serialize<S: Serializer>(
            ts: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match ts {
                Some(t) => super::serialize(t, s),
                None => Option::<&str>::None.serialize(s),
            }
        }

        /// Reads `null` or any RFC 3339 timestamp.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| {
                    DateTime::parse_from_rfc3339(&s)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(serde::de::Error::custom)
                })
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON kind, protocol and family names are the ones `as_str` gives (the docs,
    /// the IPC filter, the status tables and the hand-written JSON lines use those):
    /// serde's `rename_all = "lowercase"` alone would write `udpsend` for `udp_send`.
    #[test]
    fn serde_kind_names_are_the_documented_ones() {
        fn same<K: Serialize>(kinds: &[K], name: fn(&K) -> &'static str) {
            for kind in kinds {
                let json = serde_json::to_string(kind).unwrap();
                assert_eq!(json, format!("\"{}\"", name(kind)));
            }
        }
        same(
            &[
                NetworkEventKind::Connect,
                NetworkEventKind::Accept,
                NetworkEventKind::Close,
                NetworkEventKind::Listen,
                NetworkEventKind::Bind,
                NetworkEventKind::UdpSend,
            ],
            |k| k.as_str(),
        );
        same(
            &[
                ProcessEventKind::Exec,
                ProcessEventKind::Fork,
                ProcessEventKind::Exit,
                ProcessEventKind::Snapshot,
                ProcessEventKind::CredChange,
                ProcessEventKind::ExecFailed,
            ],
            |k| k.as_str(),
        );
        same(
            &[
                FilesystemEventKind::Create,
                FilesystemEventKind::Open,
                FilesystemEventKind::Unlink,
                FilesystemEventKind::Rename,
                FilesystemEventKind::Mkdir,
                FilesystemEventKind::Rmdir,
                FilesystemEventKind::Chmod,
                FilesystemEventKind::Chown,
                FilesystemEventKind::Link,
                FilesystemEventKind::Symlink,
                FilesystemEventKind::MemfdCreate,
                FilesystemEventKind::Tmpfile,
                FilesystemEventKind::OpenByHandleAt,
                FilesystemEventKind::Mknod,
                FilesystemEventKind::Truncate,
                FilesystemEventKind::Setxattr,
            ],
            |k| k.as_str(),
        );
        same(
            &[
                TransportProtocol::Tcp,
                TransportProtocol::Udp,
                TransportProtocol::Icmp,
                TransportProtocol::Sctp,
                TransportProtocol::Mptcp,
                TransportProtocol::Raw,
                TransportProtocol::Unix,
                TransportProtocol::Other,
            ],
            |p| p.as_str(),
        );
        same(
            &[
                AddressFamily::Ipv4,
                AddressFamily::Ipv6,
                AddressFamily::Unix,
            ],
            |f| f.as_str(),
        );
    }

    use chrono::TimeZone;

    #[test]
    fn fast_timestamp_format_matches_chrono() {
        use chrono::SecondsFormat;
        for (secs, nanos) in [
            (0, 0),
            (1_700_000_000, 5),
            (1_700_000_000, 999_999_999),
            (951_782_400, 123_456_789), // 2000-02-29
            (253_402_300_799, 1),       // 9999-12-31T23:59:59
        ] {
            let ts = Utc.timestamp_opt(secs, nanos).unwrap();
            let mut buf = [0u8; 30];
            assert_eq!(
                rfc3339_nanos::format(&ts, &mut buf),
                Some(ts.to_rfc3339_opts(SecondsFormat::Nanos, true).as_str())
            );
        }
        // Outside four-digit years chrono formats it.
        let far = Utc.timestamp_opt(253_402_300_800, 0).unwrap();
        assert_eq!(rfc3339_nanos::format(&far, &mut [0u8; 30]), None);
        let ev = CollectionEvent::from(ProcessEvent::new(
            ProcessEventKind::Exec,
            Utc.timestamp_opt(1_700_000_000, 5).unwrap(),
            1,
            "t",
        ));
        let mut line = Vec::new();
        ev.write_json_line(&mut line);
        assert_eq!(line, format!("{}\n", ev.to_json_line()).into_bytes());
    }

    #[test]
    fn process_event_json_is_flat_with_nanosecond_timestamp() {
        let ts = Utc.timestamp_opt(1_700_000_000, 5).unwrap();
        let mut ev = ProcessEvent::new(ProcessEventKind::Exec, ts, 42, "test");
        ev.ppid = Some(1);
        ev.command_line = vec!["/bin/true".into(), "x".into()];
        let json: serde_json::Value =
            serde_json::from_str(&CollectionEvent::from(ev.clone()).to_json_line()).unwrap();
        assert_eq!(json["domain"], "process");
        assert_eq!(json["kind"], "exec");
        assert_eq!(json["timestamp"], "2023-11-14T22:13:20.000000005Z");
        assert_eq!(json["pid"], 42);
        assert_eq!(json["source"], "test");
        assert_eq!(json["command_line"][1], "x");
        let back: CollectionEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, CollectionEvent::from(ev));
    }

    #[test]
    fn network_addresses_render_as_ip_port() {
        let ts = Utc.timestamp_opt(0, 0).unwrap();
        let ev = NetworkEvent {
            kind: NetworkEventKind::Connect,
            timestamp: ts,
            pid: 7,
            source: "t".into(),
            protocol: TransportProtocol::Tcp,
            family: AddressFamily::Ipv6,
            source_addr: "[::1]:40000".parse().unwrap(),
            dest_addr: "[::1]:80".parse().unwrap(),
            state: Some("SYN_SENT".into()),
            connection_id: 9,
            uid: None,
            name: None,
            errno: None,
            previous_state: None,
            socket_error: None,
            unix_path: None,
            send_count: None,
            count_update: false,
            io_uring: false,
            compat_syscall: false,
            fd_raced: false,
            process_key: None,
            process: None,
        };
        let json: serde_json::Value =
            serde_json::from_str(&CollectionEvent::Network(Box::new(ev)).to_json_line()).unwrap();
        assert_eq!(json["source_addr"], "[::1]:40000");
        assert_eq!(json["dest_addr"], "[::1]:80");
        assert_eq!(json["family"], "ipv6");
        assert_eq!(json["protocol"], "tcp");
    }

    #[test]
    fn event_stays_small_because_every_pipeline_hop_moves_it() {
        // Process, network and filesystem events are boxed (each is 200 bytes or more
        // with credentials, addresses, two paths and their flags); the metric event,
        // inline, sets the size every pipeline hop moves.
        assert_eq!(
            std::mem::size_of::<CollectionEvent>(),
            std::mem::size_of::<PerformanceEvent>()
        );
        assert!(std::mem::size_of::<FilesystemEvent>() > std::mem::size_of::<PerformanceEvent>());
        let size = std::mem::size_of::<CollectionEvent>();
        assert!(size <= 128, "CollectionEvent is {size} bytes");
    }

    #[test]
    fn domain_parses_case_insensitively() {
        assert_eq!("Network".parse::<Domain>().unwrap(), Domain::Network);
        assert!("disk".parse::<Domain>().is_err());
    }
}
