use std::process::ExitCode;

use mailer_worker::MailerWorkerConfig;

#[tokio::main]
async fn main() -> ExitCode {
    service_kit::service::main(
        mailer_worker::SERVICE,
        |config: MailerWorkerConfig, shutdown| async move {
            let listener =
                service_kit::http::bind("MAILER_WORKER_HEALTH_ADDR", config.health_addr).await?;
            mailer_worker::run(config, listener, shutdown).await
        },
    )
    .await
}
