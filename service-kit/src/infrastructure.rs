//! The connections every service holds: NATS (and its JetStream context), the tenant MongoDB
//! databases and Redis. Connected once at start-up, concurrently, each with a bounded retry.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use schemas::subjects::Namespace;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::CommonConfig;
use crate::mongo::TenantDatabases;
use crate::redis::{RedisConnection, RedisKeys};
use crate::startup::StartupError;

/// A service's handles on the infrastructure. Cloning is one reference count: handlers clone
/// their state on every request, and cloning the clients themselves (the NATS client alone
/// holds several `Arc`s and a channel sender) showed up in the api's CPU profile.
#[derive(Clone)]
pub struct Infrastructure(Arc<Connections>);

impl std::ops::Deref for Infrastructure {
    type Target = Connections;
    fn deref(&self) -> &Connections {
        &self.0
    }
}

/// The connections themselves, reached through [`Infrastructure`].
pub struct Connections {
    pub nats: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub mongo: TenantDatabases,
    pub redis: RedisConnection,
    pub keys: RedisKeys,
    pub namespace: Namespace,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Infrastructure")
            .field("namespace", &self.namespace)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Infrastructure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Infrastructure {
    /// Connects to all three at once. If several are unreachable, the error names each. A
    /// cancelled `shutdown` ends the wait at once with [`StartupError::Interrupted`].
    pub async fn connect(
        config: &CommonConfig,
        service: &str,
        shutdown: &CancellationToken,
    ) -> Result<Self, StartupError> {
        tokio::select! {
            connected = Self::connect_all(config, service) => connected,
            () = shutdown.cancelled() => Err(StartupError::Interrupted),
        }
    }

    async fn connect_all(config: &CommonConfig, service: &str) -> Result<Self, StartupError> {
        // Services embedded in another program (tests, benchmarks) skip `service::main`.
        crate::tls::install_crypto_provider();
        let limit = config.startup_timeout;
        let (nats, mongo, redis) = tokio::join!(
            crate::nats::connect(
                &config.nats_url,
                &config.nats,
                &config.namespace,
                service,
                limit
            ),
            TenantDatabases::connect(
                &config.mongodb_uri,
                config.database_template.clone(),
                service,
                limit
            ),
            crate::redis::connect(&config.redis, limit),
        );
        match (nats, mongo, redis) {
            (Ok(nats), Ok(mongo), Ok(redis)) => {
                let jetstream = jetstream::new(nats.clone());
                tracing::info!(service, "connected to NATS, MongoDB and Redis");
                Ok(Self(Arc::new(Connections {
                    nats,
                    jetstream,
                    mongo,
                    redis,
                    keys: RedisKeys::new(config.redis_key_prefix.clone()),
                    namespace: config.namespace.clone(),
                })))
            }
            (nats, mongo, redis) => {
                let mut errors: Vec<StartupError> = Vec::new();
                errors.extend(nats.err());
                errors.extend(mongo.err());
                errors.extend(redis.err());
                Err(StartupError::several(errors))
            }
        }
    }

    /// Provisions the domain and dead-letter streams (idempotent; updates changed settings),
    /// retrying for up to `STARTUP_TIMEOUT` while JetStream does not answer (as after a
    /// cluster node's restart).
    pub async fn ensure_streams(&self, config: &CommonConfig) -> Result<(), StartupError> {
        crate::startup::retry_provisioning(config.startup_timeout, || {
            crate::nats::ensure_streams(&self.jetstream, &self.namespace, &config.streams)
        })
        .await?;
        Ok(())
    }

    /// Creates (or updates) a durable consumer of the domain stream, retrying like
    /// [`Self::ensure_streams`] for up to `limit` (`STARTUP_TIMEOUT`).
    pub async fn ensure_consumer(
        &self,
        spec: &crate::consumer::ConsumerSpec,
        limit: Duration,
    ) -> Result<jetstream::consumer::PullConsumer, StartupError> {
        crate::startup::retry_provisioning(limit, || {
            crate::consumer::ensure_consumer(&self.jetstream, &self.namespace, spec)
        })
        .await
    }

    /// Checks each dependency, concurrently, each within `timeout`.
    pub async fn readiness(&self, timeout: Duration) -> Readiness {
        let nats = async {
            match self.nats.connection_state() {
                async_nats::connection::State::Connected => Ok(()),
                state => Err(format!(
                    "NATS connection is {} (server {})",
                    match state {
                        async_nats::connection::State::Pending => "reconnecting",
                        _ => "disconnected",
                    },
                    self.nats.server_info().host
                )),
            }
        };
        let mongo = async {
            match tokio::time::timeout(timeout, crate::mongo::ping(self.mongo.client())).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("MongoDB ping failed: {}", e.kind)),
                Err(_) => Err(format!("MongoDB did not answer a ping within {timeout:?}")),
            }
        };
        let redis = async {
            let mut conn = self.redis.clone();
            match tokio::time::timeout(timeout, crate::redis::ping(&mut conn)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("Redis PING failed: {:?}", e.kind())),
                Err(_) => Err(format!("Redis did not answer PING within {timeout:?}")),
            }
        };
        let (nats, mongo, redis) = tokio::join!(nats, mongo, redis);
        Readiness {
            nats: Check::from(nats),
            mongodb: Check::from(mongo),
            redis: Check::from(redis),
        }
    }

    /// Flushes and drains the NATS connection: subscriptions stop, published messages are
    /// sent. Bounded, so a NATS server that is down cannot hold the process open.
    pub async fn close(&self) {
        match tokio::time::timeout(Duration::from_secs(5), self.nats.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "NATS drain failed"),
            Err(_) => tracing::warn!("NATS drain did not finish within 5 s"),
        }
    }
}

/// The result of one readiness check, as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<Result<(), String>> for Check {
    fn from(r: Result<(), String>) -> Self {
        match r {
            Ok(()) => Check {
                ok: true,
                error: None,
            },
            Err(error) => Check {
                ok: false,
                error: Some(error),
            },
        }
    }
}

/// Every dependency's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub nats: Check,
    pub mongodb: Check,
    pub redis: Check,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.nats.ok && self.mongodb.ok && self.redis.ok
    }
}
