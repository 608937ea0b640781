//! The api: the only surface the frontend calls.

pub mod config;
pub mod routes;

use service_kit::{CancellationToken, Infrastructure, StartupError};
use tokio::net::TcpListener;

pub use config::ApiConfig;

/// The name in logs, metrics and the NATS connection.
pub const SERVICE: &str = "api";

/// Runs the api on `listener` until `shutdown` is cancelled, then drains in-flight requests
/// and the NATS connection.
pub async fn run(
    config: ApiConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartupError> {
    let infra = Infrastructure::connect(&config.common, SERVICE, &shutdown).await?;
    let served = service_kit::http::serve(
        SERVICE,
        listener,
        routes::router(infra.clone()),
        shutdown,
        config.common.shutdown_grace,
    )
    .await;
    infra.close().await;
    served
}
