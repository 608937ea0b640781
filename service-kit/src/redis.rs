//! Redis: the connection (one multiplexed connection that reconnects by itself, see
//! [`RedisConnection`]) and every key name the services use, in one place.
//!
//! The server is `REDIS_URL`'s, or with `REDIS_SENTINELS` the primary the sentinels name,
//! found again after a failover ([`RedisSettings`]; what each use loses on a failover is in
//! the operator guide's "Scaling out").
//!
//! Redis holds OAuth state, cached access tokens, refresh locks, read caches, rate-limit budgets
//! and the count of webhook deliveries awaiting a retry. Every key is written with an expiry.
//! All of it may be lost except the OAuth state: a lost state makes a link already mailed
//! answer "expired", so Redis must persist it (the local run and compose use an append-only
//! file fsynced before each answer; see the operator guide's "Scaling out").

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use schemas::SubaccountId;

use crate::startup::{Dependency, StartupError, retry_for};

mod connection;
mod sentinel;
mod settings;

pub use connection::{DedicatedConnection, RedisConnection};
pub use sentinel::calls_for_new_primary;
pub use settings::{RedisSettings, RedisTls, SentinelSettings};

const REDIS: Dependency = Dependency {
    setting: "REDIS_URL",
    what: "Redis",
};

const REDIS_SENTINEL: Dependency = Dependency {
    setting: "REDIS_SENTINELS",
    what: "the Redis primary (through Sentinel)",
};

/// Bounds on connecting and on each answer: a Redis that hangs fails the command instead of
/// holding its caller.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects — to `REDIS_URL`'s server, or to the primary the sentinels name — retrying for at
/// most `limit`, and proves the connection with a `PING`.
pub async fn connect(
    settings: &RedisSettings,
    limit: Duration,
) -> Result<RedisConnection, StartupError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let Some(sentinel) = &settings.sentinel else {
        return connect_direct(settings, config, limit).await;
    };
    let conn = RedisConnection::sentinel(sentinel::SentinelConnection::new(
        settings, sentinel, config,
    )?);
    // The first PING makes the first lookup; a failed one is tried again.
    retry_for(limit, REDIS_SENTINEL, || {
        let mut conn = conn.clone();
        async move { ping(&mut conn).await }
    })
    .await?;
    Ok(conn)
}

async fn connect_direct(
    settings: &RedisSettings,
    config: AsyncConnectionConfig,
    limit: Duration,
) -> Result<RedisConnection, StartupError> {
    let client = direct_client(settings)?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
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
    ConnectionManager::new_with_config(client.clone(), manager_config)
        .await
        .map(|manager| RedisConnection::direct(manager, client, config))
        .map_err(|e| REDIS.unreachable(limit, e.to_string()))
}

/// The client of `REDIS_URL`'s server, trusting `REDIS_TLS_CA_FILE` when set.
fn direct_client(settings: &RedisSettings) -> Result<redis::Client, StartupError> {
    let misconfigured = |setting, cause: String| StartupError::Misconfigured { setting, cause };
    let url = settings.url.0.as_str();
    match &settings.tls.ca_file {
        None => redis::Client::open(url)
            .map_err(|e| misconfigured("REDIS_URL", format!("cannot be used: {:?}", e.kind()))),
        Some(path) => {
            let root = std::fs::read(path)
                .map_err(|e| misconfigured("REDIS_TLS_CA_FILE", format!("cannot be read: {e}")))?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root),
                },
            )
            .map_err(|e| misconfigured("REDIS_URL", format!("cannot be used: {:?}", e.kind())))
        }
    }
}

pub async fn ping(conn: &mut RedisConnection) -> redis::RedisResult<()> {
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

    /// Counts the invalidations of a subaccount's cached connector reads: a read fills the
    /// cache only if no invalidation happened since it began (see [`fill_connector_cache`]).
    pub fn connector_cache_version(&self, subaccount: &SubaccountId) -> String {
        format!("{}:cache:connectors-version:{subaccount}", self.prefix)
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

    /// A subaccount's webhook-endpoint change mark: a random value set again by every change
    /// of its endpoints (registration, deletion, disabling), which the metadata-worker's
    /// endpoint registry compares before it trusts what it holds (see
    /// [`mark_changed`]). Expires an hour after the last change.
    pub fn webhook_endpoints_mark(&self, subaccount: &SubaccountId) -> String {
        format!("{}:webhook:endpoints-mark:{subaccount}", self.prefix)
    }

    /// Result of validating a service token (by its hash, never the token), cached 5 minutes.
    pub fn service_token(&self, token_sha256_hex: &str) -> String {
        format!("{}:auth:service-token:{token_sha256_hex}", self.prefix)
    }
}

/// How long an invalidation counter outlives its last invalidation: far longer than any read.
const CACHE_VERSION_TTL_MS: i64 = 3_600_000;

/// Invalidates a subaccount's cached connector reads after a write: bumps its invalidation
/// counter, then deletes `keys`, in one transaction. A read that began before (and so may hold
/// the old document) then cannot put it back (see [`fill_connector_cache`]).
pub async fn invalidate_connector_caches(
    redis: &mut RedisConnection,
    version_key: &str,
    keys: &[String],
) -> redis::RedisResult<()> {
    redis::pipe()
        .atomic()
        .incr(version_key, 1)
        .ignore()
        .pexpire(version_key, CACHE_VERSION_TTL_MS)
        .ignore()
        .del(keys)
        .ignore()
        .query_async(redis)
        .await
}

/// Notes that what `mark_key` guards changed: sets it to a new random value (never one it
/// had before, unlike a counter that may expire and count again from 1), so a reader that
/// noted the old value knows what it holds is stale. Expires an hour after the last change;
/// a missing mark reads as `None`, which differs from every value set.
pub async fn mark_changed(redis: &mut RedisConnection, mark_key: &str) -> redis::RedisResult<()> {
    let mark = uuid::Uuid::now_v7().simple().to_string();
    redis::cmd("SET")
        .arg(mark_key)
        .arg(mark)
        .arg("PX")
        .arg(CACHE_VERSION_TTL_MS)
        .query_async(redis)
        .await
}

/// The change mark a reader notes before it reads what the mark guards (`None`: no change
/// within the mark's lifetime).
pub async fn change_mark(
    redis: &mut RedisConnection,
    mark_key: &str,
) -> redis::RedisResult<Option<String>> {
    redis::cmd("GET").arg(mark_key).query_async(redis).await
}

/// The invalidation counter a read notes before it reads MongoDB (`"0"` before the first).
pub async fn connector_cache_version(
    redis: &mut RedisConnection,
    version_key: &str,
) -> redis::RedisResult<String> {
    let version: Option<String> = redis::cmd("GET")
        .arg(version_key)
        .query_async(redis)
        .await?;
    Ok(version.unwrap_or_else(|| "0".to_owned()))
}

/// Caches `value` under `key` for `ttl_seconds`, unless the subaccount's cached reads were
/// invalidated since the read noted `version`: cache-aside without the race in which a slow
/// read puts back the document a concurrent write just replaced.
pub async fn fill_connector_cache(
    redis: &mut RedisConnection,
    version_key: &str,
    version: &str,
    key: &str,
    value: &str,
    ttl_seconds: u64,
) -> redis::RedisResult<()> {
    static FILL: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(
            "if (redis.call('GET', KEYS[1]) or '0') == ARGV[1] then \
               redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) end return 0",
        )
    });
    FILL.key(version_key)
        .key(key)
        .arg(version)
        .arg(value)
        .arg(ttl_seconds)
        .invoke_async::<i64>(redis)
        .await
        .map(|_| ())
}
