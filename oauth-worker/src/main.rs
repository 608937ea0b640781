use std::process::ExitCode;

use oauth_worker::OAuthWorkerConfig;

#[tokio::main]
async fn main() -> ExitCode {
    service_kit::service::main(
        oauth_worker::SERVICE,
        |config: OAuthWorkerConfig, shutdown| async move {
            let listener =
                service_kit::http::bind("OAUTH_WORKER_HTTP_ADDR", config.http_addr).await?;
            oauth_worker::run(config, listener, shutdown).await
        },
    )
    .await
}
