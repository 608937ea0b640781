//! `/healthz` (the process is alive), `/readyz` (NATS, MongoDB and Redis reachable, with the
//! reason when not) and `/metrics` (Prometheus text), the same on every service.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::infrastructure::Infrastructure;

/// How long one dependency may take to answer a readiness check. The checks run at once, so
/// `/readyz` answers within about this long even while a dependency hangs (a stopped or
/// restarting server that keeps its sockets open): under the one second an orchestrator's
/// probe waits by default, so a hung dependency reads as "not ready", never as a dead probe.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(700);

#[derive(Clone, Debug)]
struct HealthState {
    service: &'static str,
    infra: Infrastructure,
    metrics: PrometheusHandle,
}

/// The three endpoints, to be merged into a service's router.
pub fn router(service: &'static str, infra: Infrastructure) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(HealthState {
            service,
            infra,
            // Installed now, not at the first scrape, so nothing recorded before it is lost.
            metrics: crate::metrics::handle(),
        })
}

async fn healthz(State(state): State<HealthState>) -> Json<serde_json::Value> {
    Json(json!({ "status": "alive", "service": state.service }))
}

async fn readyz(State(state): State<HealthState>) -> Response {
    let checks = state.infra.readiness(CHECK_TIMEOUT).await;
    let ready = checks.is_ready();
    if !ready {
        tracing::warn!(?checks, "not ready");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "service": state.service,
        "checks": checks,
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<HealthState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
