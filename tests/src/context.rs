//! A test's private corner of the shared servers.

use std::path::PathBuf;

use schemas::bus_access::{Identity, Options};
use schemas::subjects::Namespace;
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
    /// Where this test's NATS credentials are: one `.creds` per identity, `api-dev.creds` (the
    /// api with its try-it page) and `driver.creds` (the test itself).
    pub creds_dir: PathBuf,
}

impl TestContext {
    /// A context on the shared servers (starting them if this is the first test).
    pub fn new() -> Self {
        init_logging();
        service_kit::tls::install_crypto_provider();
        let infra: &SharedInfra = shared();
        let id = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let auth = crate::nats_auth::auth();
        let creds_dir = auth.dir.join("tests").join(&id);
        let ns = Namespace::new(&id).expect("test namespace");
        for identity in Identity::ALL {
            auth.mint(identity, &ns, Options::default(), &creds_dir);
        }
        auth.mint(
            Identity::Api,
            &ns,
            Options {
                api_reads_events: true,
            },
            &creds_dir,
        );
        auth.mint_driver(&creds_dir);
        Self {
            id,
            nats_url: infra.nats.url(),
            mongodb_uri: infra.mongo.uri(),
            redis_url: infra.redis.url(),
            creds_dir,
        }
    }

    /// The `.creds` file of `identity` in this test's namespace.
    pub fn creds(&self, identity: Identity) -> String {
        self.creds_file(identity.name())
    }

    /// A Redis client of the test, trusting the suite's CA when the URL is `rediss://`.
    pub fn redis_client(&self) -> redis::Client {
        if self.redis_url.starts_with("rediss://") {
            let ca = std::fs::read(&crate::nats_auth::auth().ca).expect("CA file");
            redis::Client::build_with_tls(
                self.redis_url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca),
                },
            )
            .expect("redis URL")
        } else {
            redis::Client::open(self.redis_url.as_str()).expect("redis URL")
        }
    }

    /// What an operator's shell holds for `gcal-ops`: the operator's credentials and the CA.
    pub fn operator_env(&self, identity: Identity) -> Vec<(String, String)> {
        vec![
            ("NATS_CREDS_FILE".into(), self.creds(identity)),
            (
                "NATS_TLS_CA_FILE".into(),
                crate::nats_auth::auth().ca.clone(),
            ),
        ]
    }

    /// The test's own `.creds` file (everything allowed).
    pub fn driver_creds(&self) -> String {
        self.creds_file("driver")
    }

    fn creds_file(&self, name: &str) -> String {
        self.creds_dir
            .join(format!("{name}.creds"))
            .to_string_lossy()
            .into_owned()
    }

    /// A NATS client of the test itself (the `driver` user), over TLS.
    pub async fn nats(&self) -> async_nats::Client {
        self.nats_as_file(&self.driver_creds(), "_INBOX".into())
            .await
    }

    /// A NATS client with `identity`'s credentials and reply inbox, as its service connects.
    pub async fn nats_as(&self, identity: Identity) -> async_nats::Client {
        let ns = Namespace::new(&self.id).expect("test namespace");
        let inbox =
            schemas::bus_access::inbox_prefix(&ns, schemas::bus_access::client_name(identity));
        self.nats_as_file(&self.creds(identity), inbox).await
    }

    async fn nats_as_file(&self, creds: &str, inbox: String) -> async_nats::Client {
        async_nats::ConnectOptions::with_credentials_file(creds)
            .await
            .expect("creds file")
            .custom_inbox_prefix(inbox)
            .add_root_certificates(crate::nats_auth::auth().ca.clone().into())
            .require_tls(true)
            .connect(&self.nats_url)
            .await
            .expect("NATS connects")
    }

    /// The settings that point a service at this context; `overrides` win.
    pub fn settings(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = vec![
            ("NATS_URL".into(), self.nats_url.clone()),
            ("NATS_CREDS_FILE".into(), self.driver_creds()),
            (
                "NATS_TLS_CA_FILE".into(),
                crate::nats_auth::auth().ca.clone(),
            ),
            ("NATS_NAMESPACE".into(), self.id.clone()),
            ("MONGODB_URI".into(), self.mongodb_uri.clone()),
            (
                "MONGODB_DATABASE_TEMPLATE".into(),
                format!("{}_{{subaccountId}}", self.id),
            ),
            ("REDIS_URL".into(), self.redis_url.clone()),
            (
                "REDIS_TLS_CA_FILE".into(),
                crate::nats_auth::auth().ca.clone(),
            ),
            ("REDIS_KEY_PREFIX".into(), self.id.clone()),
            ("STARTUP_TIMEOUT".into(), "10s".into()),
            // nats-server reserves each stream's max_bytes against its storage limit, and one
            // server holds every test's streams: small budgets keep hundreds of namespaces
            // within it. Tests store kilobytes.
            ("EVENTS_MAX_BYTES".into(), STREAM_BYTES.into()),
            ("DEAD_LETTER_MAX_BYTES".into(), STREAM_BYTES.into()),
        ];
        override_with(&mut pairs, overrides);
        pairs
    }

    /// A service's configuration for this context, connecting to NATS as the service's own
    /// identity (unless `overrides` name another `NATS_CREDS_FILE`); panics naming the bad
    /// setting otherwise.
    pub fn config<C: ServiceConfig>(&self, overrides: &[(&str, &str)]) -> C {
        C::from_env(Env::from_pairs(self.service_settings::<C>(overrides)))
            .unwrap_or_else(|e| panic!("test configuration: {e}"))
    }

    /// The settings [`Self::config`] reads.
    pub fn service_settings<C: ServiceConfig>(
        &self,
        overrides: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let identity = Identity::from_name(C::SERVICE)
            .unwrap_or_else(|| panic!("{} has no NATS identity", C::SERVICE));
        let dev = overrides
            .iter()
            .any(|(k, v)| *k == "API_DEV_MODE" && *v == "true");
        let creds = if identity == Identity::Api && dev {
            self.creds_file("api-dev")
        } else {
            self.creds(identity)
        };
        let mut pairs = self.settings(&[("NATS_CREDS_FILE", creds.as_str())]);
        override_with(&mut pairs, overrides);
        pairs
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

/// `overrides` win; a plaintext `REDIS_URL` (a test's own Redis) drops the CA setting, which
/// only goes with `rediss://`.
fn override_with(pairs: &mut Vec<(String, String)>, overrides: &[(&str, &str)]) {
    for (k, v) in overrides {
        pairs.retain(|(name, _)| name != k);
        pairs.push(((*k).into(), (*v).into()));
    }
    let plain_redis = pairs
        .iter()
        .any(|(k, v)| k == "REDIS_URL" && !v.starts_with("rediss://"));
    if plain_redis && !overrides.iter().any(|(k, _)| *k == "REDIS_TLS_CA_FILE") {
        pairs.retain(|(name, _)| name != "REDIS_TLS_CA_FILE");
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
