use std::process::ExitCode;

use metadata_worker::MetadataWorkerConfig;

#[tokio::main]
async fn main() -> ExitCode {
    service_kit::service::main(
        metadata_worker::SERVICE,
        |config: MetadataWorkerConfig, shutdown| async move {
            let listener =
                service_kit::http::bind("METADATA_WORKER_HEALTH_ADDR", config.health_addr).await?;
            metadata_worker::run(config, listener, shutdown).await
        },
    )
    .await
}
