//! A test's private corner of the shared servers.

use service_kit::{Env, ServiceConfig};

use crate::shared::{SharedInfra, shared};

/// The disk budget of each test stream (see [`TestContext::settings`]).
pub const STREAM_BYTES: &str = "8MiB";

/// Isolation for one test: its own NATS namespace (subjects and stream names), tenant database
/// names and Redis key prefix, all derived from one random id.
#[derive(Debug, Clone)]
pub struct TestContext {
    /// Short random id, e.g. `t3f9a0c12d4`.
    pub id: String,
    pub nats_url: String,
    pub mongodb_uri: String,
    pub redis_url: String,
}

impl TestContext {
    /// A context on the shared servers (starting them if this is the first test).
    pub fn new() -> Self {
        init_logging();
        service_kit::tls::install_crypto_provider();
        let infra: &SharedInfra = shared();
        Self {
            id: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
            nats_url: infra.nats.url(),
            mongodb_uri: infra.mongo.uri(),
            redis_url: infra.redis.url(),
        }
    }

    /// The settings that point a service at this context; `overrides` win.
    pub fn settings(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = vec![
            ("NATS_URL".into(), self.nats_url.clone()),
            ("NATS_NAMESPACE".into(), self.id.clone()),
            ("MONGODB_URI".into(), self.mongodb_uri.clone()),
            (
                "MONGODB_DATABASE_TEMPLATE".into(),
                format!("{}_{{subaccountId}}", self.id),
            ),
            ("REDIS_URL".into(), self.redis_url.clone()),
            ("REDIS_KEY_PREFIX".into(), self.id.clone()),
            ("STARTUP_TIMEOUT".into(), "10s".into()),
            // nats-server reserves each stream's max_bytes against its storage limit, and one
            // server holds every test's streams: small budgets keep hundreds of namespaces
            // within it. Tests store kilobytes.
            ("EVENTS_MAX_BYTES".into(), STREAM_BYTES.into()),
            ("DEAD_LETTER_MAX_BYTES".into(), STREAM_BYTES.into()),
        ];
        for (k, v) in overrides {
            pairs.retain(|(name, _)| name != k);
            pairs.push(((*k).into(), (*v).into()));
        }
        pairs
    }

    /// A service's configuration for this context; panics naming the bad setting otherwise.
    pub fn config<C: ServiceConfig>(&self, overrides: &[(&str, &str)]) -> C {
        C::from_env(Env::from_pairs(self.settings(overrides)))
            .unwrap_or_else(|e| panic!("test configuration: {e}"))
    }

    /// The common configuration alone (for tests that use service-kit directly).
    pub fn common(&self, overrides: &[(&str, &str)]) -> service_kit::CommonConfig {
        let mut env = Env::from_pairs(self.settings(overrides));
        let config = service_kit::CommonConfig::from_env(&mut env);
        env.finish()
            .unwrap_or_else(|e| panic!("test configuration: {e}"));
        config
    }
}

impl Default for TestContext {
    fn default() -> Self {
        Self::new()
    }
}

/// Logs of the code under test, only when `TEST_LOG` is set (they are noise otherwise).
fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .try_init();
    }
}
