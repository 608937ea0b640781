//! The headless-Chromium harness against the fake Google's consent page: a person opens the
//! authorization URL a client built, clicks Allow (or unticks a scope, or clicks Cancel), and
//! lands on the client's redirect URI — here a tiny server that records what it receives.
//!
//! Needs `chromium` and `chromium-driver` (scripts/infra/install.sh); no other infrastructure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::Html;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e::browser::Browser;
use e2e::fake_google::{FakeGoogle, FakeGoogleConfig};
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;
use url::Url;

const CLIENT_ID: &str = "browser-test.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "GOCSPX-browser-test";
const CALENDAR: &str = "https://www.googleapis.com/auth/calendar";
const SCOPE: &str = "https://www.googleapis.com/auth/calendar openid email";
const ACCOUNT: &str = "ada@example.com";
const WAIT: Duration = Duration::from_secs(10);

/// Stands in for our OAuth callback: records each query string it receives and answers a
/// small page.
struct Callback {
    uri: String,
    queries: Arc<Mutex<Vec<String>>>,
    server: JoinHandle<()>,
}

impl Callback {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let queries = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/callback", get(record))
            .with_state(Arc::clone(&queries));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            uri: format!("http://{addr}/callback"),
            queries,
            server,
        })
    }

    /// The parameters of the only request received so far.
    fn only_query(&self) -> anyhow::Result<HashMap<String, String>> {
        let queries = self
            .queries
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        anyhow::ensure!(
            queries.len() == 1,
            "expected one callback request, got {queries:?}"
        );
        Ok(url::form_urlencoded::parse(queries[0].as_bytes())
            .into_owned()
            .collect())
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(queries): State<Arc<Mutex<Vec<String>>>>,
    RawQuery(query): RawQuery,
) -> Html<&'static str> {
    if let Ok(mut queries) = queries.lock() {
        queries.push(query.unwrap_or_default());
    }
    Html(r#"<!doctype html><title>Connected</title><h1 id="done">Calendar connected</h1>"#)
}

/// An authorization request as a client builds it, with the state to check on the way back.
struct Authorization {
    url: String,
    state: String,
}

fn authorization(fake: &FakeGoogle, redirect_uri: &str) -> anyhow::Result<Authorization> {
    let state = uuid::Uuid::now_v7().simple().to_string();
    let verifier = format!(
        "{}{}",
        uuid::Uuid::now_v7().simple(),
        uuid::Uuid::now_v7().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let url = Url::parse_with_params(
        &fake.auth_url(),
        [
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", redirect_uri),
            ("scope", SCOPE),
            ("state", &state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("access_type", "offline"),
            ("prompt", "consent"),
            ("login_hint", ACCOUNT),
        ],
    )?;
    Ok(Authorization {
        url: url.into(),
        state,
    })
}

/// The fake Google, a callback server registered with it, a browser on the consent page.
async fn open_consent_page() -> anyhow::Result<(FakeGoogle, Callback, Browser, Authorization)> {
    let callback = Callback::start().await?;
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    let fake = FakeGoogle::start(
        FakeGoogleConfig::new(CLIENT_ID, CLIENT_SECRET, &callback.uri),
        addr,
    )
    .await?;
    let auth = authorization(&fake, &callback.uri)?;
    let browser = Browser::start().await?;
    browser.goto(&auth.url).await?;
    browser.wait_for("#allow", WAIT).await?;
    Ok((fake, callback, browser, auth))
}

/// Waits for the callback's page after the consent page redirected there.
async fn wait_for_callback_page(browser: &Browser, callback: &Callback) -> anyhow::Result<()> {
    let expected = Url::parse(&callback.uri)?;
    browser
        .wait_for_url(
            |url| url.origin() == expected.origin() && url.path() == expected.path(),
            WAIT,
        )
        .await?;
    browser.wait_for("#done", WAIT).await?;
    Ok(())
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(png: &[u8]) -> anyhow::Result<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    anyhow::ensure!(png.starts_with(SIGNATURE), "not a PNG signature");
    // Signature (8), then the first chunk: length (4), type (4), data.
    let ihdr = png.get(8..24).context("shorter than an IHDR chunk")?;
    anyhow::ensure!(&ihdr[4..8] == b"IHDR", "the first chunk is not IHDR");
    let field =
        |at: usize| u32::from_be_bytes([ihdr[at], ihdr[at + 1], ihdr[at + 2], ihdr[at + 3]]);
    Ok((field(8), field(12)))
}

#[tokio::test]
async fn allow_redirects_with_a_code_and_the_same_state() -> anyhow::Result<()> {
    let (_fake, callback, browser, auth) = open_consent_page().await?;
    let account = browser
        .wait_for("#account", WAIT)
        .await?
        .prop("value")
        .await?;
    assert_eq!(
        account.as_deref(),
        Some(ACCOUNT),
        "login_hint prefills the account"
    );

    let png = browser.screenshot("browser/consent-page.png").await?;
    let (width, height) = png_size(&png)?;
    assert!(
        (1200..=1400).contains(&width) && height > 0,
        "screenshot is {width}x{height}"
    );

    browser.click("#allow").await?;
    wait_for_callback_page(&browser, &callback).await?;
    assert_eq!(browser.text("#done").await?, "Calendar connected");
    browser.screenshot("browser/callback-page.png").await?;

    let query = callback.only_query()?;
    assert!(
        query.get("code").is_some_and(|c| !c.is_empty()),
        "no code in {query:?}"
    );
    assert_eq!(query.get("state"), Some(&auth.state));
    let scopes: Vec<&str> = query["scope"].split(' ').collect();
    assert_eq!(scopes, SCOPE.split(' ').collect::<Vec<_>>());
    browser.close().await
}

#[tokio::test]
async fn unticked_calendar_scope_is_not_granted() -> anyhow::Result<()> {
    let (_fake, callback, browser, auth) = open_consent_page().await?;
    let first = browser
        .wait_for("#scope-0", WAIT)
        .await?
        .attr("value")
        .await?;
    assert_eq!(
        first.as_deref(),
        Some(CALENDAR),
        "scopes are listed in request order"
    );

    browser.set_checked("#scope-0", false).await?;
    browser.fill("#account", "grace@example.com").await?;
    browser.click("#allow").await?;
    wait_for_callback_page(&browser, &callback).await?;

    let query = callback.only_query()?;
    assert_eq!(query.get("state"), Some(&auth.state));
    assert!(query.contains_key("code"), "no code in {query:?}");
    let scopes: Vec<&str> = query["scope"].split(' ').collect();
    assert!(
        !scopes.contains(&CALENDAR),
        "calendar was granted: {scopes:?}"
    );
    assert!(
        scopes.contains(&"openid"),
        "openid was not granted: {scopes:?}"
    );
    browser.close().await
}

#[tokio::test]
async fn deny_redirects_with_access_denied() -> anyhow::Result<()> {
    let (_fake, callback, browser, auth) = open_consent_page().await?;
    browser.click("#deny").await?;
    wait_for_callback_page(&browser, &callback).await?;

    let query = callback.only_query()?;
    assert_eq!(
        query.get("error").map(String::as_str),
        Some("access_denied")
    );
    assert_eq!(query.get("state"), Some(&auth.state));
    assert!(
        !query.contains_key("code"),
        "a code despite the denial: {query:?}"
    );
    browser.close().await
}
