//! The metrics endpoint of `collector run --metrics-addr HOST:PORT`: Prometheus text at
//! `/metrics` and a health answer at `/healthz`, served by axum (hyper) so that request
//! parsing, limits and bad requests are handled by a well-kept HTTP stack.
//!
//! Both answers are computed from one status snapshot per request; a scrape never blocks
//! the pipeline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use collector_core::status::{HealthState, StatusSnapshot};

/// Content type of the classic Prometheus text exposition (what `render` produces).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where the endpoint gets what it serves.
pub trait MetricsSource: Send + Sync + 'static {
    /// The current status.
    fn status(&self) -> StatusSnapshot;
    /// The status rendered as Prometheus text (with whatever else the daemon adds, such
    /// as its own CPU and memory).
    fn render(&self, status: &StatusSnapshot) -> String;
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsServerError {
    /// The address could not be bound.
    #[error("cannot listen for metrics on {addr} (is the port in use, or the address not local?)")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet serving, metrics endpoint.
pub struct MetricsServer {
    listener: tokio::net::TcpListener,
    source: Arc<dyn MetricsSource>,
}

impl MetricsServer {
    /// Binds `addr` (`127.0.0.1:9464`; port 0 picks a free one).
    pub async fn bind(
        addr: &str,
        source: Arc<dyn MetricsSource>,
    ) -> Result<Self, MetricsServerError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsServerError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(Self { listener, source })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .with_state(self.source);
        if let Err(e) = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("metrics endpoint stopped: {e}");
        }
    }
}

async fn metrics(State(source): State<Arc<dyn MetricsSource>>) -> Response {
    let status = source.status();
    let body = source.render(&status);
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body).into_response()
}

/// 200 when every source is healthy or deliberately degraded (running, with a reduced
/// capability it reported); 503 naming the sources that are not, otherwise.
async fn healthz(State(source): State<Arc<dyn MetricsSource>>) -> Response {
    let status = source.status();
    let unhealthy: Vec<String> = status
        .sources
        .iter()
        .filter(|s| !matches!(s.health, HealthState::Healthy | HealthState::Degraded))
        .map(|s| format!("{}: {:?}", s.name, s.health).to_lowercase())
        .collect();
    if status.sources.is_empty() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no source is running\n").into_response();
    }
    if unhealthy.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not healthy: {}\n", unhealthy.join(", ")),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector_core::status::{PipelineCounters, SourceStatus};
    use collector_core::{SourceCaps, SourceStats};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Fake(Mutex<HealthState>);

    impl MetricsSource for Fake {
        fn status(&self) -> StatusSnapshot {
            StatusSnapshot {
                version: "0".into(),
                component_name: "c".into(),
                uptime_seconds: 1.0,
                capabilities: SourceCaps::PROCESS,
                sources: vec![SourceStatus {
                    restarts: 0,
                    name: "ebpf-process".into(),
                    capabilities: SourceCaps::PROCESS,
                    health: *self.0.lock().unwrap(),
                    last_error: None,
                    events_received: 5,
                    events_by_kind: Default::default(),
                    dropped: Default::default(),
                    stats: SourceStats::default(),
                    queue_depth: 0,
                    queue_high_water: 0,
                }],
                counters: PipelineCounters::default(),
                export: None,
                domains: Vec::new(),
                processes: None,
            }
        }
        fn render(&self, status: &StatusSnapshot) -> String {
            collector_core::metrics::render_prometheus(status)
        }
    }

    async fn request(addr: SocketAddr, raw: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut out),
        )
        .await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
    }

    #[tokio::test]
    async fn serves_metrics_health_and_refuses_bad_requests_without_stopping() {
        let fake = Arc::new(Fake(Mutex::new(HealthState::Healthy)));
        let server = MetricsServer::bind("127.0.0.1:0", fake.clone())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let stop = tokio_util_stop();
        let task = tokio::spawn(server.run(stop.1));

        let metrics = request(addr, &get("/metrics")).await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains(PROMETHEUS_TEXT), "{metrics}");
        assert!(
            metrics.contains("collector_source_events_received_total{source=\"ebpf-process\"} 5")
        );

        assert!(request(addr, &get("/healthz"))
            .await
            .starts_with("HTTP/1.1 200"));
        *fake.0.lock().unwrap() = HealthState::Failed;
        let health = request(addr, &get("/healthz")).await;
        assert!(health.starts_with("HTTP/1.1 503"), "{health}");
        assert!(health.contains("ebpf-process: failed"), "{health}");

        // A wrong path, a huge header, garbage: each refused with a 4xx...
        assert!(request(addr, &get("/nope"))
            .await
            .starts_with("HTTP/1.1 404"));
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1 << 20)
        );
        let answer = request(addr, huge.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 4") || answer.is_empty(),
            "huge header: {answer:.200}"
        );
        let garbage = request(addr, b"\x16\x03\x01\x00\xff\xff not http\r\n\r\n").await;
        assert!(
            garbage.starts_with("HTTP/1.1 400") || garbage.is_empty(),
            "{garbage:.200}"
        );
        // ... and the endpoint keeps serving.
        assert!(request(addr, &get("/metrics"))
            .await
            .starts_with("HTTP/1.1 200"));

        let _ = stop.0.send(());
        task.await.unwrap();
    }

    fn tokio_util_stop() -> (
        tokio::sync::oneshot::Sender<()>,
        impl Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        (tx, async move {
            let _ = rx.await;
        })
    }

    #[tokio::test]
    async fn a_port_in_use_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let Err(err) =
            MetricsServer::bind(&addr, Arc::new(Fake(Mutex::new(HealthState::Healthy)))).await
        else {
            panic!("bound a port in use")
        };
        assert!(err.to_string().contains(&addr), "{err}");
    }
}
