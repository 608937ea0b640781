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

/// A NATS server address, checked the way the client will read it.
#[derive(Debug, Clone)]
pub struct NatsUrl(pub async_nats::ServerAddr);

impl FromStr for NatsUrl {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        raw.parse::<async_nats::ServerAddr>()
            .map(NatsUrl)
            .map_err(|e| format!("not a NATS server address such as nats://127.0.0.1:4222 ({e})"))
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
    pub namespace: Namespace,
    pub mongodb_uri: MongoUri,
    pub database_template: DatabaseTemplate,
    pub redis_url: RedisUrl,
    pub redis_key_prefix: String,
    /// How long start-up keeps retrying an unreachable NATS, MongoDB or Redis before giving up.
    pub startup_timeout: Duration,
    /// How long a graceful shutdown may take before in-flight work is abandoned.
    pub shutdown_grace: Duration,
    pub streams: StreamSettings,
    pub log_format: LogFormat,
    /// OTLP/HTTP collector that receives the spans; `None`: nothing is exported.
    pub otlp_endpoint: Option<url::Url>,
}

/// Retention of the JetStream streams, applied (and updated) by every service at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    pub events_max_age: Duration,
    pub duplicate_window: Duration,
    pub dead_letter_max_age: Duration,
    pub replicas: usize,
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
        let replicas: usize = env.value(
            "STREAM_REPLICAS",
            "1",
            "JetStream replicas of each stream (3 on a NATS cluster).",
        );
        if !(1..=5).contains(&replicas) {
            env.problem("STREAM_REPLICAS", "must be between 1 and 5");
        }
        Self {
            nats_url: env.value(
                "NATS_URL",
                "nats://127.0.0.1:4222",
                "NATS server with JetStream enabled.",
            ),
            namespace: env.value(
                "NATS_NAMESPACE",
                "gcal",
                "Prefix of every NATS subject and stream name of this deployment.",
            ),
            mongodb_uri: env.value(
                "MONGODB_URI",
                "mongodb://127.0.0.1:27017",
                "MongoDB (or MongoDB-wire) server holding the tenant databases.",
            ),
            database_template: env.value(
                "MONGODB_DATABASE_TEMPLATE",
                "gcal_{subaccountId}",
                "Name of a tenant's database; {subaccountId} is replaced by the subaccount id.",
            ),
            redis_url: env.value(
                "REDIS_URL",
                "redis://127.0.0.1:6379",
                "Redis server for OAuth state, token cache, locks and read caches.",
            ),
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
            streams: StreamSettings {
                events_max_age: env
                    .value::<HumanDuration>(
                        "EVENTS_MAX_AGE",
                        "30d",
                        "How long the domain event stream keeps events (the replay window).",
                    )
                    .into(),
                duplicate_window: env
                    .value::<HumanDuration>(
                        "EVENTS_DUPLICATE_WINDOW",
                        "2m",
                        "Window in which JetStream drops a re-published event id.",
                    )
                    .into(),
                dead_letter_max_age: env
                    .value::<HumanDuration>(
                        "DEAD_LETTER_MAX_AGE",
                        "90d",
                        "How long parked (dead-lettered) events are kept.",
                    )
                    .into(),
                replicas,
            },
            log_format: env.value("LOG_FORMAT", "text", "`text` or `json` (one object per line)."),
            otlp_endpoint: env.optional(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTLP/HTTP collector base URL (e.g. `http://127.0.0.1:4318`); when set, spans are sampled and exported to `<url>/v1/traces`. Unset: trace context still travels and logs show `trace_id`, nothing is exported.",
            ),
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
            ("NATS_URL", "nats://[::1"),
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
    }

    #[test]
    fn empty_values_take_the_default() {
        let mut env = Env::from_pairs([("NATS_URL", "  ")]);
        let config = CommonConfig::from_env(&mut env);
        env.finish().expect("empty means default");
        assert_eq!(config.nats_url.0.host(), "127.0.0.1");
        assert_eq!(config.nats_url.0.port(), 4222);
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
