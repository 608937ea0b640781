//! Serving HTTP: binding a configured address, and running a router until shutdown with the
//! layers every service wants (request metrics, request tracing).

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::startup::StartupError;

/// Binds `addr`; a failure names the setting it came from.
pub async fn bind(setting: &'static str, addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| StartupError::Bind {
            setting,
            addr: addr.to_string(),
            cause,
        })
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting
/// connections and waits for in-flight requests to finish.
pub async fn serve(
    service: &'static str,
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), StartupError> {
    let router = router
        .layer(axum::middleware::from_fn(move |req, next| {
            crate::metrics::track_http(service, req, next)
        }))
        .layer(TraceLayer::new_for_http());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(service, %addr, "listening");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|e| StartupError::Failed {
            what: "HTTP server",
            cause: e.to_string(),
        })
}
