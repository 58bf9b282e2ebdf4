//! JSON lines per second, as `collector events` writes them: each event serialized into
//! one reused buffer (no per-event allocation), written out in large chunks.
//!
//! `cargo xtask bench` runs it; `JSON_EVENTS=N` sets the number of events (default 1 M).

use std::io::Write;
use std::time::Instant;

use chrono::{TimeZone, Utc};
mod common;

use collector_core::event::{
    AddressFamily, NetworkEvent, NetworkEventKind, ProcessContext, ProcessCredentials,
    ProcessEvent, ProcessEventKind, TransportProtocol,
};
use collector_core::CollectionEvent;

fn events() -> Vec<CollectionEvent> {
    let ts = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
    let mut exec = ProcessEvent::new(ProcessEventKind::Exec, ts, 4242, "ebpf-process");
    exec.name = Some("curl".into());
    exec.executable_path = Some("/usr/bin/curl".into());
    exec.command_line = vec!["curl".into(), "-s".into(), "https://example.invalid".into()];
    exec.ppid = Some(1);
    exec.uid = Some(1000);
    exec.gid = Some(1000);
    exec.start_time = Some(ts);
    exec.cgroup_id = Some(4242);
    exec.process_key = Some("4242:987654321000".into());
    exec.cwd = Some("/home/user".into());
    exec.credentials = Some(ProcessCredentials {
        uid: 1000,
        euid: 1000,
        suid: 1000,
        fsuid: 1000,
        gid: 1000,
        egid: 1000,
        sgid: 1000,
        fsgid: 1000,
        cap_effective: 0,
        cap_permitted: 0,
        loginuid: Some(1000),
        sessionid: Some(3),
    });
    let mut exit = ProcessEvent::new(ProcessEventKind::Exit, ts, 4243, "ebpf-process");
    exit.exit_code = Some(0);
    exit.process_key = Some("4243:987654322000".into());
    let process = std::sync::Arc::new(ProcessContext {
        process_key: "4244:987654323000".into(),
        executable_path: Some("/usr/bin/curl".into()),
        exec_name: Some("curl".into()),
        ppid: Some(4242),
        parent_process_key: Some("4242:987654321000".into()),
    });
    let connect = NetworkEvent {
        kind: NetworkEventKind::Connect,
        timestamp: ts,
        pid: 4244,
        source: "ebpf-network".into(),
        protocol: TransportProtocol::Tcp,
        family: AddressFamily::Ipv4,
        source_addr: "10.0.0.2:40000".parse().unwrap(),
        dest_addr: "93.184.216.34:443".parse().unwrap(),
        state: Some("SYN_SENT".into()),
        connection_id: 77,
        uid: Some(1000),
        name: Some("curl".into()),
        errno: None,
        previous_state: None,
        socket_error: None,
        unix_path: None,
        send_count: None,
        count_update: false,
        io_uring: false,
        compat_syscall: false,
        fd_raced: false,
        process_key: Some("4244:987654323000".into()),
        process: Some(process),
    };
    vec![
        CollectionEvent::from(exec),
        CollectionEvent::from(exit),
        CollectionEvent::from(connect),
    ]
}

/// Lines per second of one event written `n` times.
fn rate(event: &CollectionEvent, n: usize) -> f64 {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let started = Instant::now();
    for _ in 0..n {
        event.write_json_line(&mut buf);
        if buf.len() >= 64 << 10 {
            std::hint::black_box(&buf);
            buf.clear();
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("JSON_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let sample = events();
    let mut sink = std::io::sink();
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let started = Instant::now();
    let mut bytes = 0usize;
    for i in 0..n {
        sample[i % sample.len()].write_json_line(&mut buf);
        if buf.len() >= 64 << 10 {
            bytes += buf.len();
            sink.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    bytes += buf.len();
    sink.write_all(&buf).unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "json lines: {n} events in {secs:.3} s = {:.2} M lines/s ({:.0} bytes/line), one core",
        n as f64 / secs / 1e6,
        bytes as f64 / n as f64
    );

    // For comparison: a String per event (`to_json_line`), as `collector events` did.
    let started = Instant::now();
    for i in 0..n {
        let line = sample[i % sample.len()].to_json_line();
        writeln!(sink, "{line}").unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    for (name, event) in ["exec", "exit", "connect"].iter().zip(&sample) {
        println!(
            "json lines, {name} events only: {:.2} M lines/s",
            rate(event, n / 2) / 1e6
        );
    }
    let context = match &sample[2] {
        CollectionEvent::Network(connect) => connect.process.clone().unwrap(),
        _ => unreachable!("the third sample is the connect"),
    };
    println!(
        "json lines, open events only: {:.2} M lines/s",
        rate(&common::open_event("/etc/hostname".into(), context), n / 2) / 1e6
    );
    println!(
        "json lines, a String per event: {:.2} M lines/s",
        n as f64 / secs / 1e6
    );
}
