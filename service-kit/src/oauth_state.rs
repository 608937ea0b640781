//! Pending connect attempts in Redis, keyed by their single-use OAuth `state`. Redis is the
//! right home: an attempt is worth nothing after its TTL, and losing one only means the user
//! asks for a new link. Both issuers of links store here, the oauth-worker and the api (for the
//! links it returns itself, `api/src/local_links.rs`); the oauth-worker's callback and consent
//! page read and use them up.
//!
//! Storing an attempt is also where the connect request's limits are decided
//! ([`ConnectLimits`]): one Lua script checks the per-subaccount connect rate, the email rates
//! (per subaccount and per recipient, when the link is emailed) and the cap on the
//! subaccount's live states, and only when all allow does it store the state, charge the
//! rates and add the state to the subaccount's live set. So a refused request stores nothing
//! and charges nothing, and no replica can race another past a limit.
//!
//! Redis replicates asynchronously: a failover to a replica keeps only what reached it, and a
//! state lost that way makes a link already mailed answer "expired". With
//! `REDIS_WAIT_REPLICAS` > 0 a stored state is followed by `WAIT`, and the link is issued only
//! if that many replicas acknowledged it ([`StateStore::waiting_for_replicas`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use schemas::events::ConnectLimit;
use schemas::{DisplayName, SubaccountId, UserEmail};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{Env, HumanDuration};
use crate::rate_limit::{self, Check, ConnectLimits, GCRA_LUA};
use crate::redis::{DedicatedConnection, RedisConnection, RedisKeys};

/// `STATE_STORE_TIMEOUT`: the bound on each Redis step of storing, reading or using up an OAuth
/// state. Longer than `RATE_LIMIT_TIMEOUT` (250 ms): a limit that times out has a fallback,
/// a state that is not stored costs the user a 503, so a loaded Redis gets more time.
pub fn state_store_timeout(env: &mut Env) -> Duration {
    let timeout: Duration = env
        .value::<HumanDuration>(
            "STATE_STORE_TIMEOUT",
            "1s",
 "How long each Redis step of storing, reading or using up an OAuth state may take before the connect request answers 503 state_store_unavailable (or the callback and consent page say the link cannot be checked right now).",
        )
        .into();
    if !(Duration::from_millis(10)..=Duration::from_secs(5)).contains(&timeout) {
        env.problem("STATE_STORE_TIMEOUT", "must be between 10ms and 5s");
    }
    timeout
}

/// What the callback needs to finish an attempt. Holds the PKCE verifier: a secret, so it has
/// no `Debug` that prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingAttempt {
    pub subaccount_id: SubaccountId,
    pub user_email: UserEmail,
    pub pkce_verifier: String,
    pub correlation_id: Uuid,
    pub issued_at: DateTime<Utc>,
    /// W3C `traceparent` of the span that issued the link: the callback, minutes later and
    /// from the user's browser, continues the connect attempt's trace. Absent in attempts
    /// stored by older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// When the link stops working; the consent page says so. Absent in attempts stored by
    /// older versions, like the two fields below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The provider's consent URL: where the consent page's button leads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    /// Who asks, as the connect request named the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_name: Option<DisplayName>,
}

impl std::fmt::Debug for PendingAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAttempt")
            .field("subaccount_id", &self.subaccount_id)
            .field("user_email", &self.user_email)
            .field("correlation_id", &self.correlation_id)
            .field("issued_at", &self.issued_at)
            .field("traceparent", &self.traceparent)
            .field("expires_at", &self.expires_at)
            .field("tenant_name", &self.tenant_name)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct StateStore {
    redis: RedisConnection,
    keys: RedisKeys,
    ttl: Duration,
    limits: ConnectLimits,
    /// Bound on each Redis step, so an outage answers quickly instead of holding the caller.
    timeout: Duration,
    put_script: redis::Script,
    /// Replicas that must acknowledge a stored state before it counts as stored.
    wait_replicas: u32,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("keys", &self.keys)
            .field("ttl", &self.ttl)
            .field("limits", &self.limits)
            .field("wait_replicas", &self.wait_replicas)
            .finish_non_exhaustive()
    }
}

/// `KEYS`: the state, the subaccount's live-state set, then one key per rate limit.
/// `ARGV`: the attempt, the TTL in ms, the live-state cap, then `gcra`'s arguments.
/// Answers `{0, 0}` when stored, `{-1, 0}` on a state collision, or `{index, wait_us}` of the
/// refusing limit that frees up last (the live-state cap is the index after the rate limits).
const PUT_LUA: &str = r"
local now = gcra_now()
local now_ms = math.floor(now / 1000)
local limit_keys, limit_args = {}, {}
for i = 3, #KEYS do limit_keys[#limit_keys + 1] = KEYS[i] end
for i = 4, #ARGV do limit_args[#limit_args + 1] = ARGV[i] end
local denied, wait, tats = gcra(limit_keys, limit_args, now)
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
-- Expired states are pruned only when the set looks full: one call less on the usual path.
if redis.call('ZCARD', KEYS[2]) >= cap then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
end
if redis.call('ZCARD', KEYS[2]) >= cap then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  local state_wait = math.max(1000, (tonumber(oldest[2]) - now_ms) * 1000)
  if denied == 0 or state_wait > wait then
    denied, wait = #limit_keys + 1, state_wait
  end
end
if denied > 0 then
  return {denied, math.ceil(wait)}
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ttl) then
  return {-1, 0}
end
gcra_commit(limit_keys, tats, now)
redis.call('ZADD', KEYS[2], now_ms + ttl, KEYS[1])
redis.call('PEXPIRE', KEYS[2], ttl)
return {0, 0}
";

/// What [`StateStore::put`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// Stored, and charged to every limit.
    Stored,
    /// Refused by `limit`; nothing stored or charged.
    Limited {
        limit: ConnectLimit,
        retry_after: Duration,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StateStoreError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("a pending attempt in Redis is not readable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("state collision (a state was issued twice); refusing to overwrite")]
    Collision,
    #[error(
        "{acked} of the {wanted} Redis replicas REDIS_WAIT_REPLICAS asks for acknowledged the state within {WAIT_TIMEOUT:?}; not issued"
    )]
    NotReplicated { wanted: u32, acked: i64 },
}

/// How long `WAIT` waits for the replicas' acknowledgement. On a healthy network a replica
/// acknowledges within a round trip; a missing replica costs each link request this long
/// before its 503, well within the api's `CONNECT_REQUEST_TIMEOUT` (5 s by default).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(1);

impl StateStore {
    pub fn new(
        redis: RedisConnection,
        keys: RedisKeys,
        ttl: Duration,
        limits: ConnectLimits,
        timeout: Duration,
    ) -> Self {
        Self {
            redis,
            keys,
            ttl,
            limits,
            timeout,
            put_script: redis::Script::new(&format!("{GCRA_LUA}{PUT_LUA}")),
            wait_replicas: 0,
        }
    }

    /// A state counts as stored only once `replicas` Redis replicas acknowledged it
    /// (`REDIS_WAIT_REPLICAS`): each is stored on a connection of its own, then `WAIT` on that
    /// connection (it counts the replicas that have *that connection's* writes, and blocks
    /// the connection meanwhile, so it cannot go on the shared one). Costs a connection
    /// set-up and a replication round trip per link.
    pub fn waiting_for_replicas(self, replicas: u32) -> Self {
        Self {
            wait_replicas: replicas,
            ..self
        }
    }

    pub fn limits(&self) -> &ConnectLimits {
        &self.limits
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Stores a new attempt under `state` with the TTL (`SET NX`: a state is never reused),
    /// if the connect request's limits allow it; the email limits count only when the link is
    /// to be emailed.
    pub async fn put(
        &self,
        state: &str,
        attempt: &PendingAttempt,
        emailed: bool,
    ) -> Result<Put, StateStoreError> {
        let subaccount = attempt.subaccount_id.as_str();
        // The SMTP form: every spelling of a domain that IDNA maps to the same name
        // (`ＥＸＡＭＰＬＥ.com`, `bücher` / `xn--bcher-kva`) reaches the same mailbox.
        let recipient = rate_limit::recipient_subject(attempt.user_email.smtp_address());
        let mut limits = vec![(
            ConnectLimit::ConnectPerSubaccount,
            Check {
                limit: &self.limits.connect_per_subaccount,
                subject: subaccount,
            },
        )];
        if emailed {
            limits.push((
                ConnectLimit::EmailsPerSubaccount,
                Check {
                    limit: &self.limits.emails_per_subaccount,
                    subject: subaccount,
                },
            ));
            limits.push((
                ConnectLimit::EmailsPerRecipient,
                Check {
                    limit: &self.limits.emails_per_recipient,
                    subject: &recipient,
                },
            ));
        }
        let checks: Vec<Check<'_>> = limits.iter().map(|(_, check)| *check).collect();
        let mut invocation = self.put_script.prepare_invoke();
        invocation
            .key(self.keys.oauth_state(state))
            .key(self.keys.live_oauth_states(&attempt.subaccount_id));
        for check in &checks {
            invocation.key(self.keys.rate_limit(check.limit.name, check.subject));
        }
        invocation
            .arg(serde_json::to_string(attempt)?)
            .arg(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX))
            .arg(self.limits.live_states_per_subaccount);
        for arg in rate_limit::gcra_args(&checks) {
            invocation.arg(arg);
        }
        let (answer, wait_micros): (i64, i64) = if self.wait_replicas == 0 {
            let mut conn = self.redis.clone();
            self.bounded(invocation.invoke_async(&mut conn)).await?
        } else {
            let mut conn = self.bounded(self.redis.dedicated()).await?;
            let answer: (i64, i64) = self.bounded(invocation.invoke_async(&mut conn)).await?;
            if answer.0 == 0 {
                self.wait_for_replicas(&mut conn, state, &attempt.subaccount_id)
                    .await?;
            }
            answer
        };
        if answer == -1 {
            return Err(StateStoreError::Collision);
        }
        let Some(index) = usize::try_from(answer).ok().and_then(|a| a.checked_sub(1)) else {
            return Ok(Put::Stored);
        };
        let limit = limits
            .get(index)
            .map(|(which, _)| *which)
            .unwrap_or(ConnectLimit::LiveStatesPerSubaccount);
        rate_limit::count_limited(limit.name());
        Ok(Put::Limited {
            limit,
            retry_after: Duration::from_micros(u64::try_from(wait_micros).unwrap_or(0)),
        })
    }

    /// Waits for [`Self::waiting_for_replicas`] replicas to acknowledge what `conn` just
    /// stored. If fewer do, the state is removed again (best effort): its link is not issued,
    /// so it would only count against the subaccount's live states.
    async fn wait_for_replicas(
        &self,
        conn: &mut DedicatedConnection,
        state: &str,
        subaccount: &SubaccountId,
    ) -> Result<(), StateStoreError> {
        let acked: i64 = tokio::time::timeout(
            WAIT_TIMEOUT + self.timeout,
            redis::cmd("WAIT")
                .arg(self.wait_replicas)
                .arg(u64::try_from(WAIT_TIMEOUT.as_millis()).unwrap_or(u64::MAX))
                .query_async(conn),
        )
        .await
        .map_err(|_| StateStoreError::Timeout(WAIT_TIMEOUT + self.timeout))??;
        if acked >= i64::from(self.wait_replicas) {
            return Ok(());
        }
        let key = self.keys.oauth_state(state);
        let removed = self
            .bounded(
                redis::pipe()
                    .del(&key)
                    .ignore()
                    .zrem(self.keys.live_oauth_states(subaccount), &key)
                    .ignore()
                    .query_async::<()>(conn),
            )
            .await;
        if removed.is_err() {
            tracing::warn!(
                "an OAuth state no replica acknowledged stays in Redis until it expires"
            );
        }
        Err(StateStoreError::NotReplicated {
            wanted: self.wait_replicas,
            acked,
        })
    }

    /// `step` within the state store's timeout.
    async fn bounded<T>(
        &self,
        step: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StateStoreError> {
        Ok(tokio::time::timeout(self.timeout, step)
            .await
            .map_err(|_| StateStoreError::Timeout(self.timeout))??)
    }

    /// Reads the attempt stored under `state` without consuming it: the consent page shows
    /// it, and only the callback uses it up. `None` when unknown, expired or already used.
    pub async fn peek(&self, state: &str) -> Result<Option<PendingAttempt>, StateStoreError> {
        let mut conn = self.redis.clone();
        let raw: Option<String> =
            tokio::time::timeout(self.timeout, conn.get(self.keys.oauth_state(state)))
                .await
                .map_err(|_| StateStoreError::Timeout(self.timeout))??;
        Ok(raw.map(|raw| serde_json::from_str(&raw)).transpose()?)
    }

    /// Consumes the attempt stored under `state`, atomically (`GETDEL`): of two callbacks with
    /// the same state, exactly one gets it. `None` when unknown, expired or already used.
    /// The state also leaves its subaccount's live set (best effort: an entry left behind
    /// expires with the state's TTL anyway).
    pub async fn take(&self, state: &str) -> Result<Option<PendingAttempt>, StateStoreError> {
        let mut conn = self.redis.clone();
        let key = self.keys.oauth_state(state);
        let raw: Option<String> = tokio::time::timeout(self.timeout, conn.get_del(&key))
            .await
            .map_err(|_| StateStoreError::Timeout(self.timeout))??;
        let attempt: Option<PendingAttempt> =
            raw.map(|raw| serde_json::from_str(&raw)).transpose()?;
        if let Some(attempt) = &attempt {
            let live = self.keys.live_oauth_states(&attempt.subaccount_id);
            let removed =
                tokio::time::timeout(self.timeout, conn.zrem::<_, _, ()>(live, &key)).await;
            if !matches!(removed, Ok(Ok(()))) {
                tracing::warn!(
                    "a used OAuth state stays in its subaccount's live set until it expires"
                );
            }
        }
        Ok(attempt)
    }
}
