//! What the person asked to connect is told, in the email and on the consent page it links to:
//! who asks (the product and the tenant), what access in plain words, the link's true expiry,
//! and that an unexpected request can be ignored. On real infrastructure: the api, the
//! oauth-worker with the fake Google, the mailer-worker and an SMTP server.

mod api_support;
mod oauth_support;

use std::time::Duration;

use api_support::{Api, connect_path, token};
use e2e::fake_google::Decision;
use e2e::smtp::SmtpSink;
use e2e::{RunningService, TestContext};
use mailer_worker::MailerWorkerConfig;
use oauth_support::{OAuthStack, SUBACCOUNT, query};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const PRODUCT: &str = "Example Scheduler";
const HOSTILE_TENANT: &str = "Acme <script>alert(1)</script> & \"Co\"";

struct Stack {
    oauth: OAuthStack,
    api: Api,
    sink: SmtpSink,
    _mailer: RunningService,
}

impl Stack {
    async fn start() -> Self {
        let ctx = TestContext::new();
        let sink = SmtpSink::start();
        let mailer_config: MailerWorkerConfig = ctx.config(&[("SMTP_URL", sink.url().as_str())]);
        let mut mailer = RunningService::start(mailer_worker::SERVICE, |l, s| {
            mailer_worker::run(mailer_config, l, s)
        })
        .await;
        mailer.wait_ready(WAIT).await;
        let oauth = OAuthStack::start(ctx.clone(), &[("PRODUCT_NAME", PRODUCT)]).await;
        let api = Api::start_in(ctx, &[]).await;
        api.seed_google_calendar(SUBACCOUNT).await;
        Self {
            oauth,
            api,
            sink,
            _mailer: mailer,
        }
    }

    /// The stored attempt's `expiresAt`, formatted as the email and the page write it.
    async fn stored_expiry(&self, state: &str) -> String {
        let mut redis = self.oauth.redis().await;
        let raw: String = redis::cmd("GET")
            .arg(self.oauth.state_key(state))
            .query_async(&mut redis)
            .await
            .expect("the state is stored");
        let attempt: serde_json::Value = serde_json::from_str(&raw).expect("json");
        let expires_at: chrono::DateTime<chrono::Utc> = attempt["expiresAt"]
            .as_str()
            .expect("expiresAt")
            .parse()
            .expect("a time");
        expires_at.format("%Y-%m-%d %H:%M UTC").to_string()
    }

    async fn state_is_stored(&self, state: &str) -> bool {
        let mut redis = self.oauth.redis().await;
        redis::cmd("EXISTS")
            .arg(self.oauth.state_key(state))
            .query_async::<i64>(&mut redis)
            .await
            .expect("EXISTS")
            == 1
    }
}

const ACCESS: &str = "see, edit, share and permanently delete all the calendars you can access";

#[tokio::test]
async fn the_email_and_the_consent_page_say_who_asks_for_what_until_when() {
    let stack = Stack::start().await;
    let reply = stack
        .api
        .post(
            &connect_path(SUBACCOUNT),
            Some(&token(SUBACCOUNT)),
            &json!({ "userEmail": "person@example.com", "tenantName": HOSTILE_TENANT }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // The spec's answer is unchanged: authUrl is the provider's consent URL.
    let auth_url = reply.body["data"]["authUrl"]
        .as_str()
        .expect("authUrl")
        .to_owned();
    assert!(
        auth_url.starts_with(stack.oauth.google.base_url()),
        "{auth_url}"
    );
    let state = query(&auth_url)["state"].clone();
    let expiry = format!(
        "expires at {} (in 10 minutes)",
        stack.stored_expiry(&state).await
    );

    let mail = stack.sink.wait_for_messages(1, WAIT).await;
    let text = mail[0].text().expect("text part");
    let html = mail[0].html().expect("html part");
    assert!(
        text.contains(&format!("{HOSTILE_TENANT} asks, through {PRODUCT}")),
        "{text}"
    );
    for part in [&text, &html] {
        assert!(part.contains(PRODUCT), "{part}");
        assert!(part.contains(ACCESS), "{part}");
        assert!(part.contains(&expiry), "{part}");
        assert!(
            part.contains("If you did not expect this, ignore this email"),
            "{part}"
        );
    }
    assert!(
        html.contains("Acme &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Co&quot;"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");

    // The email links to the consent page for the same state, next to the callback.
    let page_url = text
        .split_whitespace()
        .find(|word| word.contains("/api/google/consent?"))
        .expect("a consent page link in the text part")
        .to_owned();
    assert!(
        page_url.starts_with(stack.oauth.redirect_uri.trim_end_matches("callback")),
        "{page_url}"
    );
    assert_eq!(query(&page_url)["state"], state);

    let page = stack.oauth.open(&page_url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let header = |name: &str| {
        page.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        header("content-security-policy").contains("frame-ancestors 'none'"),
        "{:?}",
        page.headers
    );
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("x-content-type-options"), "nosniff");
    for expected in [
        PRODUCT,
        "Acme &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Co&quot; asks",
        ACCESS,
        &expiry[..expiry.find(" (in").expect("span")],
        "If you did not expect this, ignore it",
        "Continue to Google",
    ] {
        assert!(
            page.body.contains(expected),
            "{expected:?} in\n{}",
            page.body
        );
    }
    assert!(!page.body.contains("<script>"), "{}", page.body);
    let button = format!("href=\"{}\"", auth_url.replace('&', "&amp;"));
    assert!(page.body.contains(&button), "{button} in\n{}", page.body);

    // Showing the page twice uses nothing up: the link still connects, once.
    assert_eq!(stack.oauth.open(&page_url).await.status, 200);
    assert!(
        stack.state_is_stored(&state).await,
        "the page consumed the state"
    );
    let callback = stack.oauth.consent(&auth_url, Decision::allow()).await;
    let connected = stack.oauth.open(&callback).await;
    assert_eq!(connected.status, 200, "{}", connected.body);
    let after = stack.oauth.open(&page_url).await;
    assert_eq!(after.status, 410, "{}", after.body);
    assert!(
        after.body.contains("expired or was already used"),
        "{}",
        after.body
    );
}

#[tokio::test]
async fn without_a_tenant_name_the_subaccount_asks_and_bad_names_are_refused() {
    let stack = Stack::start().await;
    for bad in [
        json!(""),
        json!("x".repeat(101)),
        json!("Acme\r\nBcc: a@b.example"),
    ] {
        let reply = stack
            .api
            .post(
                &connect_path(SUBACCOUNT),
                Some(&token(SUBACCOUNT)),
                &json!({ "userEmail": "person@example.com", "tenantName": bad }),
            )
            .await;
        reply.assert_error(400, "invalid_field");
        assert_eq!(reply.body["error"]["details"]["field"], "tenantName");
    }
    let reply = stack
        .api
        .post(
            &connect_path(SUBACCOUNT),
            Some(&token(SUBACCOUNT)),
            &json!({ "userEmail": "person@example.com" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mail = stack.sink.wait_for_messages(1, WAIT).await;
    let text = mail[0].text().expect("text part");
    assert!(
        text.contains(&format!("Account {SUBACCOUNT} asks, through {PRODUCT}")),
        "{text}"
    );
    assert_eq!(
        stack.sink.messages().len(),
        1,
        "refused requests mail nothing"
    );
}
