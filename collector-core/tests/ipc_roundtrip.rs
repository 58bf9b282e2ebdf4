//! Property tests: every IPC message survives encode -> frame -> decode unchanged, and
//! events and status survive the collector <-> protobuf conversion.

use std::net::SocketAddr;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use collector_core::event::{
    AddressFamily, CollectionEvent, FilesystemEvent, FilesystemEventKind, NetworkEvent,
    NetworkEventKind, PerformanceEvent, PerformanceEventKind, ProcessContext, ProcessCredentials,
    ProcessEvent, ProcessEventKind, TransportProtocol,
};
use collector_core::ipc::codec::{ClientCodec, DecodedBatch, EnvelopeCodec, Inbound};
use collector_core::ipc::convert::ConvertError;
use collector_core::ipc::convert::{
    caps_from_proto, caps_to_proto, event_from_proto, event_to_proto, status_from_proto,
    status_to_proto,
};
use collector_core::ipc::proto as pb;
use collector_core::ipc::proto::envelope::Body;
use collector_core::ipc::wire::{
    decode_event_batch, encode_event_batch, BatchEntries, EventBatchFrame, SourceNames,
};
use collector_core::status::StatusSnapshot;
use collector_core::SourceCaps;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

fn ts() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        8 => (-10_000_000_000i64..10_000_000_000, 0u32..1_000_000_000)
            .prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap()),
        // Whole seconds (nanos left out on the wire) and the epoch (seconds left out).
        1 => (-10_000_000_000i64..10_000_000_000)
            .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap()),
        1 => Just(DateTime::UNIX_EPOCH),
        // A leap second: nanos of 1e9 and more.
        1 => (-100_000_000i64..100_000_000, 1_000_000_000u32..2_000_000_000)
            .prop_map(|(m, n)| DateTime::from_timestamp(m * 60 + 59, n).unwrap()),
    ]
}

fn text() -> impl Strategy<Value = String> {
    ".{0,16}"
}

fn credentials() -> impl Strategy<Value = ProcessCredentials> {
    (
        any::<[u32; 8]>(),
        any::<u64>(),
        prop_oneof![Just(0u64), any::<u64>()],
        option::of(any::<u32>()),
        option::of(any::<u32>()),
    )
        .prop_map(|(ids, cap_effective, cap_permitted, loginuid, sessionid)| {
            ProcessCredentials {
                uid: ids[0],
                euid: ids[1],
                suid: ids[2],
                fsuid: ids[3],
                gid: ids[4],
                egid: ids[5],
                sgid: ids[6],
                fsgid: ids[7],
                cap_effective,
                cap_permitted,
                loginuid,
                sessionid,
            }
        })
}

/// Fields added with credentials and process identity.
#[allow(clippy::type_complexity)]
fn process_identity() -> impl Strategy<
    Value = (
        Option<ProcessCredentials>,
        Option<ProcessCredentials>,
        bool,
        Option<i32>,
        Option<u32>,
        bool,
        Option<String>,
        Option<DateTime<Utc>>,
    ),
> {
    (
        option::of(credentials()),
        option::of(credentials()),
        any::<bool>(),
        option::of(any::<i32>()),
        option::of(any::<u32>()),
        any::<bool>(),
        option::of(text()),
        option::of(ts()),
    )
}

fn process() -> impl Strategy<Value = CollectionEvent> {
    (
        (
            prop_oneof![
                Just(ProcessEventKind::Exec),
                Just(ProcessEventKind::Fork),
                Just(ProcessEventKind::Exit),
                Just(ProcessEventKind::Snapshot),
                Just(ProcessEventKind::CredChange),
                Just(ProcessEventKind::ExecFailed)
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
        process_identity(),
        (
            option::of(any::<u64>()),
            option::of(any::<u32>()),
            any::<bool>(),
            option::of(text()),
            option::of(text()),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(text()),
        ),
        (option::of(text()), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (kind, timestamp, pid, source, ppid, uid, gid, name),
                (exe, cmd, trunc, start, exit, cgroup, hash, child),
                (creds, old, secure, errno, nr, compat, key, child_start),
                (inode, device, deleted, memfd, interp, ns_pid, ns_inode, cgroup_path),
                (cwd, exe_user_supplied, exe_truncated),
            )| {
                let mut e = ProcessEvent::new(kind, timestamp, pid, source);
                e.ppid = ppid;
                e.uid = uid;
                e.gid = gid;
                e.name = name.map(Into::into);
                e.executable_path = exe;
                e.command_line = cmd;
                e.command_line_truncated = trunc;
                e.start_time = start;
                e.exit_code = exit;
                e.cgroup_id = cgroup;
                e.executable_hash = hash.as_ref().map(|h| h.0.clone());
                e.hash_algorithm = hash.map(|h| h.1);
                e.child_pid = child;
                e.credentials = creds;
                e.old_credentials = old;
                e.secure_exec = secure;
                e.errno = errno;
                e.syscall_nr = nr;
                e.compat_syscall = compat;
                e.process_key = key.map(Into::into);
                e.child_start_time = child_start;
                e.executable_inode = inode;
                e.executable_device = device;
                e.executable_deleted = deleted;
                e.memfd_name = memfd;
                e.interpreter = interp;
                e.namespace_pid = ns_pid;
                e.pid_namespace_inode = ns_inode;
                e.cgroup_path = cgroup_path;
                e.cwd = cwd;
                e.executable_path_user_supplied = exe_user_supplied;
                e.executable_path_truncated = exe_truncated;
                CollectionEvent::Process(e.into())
            },
        )
}

fn context() -> impl Strategy<Value = ProcessContext> {
    (
        text(),
        option::of(text()),
        option::of(text()),
        option::of(any::<u32>()),
        option::of(text()),
    )
        .prop_map(
            |(process_key, executable_path, exec_name, ppid, parent_process_key)| ProcessContext {
                process_key,
                executable_path,
                exec_name,
                ppid,
                parent_process_key,
            },
        )
}

/// A network event, with or without the process table's context.
fn network() -> impl Strategy<Value = CollectionEvent> {
    (network_base(), option::of(context())).prop_map(|(mut ev, process)| {
        if let CollectionEvent::Network(n) = &mut ev {
            n.process = process.map(std::sync::Arc::new);
        }
        ev
    })
}

fn network_base() -> impl Strategy<Value = CollectionEvent> {
    (
        prop_oneof![
            Just(NetworkEventKind::Connect),
            Just(NetworkEventKind::Accept),
            Just(NetworkEventKind::Close),
            Just(NetworkEventKind::Listen),
            Just(NetworkEventKind::Bind),
            Just(NetworkEventKind::UdpSend)
        ],
        ts(),
        any::<u32>(),
        text(),
        prop_oneof![
            Just(TransportProtocol::Tcp),
            Just(TransportProtocol::Udp),
            Just(TransportProtocol::Icmp),
            Just(TransportProtocol::Sctp),
            Just(TransportProtocol::Mptcp),
            Just(TransportProtocol::Raw),
            Just(TransportProtocol::Unix),
            Just(TransportProtocol::Other)
        ],
        any::<SocketAddr>(),
        any::<SocketAddr>(),
        option::of(text()),
        any::<u64>(),
        option::of(any::<u32>()),
        option::of(text()),
        (
            option::of(any::<u32>()),
            option::of(text()),
            option::of(any::<u32>()),
            option::of(text()),
            option::of(any::<u64>()),
            any::<[bool; 4]>(),
            option::of(text()),
        ),
    )
        .prop_map(
            |(kind, timestamp, pid, source, protocol, src, dst, state, id, uid, name, extra)| {
                let (errno, previous_state, socket_error, unix_path, send_count, bits, process_key) =
                    extra;
                CollectionEvent::Network(Box::new(NetworkEvent {
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
                    state: state.map(Into::into),
                    connection_id: id,
                    uid,
                    name: name.map(Into::into),
                    errno,
                    previous_state: previous_state.map(Into::into),
                    socket_error,
                    unix_path,
                    send_count,
                    count_update: bits[0],
                    io_uring: bits[1],
                    compat_syscall: bits[2],
                    fd_raced: bits[3],
                    process_key: process_key.map(Into::into),
                    process: None,
                }))
            },
        )
}

/// A filesystem event, with or without the process table's context.
fn filesystem() -> impl Strategy<Value = CollectionEvent> {
    (filesystem_base(), option::of(context())).prop_map(|(mut ev, process)| {
        if let CollectionEvent::Filesystem(f) = &mut ev {
            f.process = process.map(std::sync::Arc::new);
        }
        ev
    })
}

fn filesystem_base() -> impl Strategy<Value = CollectionEvent> {
    (
        prop_oneof![
            Just(FilesystemEventKind::Create),
            Just(FilesystemEventKind::Open),
            Just(FilesystemEventKind::Unlink),
            Just(FilesystemEventKind::Rename),
            Just(FilesystemEventKind::Mkdir),
            Just(FilesystemEventKind::Rmdir),
            Just(FilesystemEventKind::Chmod),
            Just(FilesystemEventKind::Chown),
            Just(FilesystemEventKind::Link),
            Just(FilesystemEventKind::Symlink),
            Just(FilesystemEventKind::MemfdCreate),
            Just(FilesystemEventKind::Tmpfile),
            Just(FilesystemEventKind::OpenByHandleAt),
            Just(FilesystemEventKind::Mknod),
            Just(FilesystemEventKind::Truncate),
            Just(FilesystemEventKind::Setxattr)
        ],
        ts(),
        any::<u32>(),
        text(),
        text(),
        option::of(text()),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        option::of(any::<i64>()),
        (
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(text()),
        ),
        (
            option::of(text()),
            any::<[bool; 7]>(),
            option::of(any::<u64>()),
        ),
    )
        .prop_map(
            |(
                kind,
                timestamp,
                pid,
                source,
                path,
                new_path,
                (rel, path_truncated, path_unreadable, path_user_supplied, compat_syscall),
                flags,
                mode,
                result,
                (uid, owner_uid, owner_gid, process_key),
                (name, [c, nt, nu, nus, nc, io_uring, fd_raced], length),
            )| {
                CollectionEvent::from(FilesystemEvent {
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
                    name: name.map(Into::into),
                    path_truncated,
                    path_unreadable,
                    path_user_supplied,
                    compat_syscall,
                    owner_uid,
                    owner_gid,
                    process_key: process_key.clone().map(Into::into),
                    path_changed: c,
                    new_path_truncated: nt,
                    new_path_unreadable: nu,
                    new_path_user_supplied: nus,
                    new_path_changed: nc,
                    io_uring,
                    // Any optional u32s: the owner's, again.
                    device_major: owner_uid,
                    device_minor: owner_gid,
                    length,
                    // Any optional text: the process key's, again.
                    xattr_name: process_key.clone(),
                    fd_raced,
                    process: None,
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
        prop_oneof![
            4 => -1e12f64..1e12,
            // proto3 leaves 0.0 out, and -0.0 with it (it compares equal).
            1 => Just(0.0),
            1 => Just(-0.0),
            1 => Just(f64::INFINITY),
            1 => any::<f64>().prop_filter("NaN != NaN", |v| !v.is_nan()),
        ],
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
        (any::<u32>(), text(), vec(0i32..5, 0..4), any::<u32>()).prop_map(|(v, id, d, m)| {
            Body::CapabilityRequest(pb::CapabilityRequest {
                protocol_version: v,
                client_id: id,
                requested_domains: d,
                max_frame_bytes: m,
            })
        }),
        (caps(), text(), any::<u32>()).prop_map(|(c, v, m)| Body::CapabilityResponse(
            pb::CapabilityResponse {
                protocol_version: 1,
                capabilities: Some(caps_to_proto(c)),
                granted_domains: caps_to_proto(c).domains,
                server_version: v,
                max_frame_bytes: m,
            }
        )),
        caps().prop_map(|c| Body::CapabilityUpdate(pb::CapabilityUpdate {
            capabilities: Some(caps_to_proto(c))
        })),
        (
            text(),
            option::of(any::<u32>()),
            option::of(text()),
            any::<(bool, bool)>(),
            option::of(any::<u64>()),
            text(),
            any::<u32>()
        )
            .prop_map(
                |(id, pid, name, (exited, ancestry), since_seconds, cursor, max_page_bytes)| {
                    Body::DetectionTask(pb::DetectionTask {
                        task_id: id,
                        task: Some(pb::detection_task::Task::EnumerateProcesses(
                            pb::EnumerateProcesses {
                                pid,
                                name,
                                executable: None,
                                exited,
                                since_seconds,
                                ancestry,
                                cursor,
                                max_page_bytes,
                            },
                        )),
                    })
                }
            ),
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

/// `write_json_line` writes filesystem, process and network events by hand: byte for
/// byte serde's. Control characters, quotes, backslashes, DEL and a non-ASCII character
/// are put in a path, an argument, a unix path and a context's strings. Run on a large stack: with the extra input, the event
/// strategy's value tree overflows a test thread's 2 MiB in debug builds.
#[test]
fn json_lines_are_serde_json() {
    let check = || {
        let mut runner = proptest::test_runner::TestRunner::default();
        let result = runner.run(&(event(), vec(0u8..0x81, 0..12)), |(ev, extra)| {
            let escapes: String = extra
                .into_iter()
                .map(|b| if b == 0x80 { '\u{e9}' } else { char::from(b) })
                .collect();
            let mut ev = ev;
            // Without extra bytes the event stays as generated, so empty argv and absent
            // cwd, unix path and context strings are checked too.
            match &mut ev {
                _ if escapes.is_empty() => {}
                CollectionEvent::Filesystem(f) => {
                    f.path.push_str(&escapes);
                    if let Some(p) = f.process.as_mut() {
                        std::sync::Arc::make_mut(p).exec_name = Some(escapes.clone());
                    }
                }
                CollectionEvent::Process(p) => {
                    p.command_line.push(escapes.clone());
                    if let Some(path) = p.executable_path.as_mut() {
                        path.push_str(&escapes);
                    }
                    p.cwd = Some(escapes.clone());
                }
                CollectionEvent::Network(n) => {
                    n.unix_path = Some(escapes.clone());
                    if let Some(p) = n.process.as_mut() {
                        std::sync::Arc::make_mut(p).executable_path = Some(escapes.clone());
                    }
                }
                _ => {}
            }
            let mut line = Vec::new();
            ev.write_json_line(&mut line);
            let mut reference = serde_json::to_vec(&ev).unwrap();
            reference.push(b'\n');
            prop_assert_eq!(
                String::from_utf8(line).unwrap(),
                String::from_utf8(reference).unwrap()
            );
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    };
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(check)
        .unwrap()
        .join()
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// The direct event-batch path (`ipc::wire`) against prost, the reference

/// What prost writes for the batch.
fn prost_batch(events: &[CollectionEvent], request_id: u64) -> Vec<u8> {
    pb::Envelope {
        request_id,
        body: Some(Body::EventBatch(pb::EventBatch {
            events: events.iter().map(event_to_proto).collect(),
        })),
    }
    .encode_to_vec()
}

/// What prost and `event_from_proto` read from a payload, as comparable text (Debug
/// renders NaN equal to itself, unlike `PartialEq`).
fn prost_read(payload: &[u8]) -> Option<(u64, String)> {
    let env = pb::Envelope::decode(payload).ok()?;
    let Some(Body::EventBatch(batch)) = env.body else {
        return None;
    };
    let events = batch
        .events
        .into_iter()
        .map(event_from_proto)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some((env.request_id, format!("{events:?}")))
}

/// A random edit of a valid payload: flip, insert or delete bytes.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match op % 3 {
            0 => bytes[at] ^= byte | 1,
            1 => bytes.insert(at, byte),
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn direct_encoding_is_byte_for_byte_prost(events in vec(event(), 0..6)) {
        let mut ours = Vec::new();
        let len = encode_event_batch(&events, &mut ours);
        prop_assert_eq!(len, ours.len());
        prop_assert_eq!(ours, prost_batch(&events, 0));
    }

    /// The encoder and the JSON writer keep the last process context's bytes and reuse
    /// them for the next event carrying the same `Arc`. Here a batch's network and
    /// filesystem events share a few contexts in any order, and contexts are made anew
    /// between batches: every output stays prost's and serde's.
    #[test]
    fn shared_contexts_encode_like_prost_and_serde(
        rounds in vec((vec(prop_oneof![network(), filesystem()], 1..8),
                       vec(context(), 1..4),
                       vec(any::<u8>(), 8)), 1..4)
    ) {
        for (mut events, contexts, picks) in rounds {
            let contexts: Vec<_> = contexts.into_iter().map(std::sync::Arc::new).collect();
            for (i, ev) in events.iter_mut().enumerate() {
                let shared = contexts[usize::from(picks[i % picks.len()]) % contexts.len()].clone();
                match ev {
                    CollectionEvent::Network(n) => n.process = Some(shared),
                    CollectionEvent::Filesystem(f) => f.process = Some(shared),
                    _ => {}
                }
            }
            let mut ours = Vec::new();
            let len = encode_event_batch(&events, &mut ours);
            prop_assert_eq!(len, ours.len());
            prop_assert_eq!(ours, prost_batch(&events, 0));
            for ev in &events {
                let mut single = Vec::new();
                collector_core::ipc::wire::encode_event(ev, &mut single);
                prop_assert_eq!(&single, &event_to_proto(ev).encode_to_vec());
                let mut line = Vec::new();
                ev.write_json_line(&mut line);
                let mut reference = serde_json::to_vec(ev).unwrap();
                reference.push(b'\n');
                prop_assert_eq!(line, reference);
            }
        }
    }

    #[test]
    fn single_event_encoding_is_byte_for_byte_prost(ev in event()) {
        let mut ours = Vec::new();
        let len = collector_core::ipc::wire::encode_event(&ev, &mut ours);
        prop_assert_eq!(len, ours.len());
        prop_assert_eq!(&ours, &event_to_proto(&ev).encode_to_vec());
        prop_assert_eq!(event_from_proto(pb::Event::decode(&ours[..]).unwrap()).unwrap(), ev);
    }

    #[test]
    fn direct_decoding_takes_prost_output_and_agrees(
        events in vec(event(), 0..6),
        request_id in prop_oneof![Just(0u64), any::<u64>()],
    ) {
        let payload = prost_batch(&events, request_id);
        let mut fast = Vec::new();
        let id = decode_event_batch(&payload, &mut SourceNames::new(), &mut fast);
        // The canonical layout must take the fast path, not merely decode somehow.
        prop_assert_eq!(id, Some(request_id));
        prop_assert_eq!(fast, events);
    }

    #[test]
    fn direct_decoding_of_damaged_input_agrees_with_prost_or_steps_aside(
        events in vec(event(), 1..4),
        edits in vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let payload = mutate(prost_batch(&events, 0), &edits);
        let mut fast = vec![exec(0)];
        let id = decode_event_batch(&payload, &mut SourceNames::new(), &mut fast);
        if let Some(request_id) = id {
            // Appended after what was there.
            let fast = fast.split_off(1);
            prop_assert_eq!(
                Some((request_id, format!("{fast:?}"))),
                prost_read(&payload),
                "fast path accepted input prost reads differently"
            );
        } else {
            prop_assert_eq!(fast.len(), 1, "a refused payload left events behind");
        }
    }

    #[test]
    fn event_batch_frames_decode_on_the_client(events in vec(event(), 0..6)) {
        let mut entries = BatchEntries::new();
        for ev in &events {
            entries.push(ev);
        }
        let mut buf = BytesMut::new();
        EnvelopeCodec::default().encode(EventBatchFrame::new(entries.as_bytes()), &mut buf).unwrap();
        // The frame is the one prost's envelope makes, header included.
        let mut reference = BytesMut::new();
        let env = pb::Envelope::decode(prost_batch(&events, 0).as_slice()).unwrap();
        EnvelopeCodec::default().encode(&env, &mut reference).unwrap();
        prop_assert_eq!(&buf, &reference);
        let got = ClientCodec::default().decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(
            got,
            Inbound::Events(DecodedBatch { request_id: 0, events, invalid: None })
        );
        prop_assert!(buf.is_empty());
    }
}

#[test]
fn nan_metrics_encode_like_prost() {
    let mut events = Vec::new();
    for value in [
        f64::NAN,
        -f64::NAN,
        f64::NEG_INFINITY,
        -0.0,
        f64::MIN_POSITIVE,
    ] {
        events.push(CollectionEvent::Performance(PerformanceEvent {
            kind: PerformanceEventKind::Metric,
            timestamp: DateTime::UNIX_EPOCH,
            pid: 0,
            source: "".into(),
            metric_name: String::new(),
            value,
            unit: String::new(),
            component: String::new(),
        }));
    }
    let mut ours = Vec::new();
    encode_event_batch(&events, &mut ours);
    assert_eq!(ours, prost_batch(&events, 0));
    // -0.0 comes back as 0.0 (proto3 leaves it out), whichever way it is read.
    let mut back = Vec::new();
    decode_event_batch(&ours, &mut SourceNames::new(), &mut back).unwrap();
    assert_eq!(Some((0, format!("{back:?}"))), prost_read(&ours));
    assert!(format!("{back:?}").contains("value: 0.0"));
}

/// The encoder writes an event's body first and its length prefixes after it: every
/// size class of those prefixes (one to four varint bytes, in the entry and the event)
/// comes out as prost writes it, next to events of other sizes.
#[test]
fn events_around_each_varint_length_boundary_encode_like_prost() {
    let sizes = (0..8)
        .chain(100..140)
        .chain((16_300..16_420).step_by(3))
        .chain((2_097_050..2_097_200).step_by(25));
    let metric = |n: usize| {
        CollectionEvent::Performance(PerformanceEvent {
            kind: PerformanceEventKind::Metric,
            timestamp: DateTime::UNIX_EPOCH,
            pid: 7,
            source: "s".into(),
            metric_name: "m".repeat(n),
            value: 1.5,
            unit: String::new(),
            component: String::new(),
        })
    };
    for n in sizes {
        let events = [metric(n), metric(3), metric(n + 1)];
        let mut ours = Vec::new();
        let len = encode_event_batch(&events, &mut ours);
        assert_eq!(len, ours.len());
        assert!(
            ours == prost_batch(&events, 0),
            "batch with a {n}-byte name"
        );
        let mut single = Vec::new();
        collector_core::ipc::wire::encode_event(&events[0], &mut single);
        assert!(
            single == event_to_proto(&events[0]).encode_to_vec(),
            "event with a {n}-byte name"
        );
    }
}

fn exec(pid: u32) -> CollectionEvent {
    let mut e = ProcessEvent::new(ProcessEventKind::Exec, Utc::now(), pid, "ebpf-process");
    e.command_line = vec!["sh".into(), String::new()];
    CollectionEvent::Process(e.into())
}

#[test]
fn client_falls_back_to_prost_for_non_canonical_batches() {
    // Two EventBatch fields in one envelope: prost merges them (events concatenate),
    // which the fast path leaves to prost.
    let mut payload = prost_batch(&[exec(1)], 0);
    payload.extend(prost_batch(&[exec(2)], 0));
    assert_eq!(
        decode_event_batch(&payload, &mut SourceNames::new(), &mut Vec::new()),
        None
    );
    match ClientCodec::default()
        .decode_payload(payload.into())
        .unwrap()
    {
        Inbound::Events(b) => {
            assert_eq!(
                b.events,
                vec![exec_like(&b.events[0], 1), exec_like(&b.events[1], 2)]
            );
            assert_eq!(b.invalid, None);
        }
        other => panic!("expected events, got {other:?}"),
    }
}

/// `exec(pid)` with the timestamp of `got` (timestamps come from the clock).
fn exec_like(got: &CollectionEvent, pid: u32) -> CollectionEvent {
    let mut want = exec(pid);
    if let (CollectionEvent::Process(w), CollectionEvent::Process(g)) = (&mut want, got) {
        w.timestamp = g.timestamp;
    }
    want
}

#[test]
fn client_keeps_good_events_and_reports_an_invalid_one() {
    let mut bad = event_to_proto(&exec(2));
    if let Some(pb::event::Event::Process(p)) = &mut bad.event {
        p.kind = 99;
    }
    let good = [exec(1), exec(3)];
    let payload = pb::Envelope {
        request_id: 0,
        body: Some(Body::EventBatch(pb::EventBatch {
            events: vec![event_to_proto(&good[0]), bad, event_to_proto(&good[1])],
        })),
    }
    .encode_to_vec();
    match ClientCodec::default()
        .decode_payload(payload.into())
        .unwrap()
    {
        Inbound::Events(b) => {
            assert_eq!(b.events, good.to_vec());
            assert!(
                matches!(b.invalid, Some(ConvertError::UnknownEnum { value: 99, .. })),
                "{:?}",
                b.invalid
            );
        }
        other => panic!("expected events, got {other:?}"),
    }
}

#[test]
fn client_passes_other_envelopes_through() {
    let env = pb::Envelope {
        request_id: 5,
        body: Some(Body::Lagged(pb::Lagged { missed_events: 3 })),
    };
    let got = ClientCodec::default()
        .decode_payload(env.encode_to_vec().into())
        .unwrap();
    assert_eq!(got, Inbound::Envelope(env));
}
