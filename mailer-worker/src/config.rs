//! The mailer-worker's settings.

use std::net::SocketAddr;

use service_kit::ServiceConfig;
use service_kit::config::{CommonConfig, Env};

#[derive(Debug, Clone)]
pub struct MailerWorkerConfig {
    pub common: CommonConfig,
    /// Address of the health and metrics endpoints.
    pub health_addr: SocketAddr,
}

impl ServiceConfig for MailerWorkerConfig {
    fn read(env: &mut Env) -> Self {
        Self {
            common: CommonConfig::from_env(env),
            health_addr: env.value(
                "MAILER_WORKER_HEALTH_ADDR",
                "127.0.0.1:3006",
                "Address of the health and metrics endpoints.",
            ),
        }
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }
}
