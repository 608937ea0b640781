//! The metadata-worker: writes `connectorsubaccount.metadata` from connection events, with retries and a dead-letter stream.

pub mod config;

use service_kit::{CancellationToken, Infrastructure, StartupError};
use tokio::net::TcpListener;

pub use config::MetadataWorkerConfig;

/// The name in logs, metrics, the NATS connection and durable consumer names.
pub const SERVICE: &str = "metadata-worker";

/// Runs the metadata-worker until `shutdown` is cancelled: provisions the streams it uses, serves
/// health and metrics on `listener`, then drains the NATS connection.
pub async fn run(
    config: MetadataWorkerConfig,
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
