//! The oauth-worker's settings. The provider is configured by its endpoints, so any OAuth 2.0
//! provider that speaks Google's protocol (including the test suite's fake Google) works.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use service_kit::ServiceConfig;
use service_kit::config::{CommonConfig, Env, HumanDuration};
use service_kit::exposure::Exposure;

#[derive(Debug, Clone)]
pub struct OAuthWorkerConfig {
    pub common: CommonConfig,
    /// Address of the OAuth redirect callback and the health endpoints.
    pub http_addr: SocketAddr,
    /// `SO_REUSEPORT` on the listener: replicas on one machine share `http_addr`.
    pub http_reuse_port: bool,
    pub provider: ProviderConfig,
    /// How long an authorization link (its state and PKCE verifier) stays usable.
    pub state_ttl: Duration,
    /// Replicas that must have an OAuth state before its link is issued (`WAIT`); 0: none.
    pub wait_replicas: u32,
    /// Where the callback sends the browser (`?status=success|error`) instead of showing its
    /// own page; `None`: the worker's page.
    pub frontend_redirect_url: Option<url::Url>,
    /// The keys that encrypt stored tokens.
    pub vault: crate::vault::VaultConfig,
    /// A cached access token is handed out only while it has at least this long to live.
    pub access_token_margin: Duration,
    /// How long a replica answers an account's token from memory after it last read it.
    pub access_token_memory_ttl: Duration,
    /// Deliveries of one disconnect request before it fails (the provider stayed down).
    pub disconnect_max_deliver: i64,
    /// Redelivery delays of a disconnect whose revocation failed transiently.
    pub disconnect_retry_delays: Vec<Duration>,
    /// Google accounts one subaccount may have connected at once.
    pub max_accounts: usize,
    /// Which Google account may complete a consent link (`CONSENT_ACCOUNT_POLICY`).
    pub consent_policy: crate::consent_policy::ConsentPolicy,
    /// What a connect request is held to, decided when its state is stored.
    pub connect_limits: service_kit::rate_limit::ConnectLimits,
    /// Bound on each Redis step of the state store (and so of its limit decisions):
    /// `STATE_STORE_TIMEOUT`.
    pub state_store_timeout: Duration,
    /// Who asks, besides the tenant, in the email and on the consent page (`PRODUCT_NAME`).
    pub product_name: schemas::DisplayName,
}

/// The OAuth client secret of a local run (the fake provider accepts it); public, so refused
/// off loopback.
pub const LOCAL_CLIENT_SECRET: &str = "gcal-local-secret";

/// The OAuth 2.0 provider: where users consent and where codes become tokens.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub auth_url: url::Url,
    pub token_url: url::Url,
    /// Must match, byte for byte, a redirect URI registered with the provider.
    pub redirect_uri: url::Url,
    /// Every scope the connection needs; the callback refuses a grant missing any of them.
    pub scopes: Scopes,
    pub userinfo_url: url::Url,
    /// The Calendar API base (`.../calendar/v3`).
    pub calendar_api_url: url::Url,
    pub revoke_url: url::Url,
    /// How the client authenticates at the token endpoint and at the revocation endpoint
    /// (RFC 7009 §2.1: a confidential client authenticates its revocation requests as its
    /// token requests).
    pub client_auth: ClientAuthMethod,
    /// How offline access (a refresh token) is asked for.
    pub profile: ProviderProfile,
    /// Whether a token response without `scope` means "granted as requested" (RFC 6749
    /// §5.1 allows omitting it then). Off, such a response proves no grant and is refused.
    pub token_response_omits_scope: bool,
    /// Bound on each call to the provider.
    pub timeout: Duration,
    /// Tries per provider call when it fails transiently (network, 5xx, rate limit).
    pub attempts: usize,
}

/// The client authentication methods of RFC 6749 §2.3.1 (names from the OAuth dynamic
/// client registration registry, RFC 7591 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-url-encoded id and secret: the `oauth2` crate's default and
    /// what this worker always did with Google.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl FromStr for ClientAuthMethod {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.trim() {
            "client_secret_basic" => Ok(Self::ClientSecretBasic),
            "client_secret_post" => Ok(Self::ClientSecretPost),
            other => Err(format!(
                "{other:?} is not client_secret_basic or client_secret_post"
            )),
        }
    }
}

/// How a provider is asked for offline access (a refresh token); part of the link settings
/// the api learns, so it lives with the contracts.
pub use schemas::events::ProviderProfile;

/// A value that never prints (logs, panics, `Debug` of a config).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(Secret(raw.to_owned()))
    }
}

/// Space-separated OAuth scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(pub Vec<String>);

impl FromStr for Scopes {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let scopes: Vec<String> = raw.split_whitespace().map(str::to_owned).collect();
        if scopes.is_empty() {
            return Err("must list at least one scope".into());
        }
        Ok(Scopes(scopes))
    }
}

/// An absolute http(s) URL.
fn http_url(
    env: &mut Env,
    name: &'static str,
    default: &'static str,
    description: &'static str,
) -> url::Url {
    let url: url::Url = env.value(name, default, description);
    if !matches!(url.scheme(), "http" | "https") {
        env.problem(name, "must be an http:// or https:// URL");
    }
    url
}

impl OAuthWorkerConfig {
    /// What the api needs to issue links the way this worker does (no secret in it).
    pub fn link_settings(&self) -> schemas::events::LinkSettings {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        schemas::events::LinkSettings {
            client_id: self.provider.client_id.clone(),
            auth_url: self.provider.auth_url.to_string(),
            redirect_uri: self.provider.redirect_uri.to_string(),
            scopes: self.provider.scopes.0.clone(),
            profile: self.provider.profile,
            state_ttl_ms: millis(self.state_ttl),
            state_store_timeout_ms: millis(self.state_store_timeout),
            wait_replicas: self.wait_replicas,
            limits: self.connect_limits.to_spec(),
        }
    }
}

impl ServiceConfig for OAuthWorkerConfig {
    const SERVICE: &'static str = crate::SERVICE;

    fn read(env: &mut Env) -> Self {
        let common = CommonConfig::from_env(env);
        let http_addr = env.value(
            "OAUTH_WORKER_HTTP_ADDR",
            "127.0.0.1:3004",
            "Address of the OAuth redirect callback and the health endpoints.",
        );
        let http_reuse_port = env.value(
            "OAUTH_WORKER_HTTP_REUSE_PORT",
            "false",
            "`true` opens the listener with SO_REUSEPORT, so several replicas on one machine share OAUTH_WORKER_HTTP_ADDR and the kernel spreads new connections across them; a replica joins once its dependencies are connected and a killed one takes only the connections it had accepted. `false`: a second process on the address fails to start.",
        );
        let provider = ProviderConfig {
            client_id: env.value(
                "GOOGLE_CLIENT_ID",
                "gcal-local-client",
                "OAuth client id registered with the provider.",
            ),
            client_secret: env.value(
                "GOOGLE_CLIENT_SECRET",
                LOCAL_CLIENT_SECRET,
                "OAuth client secret (never logged).",
            ),
            auth_url: http_url(
                env,
                "GOOGLE_AUTH_URL",
                "https://accounts.google.com/o/oauth2/v2/auth",
                "The provider's authorization (consent) endpoint.",
            ),
            token_url: http_url(
                env,
                "GOOGLE_TOKEN_URL",
                "https://oauth2.googleapis.com/token",
                "The provider's token endpoint.",
            ),
            redirect_uri: http_url(
                env,
                "OAUTH_REDIRECT_URI",
                "http://127.0.0.1:3004/api/google/callback",
                "This worker's callback URL, exactly as registered with the provider.",
            ),
            scopes: env.value(
                "GOOGLE_SCOPES",
                "https://www.googleapis.com/auth/calendar openid email",
                "Space-separated scopes the connection requires.",
            ),
            userinfo_url: http_url(
                env,
                "GOOGLE_USERINFO_URL",
                "https://openidconnect.googleapis.com/v1/userinfo",
                "The provider's userinfo endpoint (the connected account's email).",
            ),
            calendar_api_url: http_url(
                env,
                "GOOGLE_CALENDAR_API_URL",
                "https://www.googleapis.com/calendar/v3",
                "The Calendar API base URL (the account's primary calendar).",
            ),
            revoke_url: http_url(
                env,
                "GOOGLE_REVOKE_URL",
                "https://oauth2.googleapis.com/revoke",
                "The provider's token revocation endpoint.",
            ),
            client_auth: env.value(
                "OAUTH_CLIENT_AUTH_METHOD",
                "client_secret_basic",
                "How the client authenticates at the token and revocation endpoints: client_secret_basic (HTTP Basic) or client_secret_post (in the form body).",
            ),
            profile: env.value(
                "OAUTH_PROVIDER_PROFILE",
                "google",
                "How offline access (a refresh token) is asked for: google (access_type=offline, prompt=consent) or oidc (the offline_access scope, prompt=consent).",
            ),
            token_response_omits_scope: env.value(
                "OAUTH_TOKEN_RESPONSE_OMITS_SCOPE",
                "false",
                "true only for a provider known to omit `scope` from token responses: a missing scope then means granted as requested. Off, a token response without scope is refused.",
            ),
            timeout: env
                .value::<HumanDuration>(
                    "PROVIDER_TIMEOUT",
                    "10s",
                    "Bound on each HTTP call to the provider.",
                )
                .into(),
            attempts: env.value(
                "PROVIDER_ATTEMPTS",
                "3",
                "Tries per provider call that fails transiently (network, 5xx, 429).",
            ),
        };
        if provider.attempts == 0 || provider.attempts > 10 {
            env.problem("PROVIDER_ATTEMPTS", "must be between 1 and 10");
        }
        let frontend_redirect_url = env.optional::<url::Url>(
            "FRONTEND_REDIRECT_URL",
            "After the callback, redirect the browser here with ?status=success|error \
                 instead of showing the worker's own page.",
        );
        if let Some(url) = &frontend_redirect_url
            && !matches!(url.scheme(), "http" | "https")
        {
            env.problem(
                "FRONTEND_REDIRECT_URL",
                "must be an http:// or https:// URL",
            );
        }
        let max_accounts: usize = env.value(
            "MAX_GOOGLE_ACCOUNTS",
            "10",
            "Google accounts one subaccount may have connected at once; connecting one more is refused (reconnecting a connected one is always allowed).",
        );
        if !(1..=1000).contains(&max_accounts) {
            env.problem("MAX_GOOGLE_ACCOUNTS", "must be between 1 and 1000");
        }
        let consent_policy = crate::consent_policy::ConsentPolicy::from_env(env);
        let vault = crate::vault::VaultConfig::from_env(env);
        let access_token_margin: Duration = env
            .value::<HumanDuration>(
                "ACCESS_TOKEN_MARGIN",
                "2m",
                "A cached access token is handed out only while it has this long left to live.",
            )
            .into();
        let access_token_memory_ttl: Duration = env
            .value::<HumanDuration>(
                "ACCESS_TOKEN_MEMORY_TTL",
                "2s",
                "How long a replica answers an account's access token from memory after it last read it from Redis, MongoDB or the provider (0s: always asks Redis). Another replica's disconnect of the account reaches this one's memory within it; at most 1m.",
            )
            .into();
        if access_token_memory_ttl > Duration::from_secs(60) {
            env.problem("ACCESS_TOKEN_MEMORY_TTL", "must be at most 1m");
        }
        let state_ttl: Duration = env
            .value::<HumanDuration>(
                "OAUTH_STATE_TTL",
                "10m",
                "How long an authorization link stays usable.",
            )
            .into();
        if state_ttl < Duration::from_secs(60) || state_ttl > Duration::from_secs(24 * 3600) {
            env.problem("OAUTH_STATE_TTL", "must be between 1m and 24h");
        }
        let wait_replicas: u32 = env.value(
            "REDIS_WAIT_REPLICAS",
            "0",
            "Redis replicas that must have an OAuth state before its link is issued (Redis WAIT, up to 1s); when fewer acknowledge it, the connect request answers 503 state_store_unavailable. 0: issued once the primary has it, and a failover to a replica that had not received it yet makes the link answer \"expired\". Behind Sentinel with one replica: 1.",
        );
        if wait_replicas > 10 {
            env.problem("REDIS_WAIT_REPLICAS", "must be between 0 and 10");
        }
        let disconnect_max_deliver: i64 = env.value(
            "DISCONNECT_MAX_DELIVER",
            "40",
            "Deliveries of one disconnect request (revoke at the provider, delete the tokens) before the operation fails.",
        );
        if !(1..=1000).contains(&disconnect_max_deliver) {
            env.problem("DISCONNECT_MAX_DELIVER", "must be between 1 and 1000");
        }
        let disconnect_retry_delays: service_kit::config::RetryDelays = env.value(
            "DISCONNECT_RETRY_DELAYS",
            "5s,30s,2m,10m",
            "Delays before a disconnect whose revocation failed transiently is tried again; the last repeats (40 deliveries cover about 6 hours).",
        );
        let connect_limits = service_kit::rate_limit::ConnectLimits::from_env(env);
        let state_store_timeout = service_kit::oauth_state::state_store_timeout(env);
        let product_name = env.value(
            "PRODUCT_NAME",
            service_kit::consent::DEFAULT_PRODUCT_NAME,
            "The product named, with the tenant, as who asks for the calendar in the \
             authorization email and on the consent page (at most 100 characters).",
        );
        Self {
            product_name,
            connect_limits,
            state_store_timeout,
            common,
            http_addr,
            http_reuse_port,
            provider,
            state_ttl,
            wait_replicas,
            frontend_redirect_url,
            vault,
            access_token_margin,
            access_token_memory_ttl,
            disconnect_max_deliver,
            disconnect_retry_delays: disconnect_retry_delays.0,
            max_accounts,
            consent_policy,
        }
    }

    fn common(&self) -> &CommonConfig {
        &self.common
    }

    fn exposure(&self) -> Exposure {
        Exposure::listening("OAUTH_WORKER_HTTP_ADDR", self.http_addr)
            .insecure_if(
                self.vault.uses_dev_key(),
                "TOKEN_ENCRYPTION_KEYS",
                "stored Google tokens open with a key published in the repository",
            )
            .insecure_if(
                self.provider.client_secret.expose() == LOCAL_CLIENT_SECRET,
                "GOOGLE_CLIENT_SECRET",
                "the OAuth client secret is the published local one",
            )
    }
}
