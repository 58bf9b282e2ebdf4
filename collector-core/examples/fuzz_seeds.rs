//! Writes seed inputs for the `decode_frame` fuzz target (`cargo xtask fuzz` runs this
//! first): well-formed frames of every domain's event batch and of the control
//! messages, so libFuzzer starts from inputs that reach deep into the decoders instead
//! of from random bytes that fail the frame header.
//!
//! `cargo run -p collector-core --example fuzz_seeds -- DIR`

use std::net::SocketAddr;

use chrono::{TimeZone, Utc};
use collector_core::event::{
    AddressFamily, CollectionEvent, FilesystemEvent, FilesystemEventKind, NetworkEvent,
    NetworkEventKind, PerformanceEvent, PerformanceEventKind, ProcessEvent, ProcessEventKind,
    TransportProtocol,
};
use collector_core::ipc::codec::encode_frame;
use collector_core::ipc::convert::event_to_proto;
use collector_core::ipc::proto::{envelope::Body, Envelope, EventBatch, StatusRequest, Subscribe};

fn events() -> Vec<CollectionEvent> {
    let ts = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
    let mut exec = ProcessEvent::new(ProcessEventKind::Exec, ts, 4242, "ebpf-process");
    exec.ppid = Some(1);
    exec.uid = Some(1000);
    exec.name = Some("curl".into());
    exec.executable_path = Some("/usr/bin/curl".into());
    exec.command_line = vec!["curl".into(), "-s".into(), "https://example.invalid".into()];
    exec.start_time = Some(ts);
    exec.cgroup_id = Some(7);
    let mut exit = ProcessEvent::new(ProcessEventKind::Exit, ts, 4242, "ebpf-process");
    exit.exit_code = Some(3);
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    vec![
        CollectionEvent::from(exec),
        CollectionEvent::from(exit),
        CollectionEvent::Network(Box::new(NetworkEvent {
            kind: NetworkEventKind::Accept,
            timestamp: ts,
            pid: 80,
            source: "ebpf-network".into(),
            protocol: TransportProtocol::Tcp,
            family: AddressFamily::Ipv6,
            source_addr: addr("[::1]:40000"),
            dest_addr: addr("[::1]:8080"),
            state: Some("ESTABLISHED".into()),
            connection_id: 0xffff_8880_1234_5678,
            uid: Some(33),
            name: Some("nginx".into()),
            errno: None,
            previous_state: None,
            socket_error: None,
            unix_path: None,
            send_count: None,
            count_update: false,
            io_uring: false,
            compat_syscall: false,
            fd_raced: false,
            process_key: Some("80:1000".into()),
            process: None,
        })),
        CollectionEvent::from(FilesystemEvent {
            kind: FilesystemEventKind::Rename,
            timestamp: ts,
            pid: 77,
            source: "ebpf-filesystem".into(),
            path: "/tmp/a".into(),
            new_path: Some("/tmp/b".into()),
            path_relative: false,
            flags: None,
            mode: None,
            result: Some(0),
            uid: Some(0),
            name: Some("mv".into()),
            path_truncated: false,
            path_unreadable: false,
            path_user_supplied: true,
            compat_syscall: false,
            owner_uid: None,
            owner_gid: None,
            process_key: Some("77:2000".into()),
            path_changed: false,
            new_path_truncated: false,
            new_path_unreadable: false,
            new_path_user_supplied: true,
            new_path_changed: false,
            io_uring: false,
            device_major: None,
            device_minor: None,
            length: None,
            xattr_name: None,
            fd_raced: false,
            process: None,
        }),
        CollectionEvent::Performance(PerformanceEvent {
            kind: PerformanceEventKind::Metric,
            timestamp: ts,
            pid: 0,
            source: "procfs-performance".into(),
            metric_name: "cpu_usage".into(),
            value: 12.5,
            unit: "percent".into(),
            component: "host".into(),
        }),
    ]
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: fuzz_seeds DIR"))?;
    std::fs::create_dir_all(&dir)?;
    let events = events();
    let mut bodies: Vec<(String, Body)> = events
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            (
                format!("batch-{i}"),
                Body::EventBatch(EventBatch {
                    events: vec![event_to_proto(ev)],
                }),
            )
        })
        .collect();
    bodies.push((
        "batch-all".into(),
        Body::EventBatch(EventBatch {
            events: events.iter().map(event_to_proto).collect(),
        }),
    ));
    bodies.push((
        "status-request".into(),
        Body::StatusRequest(StatusRequest {}),
    ));
    bodies.push((
        "subscribe".into(),
        Body::Subscribe(Subscribe {
            domains: vec![1, 2],
            kinds: vec!["exec".into(), "connect".into()],
        }),
    ));
    let mut all = Vec::new();
    for (i, (name, body)) in bodies.into_iter().enumerate() {
        let frame = encode_frame(&Envelope {
            request_id: i as u64 + 1,
            body: Some(body),
        })?;
        all.extend_from_slice(&frame);
        std::fs::write(format!("{dir}/{name}"), &frame)?;
    }
    // Many frames in one input, as a busy socket delivers them.
    std::fs::write(format!("{dir}/stream"), &all)?;
    Ok(())
}
