//! Serving HTTP: binding a configured address, and running a router until shutdown with the
//! layers every service wants (request metrics, request tracing).

use std::net::SocketAddr;
use std::time::Duration;

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
/// connections and waits for in-flight requests to finish — at most `grace`
/// (`SHUTDOWN_GRACE`), after which they are dropped.
pub async fn serve(
    service: &'static str,
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), StartupError> {
    let router = router
        .layer(axum::middleware::from_fn(move |req, next| {
            crate::metrics::track_http(service, req, next)
        }))
        .layer(TraceLayer::new_for_http());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(service, %addr, "listening");
    }
    let server =
        axum::serve(listener, router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let grace_expired = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served.map_err(|e| StartupError::Failed {
            what: "HTTP server",
            cause: e.to_string(),
        }),
        () = grace_expired => {
            tracing::warn!(service, ?grace, "in-flight requests outlived SHUTDOWN_GRACE; dropping them");
            Ok(())
        }
    }
}
