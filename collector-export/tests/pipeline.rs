//! The exporter as a sink of a real `Collector`: while no NATS server is reachable,
//! collection is not slowed and nothing is lost; everything waits in the spool, and
//! arrives once a server appears.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector_core::config::ExportConfig;
use collector_core::{CollectionEvent, Collector, CollectorConfig, EventSource, SourceCaps};
use collector_export::Exporter;
use common::*;
use tokio::sync::mpsc;

/// Emits `count` exec events as fast as the pipeline takes them, then idles.
struct Burst {
    count: u32,
}

#[async_trait::async_trait]
impl EventSource for Burst {
    fn name(&self) -> &'static str {
        "burst"
    }
    fn capabilities(&self) -> SourceCaps {
        SourceCaps::PROCESS
    }
    async fn start(
        &self,
        tx: mpsc::Sender<CollectionEvent>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        for pid in 0..self.count {
            tx.send(exec(pid)).await?;
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
    async fn stop(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_goes_on_into_the_spool_while_nats_is_down() {
    let Some(bin) = nats_server_or_skip("collection_goes_on") else {
        return;
    };
    const EVENTS: u32 = 50_000;
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let config = CollectorConfig::default()
        .with_data_dir(data.path())
        .with_telemetry(false);
    let export = ExportConfig {
        nats_servers: vec![format!("nats://127.0.0.1:{port}")],
        ..ExportConfig::default()
    };
    let mut collector = Collector::new(config).unwrap();
    collector
        .register(Box::new(Burst { count: EVENTS }))
        .unwrap();
    let handle = collector.handle();
    let exporter = Exporter::start(&export, data.path(), handle.shutdown_token()).unwrap();
    collector.add_sink(exporter.sink());
    let run = tokio::spawn(collector.run());

    // Every event is received and handed to the export sink without a drop, with no
    // server at all.
    let all_in = wait_until(Duration::from_secs(60), || {
        handle.status().counters.events_delivered == u64::from(EVENTS)
    })
    .await;
    let status = handle.status();
    assert!(all_in, "{:?}", status.counters);
    assert!(
        status.counters.dropped.values().all(|&n| n == 0),
        "{:?}",
        status.counters
    );
    assert_eq!(
        status
            .counters
            .sink_dropped
            .get("export")
            .copied()
            .unwrap_or(0),
        0
    );
    let export_status = exporter.status();
    assert!(!export_status.connected);
    assert_eq!(export_status.spool_events, u64::from(EVENTS));
    assert!(export_status.last_error.unwrap().contains("cannot connect"));

    // A server appears: the backlog drains, in order, each event once.
    let server = NatsServer::start_on(&bin, port, true, &[]);
    assert!(
        wait_until(Duration::from_secs(60), || exporter.status().spool_events
            == 0)
        .await
    );
    let pids = consumed_pids(&server.url(), "COLLECTOR").await;
    assert_each_once(&pids, 0..EVENTS);
    assert!(pids.windows(2).all(|w| w[0] < w[1]));

    handle.shutdown();
    run.await.unwrap().unwrap();
    exporter.join().await;
}
