//! Rate limits shared by every replica of every service: the generic cell rate algorithm
//! (GCRA) over Redis, decided by one atomic Lua script per request.
//!
//! A [`Rate`] of `N/period` lets `N` requests through at once and then one every `period / N`:
//! each limited thing (a subaccount, a recipient, a caller) has one Redis key holding its
//! *theoretical arrival time*, and a request is allowed when that time, pushed one interval
//! further, is no more than `period` ahead of now. The clock is Redis's own (`TIME`), so
//! replicas with skewed clocks still share one budget. A key expires when its budget is full
//! again, so an idle subject costs nothing.
//!
//! Several limits can be checked together ([`RateLimiter::check`]): all are allowed and
//! charged, or none is charged and the answer names the limit that is furthest from
//! allowing, with how long to wait. The same GCRA code is prepended to other scripts that must
//! decide a limit atomically with their own write ([`GCRA_LUA`]).
//!
//! Why not a crate: the Redis-backed limiter crates either bind another Redis client, need the
//! `redis-cell` server module, or decide one key per round trip; ours needs several limits
//! decided (and the OAuth state written) in one atomic step on a stock Redis.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemas::events::{ConnectLimit, LinkLimits, RateSpec};
use sha2::{Digest, Sha256};

use crate::config::{Env, HumanDuration};
use crate::redis::{RedisConnection, RedisKeys};

/// `N` requests per `period`: a burst of `N`, refilled evenly over `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    pub const fn new(count: u32, period: Duration) -> Self {
        Self { count, period }
    }

    /// Microseconds between two requests once the burst is spent.
    fn interval_micros(&self) -> f64 {
        self.period.as_micros() as f64 / f64::from(self.count.max(1))
    }

    /// `60 per minute`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} per {}",
            self.count,
            humantime::format_duration(self.period)
        )
    }
}

impl FromStr for Rate {
    type Err = String;

    /// `60/1m`, `100/1h`, `5/10s`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let usage = || format!("{raw:?} is not a rate such as 60/1m or 100/1h");
        let (count, period) = raw.split_once('/').ok_or_else(usage)?;
        let count: u32 = count.trim().parse().map_err(|_| usage())?;
        let period = humantime::parse_duration(period.trim()).map_err(|_| usage())?;
        if count == 0 {
            return Err(format!("{raw:?}: the count must be at least 1"));
        }
        if period < Duration::from_secs(1) || period > Duration::from_secs(7 * 24 * 3600) {
            return Err(format!("{raw:?}: the period must be between 1s and 7d"));
        }
        Ok(Self { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.period)
        )
    }
}

/// One named limit. The name is stable: it is the `limit` label of the `rate_limited_total`
/// metric, the `details.limit` of a 429 and part of the Redis key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub name: &'static str,
    pub rate: Rate,
}

/// A limit applied to one subject (a subaccount id, a hashed address, a caller).
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub limit: &'a Limit,
    pub subject: &'a str,
}

/// What the limiter decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, and charged to every limit checked.
    Allowed,
    /// Refused; nothing was charged.
    Limited {
        /// The refusing limit that frees up last.
        limit: &'static str,
        /// How long until a retry can succeed.
        retry_after: Duration,
    },
}

/// Redis did not decide in time (down, slow, or refusing the script).
#[derive(Debug, Clone, thiserror::Error)]
#[error("Redis did not decide: {0}")]
pub struct Unavailable(pub String);

/// A Redis call bounded by `timeout`: an error or no answer in time is [`Unavailable`], so a
/// Redis outage costs a decision at most `timeout`.
pub async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Unavailable> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(Unavailable(e.to_string())),
        Err(_) => Err(Unavailable(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

/// The GCRA step as a Lua function, to be prepended to a script. `gcra(keys, args, now)` takes
/// the limits' keys and, per key, `interval_us, burst` in `args`; it returns
/// `0, 0, tats` when every limit allows (nothing written yet: the caller commits with
/// `gcra_commit(keys, tats, now)`), or `index, wait_us` of the refusing limit that frees up
/// last. `now` is microseconds from Redis's `TIME` (`gcra_now()`).
pub const GCRA_LUA: &str = r"
local function gcra_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function gcra(keys, args, now)
  local denied, wait, tats = 0, 0, {}
  for i, key in ipairs(keys) do
    local interval = tonumber(args[2 * i - 1])
    local burst = tonumber(args[2 * i])
    local tat = tonumber(redis.call('GET', key)) or now
    if tat < now then tat = now end
    local new_tat = tat + interval
    local allow_at = new_tat - interval * burst
    if allow_at > now then
      if allow_at - now > wait then
        denied, wait = i, allow_at - now
      end
    end
    tats[i] = new_tat
  end
  return denied, wait, tats
end
local function gcra_commit(keys, tats, now)
  for i, key in ipairs(keys) do
    local ttl_ms = math.max(1, math.ceil((tats[i] - now) / 1000))
    redis.call('SET', key, string.format('%.0f', tats[i]), 'PX', ttl_ms)
  end
end
";

/// The plain check: every limit allows and is charged, or nothing is charged.
const CHECK_LUA: &str = r"
local now = gcra_now()
local denied, wait, tats = gcra(KEYS, ARGV, now)
if denied > 0 then
  return {denied, math.ceil(wait)}
end
gcra_commit(KEYS, tats, now)
return {0, 0}
";

/// The arguments [`GCRA_LUA`]'s `gcra` reads for `checks`, in order.
pub fn gcra_args(checks: &[Check<'_>]) -> Vec<String> {
    checks
        .iter()
        .flat_map(|check| {
            [
                format!("{:.3}", check.limit.rate.interval_micros()),
                check.limit.rate.count.to_string(),
            ]
        })
        .collect()
}

/// Turns a script's `{index, wait_us}` answer into a [`Decision`].
pub fn decision(checks: &[Check<'_>], denied: i64, wait_micros: i64) -> Decision {
    let index = usize::try_from(denied).unwrap_or(0);
    match index.checked_sub(1).and_then(|i| checks.get(i)) {
        None => Decision::Allowed,
        Some(check) => Decision::Limited {
            limit: check.limit.name,
            retry_after: Duration::from_micros(u64::try_from(wait_micros).unwrap_or(0)),
        },
    }
}

/// Checks limits in Redis, bounded by a timeout so a Redis outage never holds a request.
#[derive(Clone)]
pub struct RateLimiter {
    redis: RedisConnection,
    keys: RedisKeys,
    script: redis::Script,
    timeout: Duration,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("keys", &self.keys)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(redis: RedisConnection, keys: RedisKeys, timeout: Duration) -> Self {
        Self {
            redis,
            keys,
            script: redis::Script::new(&format!("{GCRA_LUA}{CHECK_LUA}")),
            timeout,
        }
    }

    /// Decides `checks` together. Counts refusals in `rate_limited_total{limit}`.
    pub async fn check(&self, checks: &[Check<'_>]) -> Result<Decision, Unavailable> {
        let mut invocation = self.script.prepare_invoke();
        for check in checks {
            invocation.key(self.keys.rate_limit(check.limit.name, check.subject));
        }
        for arg in gcra_args(checks) {
            invocation.arg(arg);
        }
        let mut redis = self.redis.clone();
        let answer: (i64, i64) = within(self.timeout, invocation.invoke_async(&mut redis)).await?;
        let decided = decision(checks, answer.0, answer.1);
        if let Decision::Limited { limit, .. } = &decided {
            count_limited(limit);
        }
        Ok(decided)
    }
}

/// `rate_limited_total{limit}`: one more request refused by `limit` (a fixed set of names).
pub fn count_limited(limit: &'static str) {
    metrics::counter!("rate_limited_total", "limit" => limit).increment(1);
}

/// `rate_limit_unavailable_total{limit}`: the limiter could not decide `limit`.
pub fn count_unavailable(limit: &'static str) {
    metrics::counter!("rate_limit_unavailable_total", "limit" => limit).increment(1);
}

/// The limits on connect requests. The oauth-worker decides them atomically with the OAuth state
/// it stores; the api charges requests for a connector that does not exist to the same
/// `connect_per_subaccount` budget, so both read these settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectLimits {
    pub connect_per_subaccount: Limit,
    pub emails_per_subaccount: Limit,
    pub emails_per_recipient: Limit,
    /// Issued, not yet used OAuth states one subaccount may have.
    pub live_states_per_subaccount: u32,
}

impl ConnectLimits {
    pub fn from_env(env: &mut Env) -> Self {
        let live_states_per_subaccount: u32 = env.value(
            "MAX_LIVE_OAUTH_STATES_PER_SUBACCOUNT",
            "200",
            "Most issued, not yet used authorization links (OAuth states) one subaccount may have \
             at once; beyond it connect answers 429 `live_states_per_subaccount` until one is used \
             or expires.",
        );
        if !(1..=10_000_000).contains(&live_states_per_subaccount) {
            env.problem(
                "MAX_LIVE_OAUTH_STATES_PER_SUBACCOUNT",
                "must be between 1 and 10000000",
            );
        }
        Self {
            connect_per_subaccount: connect_per_subaccount(env),
            emails_per_subaccount: Limit {
                name: ConnectLimit::EmailsPerSubaccount.name(),
                rate: env.value(
                    "RATE_LIMIT_EMAILS_PER_SUBACCOUNT",
                    "100/1h",
                    "Authorization emails one subaccount may have sent (`sendEmail: true`), as \
                     `count/period`: a burst of `count`, refilled evenly over `period`.",
                ),
            },
            emails_per_recipient: Limit {
                name: ConnectLimit::EmailsPerRecipient.name(),
                rate: env.value(
                    "RATE_LIMIT_EMAILS_PER_RECIPIENT",
                    "5/1h",
                    "Authorization emails one address may receive, across all subaccounts, as \
                     `count/period` (a person is not mail-bombed by many tenants at once).",
                ),
            },
            live_states_per_subaccount,
        }
    }

    /// The limit of `which`, `None` for the state cap (a count, not a rate).
    pub fn limit(&self, which: ConnectLimit) -> Option<&Limit> {
        match which {
            ConnectLimit::ConnectPerSubaccount => Some(&self.connect_per_subaccount),
            ConnectLimit::EmailsPerSubaccount => Some(&self.emails_per_subaccount),
            ConnectLimit::EmailsPerRecipient => Some(&self.emails_per_recipient),
            ConnectLimit::LiveStatesPerSubaccount => None,
        }
    }

    /// `which` in words, for the caller: `at most 60 per 1m`.
    pub fn describe(&self, which: ConnectLimit) -> String {
        match self.limit(which) {
            Some(limit) => format!("at most {}", limit.rate.describe()),
            None => format!("at most {} at once", self.live_states_per_subaccount),
        }
    }
    /// The limits as the oauth-worker hands them to the api, in its link settings.
    pub fn to_spec(&self) -> LinkLimits {
        let spec = |rate: Rate| RateSpec {
            count: rate.count,
            period_ms: u64::try_from(rate.period.as_millis()).unwrap_or(u64::MAX),
        };
        LinkLimits {
            connect_per_subaccount: spec(self.connect_per_subaccount.rate),
            emails_per_subaccount: spec(self.emails_per_subaccount.rate),
            emails_per_recipient: spec(self.emails_per_recipient.rate),
            live_states_per_subaccount: self.live_states_per_subaccount,
        }
    }

    /// The limits of [`Self::to_spec`]'s answer; `None` when one makes no sense (a count or a
    /// period of zero, a period over a year), which no oauth-worker sends.
    pub fn from_spec(spec: &LinkLimits) -> Option<Self> {
        let rate = |spec: RateSpec| {
            let period = Duration::from_millis(spec.period_ms);
            let sane = spec.count >= 1
                && !period.is_zero()
                && period <= Duration::from_secs(366 * 24 * 3600);
            sane.then_some(Rate::new(spec.count, period))
        };
        if spec.live_states_per_subaccount == 0 {
            return None;
        }
        Some(Self {
            connect_per_subaccount: Limit {
                name: ConnectLimit::ConnectPerSubaccount.name(),
                rate: rate(spec.connect_per_subaccount)?,
            },
            emails_per_subaccount: Limit {
                name: ConnectLimit::EmailsPerSubaccount.name(),
                rate: rate(spec.emails_per_subaccount)?,
            },
            emails_per_recipient: Limit {
                name: ConnectLimit::EmailsPerRecipient.name(),
                rate: rate(spec.emails_per_recipient)?,
            },
            live_states_per_subaccount: spec.live_states_per_subaccount,
        })
    }
}

/// `RATE_LIMIT_CONNECT_PER_SUBACCOUNT`.
pub fn connect_per_subaccount(env: &mut Env) -> Limit {
    Limit {
        name: ConnectLimit::ConnectPerSubaccount.name(),
        rate: env.value(
            "RATE_LIMIT_CONNECT_PER_SUBACCOUNT",
            "60/1m",
            "Connect requests one subaccount may make, as `count/period`: a burst of `count`, \
             refilled evenly over `period` (429 `rate_limited` beyond). Read by the api and the \
             oauth-worker: give both the same value.",
        ),
    }
}

/// `RATE_LIMIT_TIMEOUT`: how long a limit decision may wait for Redis.
pub fn limiter_timeout(env: &mut Env) -> Duration {
    let timeout: Duration = env
        .value::<HumanDuration>(
            "RATE_LIMIT_TIMEOUT",
            "250ms",
            "How long a rate-limit decision may wait for Redis before the limit's documented \
             fallback applies (see the operator guide).",
        )
        .into();
    if !(Duration::from_millis(10)..=Duration::from_secs(5)).contains(&timeout) {
        env.problem("RATE_LIMIT_TIMEOUT", "must be between 10ms and 5s");
    }
    timeout
}

/// The subject an email address is limited under: a digest, so Redis never holds addresses
/// (the address is lower-cased first; one person, one budget).
pub fn recipient_subject(address: &str) -> String {
    subject_digest(&address.trim().to_lowercase())
}

/// A limit subject that is any text (a user id, a service name): 128 bits of its SHA-256, so a
/// key is short and holds no identifier in the clear.
pub fn subject_digest(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}

/// Whole seconds for a `Retry-After` header: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let rate: Rate = "60/1m".parse().expect("rate");
        assert_eq!(rate, Rate::new(60, Duration::from_secs(60)));
        assert_eq!(rate.to_string(), "60/1m");
        assert_eq!(rate.describe(), "60 per 1m");
        assert!((rate.interval_micros() - 1_000_000.0).abs() < 1e-6);
        assert_eq!(
            " 100 / 1h ".parse::<Rate>().expect("rate").period,
            Duration::from_secs(3600)
        );
        for bad in [
            "60", "0/1m", "x/1m", "5/soon", "5/0s", "5/500ms", "5/30d", "-1/1m",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_travel_to_the_api_unchanged_and_nonsense_is_refused() {
        let mut env = Env::from_pairs([
            ("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", "7/10s"),
            ("RATE_LIMIT_EMAILS_PER_RECIPIENT", "3/2h"),
            ("MAX_LIVE_OAUTH_STATES_PER_SUBACCOUNT", "9"),
        ]);
        let limits = ConnectLimits::from_env(&mut env);
        env.finish().expect("parse");
        let spec = limits.to_spec();
        let back = ConnectLimits::from_spec(&spec).expect("sane");
        assert_eq!(back.to_spec(), spec);
        for which in ConnectLimit::ALL {
            assert_eq!(back.describe(which), limits.describe(which), "{which:?}");
            assert_eq!(
                back.limit(which).map(|l| l.name),
                limits.limit(which).map(|l| l.name)
            );
        }
        let zero_count = LinkLimits {
            connect_per_subaccount: RateSpec {
                count: 0,
                period_ms: 1000,
            },
            ..spec
        };
        let zero_period = LinkLimits {
            emails_per_subaccount: RateSpec {
                count: 1,
                period_ms: 0,
            },
            ..spec
        };
        let no_states = LinkLimits {
            live_states_per_subaccount: 0,
            ..spec
        };
        for nonsense in [zero_count, zero_period, no_states] {
            assert!(
                ConnectLimits::from_spec(&nonsense).is_none(),
                "{nonsense:?}"
            );
        }
    }

    #[test]
    fn defaults_are_real_limits() {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let limits = ConnectLimits::from_env(&mut env);
        assert_eq!(limiter_timeout(&mut env), Duration::from_millis(250));
        env.finish().expect("defaults parse");
        assert_eq!(
            limits.connect_per_subaccount.rate,
            Rate::new(60, Duration::from_secs(60))
        );
        assert_eq!(
            limits.emails_per_subaccount.rate,
            Rate::new(100, Duration::from_secs(3600))
        );
        assert_eq!(
            limits.emails_per_recipient.rate,
            Rate::new(5, Duration::from_secs(3600))
        );
        assert_eq!(limits.live_states_per_subaccount, 200);
        for which in ConnectLimit::ALL {
            assert!(limits.describe(which).starts_with("at most "), "{which:?}");
        }
    }

    #[test]
    fn bad_limits_are_refused_by_name() {
        let mut env = Env::from_pairs([
            ("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", "lots"),
            ("RATE_LIMIT_EMAILS_PER_RECIPIENT", "0/1h"),
            ("MAX_LIVE_OAUTH_STATES_PER_SUBACCOUNT", "0"),
            ("RATE_LIMIT_TIMEOUT", "1h"),
        ]);
        let _ = ConnectLimits::from_env(&mut env);
        let _ = limiter_timeout(&mut env);
        let err = env.finish().expect_err("bad limits");
        let names: Vec<_> = err.problems.iter().map(|p| p.setting.as_str()).collect();
        for name in [
            "RATE_LIMIT_CONNECT_PER_SUBACCOUNT",
            "RATE_LIMIT_EMAILS_PER_RECIPIENT",
            "MAX_LIVE_OAUTH_STATES_PER_SUBACCOUNT",
            "RATE_LIMIT_TIMEOUT",
        ] {
            assert!(names.contains(&name), "{name} missing from {err}");
        }
    }

    #[test]
    fn recipients_are_limited_by_a_digest_of_the_lowercased_address() {
        let a = recipient_subject("Person@Example.com");
        assert_eq!(a, recipient_subject("person@example.com"));
        assert_ne!(a, recipient_subject("other@example.com"));
        assert_eq!(a.len(), 32);
        assert!(!a.contains('@'));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(36)), 36);
    }

    #[test]
    fn a_refusal_names_the_refusing_limit() {
        let a = Limit {
            name: "a",
            rate: Rate::new(1, Duration::from_secs(1)),
        };
        let b = Limit {
            name: "b",
            rate: Rate::new(1, Duration::from_secs(1)),
        };
        let checks = [
            Check {
                limit: &a,
                subject: "x",
            },
            Check {
                limit: &b,
                subject: "y",
            },
        ];
        assert_eq!(decision(&checks, 0, 0), Decision::Allowed);
        assert_eq!(
            decision(&checks, 2, 1_500_000),
            Decision::Limited {
                limit: "b",
                retry_after: Duration::from_millis(1500)
            }
        );
        assert_eq!(gcra_args(&checks), ["1000000.000", "1", "1000000.000", "1"]);
    }
}
