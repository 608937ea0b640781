//! Where Redis is and how it is reached: `REDIS_URL`'s server itself, or whichever server the
//! sentinels of `REDIS_SENTINELS` name as the primary of `REDIS_SENTINEL_MASTER`; and the TLS
//! policy both follow. Values are never echoed in problems: URLs carry passwords.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::config::{Env, RedisUrl};

/// Every Redis setting, checked together (the plaintext rule spans them all).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The server itself; with [`Self::sentinel`], only its scheme, credentials, database and
    /// protocol (the server is the primary the sentinels name).
    pub url: RedisUrl,
    /// `Some`: the primary is found through Sentinel.
    pub sentinel: Option<SentinelSettings>,
    pub tls: RedisTls,
}

/// How the Redis connections are protected: `rediss://` means TLS, verified against the
/// system's roots or, when set, the CA in `REDIS_TLS_CA_FILE`. Plaintext (`redis://`) to a
/// server or sentinel that is not on loopback is refused unless `REDIS_ALLOW_PLAINTEXT=true`
/// says the network is private.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    pub ca_file: Option<PathBuf>,
    pub allow_plaintext: bool,
}

/// Sentinel mode: the sentinels to ask, and the name of the primary they monitor.
#[derive(Clone)]
pub struct SentinelSettings {
    /// Every sentinel as a `redis://` or `rediss://` URL with an explicit port (bare
    /// `host:port` entries took `REDIS_URL`'s scheme), credentials included.
    pub sentinels: Vec<String>,
    /// `REDIS_SENTINEL_MASTER`.
    pub master: String,
}

impl fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("sentinels", &self.sentinels.len())
            .field("master", &self.master)
            .finish()
    }
}

impl RedisSettings {
    /// Reads `REDIS_URL`, `REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`, `REDIS_TLS_CA_FILE` and
    /// `REDIS_ALLOW_PLAINTEXT`, and checks them against one another.
    pub fn from_env(env: &mut Env) -> Self {
        let url: RedisUrl = env.value(
            "REDIS_URL",
            "redis://127.0.0.1:6379",
            "Redis server for OAuth state, token cache, locks, read caches, rate-limit budgets and webhook retry counts (every key expires). With REDIS_SENTINELS only its scheme (rediss:// = TLS to the data nodes), user, password, database number and protocol are used; its host and port are ignored.",
        );
        let sentinels: Option<SentinelList> = env.optional(
            "REDIS_SENTINELS",
            "Sentinel mode: comma-separated sentinels (`host:port`, or redis:// / rediss:// URLs, which may carry the sentinels' user and password). The services ask them for the primary of REDIS_SENTINEL_MASTER, and ask again after a connection error, a timeout or a READONLY answer (a failover). A bare host:port takes REDIS_URL's scheme. Unset: REDIS_URL's server is used directly.",
        );
        let master: String = env.value(
            "REDIS_SENTINEL_MASTER",
            "mymaster",
            "With REDIS_SENTINELS: the name the sentinels monitor the primary under (`sentinel monitor <name> …`).",
        );
        if master.contains(|c: char| c.is_whitespace() || c == ',') {
            env.problem(
                "REDIS_SENTINEL_MASTER",
                "may not contain white space or commas",
            );
        }
        let tls = RedisTls {
            ca_file: env.optional(
                "REDIS_TLS_CA_FILE",
                "PEM file of the CA that signs the Redis servers' and sentinels' certificates (with rediss://); unset, the system's roots are trusted.",
            ),
            allow_plaintext: env.value(
                "REDIS_ALLOW_PLAINTEXT",
                "false",
                "`true` allows plaintext redis:// to a Redis server or sentinel that is not on loopback (a private network you trust). `false`: such a REDIS_URL or REDIS_SENTINELS entry is refused at start-up, and so is a primary off loopback named by the sentinels; use rediss://.",
            ),
        };
        let url_tls = url.0.starts_with("rediss://");
        let sentinel = sentinels.map(|list| SentinelSettings {
            sentinels: list.urls(if url_tls { "rediss" } else { "redis" }),
            master,
        });
        match &sentinel {
            None => {
                if !url_tls && !tls.allow_plaintext && !is_loopback(&url.0) {
                    env.problem(
                        "REDIS_URL",
                        "a Redis server that is not on loopback needs TLS (rediss://); REDIS_ALLOW_PLAINTEXT=true allows plaintext on a private network",
                    );
                }
                if tls.ca_file.is_some() && !url_tls {
                    env.problem("REDIS_TLS_CA_FILE", "needs a rediss:// REDIS_URL");
                }
            }
            Some(sentinel) => {
                for (i, entry) in sentinel.sentinels.iter().enumerate() {
                    if !entry.starts_with("rediss://")
                        && !tls.allow_plaintext
                        && !is_loopback(entry)
                    {
                        env.problem(
                            "REDIS_SENTINELS",
                            format!(
                                "entry {}: a sentinel that is not on loopback needs TLS (rediss://); REDIS_ALLOW_PLAINTEXT=true allows plaintext on a private network",
                                i + 1
                            ),
                        );
                    }
                }
                let any_tls = url_tls
                    || sentinel
                        .sentinels
                        .iter()
                        .any(|s| s.starts_with("rediss://"));
                if tls.ca_file.is_some() && !any_tls {
                    env.problem(
                        "REDIS_TLS_CA_FILE",
                        "needs a rediss:// REDIS_URL or rediss:// sentinels",
                    );
                }
            }
        }
        Self { url, sentinel, tls }
    }
}

/// `REDIS_SENTINELS` as written: each entry a bare `host:port` (no credentials) or a URL.
#[derive(Clone)]
struct SentinelList(Vec<Entry>);

#[derive(Clone)]
enum Entry {
    Bare(String),
    Url(String),
}

impl SentinelList {
    /// Every entry as a URL; bare ones take `scheme`.
    fn urls(&self, scheme: &str) -> Vec<String> {
        self.0
            .iter()
            .map(|entry| match entry {
                Entry::Bare(address) => format!("{scheme}://{address}"),
                Entry::Url(url) => url.clone(),
            })
            .collect()
    }
}

impl FromStr for SentinelList {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let entries = raw
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .enumerate()
            .map(|(i, entry)| parse_entry(entry).map_err(|why| format!("entry {}: {why}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        if entries.is_empty() {
            return Err("names no sentinel".into());
        }
        // The sentinel client logs in to every sentinel with one user and password.
        let mut credentials = entries.iter().filter_map(|entry| match entry {
            Entry::Url(url) => url::Url::parse(url)
                .ok()
                .filter(|u| !u.username().is_empty() || u.password().is_some())
                .map(|u| (u.username().to_owned(), u.password().map(str::to_owned))),
            Entry::Bare(_) => None,
        });
        if let Some(first) = credentials.next()
            && credentials.any(|other| other != first)
        {
            return Err(
                "the entries carry different credentials; the sentinels share one user and password"
                    .into(),
            );
        }
        Ok(Self(entries))
    }
}

/// One sentinel: `host:port` or `redis[s]://[user:password@]host:port`. The reason never
/// repeats the entry.
fn parse_entry(entry: &str) -> Result<Entry, &'static str> {
    const EXAMPLE: &str =
        "not a sentinel address such as 10.0.0.7:26379 or rediss://sentinel-1:26379";
    let (url, bare) = if entry.contains("://") {
        (entry.to_owned(), false)
    } else {
        if entry.contains('@') {
            return Err("credentials need the URL form (redis://user:password@host:port)");
        }
        (format!("redis://{entry}"), true)
    };
    let parsed = url::Url::parse(&url).map_err(|_| EXAMPLE)?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return Err("must be host:port, redis:// or rediss://");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(EXAMPLE);
    }
    if parsed.port().is_none() {
        return Err("needs its port (sentinels usually listen on 26379)");
    }
    if !matches!(parsed.path(), "" | "/" | "/0") || parsed.query().is_some() {
        return Err("a sentinel has no databases; the database number belongs in REDIS_URL");
    }
    redis::Client::open(url.as_str()).map_err(|_| EXAMPLE)?;
    Ok(if bare {
        Entry::Bare(entry.to_owned())
    } else {
        Entry::Url(url)
    })
}

/// Whether the URL's host is loopback by its address (or is `localhost`); a Unix socket is.
pub(super) fn is_loopback(url: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<RedisSettings, String> {
        let mut env = Env::from_pairs(pairs.iter().copied());
        let settings = RedisSettings::from_env(&mut env);
        env.finish().map(|()| settings).map_err(|e| e.to_string())
    }

    #[test]
    fn without_sentinels_redis_url_is_the_server() {
        let settings = read(&[]).expect("defaults");
        assert!(settings.sentinel.is_none());
        assert_eq!(settings.url.0, "redis://127.0.0.1:6379");
    }

    #[test]
    fn sentinels_are_listed_in_order_and_bare_ones_take_the_url_scheme() {
        let settings = read(&[
            ("REDIS_URL", "rediss://:pw@ignored.example:6379/2"),
            (
                "REDIS_SENTINELS",
                "10.0.0.1:26379, rediss://s2.internal:26380 ,,[::1]:26381",
            ),
        ])
        .expect("valid");
        let sentinel = settings.sentinel.expect("sentinel mode");
        assert_eq!(
            sentinel.sentinels,
            [
                "rediss://10.0.0.1:26379",
                "rediss://s2.internal:26380",
                "rediss://[::1]:26381"
            ]
        );
        assert_eq!(sentinel.master, "mymaster");
        // The URL's host is not checked: the sentinels name the server.
        let plain = read(&[
            ("REDIS_URL", "redis://ignored.example:6379"),
            ("REDIS_SENTINELS", "127.0.0.1:26379"),
            ("REDIS_SENTINEL_MASTER", "cache"),
        ])
        .expect("valid");
        let sentinel = plain.sentinel.expect("sentinel mode");
        assert_eq!(sentinel.sentinels, ["redis://127.0.0.1:26379"]);
        assert_eq!(sentinel.master, "cache");
    }

    #[test]
    fn plaintext_to_a_sentinel_off_loopback_is_refused_unless_allowed() {
        let refused =
            read(&[("REDIS_SENTINELS", "127.0.0.1:26379,10.0.0.2:26379")]).expect_err("refused");
        assert!(refused.contains("REDIS_SENTINELS: entry 2"), "{refused}");
        assert!(refused.contains("REDIS_ALLOW_PLAINTEXT"), "{refused}");
        assert!(!refused.contains("entry 1"), "{refused}");
        for allowed in [
            vec![("REDIS_SENTINELS", "rediss://10.0.0.2:26379")],
            vec![
                ("REDIS_URL", "rediss://127.0.0.1:6379"),
                ("REDIS_SENTINELS", "10.0.0.2:26379"),
            ],
            vec![
                ("REDIS_SENTINELS", "10.0.0.2:26379"),
                ("REDIS_ALLOW_PLAINTEXT", "true"),
            ],
            vec![("REDIS_SENTINELS", "localhost:26379")],
        ] {
            read(&allowed).unwrap_or_else(|e| panic!("{allowed:?}: {e}"));
        }
    }

    #[test]
    fn bad_sentinel_entries_are_reported_by_position_without_their_value() {
        for (value, reason) in [
            ("s1:26379,s3cr3t-host", "entry 2: needs its port"),
            (
                "rediss://s1:26379/3",
                "entry 1: a sentinel has no databases",
            ),
            (
                "user:s3cr3t@s1:26379",
                "entry 1: credentials need the URL form",
            ),
            ("http://s1:26379", "entry 1: must be host:port"),
            (
                "rediss://a:s3cr3t@s1:26379,rediss://b:other@s2:26379",
                "different credentials",
            ),
            (" , ", "names no sentinel"),
            ("redis://[s3cr3t:26379", "entry 1: not a sentinel address"),
        ] {
            let err = read(&[
                ("REDIS_SENTINELS", value),
                ("REDIS_ALLOW_PLAINTEXT", "true"),
            ])
            .expect_err(value);
            assert!(err.contains("REDIS_SENTINELS"), "{value}: {err}");
            assert!(err.contains(reason), "{value}: {err}");
            assert!(!err.contains("s3cr3t"), "{value}: {err}");
        }
        let err = read(&[
            ("REDIS_SENTINELS", "127.0.0.1:26379"),
            ("REDIS_SENTINEL_MASTER", "my master"),
        ])
        .expect_err("bad name");
        assert!(err.contains("REDIS_SENTINEL_MASTER"), "{err}");
    }

    #[test]
    fn a_ca_file_needs_tls_somewhere() {
        let err = read(&[
            ("REDIS_SENTINELS", "127.0.0.1:26379"),
            ("REDIS_TLS_CA_FILE", "/ca.pem"),
        ])
        .expect_err("CA without TLS");
        assert!(err.contains("REDIS_TLS_CA_FILE"), "{err}");
        read(&[
            ("REDIS_SENTINELS", "rediss://127.0.0.1:26379"),
            ("REDIS_TLS_CA_FILE", "/ca.pem"),
        ])
        .expect("TLS to the sentinels");
    }
}
