//! Redis: the connection (one multiplexed connection that reconnects by itself, see
//! [`RedisConnection`]) and every key name the services use, in one place.
//!
//! Redis holds OAuth state, cached access tokens, refresh locks, read caches, rate-limit budgets
//! and the count of webhook deliveries awaiting a retry. Every key is written with an expiry.
//! All of it may be lost except the OAuth state: a lost state makes a link already mailed
//! answer "expired", so Redis must persist it (the local run and compose use an append-only
//! file fsynced before each answer; see the operator guide's "Scaling out").

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use schemas::SubaccountId;

mod connection;

pub use connection::RedisConnection;

use crate::config::{Env, RedisUrl};
use crate::startup::{Dependency, StartupError, retry_for};

const REDIS: Dependency = Dependency {
    setting: "REDIS_URL",
    what: "Redis",
};

/// How the Redis connection is protected: `rediss://` in `REDIS_URL` means TLS, verified
/// against the system's roots or, when set, the CA in `REDIS_TLS_CA_FILE`. Plaintext
/// (`redis://`) to a server that is not on loopback is refused at start-up unless
/// `REDIS_ALLOW_PLAINTEXT=true` says the network is private.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    pub ca_file: Option<PathBuf>,
}

impl RedisTls {
    /// Reads the TLS settings and checks `url` against them.
    pub fn from_env(env: &mut Env, url: &RedisUrl) -> Self {
        let tls = Self {
            ca_file: env.optional(
                "REDIS_TLS_CA_FILE",
                "PEM file of the CA that signs the Redis server's certificate (with a rediss:// REDIS_URL); unset, the system's roots are trusted.",
            ),
        };
        let allow_plaintext: bool = env.value(
            "REDIS_ALLOW_PLAINTEXT",
            "false",
            "`true` allows a plaintext redis:// connection to a server that is not on loopback (a private network you trust). `false`: such a REDIS_URL is refused at start-up; use rediss://.",
        );
        let tls_url = url.0.starts_with("rediss://");
        if tls.ca_file.is_some() && !tls_url {
            env.problem("REDIS_TLS_CA_FILE", "needs a rediss:// REDIS_URL");
        }
        if !tls_url && !allow_plaintext && !is_loopback(&url.0) {
            env.problem(
                "REDIS_URL",
                "a Redis server that is not on loopback needs TLS (rediss://); REDIS_ALLOW_PLAINTEXT=true allows plaintext on a private network",
            );
        }
        tls
    }

    fn client(&self, url: &RedisUrl) -> Result<redis::Client, StartupError> {
        let misconfigured = |setting, cause: String| StartupError::Misconfigured { setting, cause };
        match &self.ca_file {
            None => redis::Client::open(url.0.as_str())
                .map_err(|e| misconfigured("REDIS_URL", format!("cannot be used: {:?}", e.kind()))),
            Some(path) => {
                let root = std::fs::read(path).map_err(|e| {
                    misconfigured("REDIS_TLS_CA_FILE", format!("cannot be read: {e}"))
                })?;
                redis::Client::build_with_tls(
                    url.0.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root),
                    },
                )
                .map_err(|e| misconfigured("REDIS_URL", format!("cannot be used: {:?}", e.kind())))
            }
        }
    }
}

/// Whether the URL's host is loopback by its address (or is `localhost`); a Unix socket is.
fn is_loopback(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    if parsed.scheme().starts_with("redis+unix") || parsed.scheme() == "unix" {
        return true;
    }
    // `redis` is not a special scheme to the URL parser: an IPv4 host comes as a domain, which
    // the shared check parses again.
    parsed
        .host_str()
        .is_some_and(crate::exposure::is_loopback_host)
}

/// Connects, retrying for at most `limit`, and proves the connection with a `PING`.
pub async fn connect(
    url: &RedisUrl,
    tls: &RedisTls,
    limit: Duration,
) -> Result<RedisConnection, StartupError> {
    let client = tls.client(url)?;
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
        .map(RedisConnection::direct)
        .map_err(|e| REDIS.unreachable(limit, e.to_string()))
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
