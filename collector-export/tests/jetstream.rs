//! The exporter against a real nats-server: delivery, server crash, exporter crash,
//! full spool, and the errors of a misconfigured connection.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use collector_core::config::{ExportConfig, ExportPayload};
use collector_core::{Delivery, EventBatch, EventSink};
use collector_export::Exporter;
use common::*;
use tokio_util::sync::CancellationToken;

fn config(url: &str) -> ExportConfig {
    ExportConfig {
        nats_servers: vec![url.to_owned()],
        host_id: Some("test-host".into()),
        ..ExportConfig::default()
    }
}

fn batch(pids: std::ops::Range<u32>) -> EventBatch {
    pids.map(exec).collect::<Vec<_>>().into()
}

/// Feeds `pids` in batches of 100 through the sink; every batch must be accepted at once.
fn feed(sink: &dyn EventSink, pids: std::ops::Range<u32>) {
    for start in pids.clone().step_by(100) {
        let b = batch(start..(start + 100).min(pids.end));
        assert_eq!(sink.deliver(&b), Delivery::Accepted);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_events_are_published_and_consumed_once() {
    let Some(bin) = nats_server_or_skip("hundred_thousand_events") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let data = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let exporter = Exporter::start(&config(&server.url()), data.path(), shutdown.clone()).unwrap();
    feed(&*exporter.sink(), 0..100_000);
    let done = wait_until(Duration::from_secs(120), || {
        exporter.status().spool_events == 0
    })
    .await;
    let status = exporter.status();
    assert!(done, "not drained: {status:?}");
    assert!(status.connected);
    assert_eq!(status.spooled, 100_000);
    assert_eq!(status.acked, 100_000);
    assert_eq!(status.duplicates, 0);
    assert!(status.dropped.is_empty(), "{status:?}");
    assert_eq!(status.oldest_unacked_age_seconds, 0.0);
    let pids = consumed_pids(&server.url(), "COLLECTOR").await;
    assert_each_once(&pids, 0..100_000);
    // In order, too: the spool is published in sequence.
    assert!(pids.windows(2).all(|w| w[0] < w[1]));
    shutdown.cancel();
    exporter.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_payloads_read_back_the_same() {
    let Some(bin) = nats_server_or_skip("json_payloads") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let data = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let config = ExportConfig {
        payload: ExportPayload::Json,
        subject_template: "collector.{host_id}.{domain}.{kind}.json".into(),
        ..config(&server.url())
    };
    let exporter = Exporter::start(&config, data.path(), shutdown.clone()).unwrap();
    feed(&*exporter.sink(), 0..500);
    assert!(
        wait_until(Duration::from_secs(30), || exporter.status().spool_events
            == 0)
        .await
    );
    assert_each_once(&consumed_pids(&server.url(), "COLLECTOR").await, 0..500);
    // The subject came from the template.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("COLLECTOR").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 500);
    let last = stream
        .get_last_raw_message_by_subject("collector.test-host.process.exec.json")
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&last.payload).unwrap()["pid"],
        499
    );
    let id = last
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .unwrap_or_else(|| panic!("no Nats-Msg-Id in {:?}", last.headers))
        .as_str()
        .to_owned();
    assert!(id.starts_with("test-host-") && id.ends_with("-500"), "{id}");
    shutdown.cancel();
    exporter.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_stream_and_restarted_5s_later_loses_nothing() {
    let Some(bin) = nats_server_or_skip("server_killed") else {
        return;
    };
    let mut server = NatsServer::start(&bin);
    let data = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let exporter =
        Arc::new(Exporter::start(&config(&server.url()), data.path(), shutdown.clone()).unwrap());
    // 60,000 events over about 6 s, as a busy host would produce them.
    let feeder = {
        let sink = exporter.sink();
        tokio::task::spawn_blocking(move || {
            for start in (0..60_000u32).step_by(100) {
                let started = std::time::Instant::now();
                assert_eq!(sink.deliver(&batch(start..start + 100)), Delivery::Accepted);
                // Spooling must stay fast while the server is gone.
                assert!(started.elapsed() < Duration::from_secs(1));
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    assert!(wait_until(Duration::from_secs(30), || exporter.status().acked > 10_000).await);
    server.kill();
    let acked_at_kill = exporter.status().acked;
    assert!(
        wait_until(Duration::from_secs(10), || !exporter.status().connected).await,
        "the exporter did not notice the server is gone"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = exporter.status();
    assert!(!during.connected);
    assert!(
        during.spool_events > 0,
        "events spool while the server is down"
    );
    assert!(during.oldest_unacked_age_seconds > 1.0, "{during:?}");
    assert!(during.last_error.is_some());
    server.restart();
    feeder.await.unwrap();
    let drained = wait_until(Duration::from_secs(60), || {
        let s = exporter.status();
        s.spooled == 60_000 && s.spool_events == 0
    })
    .await;
    let status = exporter.status();
    assert!(drained, "not drained after restart: {status:?}");
    assert!(status.connected);
    assert!(status.last_error.is_none());
    eprintln!("acked at kill {acked_at_kill}, final {status:?}");
    // Every event once in the stream: resends were within the duplicate window, and
    // JetStream dropped the copies it already had (counted in `duplicates`).
    let pids = consumed_pids(&server.url(), "COLLECTOR").await;
    assert_each_once(&pids, 0..60_000);
    // Resends are the publishes beyond one per event; JetStream recognised as duplicates
    // at most those (the ones it had stored before the crash, whose acks were lost).
    let resent = status.published - 60_000;
    assert!(status.duplicates <= resent, "{status:?}");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_messages_survive_a_server_crash_once_each() {
    let Some(bin) = nats_server_or_skip("packed_messages") else {
        return;
    };
    let mut server = NatsServer::start(&bin);
    let data = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let config = ExportConfig {
        max_events_per_message: 30,
        ..config(&server.url())
    };
    let exporter = Exporter::start(&config, data.path(), shutdown.clone()).unwrap();
    let sink = exporter.sink();
    let mixed = |pids: std::ops::Range<u32>| -> EventBatch {
        pids.map(exec_or_exit).collect::<Vec<_>>().into()
    };
    for start in (0..20_000u32).step_by(100) {
        assert_eq!(sink.deliver(&mixed(start..start + 100)), Delivery::Accepted);
    }
    assert!(
        wait_until(Duration::from_secs(30), || exporter.status().acked_events
            > 2_000)
        .await
    );
    server.kill();
    for start in (20_000..40_000u32).step_by(100) {
        assert_eq!(sink.deliver(&mixed(start..start + 100)), Delivery::Accepted);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart();
    assert!(
        wait_until(Duration::from_secs(60), || exporter.status().spool_events
            == 0)
        .await,
        "{:?}",
        exporter.status()
    );
    let status = exporter.status();
    eprintln!("packed: {status:?}");
    // 100 events per batch, two subjects, 30 per message: 50 + 50 -> 2 x (30, 20) = 4
    // messages per batch; resent messages carry the same ids, so the stream holds each
    // message once.
    assert!(
        status.duplicates <= status.published - 400 * 4,
        "{status:?}"
    );
    assert!(status.acked_events >= 40_000, "{status:?}");
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("COLLECTOR")
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1600);
    assert_each_once(&consumed_pids(&server.url(), "COLLECTOR").await, 0..40_000);
    shutdown.cancel();
    exporter.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_sigkilled_mid_stream_resends_what_was_unacknowledged() {
    let Some(bin) = nats_server_or_skip("exporter_sigkilled") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let data = tempfile::tempdir().unwrap();
    let feeder = env!("CARGO_BIN_EXE_export-feeder");
    let mut child = Command::new(feeder)
        .args(["--nats", &server.url(), "--data-dir"])
        .arg(data.path())
        .args(["--events", "100000", "--batch", "100", "--pause-us", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // `appended N`: every pid below N is in the spool (one write per batch).
    let mut committed = 0u32;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        committed = line
            .unwrap()
            .strip_prefix("appended ")
            .unwrap()
            .parse()
            .unwrap();
        if committed >= 30_000 {
            break;
        }
    }
    // SIGKILL: no chance to flush, persist or say goodbye.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(committed >= 30_000);

    let out = Command::new(feeder)
        .args(["--nats", &server.url(), "--data-dir"])
        .arg(data.path())
        .args(["--events", "0", "--drain", "--drain-timeout-s", "60"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let status: serde_json::Value = serde_json::from_str(
        text.lines()
            .find_map(|l| l.strip_prefix("status "))
            .expect("status line"),
    )
    .unwrap();
    assert_eq!(status["spool_events"], 0, "{status}");
    let resent = status["published"].as_u64().unwrap();
    eprintln!("committed {committed} before SIGKILL; resent {resent} after restart");
    // Only what was not acknowledged is resent (the ack cursor survived), and the
    // restart had something to resend.
    assert!(resent < u64::from(committed), "{status}");
    let pids = consumed_pids(&server.url(), "COLLECTOR").await;
    // Everything committed before the kill arrived, once; a batch written after the
    // last `appended` line we read may be there too, once.
    let max = pids.iter().copied().max().unwrap();
    assert!(max + 1 >= committed);
    assert_each_once(&pids, 0..max + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_the_oldest_and_counts_them() {
    let Some(bin) = nats_server_or_skip("full_spool") else {
        return;
    };
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let config = ExportConfig {
        spool_max_bytes: 1 << 20,
        ..config(&format!("nats://127.0.0.1:{port}"))
    };
    let exporter = Exporter::start(&config, data.path(), shutdown.clone()).unwrap();
    // About 4 MiB of events into a 1 MiB spool while no server runs.
    feed(&*exporter.sink(), 0..30_000);
    let status = exporter.status();
    let dropped = status
        .dropped
        .get("export_spool_full")
        .copied()
        .unwrap_or(0);
    assert!(dropped > 0, "{status:?}");
    assert_eq!(dropped + status.spool_events, 30_000, "{status:?}");
    assert!(status.spool_bytes <= (1 << 20) + (64 << 10), "{status:?}");
    assert!(!status.connected);
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("cannot connect"),
        "{status:?}"
    );

    // The server comes up: what the spool kept arrives, the newest events, each once.
    let server = NatsServer::start_on(&bin, port, true, &[]);
    assert!(
        wait_until(Duration::from_secs(60), || exporter.status().spool_events
            == 0)
        .await
    );
    let pids = consumed_pids(&server.url(), "COLLECTOR").await;
    assert_each_once(&pids, dropped as u32..30_000);
    assert_eq!(exporter.status().dropped["export_spool_full"], dropped);
    shutdown.cancel();
    exporter.join().await;
}

/// Starts an exporter against `config`, feeds 1,000 events while it cannot publish, and
/// returns the error it reports. Collection goes on: every batch is accepted and spooled.
async fn error_while_spooling(config: &ExportConfig) -> String {
    let data = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let exporter = Exporter::start(config, data.path(), shutdown.clone()).unwrap();
    feed(&*exporter.sink(), 0..1000);
    let reported = wait_until(Duration::from_secs(20), || {
        exporter.status().last_error.is_some()
    })
    .await;
    let status = exporter.status();
    assert!(reported, "{status:?}");
    assert!(!status.connected);
    assert_eq!(status.spool_events, 1000);
    assert_eq!(status.published, 0);
    shutdown.cancel();
    exporter.join().await;
    status.last_error.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_give_a_clear_error_and_collection_continues() {
    let Some(bin) = nats_server_or_skip("wrong_credentials") else {
        return;
    };
    let server = NatsServer::start_with(&bin, true, &["--user", "collector", "--pass", "right"]);
    let config = ExportConfig {
        user: Some("collector".into()),
        password: Some("wrong".into()),
        ..config(&server.url())
    };
    let error = error_while_spooling(&config).await;
    assert!(error.contains("refused the credentials"), "{error}");
    assert!(error.contains("export.user/password"), "{error}");

    // The right password works.
    let data = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let config = ExportConfig {
        password: Some("right".into()),
        ..config
    };
    let exporter = Exporter::start(&config, data.path(), shutdown.clone()).unwrap();
    feed(&*exporter.sink(), 0..100);
    assert!(wait_until(Duration::from_secs(20), || exporter.status().acked == 100).await);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_jetstream_gives_a_clear_error() {
    let Some(bin) = nats_server_or_skip("no_jetstream") else {
        return;
    };
    let server = NatsServer::start_with(&bin, false, &[]);
    let error = error_while_spooling(&config(&server.url())).await;
    assert!(error.contains("has no JetStream"), "{error}");
    assert!(error.contains("--jetstream"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_does_not_cover_our_subjects_is_refused() {
    let Some(bin) = nats_server_or_skip("stream_subjects") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let client = async_nats::connect(server.url()).await.unwrap();
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: "COLLECTOR".into(),
            subjects: vec!["other.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let error = error_while_spooling(&config(&server.url())).await;
    assert!(error.contains("do not cover"), "{error}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the
/// openssl CLI.
fn make_certs(dir: &std::path::Path) -> bool {
    let run = |args: &str| {
        Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    // Extensions make v3 certificates; rustls refuses v1 ones.
    std::fs::write(
        dir.join("client.ext"),
        "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:collector\n",
    )
    .unwrap();
    run("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca")
        && run("req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1")
        && run("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext")
        && run("req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=collector")
        && run("x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_mismatches_give_a_clear_error_and_the_right_ca_connects() {
    let Some(bin) = nats_server_or_skip("tls_mismatch") else {
        return;
    };
    // The client insists on TLS, the server has none.
    let plain = NatsServer::start(&bin);
    let error = error_while_spooling(&ExportConfig {
        tls_required: true,
        ..config(&plain.url())
    })
    .await;
    assert!(error.contains("TLS"), "{error}");
    assert!(error.contains("tls_ca_file"), "{error}");

    let certs = tempfile::tempdir().unwrap();
    if !make_certs(certs.path()) {
        if std::env::var_os("COLLECTOR_REQUIRE_KERNEL").is_some() {
            panic!("openssl could not make test certificates");
        }
        eprintln!("skipping the TLS server half: openssl could not make certificates");
        return;
    }
    let p = |f: &str| certs.path().join(f).to_str().unwrap().to_owned();
    let tls = NatsServer::start_with(
        &bin,
        true,
        &[
            "--tls",
            "--tlscert",
            &p("server.pem"),
            "--tlskey",
            &p("server.key"),
        ],
    );
    // The server speaks TLS with a certificate from a CA the client does not trust.
    let error = error_while_spooling(&config(&tls.url())).await;
    assert!(error.contains("TLS"), "{error}");

    // With the CA, it connects and publishes.
    let data = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let config = ExportConfig {
        tls_ca_file: Some(p("ca.pem").into()),
        tls_required: true,
        ..config(&tls.url())
    };
    let exporter = Exporter::start(&config, data.path(), shutdown.clone()).unwrap();
    feed(&*exporter.sink(), 0..100);
    let ok = wait_until(Duration::from_secs(20), || exporter.status().acked == 100).await;
    assert!(ok, "{:?}", exporter.status());
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_verifies_clients_needs_the_client_certificate() {
    let Some(bin) = nats_server_or_skip("mutual_tls") else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    assert!(
        make_certs(certs.path()),
        "openssl could not make test certificates"
    );
    let p = |f: &str| certs.path().join(f).to_str().unwrap().to_owned();
    let server = NatsServer::start_with(
        &bin,
        true,
        &[
            "--tlsverify",
            "--tlscert",
            &p("server.pem"),
            "--tlskey",
            &p("server.key"),
            "--tlscacert",
            &p("ca.pem"),
        ],
    );
    let with_ca = ExportConfig {
        tls_ca_file: Some(p("ca.pem").into()),
        ..config(&server.url())
    };
    // The CA alone is not enough: the server wants a client certificate.
    let error = error_while_spooling(&with_ca).await;
    assert!(
        error.contains("TLS") || error.contains("cannot connect"),
        "{error}"
    );

    let data = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let config = ExportConfig {
        tls_cert_file: Some(p("client.pem").into()),
        tls_key_file: Some(p("client.key").into()),
        ..with_ca
    };
    let exporter = Exporter::start(&config, data.path(), shutdown.clone()).unwrap();
    feed(&*exporter.sink(), 0..100);
    let ok = wait_until(Duration::from_secs(20), || exporter.status().acked == 100).await;
    assert!(ok, "{:?}", exporter.status());
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_authentication_works_and_a_wrong_key_is_refused() {
    let Some(bin) = nats_server_or_skip("nkey") else {
        return;
    };
    let allowed = nkeys::KeyPair::new_user();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            allowed.public_key()
        ),
    )
    .unwrap();
    let server = NatsServer::start_with(&bin, true, &["-c", conf.to_str().unwrap()]);

    let stranger = dir.path().join("stranger.nk");
    std::fs::write(&stranger, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let error = error_while_spooling(&ExportConfig {
        nkey_seed_file: Some(stranger),
        ..config(&server.url())
    })
    .await;
    assert!(error.contains("refused the credentials"), "{error}");

    let seed = dir.path().join("collector.nk");
    std::fs::write(&seed, allowed.seed().unwrap()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let config = ExportConfig {
        nkey_seed_file: Some(seed),
        ..config(&server.url())
    };
    let exporter = Exporter::start(&config, data.path(), shutdown.clone()).unwrap();
    feed(&*exporter.sink(), 0..100);
    let ok = wait_until(Duration::from_secs(20), || exporter.status().acked == 100).await;
    assert!(ok, "{:?}", exporter.status());
    shutdown.cancel();
}
