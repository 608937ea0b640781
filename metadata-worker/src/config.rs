//! The metadata-worker's settings.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::ServiceConfig;
use service_kit::config::{CommonConfig, Env, RetryDelays};
use service_kit::exposure::Exposure;

use crate::webhooks::WebhookConfig;

#[derive(Debug, Clone)]
pub struct MetadataWorkerConfig {
    pub common: CommonConfig,
    /// Address of the health and metrics endpoints.
    pub health_addr: SocketAddr,
    /// Deliveries of one event before a transient failure parks it.
    pub max_deliver: i64,
    /// Events one replica applies at the same time.
    pub concurrency: usize,
    /// Redelivery delays after the 1st, 2nd, ... transient failure.
    pub retry_delays: Vec<Duration>,
    /// Deliveries an event for a connector that does not exist gets before it is parked.
    pub missing_connector_deliveries: i64,
    /// In-process retries of a transient failure before the event is handed back to JetStream.
    pub write_attempts: usize,
    /// The webhook consumers' settings (`WEBHOOK_*`).
    pub webhooks: WebhookConfig,
}

impl ServiceConfig for MetadataWorkerConfig {
    const SERVICE: &'static str = crate::SERVICE;

    fn read(env: &mut Env) -> Self {
        let common = CommonConfig::from_env(env);
        let health_addr = env.value(
            "METADATA_WORKER_HEALTH_ADDR",
            "127.0.0.1:3005",
            "Address of the health and metrics endpoints.",
        );
        let max_deliver: i64 = env.value(
            "METADATA_MAX_DELIVER",
            "20",
            "Deliveries of one connection event before a transient failure parks it in the dead-letter stream.",
        );
        if !(2..=1000).contains(&max_deliver) {
            env.problem("METADATA_MAX_DELIVER", "must be between 2 and 1000");
        }
        let concurrency: usize = env.value(
            "METADATA_CONCURRENCY",
            "32",
            "Connection events one metadata-worker replica applies at the same time.",
        );
        if !(1..=1024).contains(&concurrency) {
            env.problem("METADATA_CONCURRENCY", "must be between 1 and 1024");
        }
        let retry_delays: RetryDelays = env.value(
            "METADATA_RETRY_DELAYS",
            "1s,5s,30s,2m",
            "Delays before JetStream redelivers an event that failed transiently: after the 1st, 2nd, ... failure; the last repeats.",
        );
        let missing_connector_deliveries: i64 = env.value(
            "METADATA_MISSING_CONNECTOR_DELIVERIES",
            "3",
            "Deliveries an event for a subaccount without the google-calendar connector gets (it may be being created) before it is parked.",
        );
        if missing_connector_deliveries < 1 || missing_connector_deliveries > max_deliver {
            env.problem(
                "METADATA_MISSING_CONNECTOR_DELIVERIES",
                "must be between 1 and METADATA_MAX_DELIVER",
            );
        }
        let write_attempts: usize = env.value(
            "METADATA_WRITE_ATTEMPTS",
            "4",
            "Tries of a MongoDB write that fails transiently, with jittered backoff, before the event goes back to JetStream for a later redelivery.",
        );
        if !(1..=20).contains(&write_attempts) {
            env.problem("METADATA_WRITE_ATTEMPTS", "must be between 1 and 20");
        }
        let webhooks = WebhookConfig::from_env(env);
        if webhooks.delivery_log_ttl < common.streams.events_max_age {
            env.problem(
                "WEBHOOK_DELIVERY_LOG_TTL",
                "must be at least EVENTS_MAX_AGE: an event replayed after its delivery record expired would be delivered again",
            );
        }
        Self {
            common,
            health_addr,
            max_deliver,
            concurrency,
            retry_delays: retry_delays.0,
            missing_connector_deliveries,
            write_attempts,
            webhooks,
        }
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }

    fn exposure(&self) -> Exposure {
        Exposure::listening("METADATA_WORKER_HEALTH_ADDR", self.health_addr).insecure_if(
            self.webhooks.secrets.uses_dev_key(),
            "WEBHOOK_SECRET_KEYS",
            "stored webhook signing secrets open with a key published in the repository",
        )
    }
}
