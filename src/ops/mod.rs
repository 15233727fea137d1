//! The operator's window on a running worker: a small HTTP server (only
//! started by `enricher run`, on `[http] listen`) that answers
//! `GET /metrics` (Prometheus text, rendered from [`Metrics`]), `GET /healthz`
//! (the process answers) and `GET /readyz` (broker, Postgres and Redis
//! reachable and the worker consuming, each check bounded by
//! [`readiness::CHECK_TIMEOUT`]), and the sampler that refreshes the gauges
//! read from Postgres and the lanes. It never serves customer data.

pub mod readiness;
pub mod sampler;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::worker::metrics::Metrics;
use readiness::Readiness;

/// Why the HTTP endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// `[http] listen` is not `host:port`.
    #[error("http.listen: `{0}` is not host:port (or \"off\")")]
    BadAddress(String),
    /// The address could not be bound.
    #[error("http.listen: cannot listen on {address}: {source}")]
    Bind {
        /// The configured address.
        address: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// The configured address, or `None` when the endpoint is switched off
/// (empty or `off`).
pub fn listen_address(setting: &str) -> Result<Option<SocketAddr>, HttpError> {
    let setting = setting.trim();
    if setting.is_empty() || setting.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    setting
        .parse()
        .map(Some)
        .map_err(|_| HttpError::BadAddress(setting.to_owned()))
}

/// A bound listener, served by [`serve`].
pub struct OpsListener(TcpListener);

impl OpsListener {
    /// Binds `address` (at start-up, so a taken port stops the worker).
    pub async fn bind(address: SocketAddr) -> Result<OpsListener, HttpError> {
        TcpListener::bind(address)
            .await
            .map(OpsListener)
            .map_err(|source| HttpError::Bind {
                address: address.to_string(),
                source,
            })
    }

    /// The address actually bound (port 0 picks a free one).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.0.local_addr().ok()
    }
}

/// Serves the endpoints until the task is aborted.
pub async fn serve(listener: OpsListener, metrics: Arc<Metrics>, readiness: Arc<Readiness>) {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Shared { metrics, readiness });
    if let Err(error) = axum::serve(listener.0, app).await {
        tracing::error!(error = %error, "the metrics and health endpoint stopped");
    }
}

async fn render_metrics(State(shared): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
}

async fn ready(State(shared): State<Shared>) -> impl IntoResponse {
    let report = shared.readiness.check().await;
    let status = if report.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, report.to_string())
}
