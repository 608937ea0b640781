//! The per-tenant cap on webhook deliveries awaiting a retry, shared by every replica.
//!
//! A delivery that failed is NAKed with a delay, and until JetStream redelivers it, it holds a
//! slot of the `webhook-delivery` consumer's `max_ack_pending`. Once that limit is reached the
//! server hands out nothing more, to any tenant, until retries come due. Without a cap one
//! tenant with failing receivers (10 endpoints × its connect rate of events) fills it within
//! minutes and stops every tenant's webhooks for hours.
//!
//! So each subaccount has one Redis sorted set of its deliveries awaiting a retry
//! ([`RedisKeys::webhook_retrying`]): member = the message's stream sequence, score = the latest
//! it is due back (Redis's clock, in ms) plus a slack, after which a member that never came
//! back (its message was parked or replayed elsewhere) stops counting. One Lua script prunes
//! the expired members and admits the delivery, or refuses it when the set is full, atomically
//! — so the cap is exact across replicas. A refused delivery is parked in the dead-letter
//! stream at once (the handler's decision, not the runner's), to be replayed by an operator;
//! a delivery attempted again leaves the set whatever its outcome (and re-enters it, keeping
//! its place, if it fails again).

use std::time::Duration;

use schemas::SubaccountId;
use service_kit::consumer::{ConsumerSpec, Delivery};
use service_kit::rate_limit::{Unavailable, within};
use service_kit::redis::{RedisConnection, RedisKeys};

/// The limit's name in `rate_limit_unavailable_total{limit}` and in logs.
pub const LIMIT: &str = "webhook_retrying_per_tenant";

/// How long a failed delivery waits for Redis to decide; past it, the delivery is retried
/// uncapped.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// `KEYS[1]`: the subaccount's set. `ARGV`: the member, the ms until it expires, the cap.
/// Answers `{1, n}` when the member waits for its retry (`n` awaiting, it included), `{0, n}`
/// when `n` already wait and the member is not one of them (nothing written). A member already
/// in the set keeps its place and gets its new expiry. The key expires with its latest member.
const WAIT_LUA: &str = r"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local n = redis.call('ZCARD', KEYS[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if n >= tonumber(ARGV[3]) then
    return {0, n}
  end
  n = n + 1
end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(latest[2]) - now_ms))
return {1, n}
";

/// `KEYS[1]`: the subaccount's set. Prunes expired members and answers how many remain.
const COUNT_LUA: &str = r"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
return redis.call('ZCARD', KEYS[1])
";

/// What [`RetryCap::wait`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The delivery counts as awaiting its retry: NAK it. `awaiting` includes it.
    Admitted { awaiting: u64 },
    /// The subaccount already has `awaiting` deliveries waiting, the cap: park this one.
    Full { awaiting: u64 },
}

/// The cap, for one consumer (see the [module docs](self)).
#[derive(Clone)]
pub struct RetryCap {
    redis: RedisConnection,
    keys: RedisKeys,
    cap: u32,
    /// The delivery consumer's settings: when a NAKed delivery is due back.
    spec: ConsumerSpec,
    script: redis::Script,
    count_script: redis::Script,
}

impl std::fmt::Debug for RetryCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryCap")
            .field("keys", &self.keys)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl RetryCap {
    /// `cap` deliveries per subaccount of the consumer `spec` describes.
    pub fn new(redis: RedisConnection, keys: RedisKeys, cap: u32, spec: ConsumerSpec) -> Self {
        Self {
            redis,
            keys,
            cap,
            spec,
            script: redis::Script::new(WAIT_LUA),
            count_script: redis::Script::new(COUNT_LUA),
        }
    }

    /// How long after now the delivery that just failed stops counting if it never comes
    /// back: the latest its redelivery is due, plus `ack_wait` for the time between this
    /// decision and the NAK, a busy replica and clock steps.
    fn expiry(&self, delivery: Delivery) -> Duration {
        self.spec.latest_redelivery(delivery.delivered) + self.spec.ack_wait
    }

    /// A delivery failed and would be NAKed for a later retry: counts it as awaiting its retry
    /// if its subaccount has room (or it already counts), otherwise says the cap is reached.
    pub async fn wait(
        &self,
        subaccount: &SubaccountId,
        delivery: Delivery,
    ) -> Result<Wait, Unavailable> {
        let expiry_ms = u64::try_from(self.expiry(delivery).as_millis()).unwrap_or(u64::MAX);
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.keys.webhook_retrying(subaccount))
            .arg(delivery.stream_sequence)
            .arg(expiry_ms)
            .arg(self.cap);
        let mut redis = self.redis.clone();
        let (admitted, awaiting): (i64, u64) =
            within(REDIS_TIMEOUT, invocation.invoke_async(&mut redis)).await?;
        Ok(if admitted == 1 {
            Wait::Admitted { awaiting }
        } else {
            Wait::Full { awaiting }
        })
    }

    /// `Some(awaiting)` when the subaccount's deliveries awaiting a retry already fill the cap.
    pub async fn full(&self, subaccount: &SubaccountId) -> Result<Option<u64>, Unavailable> {
        let mut invocation = self.count_script.prepare_invoke();
        invocation.key(self.keys.webhook_retrying(subaccount));
        let mut redis = self.redis.clone();
        let awaiting: u64 = within(REDIS_TIMEOUT, invocation.invoke_async(&mut redis)).await?;
        Ok((awaiting >= u64::from(self.cap)).then_some(awaiting))
    }

    /// The delivery was attempted again: it no longer awaits a retry (whatever happens next).
    pub async fn attempted(
        &self,
        subaccount: &SubaccountId,
        delivery: Delivery,
    ) -> Result<(), Unavailable> {
        let mut redis = self.redis.clone();
        let _removed: i64 = within(
            REDIS_TIMEOUT,
            redis::cmd("ZREM")
                .arg(self.keys.webhook_retrying(subaccount))
                .arg(delivery.stream_sequence)
                .query_async(&mut redis),
        )
        .await?;
        Ok(())
    }
}
