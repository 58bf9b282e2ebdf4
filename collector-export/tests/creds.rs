//! Decentralized JWT authentication: a nats-server in operator mode (memory resolver)
//! and `.creds` files built here from fresh operator, account and user nkeys. The
//! exporter logs in with a good file, publishes, and `collector consume`'s code reads
//! the events back with the same file; a user the server does not trust, and a file
//! that is not a creds file, give clear errors while events keep being spooled.

mod common;

use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use collector_core::config::ExportConfig;
use collector_core::{Delivery, EventBatch, EventSink};
use collector_export::Exporter;
use common::*;
use nkeys::KeyPair;
use tokio_util::sync::CancellationToken;

/// RFC 4648 base64url without padding, as JWTs use.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A NATS JWT: `claims` about `subject`, issued and signed by `issuer`.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({ "typ": "JWT", "alg": "ed25519-nkey" });
    let claims = serde_json::json!({
        "jti": format!("{name}-{now}-{subject}"),
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signing_input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", base64url(&signature))
}

/// A user of `account`: its `.creds` file text.
fn creds(account: &KeyPair) -> String {
    let user = KeyPair::new_user();
    let token = jwt(
        account,
        &user.public_key(),
        "collector",
        serde_json::json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2
        }),
    );
    format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n",
        user.seed().unwrap()
    )
}

/// An operator trusting one account with JetStream: the server configuration, and the
/// account's key (which issues users).
fn operator_mode(store: &std::path::Path) -> (String, KeyPair) {
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    // JetStream needs the server's system account to be set up.
    let system = KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "fleet",
        serde_json::json!({
            "system_account": system.public_key(), "type": "operator", "version": 2
        }),
    );
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({ "type": "account", "version": 2 }),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "collectors",
        serde_json::json!({
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1,
                // JetStream is on for an account whose storage limits are not zero.
                "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
            },
            "type": "account", "version": 2
        }),
    );
    let conf = format!(
        "operator: \"{operator_jwt}\"\n\
         system_account: {}\n\
         resolver: MEMORY\n\
         resolver_preload: {{\n  {}: \"{account_jwt}\"\n  {}: \"{system_jwt}\"\n}}\n\
         jetstream: {{ store_dir: \"{}\" }}\n",
        system.public_key(),
        account.public_key(),
        system.public_key(),
        store.display()
    );
    (conf, account)
}

fn config(url: &str, creds: std::path::PathBuf) -> ExportConfig {
    ExportConfig {
        nats_servers: vec![url.to_owned()],
        host_id: Some("test-host".into()),
        creds_file: Some(creds),
        ..ExportConfig::default()
    }
}

fn feed(sink: &dyn EventSink, pids: std::ops::Range<u32>) {
    for start in pids.clone().step_by(100) {
        let b: EventBatch = (start..(start + 100).min(pids.end))
            .map(exec)
            .collect::<Vec<_>>()
            .into();
        assert_eq!(sink.deliver(&b), Delivery::Accepted);
    }
}

/// An exporter that cannot log in: its error, once 1,000 events are spooled (collection
/// goes on: every batch was accepted).
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
    assert_eq!(
        status.spool_events, 1000,
        "collection goes on into the spool"
    );
    assert_eq!(status.published, 0);
    shutdown.cancel();
    exporter.join().await;
    status.last_error.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_logs_in_publishes_and_consumes() {
    let Some(bin) = nats_server_or_skip("creds_file") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("js");
    let (conf, account) = operator_mode(&store);
    let conf_path = dir.path().join("nats.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let server = NatsServer::start_with(&bin, false, &["-c", conf_path.to_str().unwrap()]);

    let good = dir.path().join("collector.creds");
    std::fs::write(&good, creds(&account)).unwrap();
    let data = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let config = config(&server.url(), good.clone());
    let exporter = Exporter::start(&config, data.path(), shutdown.clone()).unwrap();
    feed(&*exporter.sink(), 0..500);
    let acked = wait_until(Duration::from_secs(20), || {
        exporter.status().acked_events == 500
    })
    .await;
    let status = exporter.status();
    assert!(acked, "{status:?}");
    assert!(
        status.connected && status.last_error.is_none(),
        "{status:?}"
    );
    shutdown.cancel();
    exporter.join().await;

    // Read back with the same creds: every event once.
    let opts = collector_export::consume::ConsumeOptions {
        servers: vec![server.url()],
        subject: "collector.>".into(),
        stream: config.stream.clone(),
        limit: None,
        idle_exit: Some(Duration::from_secs(2)),
        creds_file: Some(good),
    };
    let mut out = Vec::new();
    let summary = collector_export::consume::consume(&opts, &mut out)
        .await
        .expect("consume with the creds file");
    assert_eq!(summary.events, 500);
    let pids: Vec<u32> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["pid"].as_u64().unwrap() as u32
        })
        .collect();
    assert_each_once(&pids, 0..500);

    // Without credentials the server does not let a consumer in.
    let anonymous = collector_export::consume::ConsumeOptions {
        creds_file: None,
        ..opts
    };
    let err = collector_export::consume::consume(&anonymous, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_creds_files_give_clear_errors_and_collection_continues() {
    let Some(bin) = nats_server_or_skip("wrong_creds_file") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (conf, _account) = operator_mode(&dir.path().join("js"));
    let conf_path = dir.path().join("nats.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let server = NatsServer::start_with(&bin, false, &["-c", conf_path.to_str().unwrap()]);

    // A user signed by an account this operator never issued.
    let stranger = dir.path().join("stranger.creds");
    std::fs::write(&stranger, creds(&KeyPair::new_account())).unwrap();
    let error = error_while_spooling(&config(&server.url(), stranger)).await;
    assert!(error.contains("refused the credentials"), "{error}");
    assert!(error.contains("export.creds_file"), "{error}");

    // Not a creds file at all.
    let garbage = dir.path().join("garbage.creds");
    std::fs::write(&garbage, "this is not a creds file\n").unwrap();
    let error = error_while_spooling(&config(&server.url(), garbage.clone())).await;
    assert!(error.contains(&garbage.display().to_string()), "{error}");
    assert!(error.contains("export.creds_file"), "{error}");

    // A file that is not there.
    let missing = dir.path().join("missing.creds");
    let error = error_while_spooling(&config(&server.url(), missing.clone())).await;
    assert!(error.contains(&missing.display().to_string()), "{error}");
    assert!(error.contains("export.creds_file"), "{error}");
}
