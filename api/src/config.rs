//! The api's settings.

use std::net::SocketAddr;

use service_kit::ServiceConfig;
use service_kit::config::{CommonConfig, Env};

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub common: CommonConfig,
    /// Where the REST API (and its health endpoints) listen.
    pub http_addr: SocketAddr,
}

impl ServiceConfig for ApiConfig {
    fn read(env: &mut Env) -> Self {
        Self {
            common: CommonConfig::from_env(env),
            http_addr: env.value(
                "API_HTTP_ADDR",
                "127.0.0.1:3002",
                "Address the REST API listens on.",
            ),
        }
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }
}
