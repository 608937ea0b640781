//! Prometheus metrics: one process-wide recorder, rendered at `/metrics`, and the HTTP
//! middleware that counts requests by route and status.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often the histograms' recorded samples are folded into their buckets. The recorder
/// keeps every observation until then or until `/metrics` is rendered: with no upkeep, a
/// service nobody scrapes grows for ever, and a scrape every minute lets it grow by a minute's
/// worth of samples. In the connect benchmark (about 500 000 requests in 50 s) the api and the
/// oauth-worker, unscraped, ended 10 MiB larger than with upkeep.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's Prometheus handle, installing the recorder on first use. Several services in
/// one process (tests) share it. Called within a tokio runtime (as the services do), it also
/// starts the recorder's upkeep on it, every [`UPKEEP_INTERVAL`].
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .expect("static bucket list is non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first, which this crate never does.
            let _ = metrics::set_global_recorder(recorder);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(upkeep(handle.clone(), UPKEEP_INTERVAL));
            }
            handle
        })
        .clone()
}

/// Folds recorded histogram samples into their buckets every `interval`, for ever.
async fn upkeep(handle: PrometheusHandle, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        handle.run_upkeep();
    }
}

/// The `route` label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// axum middleware: `http_requests_total{service,method,route,status}` and
/// `http_request_duration_seconds{service,method,route}`. Every label is bounded, whatever a
/// client sends: the route is the matched pattern (`/api/connectors/{subaccountId}`) or
/// `unmatched`, never the raw path; the method is one of the standard nine or `other`; the
/// status is the one the service answered.
pub async fn track_http(service: &'static str, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "service" => service, "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("http_request_duration_seconds", "service" => service, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The `method` label: a standard method by its name, anything else (`FOO`, `get`, a
/// thousand random tokens) as `other`, so a client cannot create series.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_keep_their_name_and_everything_else_is_other() {
        for name in [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
        ] {
            let method = Method::from_bytes(name.as_bytes()).expect("method");
            assert_eq!(method_label(&method), name);
        }
        for made_up in ["FOO", "get", "PROPFIND", "X-RANDOM-1234"] {
            let method = Method::from_bytes(made_up.as_bytes()).expect("extension method");
            assert_eq!(method_label(&method), "other", "{made_up}");
        }
    }
}
