//! The oauth-worker: answers connect requests with authorization URLs, serves the OAuth redirect callback and owns the token vault.

pub mod config;

use service_kit::{CancellationToken, Infrastructure, StartupError};
use tokio::net::TcpListener;

pub use config::OAuthWorkerConfig;

/// The name in logs, metrics, the NATS connection and durable consumer names.
pub const SERVICE: &str = "oauth-worker";

/// Runs the oauth-worker until `shutdown` is cancelled: provisions the streams it uses, serves
/// health and metrics on `listener`, then drains the NATS connection.
pub async fn run(
    config: OAuthWorkerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartupError> {
    let infra = Infrastructure::connect(&config.common, SERVICE, &shutdown).await?;
    infra.ensure_streams(&config.common).await?;
    let router = service_kit::health::router(SERVICE, infra.clone());
    let served = service_kit::http::serve(
        SERVICE,
        listener,
        router,
        shutdown,
        config.common.shutdown_grace,
    )
    .await;
    infra.close().await;
    served
}
