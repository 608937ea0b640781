//! The try-it page (`API_DEV_MODE=true`) in real headless Chromium, over the whole stack: the
//! api, the oauth-worker with the fake Google and `FRONTEND_REDIRECT_URL` pointing back at the
//! api's `/`, the metadata-worker, the mailer-worker with a real SMTP server whose mailbox is
//! served like `dev-smtp-sink`'s. A person fills the form, presses Connect, allows at the
//! consent page and comes back to the page, which shows the metadata live, the email and the
//! event trail. With dev mode off, none of it exists. The api's other page, Swagger UI at
//! `/docs`, renders in the same browser under its Content-Security-Policy.

mod api_support;
mod oauth_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_support::{Api, SECRET};
use e2e::browser::Browser;
use e2e::smtp::SmtpSink;
use e2e::{RunningService, TestContext};
use mailer_worker::MailerWorkerConfig;
use metadata_worker::MetadataWorkerConfig;
use oauth_support::OAuthStack;
use serde_json::{Value, json};

const PAGE: Duration = Duration::from_secs(20);
const READY: Duration = Duration::from_secs(30);
const USER_EMAIL: &str = "try-it-user@example.com";
const GOOGLE_EMAIL: &str = "person@gmail.example";

/// A mailbox over HTTP like `dev-smtp-sink`'s (`GET /messages`), on a free port; returns its
/// base URL.
async fn serve_mailbox(sink: Arc<SmtpSink>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new()
        .route(
            "/messages",
            axum::routing::get(
                |axum::extract::State(sink): axum::extract::State<Arc<SmtpSink>>| async move {
                    axum::Json(sink.messages_json())
                },
            ),
        )
        .with_state(sink);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Everything the page talks to, wired like `scripts/run-local.sh` wires it.
struct Stack {
    api: RunningService,
    _oauth: OAuthStack,
    _metadata: RunningService,
    _mailer: RunningService,
    sink: Arc<SmtpSink>,
}

async fn stack() -> Stack {
    let ctx = TestContext::new();
    // The api's address is needed before the oauth-worker's configuration (its redirect).
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_url = format!("http://{}", api_listener.local_addr().expect("addr"));
    let back_to_page = format!("{api_url}/");
    let oauth = OAuthStack::start(
        ctx.clone(),
        &[("FRONTEND_REDIRECT_URL", back_to_page.as_str())],
    )
    .await;

    let sink = Arc::new(SmtpSink::start());
    let mailbox_url = serve_mailbox(sink.clone()).await;
    let mailer_config: MailerWorkerConfig = ctx.config(&[("SMTP_URL", sink.url().as_str())]);
    let mut mailer = RunningService::start(mailer_worker::SERVICE, |l, s| {
        mailer_worker::run(mailer_config, l, s)
    })
    .await;
    mailer.wait_ready(READY).await;

    let metadata_config: MetadataWorkerConfig = ctx.config(&[]);
    let mut metadata = RunningService::start(metadata_worker::SERVICE, |l, s| {
        metadata_worker::run(metadata_config, l, s)
    })
    .await;
    metadata.wait_ready(READY).await;

    let api_config: api::ApiConfig = ctx.config(&[
        ("JWT_SECRET", SECRET),
        ("API_DEV_MODE", "true"),
        ("DEV_SMTP_SINK_URL", mailbox_url.as_str()),
    ]);
    let mut api = RunningService::start_on(api_listener, api::SERVICE, |l, s| {
        api::run(api_config, l, s)
    });
    api.wait_ready(READY).await;
    Stack {
        api,
        _oauth: oauth,
        _metadata: metadata,
        _mailer: mailer,
        sink,
    }
}

/// Waits until the rendered text of `css` satisfies `done`; fails with the last text seen.
async fn wait_for_text(
    browser: &Browser,
    css: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = browser.text(css).await.unwrap_or_default();
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{css} after {timeout:?}:\n{text}\n(page text: {})",
            browser.text("main").await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn connect_from_the_try_it_page_shows_metadata_email_and_events() {
    let stack = stack().await;
    let browser = Browser::start().await.expect("browser");
    browser
        .goto(&format!("{}/", stack.api.base_url))
        .await
        .expect("the page");
    browser
        .wait_for("#connect", PAGE)
        .await
        .expect("Connect button");
    // The script prefilled a random subaccount id; the person keeps it.
    let prefilled = browser
        .client()
        .execute("return document.getElementById('subaccount').value", vec![])
        .await
        .expect("read the subaccount field");
    let subaccount = prefilled.as_str().expect("a string").to_owned();
    assert!(
        subaccount.len() == 24 && subaccount.bytes().all(|b| b.is_ascii_hexdigit()),
        "{subaccount:?}"
    );
    browser.fill("#email", USER_EMAIL).await.expect("email");
    browser
        .set_checked("#send-email", true)
        .await
        .expect("send email");
    browser.click("#connect").await.expect("click Connect");

    // The fake Google's consent page.
    browser
        .wait_for("#allow", PAGE)
        .await
        .expect("consent page");
    browser
        .fill("#account", GOOGLE_EMAIL)
        .await
        .expect("account");
    browser.click("#allow").await.expect("click Allow");

    // Back on the page, via the oauth-worker's 303 to FRONTEND_REDIRECT_URL.
    let back = browser
        .wait_for_url(
            |url| {
                url.as_str().starts_with(&stack.api.base_url)
                    && url
                        .query_pairs()
                        .any(|(k, v)| k == "status" && v == "success")
            },
            PAGE,
        )
        .await
        .expect("back on the try-it page");
    assert!(
        back.query_pairs()
            .any(|(k, v)| k == "subaccountId" && v == subaccount.as_str()),
        "{back}"
    );
    let bound = Duration::from_secs(30);
    wait_for_text(&browser, "#metadata", bound, |t| {
        t.contains("\"isConnected\": true")
    })
    .await;
    wait_for_text(&browser, "#events", bound, |t| {
        t.contains("connection-succeeded")
    })
    .await;
    wait_for_text(&browser, "#inbox", bound, |t| t.contains(USER_EMAIL)).await;
    wait_for_text(&browser, "#connected", bound, |t| t == "isConnected: true").await;

    let png = browser
        .screenshot("browser_try_it_connected.png")
        .await
        .expect("screenshot");
    let path = e2e::browser::screenshot_dir().join("browser_try_it_connected.png");
    let on_disk = std::fs::read(&path).expect("the screenshot file");
    assert!(
        on_disk.len() > 1000,
        "{} is {} bytes",
        path.display(),
        on_disk.len()
    );
    assert!(on_disk.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(on_disk, png);

    // What the screenshot shows, read from the DOM at that moment.
    let metadata = browser.text("#metadata").await.expect("metadata");
    assert!(metadata.contains("\"isConnected\": true"), "{metadata}");
    assert!(metadata.contains(GOOGLE_EMAIL), "{metadata}");
    assert!(metadata.contains(USER_EMAIL), "{metadata}");
    let outcome = browser.text("#outcome").await.expect("outcome");
    assert!(outcome.contains(GOOGLE_EMAIL), "{outcome}");
    let ids = browser.text("#ids").await.expect("ids");
    let correlation_id = ids
        .rsplit("correlation id ")
        .next()
        .expect("a correlation id")
        .trim()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&correlation_id).is_ok(), "{ids}");
    let trail = browser.text("#events").await.expect("events");
    let positions: Vec<usize> = [
        "connect-requested",
        "auth-link-issued",
        "connection-succeeded",
    ]
    .iter()
    .map(|kind| {
        trail
            .find(kind)
            .unwrap_or_else(|| panic!("{kind} missing from the trail:\n{trail}"))
    })
    .collect();
    assert!(positions.is_sorted(), "out of order:\n{trail}");
    let hint = browser.text("#events-hint").await.expect("events hint");
    assert!(hint.contains(&correlation_id), "{hint}");
    let inbox = browser.text("#inbox").await.expect("inbox");
    assert!(inbox.contains(USER_EMAIL), "{inbox}");
    let mail = stack.sink.messages();
    assert_eq!(mail.len(), 1);
    let subject = mail[0].subject().unwrap_or_default();
    assert!(inbox.contains(&subject), "{subject:?} not in:\n{inbox}");
    // Nothing on the page failed.
    for error in ["#metadata-error", "#inbox-error", "#events-error"] {
        let shown = browser.text(error).await.unwrap_or_default();
        assert!(shown.is_empty(), "{error}: {shown}");
    }
    browser.close().await.expect("browser closes");
}

#[tokio::test]
async fn without_dev_mode_there_is_no_page_and_no_dev_route() {
    let api = Api::start(&[]).await;
    for path in [
        "/",
        "/dev/page.js",
        "/dev/events",
        "/dev/inbox?to=a@example.com",
    ] {
        api.get(path, None)
            .await
            .assert_error(404, "route_not_found");
    }
    api.post(
        "/dev/token",
        None,
        &json!({ "subaccountId": "68cf05f060d294db17c0685e" }),
    )
    .await
    .assert_error(404, "route_not_found");
}

#[tokio::test]
async fn dev_mode_helpers_answer_in_the_house_shape() {
    let unreachable = format!("http://127.0.0.1:{}", e2e::process::free_port());
    let api = Api::start(&[
        ("API_DEV_MODE", "true"),
        ("DEV_SMTP_SINK_URL", unreachable.as_str()),
    ])
    .await;

    let page = reqwest::get(format!("{}/", api.service.base_url))
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    let html = page.text().await.expect("html");
    assert!(html.contains("<script src=\"/dev/page.js\""), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external asset"
    );

    // A token for the subaccount, accepted by the connector routes.
    let subaccount = "68cf05f060d294db17c0685e";
    let minted = api
        .post("/dev/token", None, &json!({ "subaccountId": subaccount }))
        .await;
    assert_eq!(minted.status, 200, "{}", minted.body);
    let token = minted.body["data"]["token"].as_str().expect("token");
    let listed = api
        .get(&format!("/api/connectors/{subaccount}"), Some(token))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    api.get("/api/connectors/5f1e0c9a2b3d4e5f60718293", Some(token))
        .await
        .assert_error(403, "subaccount_forbidden");
    api.post("/dev/token", None, &json!({ "subaccountId": "nope" }))
        .await
        .assert_error(400, "invalid_field");

    // The mailbox is down: a clear error naming where it was looked for.
    let inbox = api.get("/dev/inbox?to=user@example.com", None).await;
    inbox.assert_error(502, "dev_smtp_sink_unavailable");
    assert!(inbox.message().contains(&unreachable), "{}", inbox.body);

    // The event trail: an unknown attempt has none; a malformed id is refused.
    let trail = api
        .get(
            &format!("/dev/events?correlationId={}", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(trail.status, 200, "{}", trail.body);
    assert_eq!(trail.body["data"]["events"], Value::Array(Vec::new()));
    api.get("/dev/events?correlationId=nope", None)
        .await
        .assert_error(400, "invalid_field");
}

#[tokio::test]
async fn the_docs_page_renders_in_chromium_under_its_policy() {
    let api = Api::start(&[]).await;
    let page = reqwest::get(format!("{}/docs/", api.service.base_url))
        .await
        .expect("docs");
    assert_eq!(page.status(), 200);
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing: {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header("referrer-policy"), "no-referrer");

    // Scripts from this origin ran and fetched the document (script-src, connect-src), and the
    // stylesheet applied (style-src): under a policy that broke the page, none of this shows.
    let browser = Browser::start().await.expect("browser");
    browser
        .goto(&format!("{}/docs/", api.service.base_url))
        .await
        .expect("opens");
    browser
        .wait_for(".opblock", PAGE)
        .await
        .expect("operations rendered");
    let title = browser.text(".info .title").await.expect("title");
    assert!(title.contains("Google Calendar connector API"), "{title}");
    let font_size = browser
        .client()
        .execute(
            "return getComputedStyle(document.querySelector('.swagger-ui .info .title')).fontSize",
            vec![],
        )
        .await
        .expect("computed style");
    assert_eq!(font_size, json!("36px"), "swagger-ui.css applied");
    browser.close().await.expect("browser closes");
}
