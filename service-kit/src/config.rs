//! Typed configuration from the environment (and an optional `.env` file).
//!
//! Every setting has a built-in default that runs on loopback, so the system starts with no
//! configuration at all. A service reads all of its settings through one [`Env`], which keeps
//! going past a bad value and reports *every* missing or invalid setting at once, by name:
//!
//! ```text
//! invalid configuration (2 problems):
//!   MONGODB_URI: not a MongoDB connection string: connection string contains no scheme
//!   NATS_URL: not a NATS server address: ...
//! ```
//!
//! Values are never echoed back in errors: URLs carry passwords.
//!
//! Why not `envy`, `config` or `figment`: each stops at the first bad value, and the house rule
//! is to name every problem in one start-up.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemas::subjects::Namespace;

/// One setting a service reads: its name, built-in default and what it is for. Collected by
/// [`Env`] so the operator guide's configuration reference can be generated from the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingDoc {
    pub name: &'static str,
    /// `None` when the setting is optional and absent by default.
    pub default: Option<&'static str>,
    pub description: &'static str,
}

/// A setting whose value could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub setting: String,
    pub reason: String,
}

/// Every problem found while reading a service's configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}: {}", p.setting, p.reason)?;
        }
        Ok(())
    }
}

/// The source of settings, collecting problems instead of stopping at the first.
#[derive(Debug)]
pub struct Env {
    vars: BTreeMap<String, String>,
    problems: Vec<ConfigProblem>,
    read: Vec<SettingDoc>,
}

impl Env {
    /// The process environment, over the variables of a `.env` file in the working directory
    /// if there is one (a real environment variable wins over the file). A `.env` that exists
    /// but cannot be read is itself reported as a problem.
    pub fn from_process() -> Self {
        let mut vars = BTreeMap::new();
        let mut problems = Vec::new();
        match dotenvy::from_filename_iter(".env") {
            Ok(iter) => {
                for item in iter {
                    match item {
                        Ok((k, v)) => {
                            vars.insert(k, v);
                        }
                        Err(e) => problems.push(ConfigProblem {
                            setting: ".env".into(),
                            reason: format!("cannot be parsed: {e}"),
                        }),
                    }
                }
            }
            Err(e) if e.not_found() => {}
            Err(e) => problems.push(ConfigProblem {
                setting: ".env".into(),
                reason: format!("cannot be read: {e}"),
            }),
        }
        vars.extend(std::env::vars());
        Self {
            vars,
            problems,
            read: Vec::new(),
        }
    }

    /// Settings given explicitly (tests, embedding). Nothing is read from the process.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            problems: Vec::new(),
            read: Vec::new(),
        }
    }

    /// A setting with a built-in default. An unset or empty variable takes the default; a value
    /// that does not parse is recorded as a problem (and the default stands in until `finish`).
    pub fn value<T>(
        &mut self,
        name: &'static str,
        default: &'static str,
        description: &'static str,
    ) -> T
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.read.push(SettingDoc {
            name,
            default: Some(default),
            description,
        });
        if let Some(raw) = self.raw(name) {
            match raw.parse::<T>() {
                Ok(v) => return v,
                Err(e) => self.problem(name, e.to_string()),
            }
        }
        match default.parse::<T>() {
            Ok(v) => v,
            // A default is code, not input; `defaults_all_parse` tests in each service prove
            // this arm unreachable.
            Err(e) => panic!("built-in default of {name} ({default:?}) does not parse: {e}"),
        }
    }

    /// A setting with no default: `None` when unset or empty, a problem when unparsable.
    pub fn optional<T>(&mut self, name: &'static str, description: &'static str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.read.push(SettingDoc {
            name,
            default: None,
            description,
        });
        let raw = self.raw(name)?;
        match raw.parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(name, e.to_string());
                None
            }
        }
    }

    /// Records a problem found by a cross-setting check (e.g. "A must be less than B").
    pub fn problem(&mut self, setting: &str, reason: impl Into<String>) {
        self.problems.push(ConfigProblem {
            setting: setting.to_owned(),
            reason: reason.into(),
        });
    }

    /// The settings read so far, in reading order.
    pub fn documented(&self) -> &[SettingDoc] {
        &self.read
    }

    /// Ends reading: `Ok` when every setting was usable, otherwise every problem at once.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }

    fn raw(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }
}

/// A duration written for people: `500ms`, `30s`, `10m`, `14d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(raw)
            .map(HumanDuration)
            .map_err(|e| format!("not a duration such as 500ms, 30s, 10m or 14d ({e})"))
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

/// A size in bytes written for people: `4096`, `64KiB`, `512MiB`, `10GiB` (binary units), or
/// `64KB`, `10GB` (decimal units). Case does not matter; a space before the unit is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a size such as 4096, 64KiB, 512MiB or 10GiB (got {raw:?})");
        let raw = raw.trim();
        let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
        let (digits, unit) = raw.split_at(split);
        let number: u64 = digits.parse().map_err(|_| bad())?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("{raw} is too large"))
    }
}

impl ByteSize {
    /// As JetStream's signed limits want it (saturating: no real limit comes near).
    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

/// How many copies JetStream keeps of each stream (`STREAM_REPLICAS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamReplicas {
    /// Three on a cluster (a majority survives one node), one on a single server.
    Auto,
    Count(usize),
}

impl StreamReplicas {
    /// Replicas on the server the client is connected to: `clustered` when that server reports
    /// a cluster name.
    pub fn count(self, clustered: bool) -> usize {
        match self {
            Self::Count(n) => n,
            Self::Auto if clustered => 3,
            Self::Auto => 1,
        }
    }
}

impl FromStr for StreamReplicas {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        match raw.parse::<usize>() {
            Ok(n) if (1..=5).contains(&n) => Ok(Self::Count(n)),
            _ => Err("must be `auto` or a number between 1 and 5".into()),
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err("must be `text` or `json`".into()),
        }
    }
}

/// The NATS servers to connect to: one address, or a comma-separated list of a cluster's seeds
/// (`tls://n1:4222,tls://n2:4222,tls://n3:4222`), each checked the way the client will read it.
/// The client connects to any of them and learns the rest of the cluster from the server.
#[derive(Debug, Clone)]
pub struct NatsUrl(pub Vec<async_nats::ServerAddr>);

impl NatsUrl {
    /// Whether every seed is on loopback.
    pub fn is_loopback(&self) -> bool {
        self.0
            .iter()
            .all(|addr| crate::exposure::is_loopback_host(addr.host()))
    }

    /// Whether any seed asks for TLS (`tls://`); the client then requires it of every server.
    pub fn tls_required(&self) -> bool {
        self.0.iter().any(async_nats::ServerAddr::tls_required)
    }
}

impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, addr) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", addr.host(), addr.port())?;
        }
        Ok(())
    }
}

impl FromStr for NatsUrl {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let servers = raw
            .split(',')
            .map(str::trim)
            .filter(|seed| !seed.is_empty())
            .enumerate()
            .map(|(i, seed)| {
                // The seed is not echoed: it may carry a user and password.
                seed.parse::<async_nats::ServerAddr>().map_err(|e| {
                    format!(
                        "seed {} is not a NATS server address such as nats://127.0.0.1:4222 ({e})",
                        i + 1
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err("names no server (one address, or a comma-separated list of seeds)".into());
        }
        Ok(NatsUrl(servers))
    }
}

/// A MongoDB connection string, parsed (without contacting any server) by the driver itself.
#[derive(Clone)]
pub struct MongoUri(pub String);

impl fmt::Debug for MongoUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MongoUri(<redacted>)")
    }
}

impl FromStr for MongoUri {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        mongodb::options::ConnectionString::parse(raw)
            .map(|_| MongoUri(raw.to_owned()))
            .map_err(|e| {
                format!(
                    "not a MongoDB connection string such as mongodb://127.0.0.1:27017 ({})",
                    e.kind
                )
            })
    }
}

impl MongoUri {
    /// Whether the connection string leaves TLS off while naming a host that is not loopback
    /// (`mongodb+srv://` is TLS unless `tls=false`; a Unix socket is local).
    pub fn is_plaintext_off_loopback(&self) -> bool {
        use mongodb::options::{ConnectionString, HostInfo, ServerAddress, Tls};
        let Ok(parsed) = ConnectionString::parse(&self.0) else {
            return false;
        };
        let tls = match (&parsed.tls, &parsed.host_info) {
            (Some(Tls::Enabled(_)), _) => true,
            (Some(Tls::Disabled), _) => false,
            (None, HostInfo::DnsRecord(_)) => true,
            (None, _) => false,
        };
        let off_loopback = match &parsed.host_info {
            HostInfo::DnsRecord(_) => true,
            HostInfo::HostIdentifiers(hosts) => hosts.iter().any(|host| match host {
                ServerAddress::Tcp { host, .. } => !crate::exposure::is_loopback_host(host),
                _ => false,
            }),
            _ => true,
        };
        !tls && off_loopback
    }
}

/// A Redis URL, parsed by the client library without connecting.
#[derive(Clone)]
pub struct RedisUrl(pub String);

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisUrl(<redacted>)")
    }
}

impl FromStr for RedisUrl {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        redis::Client::open(raw)
            .map(|_| RedisUrl(raw.to_owned()))
            .map_err(|e| {
                format!(
                    "not a Redis URL such as redis://127.0.0.1:6379 ({:?})",
                    e.kind()
                )
            })
    }
}

/// A comma-separated list of durations, e.g. `5s,30s,2m,10m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryDelays(pub Vec<Duration>);

impl FromStr for RetryDelays {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let delays = raw
            .split(',')
            .map(|part| {
                let part = part.trim();
                HumanDuration::from_str(part)
                    .map(Duration::from)
                    .map_err(|e| format!("`{part}` is {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.iter().any(Duration::is_zero) {
            return Err(
                "every delay must be longer than zero (an immediate redelivery is a busy loop)"
                    .into(),
            );
        }
        Ok(Self(delays))
    }
}

/// How a tenant's database name is made from its subaccount id: a template containing
/// `{subaccountId}`, e.g. `gcal_{subaccountId}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseTemplate(String);

impl DatabaseTemplate {
    pub const PLACEHOLDER: &'static str = "{subaccountId}";

    pub fn database_for(&self, subaccount: &schemas::SubaccountId) -> String {
        self.0.replace(Self::PLACEHOLDER, subaccount.as_str())
    }

    /// The subaccount whose database `name` is, if it is one (the inverse of
    /// [`Self::database_for`]); used to find every tenant on a server.
    pub fn subaccount_of(&self, name: &str) -> Option<schemas::SubaccountId> {
        let (prefix, suffix) = self.0.split_once(Self::PLACEHOLDER)?;
        let id = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
        schemas::SubaccountId::parse(id).ok()
    }
}

impl FromStr for DatabaseTemplate {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if !raw.contains(Self::PLACEHOLDER) {
            return Err(format!("must contain {}", Self::PLACEHOLDER));
        }
        let rest = raw.replace(Self::PLACEHOLDER, "");
        if rest
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0'))
        {
            return Err("may not contain / \\ . space \" $ (MongoDB database name rules)".into());
        }
        // 24 characters of id, and MongoDB's 63-byte limit on database names.
        if rest.len() + 24 > 63 {
            return Err("gives database names longer than MongoDB's 63 bytes".into());
        }
        Ok(Self(raw.to_owned()))
    }
}

/// The settings every service shares: where the infrastructure is and how to behave at start-up.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub nats_url: NatsUrl,
    /// Credentials and TLS of the NATS connection.
    pub nats: crate::nats::NatsClientSettings,
    pub namespace: Namespace,
    pub mongodb_uri: MongoUri,
    pub database_template: DatabaseTemplate,
    /// Where Redis is (`REDIS_URL`, or the sentinels of `REDIS_SENTINELS`) and its TLS.
    pub redis: crate::redis::RedisSettings,
    pub redis_key_prefix: String,
    /// How long start-up keeps retrying an unreachable NATS, MongoDB or Redis before giving up.
    pub startup_timeout: Duration,
    /// How long a graceful shutdown may take before in-flight work is abandoned.
    pub shutdown_grace: Duration,
    pub streams: StreamSettings,
    pub log_format: LogFormat,
    /// OTLP/HTTP collector that receives the spans; `None`: nothing is exported.
    pub otlp_endpoint: Option<url::Url>,
    /// Start even when a public default is in effect on a non-loopback listener (see
    /// [`crate::exposure`]); off by default.
    pub allow_insecure_defaults: bool,
}

/// Retention and bounds of the JetStream streams, applied (and updated) by every service at
/// start-up. See the operator guide's "Bounded storage" for why each bound is what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    pub events_max_age: Duration,
    pub duplicate_window: Duration,
    pub dead_letter_max_age: Duration,
    pub replicas: StreamReplicas,
    /// The domain stream's disk budget; once full, every publish is refused (discard New)
    /// rather than older, possibly unconsumed, events being dropped.
    pub events_max_bytes: i64,
    /// Events kept per subject, i.e. per event type and subaccount; a subaccount at its bound
    /// has its own publishes of that type refused, nobody else's.
    pub events_max_msgs_per_subject: i64,
    /// The largest event (payload and headers) the domain stream accepts.
    pub events_max_msg_size: i32,
    /// The dead-letter stream's disk budget; once full, parking fails and the consumer keeps
    /// the message pending instead of a parked event being dropped.
    pub dead_letter_max_bytes: i64,
}

impl CommonConfig {
    pub fn from_env(env: &mut Env) -> Self {
        let redis_key_prefix: String = env.value(
            "REDIS_KEY_PREFIX",
            "gcal",
            "Prefix of every Redis key this deployment writes.",
        );
        if redis_key_prefix.contains(char::is_whitespace) {
            env.problem("REDIS_KEY_PREFIX", "may not contain white space");
        }
        let replicas: StreamReplicas = env.value(
            "STREAM_REPLICAS",
            "auto",
            "JetStream replicas of each stream and consumer, 1 to 5; `auto`: 3 when the NATS server is a member of a cluster, 1 on a single server (set a number for a cluster of another size).",
        );
        let nats_url: NatsUrl = env.value(
            "NATS_URL",
            "nats://127.0.0.1:4222",
            "NATS server with JetStream enabled; for a cluster, a comma-separated list of seeds (`tls://n1:4222,tls://n2:4222,tls://n3:4222`): the client connects to any of them, learns the other members from the server and moves to another when its server goes away.",
        );
        let nats = crate::nats::NatsClientSettings::from_env(env, &nats_url);
        let redis = crate::redis::RedisSettings::from_env(env);
        let mongodb_uri: MongoUri = env.value(
            "MONGODB_URI",
            "mongodb://127.0.0.1:27017",
            "MongoDB (or MongoDB-wire) server holding the tenant databases. TLS and credentials go in the connection string (`tls=true`, `tlsCAFile=…`, `tlsCertificateKeyFile=…`; `mongodb+srv://` uses TLS by default).",
        );
        let mongodb_allow_plaintext: bool = env.value(
            "MONGODB_ALLOW_PLAINTEXT",
            "false",
            "`true` allows a connection string without TLS to a server that is not on loopback (a private network you trust). `false`: such a MONGODB_URI is refused at start-up; add `tls=true`.",
        );
        if !mongodb_allow_plaintext && mongodb_uri.is_plaintext_off_loopback() {
            env.problem(
                "MONGODB_URI",
                "a MongoDB server that is not on loopback needs TLS (tls=true, or mongodb+srv://); MONGODB_ALLOW_PLAINTEXT=true allows plaintext on a private network",
            );
        }
        Self {
            nats_url,
            nats,
            namespace: env.value(
                "NATS_NAMESPACE",
                "gcal",
                "Prefix of every NATS subject and stream name of this deployment.",
            ),
            mongodb_uri,
            database_template: env.value(
                "MONGODB_DATABASE_TEMPLATE",
                "gcal_{subaccountId}",
                "Name of a tenant's database; {subaccountId} is replaced by the subaccount id.",
            ),
            redis,
            redis_key_prefix,
            startup_timeout: env
                .value::<HumanDuration>(
                    "STARTUP_TIMEOUT",
                    "30s",
                    "How long start-up retries an unreachable NATS, MongoDB or Redis before exiting non-zero.",
                )
                .into(),
            shutdown_grace: env
                .value::<HumanDuration>(
                    "SHUTDOWN_GRACE",
                    "20s",
                    "How long a graceful shutdown waits for in-flight work.",
                )
                .into(),
            // Read here, after the start-up settings, to keep the generated reference's order.
            streams: StreamSettings::from_env(env, replicas),
            log_format: env.value("LOG_FORMAT", "text", "`text` or `json` (one object per line)."),
            otlp_endpoint: env.optional(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTLP/HTTP collector base URL (e.g. `http://127.0.0.1:4318`); when set, spans are sampled and exported to `<url>/v1/traces`. Unset: trace context still travels and logs show `trace_id`, nothing is exported.",
            ),
            allow_insecure_defaults: env.value(
                crate::exposure::ALLOW_INSECURE_DEFAULTS,
                "false",
                "`true` lets a service start although a public development default (JWT_SECRET, TOKEN_ENCRYPTION_KEYS, WEBHOOK_SECRET_KEYS, GOOGLE_CLIENT_SECRET, API_DEV_MODE) is in effect on a non-loopback listen address; it then logs an `INSECURE:` warning per setting. `false`: such a start is refused with exit 78, one line per setting.",
            ),
        }
    }
}

impl StreamSettings {
    fn from_env(env: &mut Env, replicas: StreamReplicas) -> Self {
        let events_max_age = env
            .value::<HumanDuration>(
                "EVENTS_MAX_AGE",
                "30d",
                "How long the domain event stream keeps events (the replay window).",
            )
            .into();
        let duplicate_window = env
            .value::<HumanDuration>(
                "EVENTS_DUPLICATE_WINDOW",
                "2m",
                "Window in which JetStream drops a re-published event id.",
            )
            .into();
        let dead_letter_max_age = env
            .value::<HumanDuration>(
                "DEAD_LETTER_MAX_AGE",
                "90d",
                "How long parked (dead-lettered) events are kept.",
            )
            .into();
        let events_max_bytes: ByteSize = env.value(
            "EVENTS_MAX_BYTES",
            "10GiB",
            "Disk budget of the domain event stream (reserved on the NATS server). When full, every publish is refused until events age out; nothing stored is dropped.",
        );
        let events_max_msgs_per_subject: u64 = env.value(
            "EVENTS_MAX_MSGS_PER_SUBJECT",
            "100000",
            "Events the domain stream keeps per event type and subaccount within EVENTS_MAX_AGE; a subaccount at this bound has its own publishes of that type refused, other subaccounts are unaffected.",
        );
        let events_max_msg_size: ByteSize = env.value(
            "EVENTS_MAX_MSG_SIZE",
            "64KiB",
            "Largest event (payload and headers) the domain stream accepts.",
        );
        let dead_letter_max_bytes: ByteSize = env.value(
            "DEAD_LETTER_MAX_BYTES",
            "1GiB",
            "Disk budget of the dead-letter stream (reserved on the NATS server). When full, parking fails and the event stays pending on its consumer; nothing parked is dropped.",
        );
        const MIB: u64 = 1 << 20;
        if events_max_bytes.0 < MIB {
            env.problem("EVENTS_MAX_BYTES", "must be at least 1MiB");
        }
        if dead_letter_max_bytes.0 < MIB {
            env.problem("DEAD_LETTER_MAX_BYTES", "must be at least 1MiB");
        }
        if events_max_msgs_per_subject < 1 {
            env.problem("EVENTS_MAX_MSGS_PER_SUBJECT", "must be at least 1");
        }
        // An event is about 1 KiB; below 4 KiB a legitimate one could be refused.
        if !(4 << 10..=MIB).contains(&events_max_msg_size.0) {
            env.problem(
                "EVENTS_MAX_MSG_SIZE",
                "must be between 4KiB and 1MiB (the NATS default max_payload)",
            );
        }
        Self {
            events_max_age,
            duplicate_window,
            dead_letter_max_age,
            replicas,
            events_max_bytes: events_max_bytes.as_i64(),
            events_max_msgs_per_subject: i64::try_from(events_max_msgs_per_subject)
                .unwrap_or(i64::MAX),
            events_max_msg_size: i32::try_from(events_max_msg_size.0).unwrap_or(i32::MAX),
            dead_letter_max_bytes: dead_letter_max_bytes.as_i64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_all_parse_and_run_on_loopback() {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let config = CommonConfig::from_env(&mut env);
        assert!(env.documented().len() >= 10);
        env.finish().expect("defaults are valid");
        assert_eq!(config.namespace.prefix(), "gcal");
        assert_eq!(config.startup_timeout, Duration::from_secs(30));
    }

    #[test]
    fn every_bad_setting_is_reported_at_once_by_name_without_its_value() {
        let mut env = Env::from_pairs([
            ("MONGODB_URI", "definitely not a uri with s3cr3t"),
            ("NATS_URL", "nats://127.0.0.1:4222,nats://user:s3cr3t@[::1"),
            ("STARTUP_TIMEOUT", "soon"),
            ("NATS_NAMESPACE", "a.b"),
            ("MONGODB_DATABASE_TEMPLATE", "tenant"),
            ("STREAM_REPLICAS", "0"),
            ("LOG_FORMAT", "xml"),
        ]);
        CommonConfig::from_env(&mut env);
        let err = env.finish().expect_err("bad settings");
        let names: Vec<_> = err.problems.iter().map(|p| p.setting.as_str()).collect();
        for expected in [
            "MONGODB_URI",
            "NATS_URL",
            "STARTUP_TIMEOUT",
            "NATS_NAMESPACE",
            "MONGODB_DATABASE_TEMPLATE",
            "STREAM_REPLICAS",
            "LOG_FORMAT",
        ] {
            assert!(names.contains(&expected), "{expected} missing from {err}");
        }
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(err.to_string().contains("seed 2 is not"), "{err}");
    }

    #[test]
    fn plaintext_mongodb_off_loopback_is_refused_unless_allowed() {
        let problems = |pairs: &[(&str, &str)]| {
            let mut env = Env::from_pairs(pairs.iter().copied());
            CommonConfig::from_env(&mut env);
            env.finish()
                .err()
                .map(|e| {
                    e.problems
                        .into_iter()
                        .map(|p| p.setting)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            problems(&[("MONGODB_URI", "mongodb://db.internal:27017")]),
            ["MONGODB_URI"]
        );
        assert_eq!(
            problems(&[("MONGODB_URI", "mongodb://127.0.0.1:27017,db.internal:27017")]),
            ["MONGODB_URI"]
        );
        for fine in [
            vec![("MONGODB_URI", "mongodb://db.internal:27017/?tls=true")],
            vec![("MONGODB_URI", "mongodb+srv://cluster.example.net")],
            vec![
                ("MONGODB_URI", "mongodb://db.internal:27017"),
                ("MONGODB_ALLOW_PLAINTEXT", "true"),
            ],
            vec![("MONGODB_URI", "mongodb://localhost:27017")],
            vec![("MONGODB_URI", "mongodb://[::1]:27017")],
        ] {
            assert!(problems(&fine).is_empty(), "{fine:?}");
        }
        assert_eq!(
            problems(&[(
                "MONGODB_URI",
                "mongodb+srv://cluster.example.net/?tls=false"
            )]),
            ["MONGODB_URI"]
        );
    }

    #[test]
    fn empty_values_take_the_default() {
        let mut env = Env::from_pairs([("NATS_URL", "  ")]);
        let config = CommonConfig::from_env(&mut env);
        env.finish().expect("empty means default");
        assert_eq!(config.nats_url.0[0].host(), "127.0.0.1");
        assert_eq!(config.nats_url.0[0].port(), 4222);
    }

    #[test]
    fn sizes_read_in_binary_and_decimal_units() {
        for (raw, bytes) in [
            ("4096", 4096),
            ("64KiB", 64 << 10),
            ("512 MiB", 512 << 20),
            ("10gib", 10 << 30),
            ("2TiB", 2 << 40),
            ("64KB", 64_000),
            ("10GB", 10_000_000_000),
            ("7b", 7),
        ] {
            assert_eq!(raw.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{raw}");
        }
        for bad in [
            "",
            "ten",
            "10 parsecs",
            "-1",
            "1.5GiB",
            "99999999999999999999TiB",
        ] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn streams_are_bounded_by_default_and_bad_bounds_are_named() {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let streams = CommonConfig::from_env(&mut env).streams;
        env.finish().expect("defaults are valid");
        assert_eq!(streams.events_max_bytes, 10 << 30);
        assert_eq!(streams.events_max_msgs_per_subject, 100_000);
        assert_eq!(streams.events_max_msg_size, 64 << 10);
        assert_eq!(streams.dead_letter_max_bytes, 1 << 30);
        // The per-subject bound must exceed what rate-limited legitimate use stores within
        // the replay window: ~100 emailed links per subaccount and hour for 30 days.
        let hours = i64::try_from(streams.events_max_age.as_secs() / 3600).expect("hours");
        assert!(streams.events_max_msgs_per_subject > 100 * hours);

        let mut env = Env::from_pairs([
            ("EVENTS_MAX_BYTES", "100KiB"),
            ("EVENTS_MAX_MSGS_PER_SUBJECT", "0"),
            ("EVENTS_MAX_MSG_SIZE", "2MiB"),
            ("DEAD_LETTER_MAX_BYTES", "lots"),
        ]);
        CommonConfig::from_env(&mut env);
        let err = env.finish().expect_err("bad bounds");
        let names: Vec<_> = err.problems.iter().map(|p| p.setting.as_str()).collect();
        for expected in [
            "EVENTS_MAX_BYTES",
            "EVENTS_MAX_MSGS_PER_SUBJECT",
            "EVENTS_MAX_MSG_SIZE",
            "DEAD_LETTER_MAX_BYTES",
        ] {
            assert!(names.contains(&expected), "{expected} missing from {err}");
        }
    }

    #[test]
    fn database_template_makes_tenant_names() {
        let t: DatabaseTemplate = "t_{subaccountId}".parse().expect("valid");
        let id = schemas::SubaccountId::parse("68cf05f060d294db17c0685e").expect("id");
        assert_eq!(t.database_for(&id), "t_68cf05f060d294db17c0685e");
        assert_eq!(t.subaccount_of("t_68cf05f060d294db17c0685e"), Some(id));
        assert_eq!(t.subaccount_of("u_68cf05f060d294db17c0685e"), None);
        assert_eq!(t.subaccount_of("t_not-an-id"), None);
        let around: DatabaseTemplate = "a_{subaccountId}_z".parse().expect("valid");
        assert!(
            around
                .subaccount_of("a_68cf05f060d294db17c0685e_z")
                .is_some()
        );
        assert!(around.subaccount_of("a_68cf05f060d294db17c0685e").is_none());
        assert!("x.{subaccountId}".parse::<DatabaseTemplate>().is_err());
        assert!(
            format!("{}{{subaccountId}}", "a".repeat(40))
                .parse::<DatabaseTemplate>()
                .is_err()
        );
    }
}
