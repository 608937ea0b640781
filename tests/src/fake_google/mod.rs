//! A fake Google OAuth 2.0 provider that speaks the real protocol, for the end-to-end tests of
//! the OAuth callback and for the local run (the `fake-google` binary), so the whole connect
//! flow works with no Google credentials.
//!
//! It serves, under one base URL, the endpoints the oauth-worker talks to, on Google's paths:
//!
//! | endpoint | Google's | here |
//! |---|---|---|
//! | authorization (consent page) | `https://accounts.google.com/o/oauth2/v2/auth` | [`FakeGoogle::auth_url`] |
//! | token | `https://oauth2.googleapis.com/token` | [`FakeGoogle::token_url`] |
//! | userinfo | `https://openidconnect.googleapis.com/v1/userinfo` (also `www.googleapis.com/oauth2/v3/userinfo`) | [`FakeGoogle::userinfo_url`] |
//! | revocation | `https://oauth2.googleapis.com/revoke` | [`FakeGoogle::revoke_url`] |
//! | Calendar API | `https://www.googleapis.com/calendar/v3` | [`FakeGoogle::calendar_api_base`] |
//!
//! Where it matters it behaves like Google: exact redirect URI matching with an error page (never
//! a redirect) for a bad client or redirect URI, PKCE S256 required, single-use codes (reuse
//! revokes what the code issued), client authentication by HTTP Basic or in the body, refresh
//! tokens only for `access_type=offline` (and, like Google, a second offline consent of the same
//! account gets a new one only with `prompt=consent`), `include_granted_scopes=true` adds the
//! scopes the account already granted this client, revoking any token of a grant revokes the
//! whole grant, and Google's error bodies. It does not issue `id_token`s and does not rename
//! `email` to `https://www.googleapis.com/auth/userinfo.email` in granted scopes.
//!
//! It can also behave as a standards-compliant OpenID provider instead, require client
//! authentication at revocation, and leave out what a provider may leave out ([`modes`]).
//!
//! Tests drive the consent page with [`FakeGoogle::consent`] (or click it in a browser), break
//! things with the fault switches in [`faults`] and look inside with its observers. The same
//! switches are served over HTTP: `POST /_fake/faults`, `GET /_fake/state`.
//!
//! All state is in memory and dies with the handle.

mod consent;
mod faults;
pub mod modes;
mod resources;
mod state;
mod token;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::response::Json;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use consent::{Decision, consent_at};
pub use faults::FailNext;
pub use modes::{ClientAuth, Profile};

use state::State;

/// The path of the authorization endpoint, as at `accounts.google.com`.
pub const AUTH_PATH: &str = "/o/oauth2/v2/auth";
/// Where the consent page's form posts the user's decision.
pub const DECISION_PATH: &str = "/o/oauth2/v2/auth/decision";
/// The path of the token endpoint, as at `oauth2.googleapis.com`.
pub const TOKEN_PATH: &str = "/token";
/// The path of the userinfo endpoint, as at `www.googleapis.com`.
pub const USERINFO_PATH: &str = "/oauth2/v3/userinfo";
/// The path of the revocation endpoint, as at `oauth2.googleapis.com`.
pub const REVOKE_PATH: &str = "/revoke";
/// The Calendar API's base path, as at `www.googleapis.com`.
pub const CALENDAR_API_PATH: &str = "/calendar/v3";

/// The account the consent page offers when neither the request nor the configuration names one.
pub const FALLBACK_ACCOUNT: &str = "user@example.com";

/// The one OAuth client the fake knows, as registered in a Google Cloud console.
#[derive(Debug, Clone)]
pub struct FakeGoogleConfig {
    pub client_id: String,
    /// Checked by the token endpoint, whichever way the client sends it.
    pub client_secret: String,
    /// The authorized redirect URIs, compared character for character as Google does: a
    /// trailing slash or another port is a `redirect_uri_mismatch`.
    pub redirect_uris: Vec<String>,
    /// The account the consent page offers when the request has no `login_hint`
    /// ([`FALLBACK_ACCOUNT`] when `None`).
    pub default_account: Option<String>,
}

impl FakeGoogleConfig {
    /// One client with one redirect URI and no default account.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        redirect_uri: impl Into<String>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: vec![redirect_uri.into()],
            default_account: None,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.client_id.is_empty(), "the client id is empty");
        anyhow::ensure!(
            !self.redirect_uris.is_empty(),
            "no redirect URI is registered"
        );
        for uri in &self.redirect_uris {
            url::Url::parse(uri).with_context(|| format!("redirect URI {uri:?} is not a URL"))?;
        }
        Ok(())
    }
}

/// What every request handler shares: the fixed configuration and the mutable state.
#[derive(Debug)]
struct Shared {
    config: FakeGoogleConfig,
    /// Never held across an `.await`.
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler leaves nothing half-updated that matters to a fake.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type AppState = Arc<Shared>;

/// A running fake Google. Dropping it stops the server; [`FakeGoogle::shutdown`] also waits
/// until it has stopped.
#[derive(Debug)]
pub struct FakeGoogle {
    addr: SocketAddr,
    base_url: String,
    shared: AppState,
    /// For [`FakeGoogle::consent`]: never follows redirects, so the callback URL is returned,
    /// not fetched.
    http: reqwest::Client,
    stop: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl FakeGoogle {
    /// Binds `addr` (`127.0.0.1:0` in tests) and serves in a tokio task.
    pub async fn start(config: FakeGoogleConfig, addr: SocketAddr) -> anyhow::Result<Self> {
        config.check()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{}", reachable(addr));
        service_kit::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State::default()),
        });
        let stop = CancellationToken::new();
        let app = router(shared.clone());
        let stopped = stop.clone();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "fake Google server failed");
            }
        });
        Ok(Self {
            addr,
            base_url,
            shared,
            http,
            stop,
            server: Some(server),
        })
    }

    /// Stops accepting requests and waits for in-flight ones to finish.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<ip>:<port>`, with no trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The authorization endpoint: `<base>/o/oauth2/v2/auth`.
    pub fn auth_url(&self) -> String {
        format!("{}{AUTH_PATH}", self.base_url)
    }

    /// The token endpoint: `<base>/token`.
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base_url)
    }

    /// The userinfo endpoint: `<base>/oauth2/v3/userinfo`.
    pub fn userinfo_url(&self) -> String {
        format!("{}{USERINFO_PATH}", self.base_url)
    }

    /// The revocation endpoint: `<base>/revoke`.
    pub fn revoke_url(&self) -> String {
        format!("{}{REVOKE_PATH}", self.base_url)
    }

    /// The Calendar API's base: `<base>/calendar/v3`, so the primary calendar's entry is at
    /// `<base>/calendar/v3/users/me/calendarList/primary`, as at Google.
    pub fn calendar_api_base(&self) -> String {
        format!("{}{CALENDAR_API_PATH}", self.base_url)
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &FakeGoogleConfig {
        &self.shared.config
    }
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

fn router(shared: AppState) -> Router {
    // Latency applies to the back-channel endpoints only, never to the consent page.
    let back_channel = Router::new()
        .merge(token::router())
        .merge(resources::router())
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            faults::latency,
        ));
    Router::new()
        .merge(consent::router())
        .merge(back_channel)
        .merge(faults::router())
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "alive" })) }),
        )
        .route(
            "/readyz",
            get(|| async { Json(json!({ "status": "ready" })) }),
        )
        .with_state(shared)
}

/// The address clients can reach when bound to a wildcard address.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// An unguessable URL-safe string of `bytes` random bytes.
fn random_token(bytes: usize) -> String {
    let mut buf = vec![0_u8; bytes];
    rand::fill(buf.as_mut_slice());
    URL_SAFE_NO_PAD.encode(buf)
}

/// Scopes as OAuth writes them: space-separated.
fn scope_string(scopes: &[String]) -> String {
    scopes.join(" ")
}
