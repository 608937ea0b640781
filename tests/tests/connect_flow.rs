//! The connect flow end to end on real infrastructure: the api, the oauth-worker and the
//! mailer-worker, a real SMTP server, one HTTP call.

mod api_support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use api_support::{Api, SUBACCOUNT, connect_path, token};
use e2e::smtp::SmtpSink;
use e2e::{RunningService, TestContext};
use mailer_worker::MailerWorkerConfig;
use oauth_worker::OAuthWorkerConfig;
use serde_json::json;

async fn oauth_worker(ctx: &TestContext, client_id: &str) -> RunningService {
    // The replica test sends 110 connects for one subaccount in a few seconds: above the
    // default per-subaccount limit (tests/tests/rate_limits.rs covers the limit itself).
    let config: OAuthWorkerConfig = ctx.config(&[
        ("GOOGLE_CLIENT_ID", client_id),
        ("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", "1000/1m"),
    ]);
    let mut worker = RunningService::start(oauth_worker::SERVICE, |l, s| {
        oauth_worker::run(config, l, s)
    })
    .await;
    worker.wait_ready(Duration::from_secs(30)).await;
    worker
}

/// The api, an oauth-worker and a mailer on one fresh context, the mailer sending to a new SMTP
/// sink, and a subaccount with the `google-calendar` connector.
async fn mailing_stack() -> (SmtpSink, RunningService, RunningService, Api) {
    let ctx = TestContext::new();
    let sink = SmtpSink::start();
    let smtp_url = sink.url();
    let mailer_config: MailerWorkerConfig = ctx.config(&[("SMTP_URL", smtp_url.as_str())]);
    let mut mailer = RunningService::start(mailer_worker::SERVICE, |l, s| {
        mailer_worker::run(mailer_config, l, s)
    })
    .await;
    mailer.wait_ready(Duration::from_secs(30)).await;
    let worker = oauth_worker(&ctx, "client-e2e").await;
    let api = Api::start_in(ctx, &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    (sink, mailer, worker, api)
}

#[tokio::test]
async fn connect_returns_auth_url_and_emails_it() {
    let (sink, mailer, worker, api) = mailing_stack().await;

    let reply = api
        .post(
            &connect_path(SUBACCOUNT),
            Some(&token(SUBACCOUNT)),
            &json!({"userEmail": "user@example.com"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let auth_url = reply.body["data"]["authUrl"]
        .as_str()
        .expect("authUrl")
        .to_owned();
    assert_eq!(
        reply.body,
        json!({
            "success": true,
            "message": "Authorization link sent to user@example.com",
            "data": {
                "authUrl": auth_url,
                "userEmail": "user@example.com",
                "subaccountId": SUBACCOUNT,
                "emailSent": true
            }
        })
    );
    let url = url::Url::parse(&auth_url).expect("url");
    assert_eq!(
        url.as_str().split('?').next(),
        Some("https://accounts.google.com/o/oauth2/v2/auth")
    );
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    for (key, value) in [
        ("response_type", "code"),
        ("client_id", "client-e2e"),
        ("redirect_uri", "http://127.0.0.1:3004/api/google/callback"),
        (
            "scope",
            "https://www.googleapis.com/auth/calendar openid email",
        ),
        ("access_type", "offline"),
        ("prompt", "consent"),
        ("include_granted_scopes", "true"),
        ("login_hint", "user@example.com"),
        ("code_challenge_method", "S256"),
    ] {
        assert_eq!(q.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert!(q["state"].len() >= 22, "state carries at least 128 bits");
    assert_eq!(q["code_challenge"].len(), 43);

    let mail = sink.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(mail.len(), 1);
    // The email links to the consent page for the same state, which leads on to authUrl.
    let page = format!(
        "http://127.0.0.1:3004/api/google/consent?state={}",
        q["state"]
    );
    let text = mail[0].text().expect("text part");
    assert!(
        text.contains(&page),
        "text part carries the consent page link:\n{text}"
    );
    let html = mail[0].html().expect("html part");
    assert!(
        html.contains(&format!("href=\"{page}\"")),
        "html part carries the link:\n{html}"
    );
    assert!(
        mail[0]
            .header("To")
            .unwrap_or_default()
            .contains("user@example.com")
    );

    // Nothing else arrives: one request, one email.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.messages().len(), 1);
    for service in [mailer, worker, api.service] {
        service.stop().await.expect("clean stop");
    }
}

#[tokio::test]
async fn an_internationalized_domain_is_emailed_to_its_ascii_form() {
    let (sink, mailer, worker, api) = mailing_stack().await;

    let reply = api
        .post(
            &connect_path(SUBACCOUNT),
            Some(&token(SUBACCOUNT)),
            &json!({"userEmail": "user@bücher.example"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["data"]["emailSent"], true, "{:?}", reply.body);
    assert_eq!(reply.body["data"]["userEmail"], "user@bücher.example");

    // SMTP without SMTPUTF8 can carry only ASCII: the domain goes as its A-label.
    let mail = sink.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(mail[0].to, vec!["user@xn--bcher-kva.example".to_owned()]);
    assert!(
        mail[0]
            .header("To")
            .unwrap_or_default()
            .contains("user@xn--bcher-kva.example"),
        "{}",
        mail[0].raw()
    );
    for service in [mailer, worker, api.service] {
        service.stop().await.expect("clean stop");
    }
}

#[tokio::test]
async fn two_oauth_workers_share_requests_and_losing_one_mid_load_never_hangs() {
    let ctx = TestContext::new();
    let a = oauth_worker(&ctx, "replica-a").await;
    let b = oauth_worker(&ctx, "replica-b").await;
    // Every link from the workers: with link settings learned, the api would issue these
    // (`sendEmail: false`) itself (tests/tests/local_links.rs).
    let api = Arc::new(
        Api::start_in(
            ctx.clone(),
            &[
                ("CONNECT_REQUEST_TIMEOUT", "2s"),
                ("LINK_SETTINGS_TTL", "0s"),
            ],
        )
        .await,
    );
    api.seed_google_calendar(SUBACCOUNT).await;
    let body = json!({"userEmail": "user@example.com", "sendEmail": false});

    let call = |api: Arc<Api>, body: serde_json::Value| async move {
        let started = std::time::Instant::now();
        let reply = api
            .post(&connect_path(SUBACCOUNT), Some(&token(SUBACCOUNT)), &body)
            .await;
        (reply, started.elapsed())
    };
    // Phase 1: both replicas up; the queue group spreads the requests.
    let mut answered_by = HashSet::new();
    for _ in 0..40 {
        let (reply, _) = call(api.clone(), body.clone()).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let url =
            url::Url::parse(reply.body["data"]["authUrl"].as_str().expect("authUrl")).expect("url");
        answered_by.insert(
            url.query_pairs()
                .find(|(k, _)| k == "client_id")
                .expect("client_id")
                .1
                .into_owned(),
        );
    }
    assert_eq!(
        answered_by,
        HashSet::from(["replica-a".to_owned(), "replica-b".to_owned()]),
        "both replicas took requests"
    );

    // Phase 2: load in flight while replica A dies.
    let load: Vec<_> = (0..60)
        .map(|_| tokio::spawn(call(api.clone(), body.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    a.kill().await;
    for task in load {
        let (reply, took) = task.await.expect("caller");
        assert!(took < Duration::from_secs(5), "a caller waited {took:?}");
        match reply.status {
            200 => assert!(
                reply.body["data"]["authUrl"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("https://"))
            ),
            503 => assert!(
                ["oauth_worker_timeout", "oauth_worker_unavailable"].contains(&reply.code()),
                "{:?}",
                reply.body
            ),
            other => panic!("unexpected {other}: {:?}", reply.body),
        }
    }

    // Phase 3: the survivor carries on alone.
    for _ in 0..10 {
        let (reply, _) = call(api.clone(), body.clone()).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let url =
            url::Url::parse(reply.body["data"]["authUrl"].as_str().expect("authUrl")).expect("url");
        assert!(
            url.query_pairs()
                .any(|(k, v)| k == "client_id" && v == "replica-b")
        );
    }
    b.stop().await.expect("clean stop");
}
