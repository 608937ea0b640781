//! Who may have a consent link emailed to whom: to the caller's own address (the token's
//! `email` claim) with `connectors:manage`, to anyone else only with `connectors:invite` too.
//! On real NATS, Redis and MongoDB, the real oauth-worker and mailer-worker and an SMTP server.

mod api_support;

use std::time::Duration;

use api_support::{Api, SUBACCOUNT, claims, connect_path};
use async_nats::jetstream;
use e2e::jwt::{MintToken, UserClaims};
use e2e::smtp::SmtpSink;
use e2e::{RunningService, TestContext};
use mailer_worker::MailerWorkerConfig;
use oauth_worker::OAuthWorkerConfig;
use schemas::events::AuthLinkIssued;
use schemas::subjects::Namespace;
use serde_json::json;
use service_kit::auth::{INVITE, MANAGE_CONNECTORS};

const WAIT: Duration = Duration::from_secs(30);

/// The api, the oauth-worker and the mailer-worker on one context, with an SMTP server.
struct Stack {
    api: Api,
    sink: SmtpSink,
    _worker: RunningService,
    _mailer: RunningService,
}

impl Stack {
    async fn start(api_settings: &[(&str, &str)]) -> Self {
        let ctx = TestContext::new();
        let sink = SmtpSink::start();
        let mailer_config: MailerWorkerConfig = ctx.config(&[("SMTP_URL", sink.url().as_str())]);
        let mut mailer = RunningService::start(mailer_worker::SERVICE, |l, s| {
            mailer_worker::run(mailer_config, l, s)
        })
        .await;
        mailer.wait_ready(WAIT).await;
        let worker_config: OAuthWorkerConfig = ctx.config(&[]);
        let mut worker = RunningService::start(oauth_worker::SERVICE, |l, s| {
            oauth_worker::run(worker_config, l, s)
        })
        .await;
        worker.wait_ready(WAIT).await;
        let api = Api::start_in(ctx, api_settings).await;
        api.seed_google_calendar(SUBACCOUNT).await;
        Self {
            api,
            sink,
            _worker: worker,
            _mailer: mailer,
        }
    }

    /// A token for the subaccount with `permissions` and, optionally, an own address.
    fn token(permissions: &[&str], email: Option<&str>) -> String {
        let mut claims: UserClaims = claims(SUBACCOUNT);
        claims.permissions = permissions.iter().map(|p| (*p).to_owned()).collect();
        claims.email = email.map(str::to_owned);
        claims.sign_hs256(api_support::SECRET.as_bytes())
    }

    async fn connect(&self, token: &str, body: serde_json::Value) -> api_support::Reply {
        self.api
            .post(&connect_path(SUBACCOUNT), Some(token), &body)
            .await
    }

    /// The email jobs now in the event stream.
    async fn email_jobs(&self) -> usize {
        let ns = Namespace::new(&self.api.ctx.id).expect("namespace");
        let nats = self.api.ctx.nats().await;
        e2e::stream::messages(
            &jetstream::new(nats),
            &ns.events_stream(),
            Some(ns.event_filter::<AuthLinkIssued>()),
        )
        .await
        .unwrap_or_default()
        .len()
    }

    /// Redis keys a connect request leaves: OAuth states, live-state sets, rate-limit budgets.
    async fn connect_traces_in_redis(&self) -> Vec<String> {
        let mut redis = self
            .api
            .ctx
            .redis_client()
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.api.ctx.id))
            .query_async(&mut redis)
            .await
            .expect("KEYS");
        keys.into_iter()
            .filter(|k| k.contains(":oauth:") || k.contains(":ratelimit:"))
            .collect()
    }
}

#[tokio::test]
async fn emailing_someone_else_without_the_invite_permission_is_refused_and_leaves_no_trace() {
    let stack = Stack::start(&[]).await;
    let refused = [
        // No email claim: the token has no own address.
        (
            Stack::token(&[MANAGE_CONNECTORS], None),
            json!({ "userEmail": "victim@example.com" }),
        ),
        // sendEmail defaults to true, and says so explicitly here.
        (
            Stack::token(&[MANAGE_CONNECTORS], Some("member@example.com")),
            json!({ "userEmail": "victim@example.com", "sendEmail": true }),
        ),
    ];
    for (token, body) in refused {
        let reply = stack.connect(&token, body).await;
        reply.assert_error(403, "invite_not_permitted");
        assert_eq!(reply.body["error"]["details"]["permission"], INVITE);
        assert!(
            reply.message().contains("connectors:invite") && reply.message().contains("sendEmail"),
            "the message says what to do: {}",
            reply.message()
        );
    }
    assert_eq!(stack.email_jobs().await, 0, "no email job was queued");
    assert_eq!(
        stack.connect_traces_in_redis().await,
        Vec::<String>::new(),
        "no state stored, no limit charged"
    );
    assert!(stack.sink.messages().is_empty(), "nothing was mailed");

    // The same member may have a link mailed to themself (case and spaces aside)...
    let own = Stack::token(&[MANAGE_CONNECTORS], Some(" Member@Example.COM"));
    let reply = stack
        .connect(&own, json!({ "userEmail": "member@example.com" }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["data"]["emailSent"], true);
    let mail = stack.sink.wait_for_messages(1, WAIT).await;
    assert!(
        mail[0]
            .header("To")
            .is_some_and(|to| to.contains("member@example.com")),
        "{:?}",
        mail[0].header("To")
    );
    // ...and may create one for anyone, to deliver it themself.
    let reply = stack
        .connect(
            &own,
            json!({ "userEmail": "victim@example.com", "sendEmail": false }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["data"]["emailSent"], false);
    assert_eq!(stack.email_jobs().await, 1, "only the own link was queued");
}

/// The dev token (here the try-it page's `POST /dev/token`, which signs what `mint-dev-token`
/// prints) carries `connectors:invite`, so trying the flow mails the link to any address.
#[tokio::test]
async fn the_invite_permission_lets_a_link_be_emailed_to_anyone() {
    let stack = Stack::start(&[("API_DEV_MODE", "true")]).await;
    let minted = stack
        .api
        .post("/dev/token", None, &json!({ "subaccountId": SUBACCOUNT }))
        .await;
    assert_eq!(minted.status, 200, "{}", minted.body);
    let dev_token = minted.body["data"]["token"].as_str().expect("token");
    for inviter in [
        dev_token.to_owned(),
        Stack::token(&[MANAGE_CONNECTORS, INVITE], None),
    ] {
        let reply = stack
            .connect(&inviter, json!({ "userEmail": "colleague@example.com" }))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["data"]["emailSent"], true);
        assert_eq!(
            reply.body["message"],
            "Authorization link sent to colleague@example.com"
        );
    }
    let mail = stack.sink.wait_for_messages(2, WAIT).await;
    assert!(mail.iter().all(|m| {
        m.header("To")
            .is_some_and(|to| to.contains("colleague@example.com"))
    }));
}
