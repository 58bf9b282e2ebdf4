//! Every error of the exporter prints its causes once: an error's own message never
//! repeats its source's, and `collector_core::report` prints the chain in order. The
//! errors come from real failures (a refused connection, a spool under a file, a
//! payload that is not an event), no NATS server needed.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use collector_core::config::ExportConfig;
use collector_export::consume::{consume, ConsumeError, ConsumeOptions};
use collector_export::message::decode_message;
use collector_export::publisher::connect;
use collector_export::{ExportError, Spool, SpoolError};

/// A local URL nothing listens on: the port of a listener just closed.
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("nats://127.0.0.1:{port}")
}

/// The messages of `error` and its causes, outermost first.
fn chain(error: &(dyn Error + 'static)) -> Vec<String> {
    let mut texts = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        texts.push(e.to_string());
        next = e.source();
    }
    texts
}

/// Checks the rule on every link of `error`'s chain and that the printed report holds
/// the root cause exactly once; returns the report.
fn assert_each_cause_once(error: &(dyn Error + 'static), root_cause: &str) -> String {
    let texts = chain(error);
    assert!(texts.len() >= 2, "a nested error: {texts:?}");
    for pair in texts.windows(2) {
        assert!(
            !pair[0].contains(&pair[1]),
            "`{}` repeats its cause `{}`",
            pair[0],
            pair[1]
        );
    }
    let report = collector_core::report(error);
    assert_eq!(report, texts.join(": "));
    assert_eq!(
        report.matches(root_cause).count(),
        1,
        "`{root_cause}` once in `{report}`"
    );
    for text in &texts {
        assert!(report.contains(text.as_str()), "{text} in {report}");
    }
    report
}

#[tokio::test]
async fn a_refused_connection_prints_each_cause_once() {
    let export = ExportConfig {
        nats_servers: vec![refused_url()],
        ..ExportConfig::default()
    };
    let err = connect(&export, Arc::new(tokio::sync::Notify::new()))
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, ExportError::Unreachable { .. }), "{err:?}");
    // The OS's words for ECONNREFUSED, as the root cause carries them.
    let refused = std::io::Error::from_raw_os_error(libc_econnrefused()).to_string();
    let report = assert_each_cause_once(&err, &refused);
    assert!(
        report.starts_with("cannot connect to NATS server nats://127.0.0.1:"),
        "{report}"
    );
    assert!(report.contains("is it running and reachable?"), "{report}");
}

#[tokio::test]
async fn consume_from_a_refused_server_prints_each_cause_once() {
    let opts = ConsumeOptions {
        servers: vec![refused_url()],
        subject: "collector.>".into(),
        stream: "COLLECTOR".into(),
        limit: Some(1),
        idle_exit: Some(Duration::from_secs(1)),
        creds_file: None,
    };
    let err = consume(&opts, &mut Vec::new())
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, ConsumeError::Connect { .. }), "{err:?}");
    let refused = std::io::Error::from_raw_os_error(libc_econnrefused()).to_string();
    assert_each_cause_once(&err, &refused);
}

#[test]
fn a_spool_that_cannot_be_created_prints_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let err = Spool::open(&file.join("spool"), 1 << 20).expect_err("a file is in the way");
    assert!(matches!(err, SpoolError::Io { .. }), "{err:?}");
    let root = std::io::Error::from_raw_os_error(20).to_string(); // ENOTDIR
    let report = assert_each_cause_once(&err, &root);
    assert!(report.contains("check that the data directory"), "{report}");
    // Through the exporter's own error it is the same chain, printed the same way.
    let wrapped = ExportError::from(err);
    assert_eq!(collector_core::report(&wrapped), report);
}

#[test]
fn a_payload_that_is_not_an_event_prints_each_cause_once() {
    let err = decode_message(&[0xff; 8], false).expect_err("not protobuf");
    let texts = chain(&err);
    assert_each_cause_once(&err, texts.last().unwrap());
    let err = decode_message(b"{not json", false).expect_err("not JSON");
    let texts = chain(&err);
    assert_each_cause_once(&err, texts.last().unwrap());
}

/// ECONNREFUSED on Linux.
fn libc_econnrefused() -> i32 {
    111
}
