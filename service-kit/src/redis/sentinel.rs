//! Redis behind Sentinel: a multiplexed connection to whichever server the sentinels name as
//! the primary, found again after a failover.
//!
//! The primary is looked up on first use and kept until a command on its connection fails in
//! a way that says it may no longer be the primary ([`calls_for_new_primary`]): the connection
//! broke or timed out (the primary died, or a failover's `CLIENT KILL` closed it), or the
//! server answered `READONLY` (it was demoted and now replicates someone else). The next use
//! then asks the sentinels again. Nothing is retried here: the command that met the failure
//! fails, as it would against a Redis that went away, and its caller's fallback applies.
//!
//! One lookup runs at a time; callers that find no primary wait for it instead of asking the
//! sentinels each. A failed lookup is remembered for [`LOOKUP_BACKOFF`], so a burst of
//! requests during a failover costs one lookup per interval, not one each.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisFuture,
    RedisResult, ServerError, ServerErrorKind, TlsCertificates, TlsMode, Value,
};

use super::settings::{RedisSettings, SentinelSettings};
use crate::startup::StartupError;

/// How long a failed lookup answers for the lookups after it.
const LOOKUP_BACKOFF: Duration = Duration::from_millis(250);

/// Bound on one lookup (asking the sentinels, checking the named server's role, connecting),
/// so a sentinel or primary that hangs cannot hold every caller.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `error`, met on the primary's connection, means the connection may no longer lead
/// to a writable primary, so the sentinels must be asked again: the connection broke or timed
/// out, or the server refused a write as a replica (`READONLY`, also inside an aborted
/// transaction or a script) or lost its primary (`MASTERDOWN`).
pub fn calls_for_new_primary(error: &RedisError) -> bool {
    if error.is_io_error() || error.is_timeout() || error.is_unrecoverable_error() {
        return true;
    }
    error
        .clone()
        .into_server_errors()
        .is_some_and(|errors| errors.iter().any(|(_, e)| is_replica_refusal(e)))
}

fn is_replica_refusal(error: &ServerError) -> bool {
    matches!(
        error.kind(),
        Some(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
    )
}

/// The first server error in a reply that calls for a new primary. The connection hands
/// server errors back as values (the caller's conversion makes them errors), so a `READONLY`
/// answer to a command, a script or one command of a pipeline arrives here.
fn replica_refusal(reply: &Value) -> Option<&ServerError> {
    match reply {
        Value::ServerError(error) if is_replica_refusal(error) => Some(error),
        Value::Array(items) => items.iter().find_map(replica_refusal),
        _ => None,
    }
}

/// The primary named by the sentinels, shared by every clone.
#[derive(Clone)]
pub(super) struct SentinelConnection {
    shared: Arc<Shared>,
    db: i64,
}

struct Shared {
    lookup: tokio::sync::Mutex<Lookup>,
    /// Behind an `Arc`: every command takes it, and cloning a client is not free.
    primary: Mutex<Option<Arc<Primary>>>,
    config: AsyncConnectionConfig,
    allow_plaintext: bool,
}

struct Lookup {
    sentinels: SentinelClient,
    /// Primaries found so far: tags each connection, so a failure on an old one cannot
    /// discard a newer one.
    generation: u64,
    failed: Option<(Instant, RedisError)>,
}

pub(super) struct Primary {
    pub(super) generation: u64,
    /// For connections of their own ([`super::RedisConnection::dedicated`]).
    pub(super) client: redis::Client,
    conn: MultiplexedConnection,
}

impl SentinelConnection {
    /// Builds the sentinel client from the settings; nothing is contacted yet.
    pub(super) fn new(
        settings: &RedisSettings,
        sentinel: &SentinelSettings,
        config: AsyncConnectionConfig,
    ) -> Result<Self, StartupError> {
        let misconfigured = |setting, cause: String| StartupError::Misconfigured { setting, cause };
        let certificates = match &settings.tls.ca_file {
            None => None,
            Some(path) => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|e| {
                    misconfigured("REDIS_TLS_CA_FILE", format!("cannot be read: {e}"))
                })?),
            }),
        };
        let data = redis::Client::open(settings.url.0.as_str())
            .map_err(|e| misconfigured("REDIS_URL", format!("cannot be used: {:?}", e.kind())))?;
        let data = data.get_connection_info();
        let mut addresses = Vec::new();
        let mut login: Option<(Option<String>, Option<String>)> = None;
        for (i, url) in sentinel.sentinels.iter().enumerate() {
            let client = match &certificates {
                Some(certs) if url.starts_with("rediss://") => {
                    redis::Client::build_with_tls(url.as_str(), certs.clone())
                }
                _ => redis::Client::open(url.as_str()),
            }
            .map_err(|e| {
                misconfigured(
                    "REDIS_SENTINELS",
                    format!("entry {} cannot be used: {:?}", i + 1, e.kind()),
                )
            })?;
            let info = client.get_connection_info();
            let user = info.redis_settings().username().map(str::to_owned);
            let password = info.redis_settings().password().map(str::to_owned);
            if user.is_some() || password.is_some() {
                login = Some((user, password));
            }
            addresses.push(info.addr().clone());
        }
        let mut builder =
            SentinelClientBuilder::new(addresses, &sentinel.master, SentinelServerType::Master)
                .map_err(|e| {
                    misconfigured("REDIS_SENTINELS", format!("cannot be used: {:?}", e.kind()))
                })?;
        if let Some((user, password)) = login {
            if let Some(user) = user {
                builder = builder.set_client_to_sentinel_username(user);
            }
            if let Some(password) = password {
                builder = builder.set_client_to_sentinel_password(password);
            }
        }
        // The data nodes: REDIS_URL's database, credentials, protocol and TLS.
        let redis_settings = data.redis_settings();
        builder = builder
            .set_client_to_redis_db(redis_settings.db())
            .set_client_to_redis_protocol(redis_settings.protocol());
        if let Some(user) = redis_settings.username() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = redis_settings.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if let ConnectionAddr::TcpTls { insecure, .. } = data.addr() {
            builder = builder.set_client_to_redis_tls_mode(if *insecure {
                TlsMode::Insecure
            } else {
                TlsMode::Secure
            });
            if let Some(certs) = certificates {
                builder = builder.set_client_to_redis_certificates(certs);
            }
        }
        let sentinels = builder.build().map_err(|e| {
            misconfigured("REDIS_SENTINELS", format!("cannot be used: {:?}", e.kind()))
        })?;
        Ok(Self {
            shared: Arc::new(Shared {
                lookup: tokio::sync::Mutex::new(Lookup {
                    sentinels,
                    generation: 0,
                    failed: None,
                }),
                primary: Mutex::new(None),
                config,
                allow_plaintext: settings.tls.allow_plaintext,
            }),
            db: redis_settings.db(),
        })
    }

    /// The settings every connection to a primary is made with.
    pub(super) fn config(&self) -> &AsyncConnectionConfig {
        &self.shared.config
    }

    fn current(&self) -> Option<Arc<Primary>> {
        self.shared
            .primary
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The primary's connection: the one in use, or a new one to the server the sentinels
    /// name now.
    pub(super) async fn primary(&self) -> RedisResult<Arc<Primary>> {
        if let Some(primary) = self.current() {
            return Ok(primary);
        }
        let mut lookup = self.shared.lookup.lock().await;
        // Found by the lookup this caller waited for.
        if let Some(primary) = self.current() {
            return Ok(primary);
        }
        if let Some((at, error)) = &lookup.failed
            && at.elapsed() < LOOKUP_BACKOFF
        {
            return Err(error.clone());
        }
        let found = tokio::time::timeout(LOOKUP_TIMEOUT, self.find(&mut lookup.sentinels))
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no primary found through the sentinels in time",
                )))
            });
        match found {
            Ok((client, conn)) => {
                lookup.generation += 1;
                lookup.failed = None;
                tracing::info!(
                    primary = %client.get_connection_info().addr(),
                    generation = lookup.generation,
                    "Redis primary found through Sentinel"
                );
                let primary = Arc::new(Primary {
                    generation: lookup.generation,
                    client,
                    conn,
                });
                *self
                    .shared
                    .primary
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(primary.clone());
                Ok(primary)
            }
            Err(error) => {
                lookup.failed = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// Asks the sentinels for the primary (the crate checks with `ROLE` that the server it
    /// names is one) and connects to it.
    async fn find(
        &self,
        sentinels: &mut SentinelClient,
    ) -> RedisResult<(redis::Client, MultiplexedConnection)> {
        let client = sentinels.async_get_client().await?;
        if let ConnectionAddr::Tcp(host, _) = client.get_connection_info().addr()
            && !self.shared.allow_plaintext
            && !crate::exposure::is_loopback_host(host)
        {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "the sentinels name a primary that is not on loopback and REDIS_URL is plaintext (redis://); use rediss:// or REDIS_ALLOW_PLAINTEXT=true",
            )));
        }
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.shared.config)
            .await?;
        Ok((client, conn))
    }

    /// After a command on the connection of `generation`: forgets that primary if the outcome
    /// (an error, or a server error among the replies) calls for a new one and no newer
    /// primary was found meanwhile.
    pub(super) fn observe(&self, generation: u64, outcome: Result<&[Value], &RedisError>) {
        let reason = match outcome {
            Err(error) => calls_for_new_primary(error).then(|| error.to_string()),
            Ok(replies) => replies
                .iter()
                .find_map(replica_refusal)
                .map(ToString::to_string),
        };
        let Some(reason) = reason else {
            return;
        };
        let mut primary = self
            .shared
            .primary
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if primary.as_ref().is_some_and(|p| p.generation == generation) {
            *primary = None;
            tracing::warn!(
                error = %reason,
                "the Redis primary's connection failed or was refused; the sentinels are asked again on next use"
            );
        }
    }
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let primary = self.primary().await?;
            let result = primary.conn.clone().req_packed_command(cmd).await;
            self.observe(
                primary.generation,
                result.as_ref().map(std::slice::from_ref),
            );
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let primary = self.primary().await?;
            let result = primary
                .conn
                .clone()
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.observe(primary.generation, result.as_deref());
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(resp: &[u8]) -> Value {
        redis::parse_redis_value(resp).expect("RESP")
    }

    #[test]
    fn a_replica_refusal_is_found_in_a_reply_or_among_a_pipeline_s_replies() {
        for refused in [
            &b"-READONLY You can't write against a read only replica.\r\n"[..],
            b"-MASTERDOWN Link with MASTER is down\r\n",
            b"*2\r\n+OK\r\n-READONLY You can't write against a read only replica.\r\n",
        ] {
            assert!(
                replica_refusal(&reply(refused)).is_some(),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
        for fine in [
            &b"+OK\r\n"[..],
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            b"-ERR unknown command\r\n",
            b"*2\r\n:1\r\n$-1\r\n",
        ] {
            assert!(
                replica_refusal(&reply(fine)).is_none(),
                "{}",
                String::from_utf8_lossy(fine)
            );
        }
    }
}
