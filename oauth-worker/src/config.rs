//! The oauth-worker's settings.

use std::net::SocketAddr;

use service_kit::ServiceConfig;
use service_kit::config::{CommonConfig, Env};

#[derive(Debug, Clone)]
pub struct OAuthWorkerConfig {
    pub common: CommonConfig,
    /// Address of the OAuth redirect callback and the health endpoints.
    pub http_addr: SocketAddr,
}

impl ServiceConfig for OAuthWorkerConfig {
    fn read(env: &mut Env) -> Self {
        Self {
            common: CommonConfig::from_env(env),
            http_addr: env.value(
                "OAUTH_WORKER_HTTP_ADDR",
                "127.0.0.1:3004",
                "Address of the OAuth redirect callback and the health endpoints.",
            ),
        }
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }
}
