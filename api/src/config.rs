//! The api's settings.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::ServiceConfig;
use service_kit::auth::JwtConfig;
use service_kit::config::{CommonConfig, Env, HumanDuration};
use service_kit::exposure::Exposure;
use service_kit::webhook::{TargetPolicy, WebhookSecrets};

use crate::service_auth::ServiceAuthConfig;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub common: CommonConfig,
    /// Where the REST API (and its health endpoints) listen.
    pub http_addr: SocketAddr,
    /// `SO_REUSEPORT` on the listener: replicas on one machine share `http_addr`.
    pub http_reuse_port: bool,
    /// How user tokens are verified.
    pub auth: JwtConfig,
    /// How long a connect request waits for the oauth-worker's reply before answering 503.
    /// The frontend is waiting, so this is short; the request never hangs past it.
    pub connect_request_timeout: Duration,
    /// `LINK_SETTINGS_TTL`: how long learned link settings are used (zero: never).
    pub link_settings_ttl: Duration,
    /// How long the connector read caches live. Zero turns caching off.
    pub connector_cache_ttl: Duration,
    /// Largest request body accepted (413 beyond it). Bodies here are a few hundred bytes.
    pub max_body_bytes: usize,
    /// How calls from other services are authenticated.
    pub service_auth: ServiceAuthConfig,
    /// How long a request that records an event waits for JetStream's acknowledgement before
    /// answering 503; a publish queued behind a reconnecting NATS connection never hangs it.
    pub publish_timeout: Duration,
    /// Webhook registration: target policy, secret encryption, endpoints per subaccount.
    pub webhooks: WebhookSettings,
    /// `API_DEV_MODE`: the try-it page of a local run (see [`crate::try_it`]).
    pub try_it: crate::try_it::TryItConfig,
    /// Per-caller rate limits (see [`crate::limits`]).
    pub limits: crate::limits::ApiLimits,
}

/// What the webhook routes need (the target policy and secret keys are shared with the
/// metadata-worker, which delivers).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub policy: TargetPolicy,
    pub secrets: WebhookSecrets,
    /// Most endpoints one subaccount may register.
    pub max_endpoints: usize,
}

impl WebhookSettings {
    fn from_env(env: &mut Env) -> Self {
        let policy = TargetPolicy::from_env(env);
        let secrets = WebhookSecrets::from_env(env);
        let max_endpoints: usize = env.value(
            "WEBHOOK_MAX_ENDPOINTS",
            "10",
            "Most webhook endpoints one subaccount may register (409 webhook_limit_reached beyond).",
        );
        if !(1..=100).contains(&max_endpoints) {
            env.problem("WEBHOOK_MAX_ENDPOINTS", "must be between 1 and 100");
        }
        Self {
            policy,
            secrets,
            max_endpoints,
        }
    }
}

impl ServiceConfig for ApiConfig {
    const SERVICE: &'static str = crate::SERVICE;

    fn read(env: &mut Env) -> Self {
        let common = CommonConfig::from_env(env);
        let http_addr = env.value(
            "API_HTTP_ADDR",
            "127.0.0.1:3002",
            "Address the REST API listens on.",
        );
        let http_reuse_port = env.value(
            "API_HTTP_REUSE_PORT",
            "false",
            "`true` opens the listener with SO_REUSEPORT, so several replicas on one machine share API_HTTP_ADDR and the kernel spreads new connections across them; a replica joins once its dependencies are connected and a killed one takes only the connections it had accepted. `false`: a second process on the address fails to start.",
        );
        let auth = JwtConfig::from_env(env);
        let connect_request_timeout: Duration = env
            .value::<HumanDuration>(
                "CONNECT_REQUEST_TIMEOUT",
                "5s",
                "How long the api waits for the oauth-worker to issue an authorization link before answering 503.",
            )
            .into();
        if !(Duration::from_millis(50)..=Duration::from_secs(60)).contains(&connect_request_timeout)
        {
            env.problem("CONNECT_REQUEST_TIMEOUT", "must be between 50ms and 60s");
        }
        let link_settings_ttl: Duration = env
            .value::<HumanDuration>(
                "LINK_SETTINGS_TTL",
                "30s",
                "How long the api issues the links it returns without an email (`sendEmail: false`) itself, with the link settings the oauth-worker last sent it (client id, endpoint, redirect URI, scopes, limits; never the secret); the next connect request after it asks the worker again. 0s: every link is issued by the oauth-worker. At most 10m.",
            )
            .into();
        if link_settings_ttl > Duration::from_secs(600) {
            env.problem("LINK_SETTINGS_TTL", "must be at most 10m");
        }
        let connector_cache_ttl: Duration = env
            .value::<HumanDuration>(
                "CONNECTOR_CACHE_TTL",
                "5m",
                "How long connector reads are cached in Redis (0s turns the cache off); connector \
                 existence is also remembered in-process for this long, at most 30s.",
            )
            .into();
        let max_body_bytes: usize = env.value(
            "API_MAX_BODY_BYTES",
            "16384",
            "Largest request body the api accepts, in bytes (larger ones get 413).",
        );
        if !(1024..=1024 * 1024).contains(&max_body_bytes) {
            env.problem("API_MAX_BODY_BYTES", "must be between 1024 and 1048576");
        }
        let service_auth = ServiceAuthConfig::from_env(env);
        let publish_timeout: Duration = env
            .value::<HumanDuration>(
                "API_PUBLISH_TIMEOUT",
                "5s",
                "How long the api waits for JetStream to store an event it publishes before answering 503.",
            )
            .into();
        if !(Duration::from_millis(50)..=Duration::from_secs(60)).contains(&publish_timeout) {
            env.problem("API_PUBLISH_TIMEOUT", "must be between 50ms and 60s");
        }
        let webhooks = WebhookSettings::from_env(env);
        let try_it = crate::try_it::TryItConfig::from_env(env, &auth);
        let limits = crate::limits::ApiLimits::from_env(env);
        Self {
            limits,
            common,
            http_addr,
            http_reuse_port,
            auth,
            connect_request_timeout,
            link_settings_ttl,
            connector_cache_ttl,
            max_body_bytes,
            service_auth,
            publish_timeout,
            webhooks,
            try_it,
        }
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }

    fn exposure(&self) -> Exposure {
        Exposure::listening("API_HTTP_ADDR", self.http_addr)
            .insecure_if(
                self.auth.uses_dev_secret(),
                "JWT_SECRET",
                "anyone can mint a user token this api accepts",
            )
            .insecure_if(
                self.webhooks.secrets.uses_dev_key(),
                "WEBHOOK_SECRET_KEYS",
                "stored webhook signing secrets open with a key published in the repository",
            )
            .insecure_if(
                self.try_it.enabled,
                "API_DEV_MODE",
                "the try-it page and /dev/token mint tokens for any subaccount, for anyone",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_all_parse_and_run_on_loopback() {
        let config = ApiConfig::from_env(Env::from_pairs(Vec::<(String, String)>::new()))
            .expect("defaults are valid");
        assert!(config.http_addr.ip().is_loopback());
        assert_eq!(config.connect_request_timeout, Duration::from_secs(5));
        assert_eq!(config.connector_cache_ttl, Duration::from_secs(300));
        assert_eq!(config.max_body_bytes, 16 * 1024);
        assert!(config.auth.uses_dev_secret());
        assert_eq!(config.publish_timeout, Duration::from_secs(5));
        assert!(config.service_auth.auth_url.is_none());
    }

    #[test]
    fn every_api_setting_is_checked_by_name() {
        let err = ApiConfig::from_env(Env::from_pairs([
            ("CONNECT_REQUEST_TIMEOUT", "2h"),
            ("CONNECTOR_CACHE_TTL", "soon"),
            ("API_MAX_BODY_BYTES", "10"),
            ("JWT_ALGORITHM", "RS256"),
            ("API_PUBLISH_TIMEOUT", "0s"),
            ("SERVICE_AUTH_URL", "not a url"),
        ]))
        .expect_err("bad settings");
        let names: Vec<_> = err.problems.iter().map(|p| p.setting.as_str()).collect();
        for name in [
            "CONNECT_REQUEST_TIMEOUT",
            "CONNECTOR_CACHE_TTL",
            "API_MAX_BODY_BYTES",
            "JWT_JWKS_URL",
            "API_PUBLISH_TIMEOUT",
            "SERVICE_AUTH_URL",
        ] {
            assert!(names.contains(&name), "{name} missing from {err}");
        }
    }
}
