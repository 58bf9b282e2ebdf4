//! Property tests: every IPC message survives encode -> frame -> decode unchanged, and
//! events and status survive the collector <-> protobuf conversion.

use std::net::SocketAddr;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use collector_core::event::{
    AddressFamily, CollectionEvent, FilesystemEvent, FilesystemEventKind, NetworkEvent,
    NetworkEventKind, PerformanceEvent, PerformanceEventKind, ProcessEvent, ProcessEventKind,
    TransportProtocol,
};
use collector_core::ipc::codec::EnvelopeCodec;
use collector_core::ipc::convert::{
    caps_from_proto, caps_to_proto, event_from_proto, event_to_proto, status_from_proto,
    status_to_proto,
};
use collector_core::ipc::proto as pb;
use collector_core::ipc::proto::envelope::Body;
use collector_core::status::StatusSnapshot;
use collector_core::SourceCaps;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn ts() -> impl Strategy<Value = DateTime<Utc>> {
    (-10_000_000_000i64..10_000_000_000, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap())
}

fn text() -> impl Strategy<Value = String> {
    ".{0,16}"
}

fn process() -> impl Strategy<Value = CollectionEvent> {
    (
        (
            prop_oneof![
                Just(ProcessEventKind::Exec),
                Just(ProcessEventKind::Fork),
                Just(ProcessEventKind::Exit),
                Just(ProcessEventKind::Snapshot)
            ],
            ts(),
            any::<u32>(),
            text(),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(text()),
        ),
        (
            option::of(text()),
            vec(text(), 0..4),
            any::<bool>(),
            option::of(ts()),
            option::of(any::<i32>()),
            option::of(any::<u64>()),
            option::of(("[0-9a-f]{64}", Just("sha256".to_string()))),
            option::of(any::<u32>()),
        ),
    )
        .prop_map(
            |(
                (kind, timestamp, pid, source, ppid, uid, gid, name),
                (exe, cmd, trunc, start, exit, cgroup, hash, child),
            )| {
                let mut e = ProcessEvent::new(kind, timestamp, pid, source);
                e.ppid = ppid;
                e.uid = uid;
                e.gid = gid;
                e.name = name;
                e.executable_path = exe;
                e.command_line = cmd;
                e.command_line_truncated = trunc;
                e.start_time = start;
                e.exit_code = exit;
                e.cgroup_id = cgroup;
                e.executable_hash = hash.as_ref().map(|h| h.0.clone());
                e.hash_algorithm = hash.map(|h| h.1);
                e.child_pid = child;
                CollectionEvent::from(e)
            },
        )
}

fn network() -> impl Strategy<Value = CollectionEvent> {
    (
        prop_oneof![
            Just(NetworkEventKind::Connect),
            Just(NetworkEventKind::Accept),
            Just(NetworkEventKind::Close),
            Just(NetworkEventKind::Listen)
        ],
        ts(),
        any::<u32>(),
        text(),
        prop_oneof![Just(TransportProtocol::Tcp), Just(TransportProtocol::Udp)],
        any::<SocketAddr>(),
        any::<SocketAddr>(),
        option::of(text()),
        any::<u64>(),
        option::of(any::<u32>()),
        option::of(text()),
    )
        .prop_map(
            |(kind, timestamp, pid, source, protocol, src, dst, state, id, uid, name)| {
                CollectionEvent::Network(NetworkEvent {
                    kind,
                    timestamp,
                    pid,
                    source: source.into(),
                    protocol,
                    family: if src.is_ipv4() {
                        AddressFamily::Ipv4
                    } else {
                        AddressFamily::Ipv6
                    },
                    source_addr: src,
                    dest_addr: dst,
                    state,
                    connection_id: id,
                    uid,
                    name,
                })
            },
        )
}

fn filesystem() -> impl Strategy<Value = CollectionEvent> {
    (
        prop_oneof![
            Just(FilesystemEventKind::Create),
            Just(FilesystemEventKind::Open),
            Just(FilesystemEventKind::Unlink),
            Just(FilesystemEventKind::Rename)
        ],
        ts(),
        any::<u32>(),
        text(),
        text(),
        option::of(text()),
        any::<bool>(),
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        option::of(any::<i64>()),
        option::of(any::<u32>()),
        option::of(text()),
    )
        .prop_map(
            |(
                kind,
                timestamp,
                pid,
                source,
                path,
                new_path,
                rel,
                flags,
                mode,
                result,
                uid,
                name,
            )| {
                CollectionEvent::Filesystem(FilesystemEvent {
                    kind,
                    timestamp,
                    pid,
                    source: source.into(),
                    path,
                    new_path,
                    path_relative: rel,
                    flags,
                    mode,
                    result,
                    uid,
                    name,
                })
            },
        )
}

fn performance() -> impl Strategy<Value = CollectionEvent> {
    (
        ts(),
        any::<u32>(),
        text(),
        text(),
        -1e12f64..1e12,
        text(),
        text(),
    )
        .prop_map(
            |(timestamp, pid, source, metric_name, value, unit, component)| {
                CollectionEvent::Performance(PerformanceEvent {
                    kind: PerformanceEventKind::Metric,
                    timestamp,
                    pid,
                    source: source.into(),
                    metric_name,
                    value,
                    unit,
                    component,
                })
            },
        )
}

fn event() -> impl Strategy<Value = CollectionEvent> {
    prop_oneof![process(), network(), filesystem(), performance()]
}

fn caps() -> impl Strategy<Value = SourceCaps> {
    any::<u32>().prop_map(SourceCaps::from_bits_truncate)
}

fn counts() -> impl Strategy<Value = std::collections::BTreeMap<String, u64>> {
    btree_map("[a-z_]{1,8}", any::<u64>(), 0..3)
}

fn status() -> impl Strategy<Value = StatusSnapshot> {
    let source = (
        "[a-z-]{1,12}",
        caps(),
        prop_oneof![
            Just("starting"),
            Just("healthy"),
            Just("degraded"),
            Just("failed"),
            Just("stopped")
        ],
        option::of(text()),
        any::<u64>(),
        counts(),
        counts(),
        btree_map("[a-z_]{1,8}", "[a-z_]{1,8}", 0..3),
    )
        .prop_map(|(name, caps, health, err, recv, dropped, lost, hooks)| {
            serde_json::json!({
                "name": name, "capabilities": caps, "health": health, "last_error": err,
                "events_received": recv, "dropped": dropped,
                "stats": {"kernel_lost": lost, "kernel_emitted": {}, "dropped": {}, "hooks": hooks},
            })
        });
    (
        "[0-9.]{1,8}",
        text(),
        0f64..1e9,
        caps(),
        vec(source, 0..3),
        any::<u64>(),
        counts(),
        any::<u64>(),
    )
        .prop_map(|(version, comp, up, caps, sources, recv, dropped, subs)| {
            serde_json::from_value(serde_json::json!({
                "version": version, "component_name": comp, "uptime_seconds": up,
                "capabilities": caps, "sources": sources,
                "counters": {
                    "events_received": recv, "dropped": dropped, "batches": 3,
                    "queue_depth": 1, "queue_high_water": 9, "sink_dropped": {},
                    "subscribers": subs,
                },
            }))
            .expect("valid StatusSnapshot JSON")
        })
}

/// Every envelope body, with generated contents.
fn envelope() -> impl Strategy<Value = pb::Envelope> {
    let body = prop_oneof![
        (any::<u32>(), text(), vec(0i32..5, 0..4)).prop_map(|(v, id, d)| {
            Body::CapabilityRequest(pb::CapabilityRequest {
                protocol_version: v,
                client_id: id,
                requested_domains: d,
            })
        }),
        (caps(), text()).prop_map(|(c, v)| Body::CapabilityResponse(pb::CapabilityResponse {
            protocol_version: 1,
            capabilities: Some(caps_to_proto(c)),
            granted_domains: caps_to_proto(c).domains,
            server_version: v,
        })),
        caps().prop_map(|c| Body::CapabilityUpdate(pb::CapabilityUpdate {
            capabilities: Some(caps_to_proto(c))
        })),
        (text(), option::of(any::<u32>()), option::of(text())).prop_map(|(id, pid, name)| {
            Body::DetectionTask(pb::DetectionTask {
                task_id: id,
                task: Some(pb::detection_task::Task::EnumerateProcesses(
                    pb::EnumerateProcesses {
                        pid,
                        name,
                        executable: None,
                    },
                )),
            })
        }),
        (text(), any::<u64>(), "[0-9a-f]{64}").prop_map(|(id, size, hex)| {
            Body::DetectionResult(pb::DetectionResult {
                task_id: id.clone(),
                result: Some(pb::detection_result::Result::ExecutableHash(
                    pb::ExecutableHash {
                        path: id,
                        algorithm: "sha256".into(),
                        hex_digest: hex,
                        size_bytes: size,
                        matches_expected: Some(true),
                    },
                )),
            })
        }),
        (vec(1i32..5, 0..4), vec(text(), 0..3))
            .prop_map(|(domains, kinds)| Body::Subscribe(pb::Subscribe { domains, kinds })),
        (vec(1i32..5, 0..4), vec(text(), 0..3))
            .prop_map(|(domains, kinds)| Body::SubscribeAck(pb::SubscribeAck { domains, kinds })),
        vec(event(), 0..8).prop_map(|evs| Body::EventBatch(pb::EventBatch {
            events: evs.iter().map(event_to_proto).collect()
        })),
        any::<u64>().prop_map(|n| Body::Lagged(pb::Lagged { missed_events: n })),
        Just(Body::StatusRequest(pb::StatusRequest {})),
        status().prop_map(|s| Body::StatusResponse(status_to_proto(&s))),
        (0i32..11, text()).prop_map(|(code, message)| Body::Error(pb::Error { code, message })),
    ];
    (any::<u64>(), body).prop_map(|(request_id, body)| pb::Envelope {
        request_id,
        body: Some(body),
    })
}

proptest! {
    #[test]
    fn every_envelope_roundtrips_through_a_frame(env in envelope()) {
        let mut codec = EnvelopeCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(&env, &mut buf).unwrap();
        let back = codec.decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(back, env);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn events_roundtrip_through_protobuf(ev in event()) {
        prop_assert_eq!(event_from_proto(event_to_proto(&ev)).unwrap(), ev);
    }

    #[test]
    fn capabilities_roundtrip(c in caps()) {
        prop_assert_eq!(caps_from_proto(&caps_to_proto(c)), c);
    }

    #[test]
    fn status_roundtrips_via_json_and_via_typed_fields(s in status()) {
        let wire = status_to_proto(&s);
        prop_assert_eq!(status_from_proto(wire.clone()).unwrap(), s.clone());
        let typed_only = pb::StatusResponse { snapshot_json: String::new(), ..wire };
        prop_assert_eq!(status_from_proto(typed_only).unwrap(), s);
    }
}
