//! The oauth-worker: answers connect requests with authorization URLs, serves the OAuth redirect
//! callback and owns the token vault.

pub mod authorization;
pub mod config;
pub mod handlers;
pub mod rpc;
pub mod state_store;

use std::sync::Arc;

use service_kit::{CancellationToken, Infrastructure, StartupError};
use tokio::net::TcpListener;

pub use config::OAuthWorkerConfig;

use crate::handlers::connect_requested::ConnectRequestedHandler;
use crate::state_store::StateStore;

/// The name in logs, metrics, the NATS connection and durable consumer names.
pub const SERVICE: &str = "oauth-worker";

/// Runs the oauth-worker until `shutdown` is cancelled: answers connect requests over NATS and
/// serves HTTP (health, metrics) on `listener`; then finishes in-flight work and drains NATS.
pub async fn run(
    config: OAuthWorkerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartupError> {
    let infra = Infrastructure::connect(&config.common, SERVICE, &shutdown).await?;
    infra.ensure_streams(&config.common).await?;
    let grace = config.common.shutdown_grace;
    let handler = Arc::new(ConnectRequestedHandler {
        provider: authorization::provider_client(&config.provider),
        scopes: config.provider.scopes.0.clone(),
        states: StateStore::new(infra.redis.clone(), infra.keys.clone(), config.state_ttl),
        infra: infra.clone(),
    });
    let requests = rpc::serve_connect_requests(
        infra.nats.clone(),
        infra.namespace.connect_requested(),
        handler,
        shutdown.clone(),
        grace,
    );
    let router = service_kit::health::router(SERVICE, infra.clone());
    let http = service_kit::http::serve(SERVICE, listener, router, shutdown.clone(), grace);
    let (requests, served) = tokio::join!(requests, http);
    infra.close().await;
    requests.map_err(|e| StartupError::Failed {
        what: "connect request subscription",
        cause: e.to_string(),
    })?;
    served
}
