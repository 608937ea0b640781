//! Redis: the connection manager (one multiplexed connection that reconnects by itself) and
//! every key name the services use, in one place.
//!
//! Redis only holds what may be lost: OAuth state, cached access tokens, refresh locks, read
//! caches, rate-limit budgets and the count of webhook deliveries awaiting a retry. Every key is
//! written with an expiry.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use schemas::SubaccountId;

use crate::config::RedisUrl;
use crate::startup::{Dependency, StartupError, retry_for};

const REDIS: Dependency = Dependency {
    setting: "REDIS_URL",
    what: "Redis",
};

/// Connects, retrying for at most `limit`, and proves the connection with a `PING`.
pub async fn connect(url: &RedisUrl, limit: Duration) -> Result<ConnectionManager, StartupError> {
    let client = redis::Client::open(url.0.as_str()).map_err(|e| StartupError::Misconfigured {
        setting: "REDIS_URL",
        cause: format!("cannot be used: {:?}", e.kind()),
    })?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_max_delay(Duration::from_secs(2));
    // Probe with plain connections first: the manager retries its first connection by itself,
    // which would hide the real error behind our own deadline.
    retry_for(limit, REDIS, || {
        let client = client.clone();
        async move {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        }
    })
    .await?;
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| REDIS.unreachable(limit, e.to_string()))
}

pub async fn ping(conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(|_| ())
}

/// Every Redis key, built from the deployment's prefix so deployments (and parallel tests)
/// sharing a server never collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Single-use OAuth state → the pending connect attempt (TTL = link lifetime).
    pub fn oauth_state(&self, state: &str) -> String {
        format!("{}:oauth:state:{state}", self.prefix)
    }

    /// Cached access token of one Google account (TTL = expiry minus a margin).
    pub fn access_token(&self, subaccount: &SubaccountId, google_email: &str) -> String {
        format!("{}:token:access:{subaccount}:{google_email}", self.prefix)
    }

    /// Refresh lock of one Google account (single-flight across replicas).
    pub fn refresh_lock(&self, subaccount: &SubaccountId, google_email: &str) -> String {
        format!(
            "{}:token:refresh-lock:{subaccount}:{google_email}",
            self.prefix
        )
    }

    /// The api's cached list of a subaccount's connectors; invalidated by the metadata worker.
    pub fn connector_list_cache(&self, subaccount: &SubaccountId) -> String {
        format!("{}:cache:connectors:{subaccount}", self.prefix)
    }

    /// The api's cached single connector; invalidated by the metadata worker.
    pub fn connector_cache(&self, subaccount: &SubaccountId, connector_id: &str) -> String {
        format!(
            "{}:cache:connector:{subaccount}:{connector_id}",
            self.prefix
        )
    }

    /// The live (issued, not yet used) OAuth states of one subaccount: a sorted set of state
    /// keys scored by their expiry, for the per-subaccount cap. Expires with its newest state.
    pub fn live_oauth_states(&self, subaccount: &SubaccountId) -> String {
        format!("{}:oauth:live-states:{subaccount}", self.prefix)
    }

    /// One rate limit's budget for one subject (GCRA's theoretical arrival time, see
    /// [`crate::rate_limit`]). Expires when the budget is full again.
    pub fn rate_limit(&self, limit: &str, subject: &str) -> String {
        format!("{}:ratelimit:{limit}:{subject}", self.prefix)
    }

    /// The webhook deliveries of one subaccount that failed and wait for their redelivery: a
    /// sorted set of stream sequences scored by the latest time (ms, Redis's clock) each is due
    /// back, for the per-tenant cap on retries (`WEBHOOK_MAX_RETRYING_PER_TENANT`). Expires with
    /// its latest member.
    pub fn webhook_retrying(&self, subaccount: &SubaccountId) -> String {
        format!("{}:webhook:retrying:{subaccount}", self.prefix)
    }

    /// Result of validating a service token (by its hash, never the token), cached 5 minutes.
    pub fn service_token(&self, token_sha256_hex: &str) -> String {
        format!("{}:auth:service-token:{token_sha256_hex}", self.prefix)
    }
}
