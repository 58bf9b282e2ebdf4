//! What one event becomes on NATS: its subject (from the template) and its payload.

use collector_core::config::ExportPayload;
use collector_core::CollectionEvent;

/// One piece of a parsed subject template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Hostname,
    HostId,
    Domain,
    Kind,
    Source,
}

/// A subject template (`collector.{hostname}.{domain}.{kind}`), parsed once.
#[derive(Debug, Clone)]
pub struct SubjectTemplate {
    parts: Vec<Part>,
    hostname: String,
    host_id: String,
}

/// Makes `value` usable as (part of) one subject token: `.`, wildcards, whitespace and
/// control characters become `_`, and an empty value becomes `_`.
pub fn subject_token(value: &str) -> String {
    if value.is_empty() {
        return "_".to_owned();
    }
    value
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

impl SubjectTemplate {
    /// Parses `template` (already checked by `ExportConfig::validate`; unknown `{...}`
    /// stay literal).
    pub fn new(template: &str, hostname: &str, host_id: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                break;
            };
            let part = match &rest[open..=close] {
                "{hostname}" => Part::Hostname,
                "{host_id}" => Part::HostId,
                "{domain}" => Part::Domain,
                "{kind}" => Part::Kind,
                "{source}" => Part::Source,
                _ => {
                    parts.push(Part::Literal(rest[..=close].to_owned()));
                    rest = &rest[close + 1..];
                    continue;
                }
            };
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            parts.push(part);
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Self {
            parts,
            hostname: subject_token(hostname),
            host_id: subject_token(host_id),
        }
    }

    /// Writes the subject of `event` into `out` (cleared first).
    pub fn render_into(&self, event: &CollectionEvent, out: &mut String) {
        out.clear();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Hostname => out.push_str(&self.hostname),
                Part::HostId => out.push_str(&self.host_id),
                Part::Domain => out.push_str(event.domain().as_str()),
                Part::Kind => out.push_str(&subject_token(event.kind_name())),
                Part::Source => out.push_str(&subject_token(event.source())),
            }
        }
    }

    /// The subject of `event`.
    pub fn render(&self, event: &CollectionEvent) -> String {
        let mut s = String::new();
        self.render_into(event, &mut s);
        s
    }
}

/// Appends the payload of `event` in `format` to `buf`.
pub fn encode_payload(format: ExportPayload, event: &CollectionEvent, buf: &mut Vec<u8>) {
    match format {
        ExportPayload::Protobuf => {
            collector_core::ipc::wire::encode_event(event, buf);
        }
        ExportPayload::Json => buf.extend_from_slice(event.to_json_line().as_bytes()),
    }
}

/// Header on a message that carries more than one event: their number. Its payload is
/// a `collector.v1.EventBatch` message (protobuf) or one JSON object per line (JSON).
pub const EVENTS_HEADER: &str = "Collector-Events";

/// One payload of several events, each already encoded in `format`.
pub fn pack_payloads<'a>(
    format: ExportPayload,
    payloads: impl Iterator<Item = &'a [u8]>,
) -> bytes::Bytes {
    let mut out = Vec::new();
    for (i, p) in payloads.enumerate() {
        match format {
            ExportPayload::Protobuf => {
                // `EventBatch.events` (field 1, length-delimited) holding the `Event`.
                out.push(0x0a);
                prost::encoding::encode_varint(p.len() as u64, &mut out);
            }
            ExportPayload::Json if i > 0 => out.push(b'\n'),
            ExportPayload::Json => {}
        }
        out.extend_from_slice(p);
    }
    out.into()
}

/// The events of a message: several when it carries [`EVENTS_HEADER`], else one.
pub fn decode_message(payload: &[u8], packed: bool) -> Result<Vec<CollectionEvent>, DecodeError> {
    if !packed {
        return decode_payload(payload).map(|e| vec![e]);
    }
    if payload.first() == Some(&b'{') {
        return payload
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(decode_payload)
            .collect();
    }
    let batch = <collector_proto::v1::EventBatch as prost::Message>::decode(payload)
        .map_err(DecodeError::Protobuf)?;
    batch
        .events
        .into_iter()
        .map(|e| collector_core::ipc::convert::event_from_proto(e).map_err(DecodeError::Convert))
        .collect()
}

/// Reads a payload back into an event: protobuf (`collector.v1.Event`) or JSON,
/// whichever it is (a JSON payload starts with `{`, which no `Event` message does: its
/// first byte is the tag of field 1-4, 0x0a-0x22).
pub fn decode_payload(payload: &[u8]) -> Result<CollectionEvent, DecodeError> {
    if payload.first() == Some(&b'{') {
        return serde_json::from_slice(payload).map_err(DecodeError::Json);
    }
    let message = <collector_proto::v1::Event as prost::Message>::decode(payload)
        .map_err(DecodeError::Protobuf)?;
    collector_core::ipc::convert::event_from_proto(message).map_err(DecodeError::Convert)
}

/// Why a payload is not an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a `collector.v1.Event` message.
    #[error("payload is not a collector.v1.Event message")]
    Protobuf(#[source] prost::DecodeError),
    /// A message with values the collector does not know.
    #[error("payload holds an event the collector cannot represent")]
    Convert(#[source] collector_core::ipc::convert::ConvertError),
    /// Not the JSON of an event.
    #[error("payload is not an event in JSON")]
    Json(#[source] serde_json::Error),
}

/// This host's name, from the kernel (`/proc/sys/kernel/hostname`), else `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// This host's stable id: `/etc/machine-id`, else the hostname.
pub fn default_host_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(hostname)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use collector_core::event::{ProcessEvent, ProcessEventKind};

    fn exec() -> CollectionEvent {
        CollectionEvent::from(ProcessEvent::new(
            ProcessEventKind::Exec,
            Utc::now(),
            42,
            "ebpf-process",
        ))
    }

    #[test]
    fn default_template_names_host_domain_and_kind() {
        let t = SubjectTemplate::new(
            collector_core::config::DEFAULT_EXPORT_SUBJECT,
            "web-1.example.com",
            "abc",
        );
        assert_eq!(
            t.render(&exec()),
            "collector.web-1_example_com.process.exec"
        );
        let t = SubjectTemplate::new("fleet.{host_id}.{source}-{kind}.x", "h", "id 7");
        assert_eq!(t.render(&exec()), "fleet.id_7.ebpf-process-exec.x");
    }

    #[test]
    fn payloads_decode_back_to_the_event() {
        let ev = exec();
        for format in [ExportPayload::Protobuf, ExportPayload::Json] {
            let mut buf = Vec::new();
            encode_payload(format, &ev, &mut buf);
            assert_eq!(decode_payload(&buf).unwrap(), ev, "{format:?}");
        }
        assert!(decode_payload(b"\xff\xff garbage").is_err());
        // Several events in one message, both formats.
        let events: Vec<_> = (0..3).map(|_| exec()).collect();
        for format in [ExportPayload::Protobuf, ExportPayload::Json] {
            let encoded: Vec<Vec<u8>> = events
                .iter()
                .map(|e| {
                    let mut b = Vec::new();
                    encode_payload(format, e, &mut b);
                    b
                })
                .collect();
            let packed = pack_payloads(format, encoded.iter().map(|b| &b[..]));
            assert_eq!(decode_message(&packed, true).unwrap(), events, "{format:?}");
        }
        assert!(decode_payload(b"{not json").is_err());
    }
}
