use std::process::ExitCode;

use api::ApiConfig;

#[tokio::main]
async fn main() -> ExitCode {
    service_kit::service::main(api::SERVICE, |config: ApiConfig, shutdown| async move {
        let listener = service_kit::http::bind("API_HTTP_ADDR", config.http_addr).await?;
        api::run(config, listener, shutdown).await
    })
    .await
}
