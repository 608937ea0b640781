//! The local run's Google: a fake OAuth 2.0 provider ([`e2e::fake_google`]) so the connect
//! flow can be tried in a browser with no Google credentials. Point the oauth-worker's
//! authorization, token, userinfo, revoke and Calendar URLs at the ones it prints.
//!
//! ```text
//! fake-google
//!   FAKE_GOOGLE_ADDR             where it listens   (default 127.0.0.1:3010)
//!   GOOGLE_CLIENT_ID             the one client     (default gcal-local-client)
//!   GOOGLE_CLIENT_SECRET         its secret         (default gcal-local-secret)
//!   OAUTH_REDIRECT_URI           registered redirect URIs, comma-separated
//!                                (default http://127.0.0.1:3004/api/google/callback)
//!   FAKE_GOOGLE_DEFAULT_ACCOUNT  the consent page's account when there is no login_hint
//!                                (default user@example.com)
//!   FAKE_GOOGLE_PROFILE          google (default) or oidc: an OpenID provider's offline
//!                                access (the offline_access scope, prompt=consent)
//!   FAKE_GOOGLE_CLIENT_AUTH      client_secret_basic or client_secret_post: the only client
//!                                authentication the token endpoint takes, required at
//!                                revocation too (default: Google's, either; none to revoke)
//!
//!   GET  /o/oauth2/v2/auth                             the consent page
//!   POST /token, /revoke; GET /oauth2/v3/userinfo       as at Google
//!   GET  /calendar/v3/users/me/calendarList/primary     as at Google
//!   POST /_fake/faults, GET /_fake/state                fault switches and counters
//!   GET  /healthz, /readyz                              200 while it runs
//! ```
//!
//! Everything lives in memory. Not for production: it grants whatever is asked.

use std::net::SocketAddr;
use std::process::ExitCode;

use e2e::fake_google::{ClientAuth, FakeGoogle, FakeGoogleConfig, Profile};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage: fake-google   (configured by the environment)
  FAKE_GOOGLE_ADDR             listen address (default 127.0.0.1:3010)
  GOOGLE_CLIENT_ID             client id (default gcal-local-client)
  GOOGLE_CLIENT_SECRET         client secret (default gcal-local-secret)
  OAUTH_REDIRECT_URI           redirect URIs, comma-separated
                               (default http://127.0.0.1:3004/api/google/callback)
  FAKE_GOOGLE_DEFAULT_ACCOUNT  account offered without login_hint (default user@example.com)
  FAKE_GOOGLE_PROFILE          google (default) or oidc
  FAKE_GOOGLE_CLIENT_AUTH      client_secret_basic or client_secret_post, required at the
                               token and revocation endpoints (default: Google's rules)";

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args()
        .skip(1)
        .any(|arg| arg == "-h" || arg == "--help")
    {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if let Some(arg) = std::env::args().nth(1) {
        eprintln!("fake-google: unknown argument {arg:?}\n{USAGE}");
        return ExitCode::from(2);
    }
    let (config, addr, profile, client_auth) = match settings() {
        Ok(settings) => settings,
        Err(problem) => {
            eprintln!("fake-google: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let stop = match stop_signal() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("fake-google: cannot listen for signals: {e}");
            return ExitCode::from(1);
        }
    };
    let fake = match FakeGoogle::start(config, addr).await {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!("fake-google: {e:#}");
            return ExitCode::from(1);
        }
    };
    fake.set_profile(profile);
    fake.require_client_auth(client_auth);
    println!(
        "fake-google: client {} on {} — auth {}, token {}, userinfo {}, revoke {}, calendar {}, \
         redirect URIs {}",
        fake.config().client_id,
        fake.base_url(),
        fake.auth_url(),
        fake.token_url(),
        fake.userinfo_url(),
        fake.revoke_url(),
        fake.calendar_api_base(),
        fake.config().redirect_uris.join(", "),
    );
    stop.await;
    fake.shutdown().await;
    println!("fake-google: stopped");
    ExitCode::SUCCESS
}

/// The configuration from the environment, or the defaults.
fn settings() -> Result<(FakeGoogleConfig, SocketAddr, Profile, Option<ClientAuth>), String> {
    let var = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let addr = var("FAKE_GOOGLE_ADDR", "127.0.0.1:3010");
    let addr = addr
        .parse::<SocketAddr>()
        .map_err(|_| format!("FAKE_GOOGLE_ADDR {addr:?} is not host:port, e.g. 127.0.0.1:3010"))?;
    let redirect_uris: Vec<String> = var(
        "OAUTH_REDIRECT_URI",
        "http://127.0.0.1:3004/api/google/callback",
    )
    .split(',')
    .map(str::trim)
    .filter(|uri| !uri.is_empty())
    .map(str::to_owned)
    .collect();
    for uri in &redirect_uris {
        if url::Url::parse(uri).is_err() {
            return Err(format!("OAUTH_REDIRECT_URI {uri:?} is not an absolute URL"));
        }
    }
    let config = FakeGoogleConfig {
        client_id: var("GOOGLE_CLIENT_ID", "gcal-local-client"),
        client_secret: var("GOOGLE_CLIENT_SECRET", "gcal-local-secret"),
        redirect_uris,
        default_account: std::env::var("FAKE_GOOGLE_DEFAULT_ACCOUNT")
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty()),
    };
    let profile = var("FAKE_GOOGLE_PROFILE", "google")
        .parse::<Profile>()
        .map_err(|e| format!("FAKE_GOOGLE_PROFILE: {e}"))?;
    let client_auth = match var("FAKE_GOOGLE_CLIENT_AUTH", "") {
        raw if raw.is_empty() => None,
        raw => Some(
            raw.parse::<ClientAuth>()
                .map_err(|e| format!("FAKE_GOOGLE_CLIENT_AUTH: {e}"))?,
        ),
    };
    Ok((config, addr, profile, client_auth))
}

/// SIGTERM or SIGINT, listened for from the moment this is called — before the start-up line,
/// so a supervisor that stops it as soon as it has printed never hits the default action.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
