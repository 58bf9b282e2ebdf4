//! JSON lines per second, as `collector events` writes them: each event serialized into
//! one reused buffer (no per-event allocation), written out in large chunks.
//!
//! `cargo xtask bench` runs it; `JSON_EVENTS=N` sets the number of events (default 1 M).

use std::io::Write;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use collector_core::event::{ProcessEvent, ProcessEventKind};
use collector_core::CollectionEvent;

fn events() -> Vec<CollectionEvent> {
    let ts = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
    let mut exec = ProcessEvent::new(ProcessEventKind::Exec, ts, 4242, "ebpf-process");
    exec.name = Some("curl".into());
    exec.executable_path = Some("/usr/bin/curl".into());
    exec.command_line = vec!["curl".into(), "-s".into(), "https://example.invalid".into()];
    exec.ppid = Some(1);
    let exit = ProcessEvent::new(ProcessEventKind::Exit, ts, 4243, "ebpf-process");
    vec![CollectionEvent::from(exec), CollectionEvent::from(exit)]
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
    println!(
        "json lines, a String per event: {:.2} M lines/s",
        n as f64 / secs / 1e6
    );
}
