//! What the OAuth callback tests share: the fake Google and the oauth-worker wired to each
//! other on free loopback ports, a test context on the shared servers, and helpers to issue
//! a link, consent, follow the callback, read events and ask for access tokens.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::time::Duration;

use async_nats::jetstream;
use e2e::fake_google::{Decision, FakeGoogle, FakeGoogleConfig};
use e2e::{RunningService, TestContext};
use oauth_worker::OAuthWorkerConfig;
use schemas::events::{
    AccessTokenReply, AccessTokenRequested, ConnectRequested, ConnectRequestedReply,
};
use schemas::subjects::Namespace;
use schemas::{Envelope, StreamEvent, SubaccountId, UserEmail};

pub const SUBACCOUNT: &str = "68cf05f060d294db17c0685e";
pub const CLIENT_ID: &str = "e2e-client";
pub const CLIENT_SECRET: &str = "e2e-client-secret";
pub const CALENDAR: &str = "https://www.googleapis.com/auth/calendar";
/// Two test keys (32 bytes each, base64).
pub const KEY_A: &str = "a:QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
pub const KEY_B: &str = "b:QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

/// The fake Google and one oauth-worker, wired together.
#[derive(Debug)]
pub struct OAuthStack {
    pub ctx: TestContext,
    pub google: FakeGoogle,
    pub worker: RunningService,
    pub nats: async_nats::Client,
    pub ns: Namespace,
    pub redirect_uri: String,
    http: reqwest::Client,
}

/// What the browser got from the callback.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl OAuthStack {
    /// Starts both on `ctx`; `overrides` go to the worker's settings.
    pub async fn start(ctx: TestContext, overrides: &[(&str, &str)]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let redirect_uri = format!(
            "http://{}/api/google/callback",
            listener.local_addr().expect("addr")
        );
        let google = FakeGoogle::start(
            FakeGoogleConfig::new(CLIENT_ID, CLIENT_SECRET, redirect_uri.clone()),
            "127.0.0.1:0".parse().expect("addr"),
        )
        .await
        .expect("fake Google starts");
        let settings = worker_settings(&google, &redirect_uri, overrides);
        let worker = start_worker_on(&ctx, listener, &settings).await;
        let nats = ctx.nats().await;
        let ns = Namespace::new(&ctx.id).expect("ns");
        Self {
            ctx,
            google,
            worker,
            nats,
            ns,
            redirect_uri,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    /// Another oauth-worker replica on the same context and fake Google (its own port; the
    /// redirect URI stays the first one's).
    pub async fn replica(&self, overrides: &[(&str, &str)]) -> RunningService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let settings = worker_settings(&self.google, &self.redirect_uri, overrides);
        start_worker_on(&self.ctx, listener, &settings).await
    }

    /// Restarts the worker on the same address with other settings (e.g. rotated keys).
    pub async fn restart_worker(mut self, overrides: &[(&str, &str)]) -> Self {
        let address = self
            .worker
            .base_url
            .trim_start_matches("http://")
            .to_owned();
        let placeholder = self.replica(overrides).await;
        std::mem::replace(&mut self.worker, placeholder)
            .stop()
            .await
            .expect("clean stop");
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .expect("rebind");
        let settings = worker_settings(&self.google, &self.redirect_uri, overrides);
        let replacement = start_worker_on(&self.ctx, listener, &settings).await;
        std::mem::replace(&mut self.worker, replacement)
            .stop()
            .await
            .expect("clean stop");
        self
    }

    /// Stops the worker gracefully, runs `meanwhile` (e.g. bring NATS back), then starts a
    /// new one on the same address with the same settings: a restart during which nothing of
    /// the old process goes on running.
    pub async fn restart_worker_after(
        mut self,
        overrides: &[(&str, &str)],
        meanwhile: impl std::future::Future<Output = ()>,
    ) -> Self {
        let address = self
            .worker
            .base_url
            .trim_start_matches("http://")
            .to_owned();
        let idle = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let placeholder = RunningService::start_on(idle, "stopped", |_, _| async { Ok(()) });
        std::mem::replace(&mut self.worker, placeholder)
            .stop()
            .await
            .expect("clean stop");
        meanwhile.await;
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .expect("rebind");
        let settings = worker_settings(&self.google, &self.redirect_uri, overrides);
        self.worker = start_worker_on(&self.ctx, listener, &settings).await;
        self
    }

    pub fn subaccount(&self) -> SubaccountId {
        SubaccountId::parse(SUBACCOUNT).expect("id")
    }

    /// Asks the worker for a link, as the api does.
    pub async fn issue_link(&self, user_email: &str) -> (Envelope<ConnectRequested>, String) {
        let request = Envelope::new(
            self.subaccount(),
            uuid::Uuid::now_v7(),
            ConnectRequested {
                user_email: UserEmail::parse(user_email).expect("email"),
                send_email: false,
                tenant_name: None,
            },
        );
        let reply = self
            .nats
            .request(self.ns.connect_requested(), request.to_bytes().into())
            .await
            .expect("the worker answers");
        match serde_json::from_slice(&reply.payload).expect("reply decodes") {
            ConnectRequestedReply::Issued { auth_url, .. } => (request, auth_url),
            other => panic!("no link: {other:?}"),
        }
    }

    /// Consent at the fake Google; returns the callback URL it redirects to.
    pub async fn consent(&self, auth_url: &str, decision: Decision) -> String {
        self.google
            .consent(auth_url, decision)
            .await
            .expect("consent")
            .to_string()
    }

    /// What the browser gets when it follows `url` (no redirects followed).
    pub async fn open(&self, url: &str) -> Page {
        let response = self.http.get(url).send().await.expect("callback answers");
        Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        }
    }

    /// Link → consent → callback, in one go.
    pub async fn connect(
        &self,
        user_email: &str,
        decision: Decision,
    ) -> (Envelope<ConnectRequested>, Page) {
        let (request, auth_url) = self.issue_link(user_email).await;
        let callback = self.consent(&auth_url, decision).await;
        (request, self.open(&callback).await)
    }

    /// Every event of type `E` in the stream now (waiting up to `wait` for at least one).
    pub async fn events<E: StreamEvent + serde::de::DeserializeOwned>(
        &self,
        wait: Duration,
    ) -> Vec<Envelope<E>> {
        let js = jetstream::new(self.nats.clone());
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let events: Vec<_> = e2e::stream::messages(
                &js,
                &self.ns.events_stream(),
                Some(self.ns.event_filter::<E>()),
            )
            .await
            .expect("stream")
            .iter()
            .map(|message| Envelope::<E>::decode(&message.payload).expect("event decodes"))
            .collect();
            if !events.is_empty() || tokio::time::Instant::now() >= deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks for an access token over NATS, as another service would.
    pub async fn access_token(&self, google_email: &str) -> AccessTokenReply {
        access_token_via(&self.nats, &self.ns, &self.subaccount(), google_email).await
    }

    /// The tenant database the worker writes.
    pub async fn tenant(&self) -> mongodb::Database {
        mongodb::Client::with_uri_str(&self.ctx.mongodb_uri)
            .await
            .expect("mongo")
            .database(&format!("{}_{}", self.ctx.id, SUBACCOUNT))
    }

    pub async fn google_auth(&self, google_email: &str) -> Option<bson::Document> {
        self.tenant()
            .await
            .collection::<bson::Document>("googleauths")
            .find_one(bson::doc! { "subaccountId": SUBACCOUNT, "googleEmail": google_email })
            .await
            .expect("query")
    }

    pub async fn calendars(&self) -> Vec<bson::Document> {
        use futures::TryStreamExt;
        self.tenant()
            .await
            .collection::<bson::Document>("calendars")
            .find(bson::doc! {})
            .await
            .expect("query")
            .try_collect()
            .await
            .expect("read")
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.ctx
            .redis_client()
            .get_multiplexed_async_connection()
            .await
            .expect("redis conn")
    }

    /// Makes the stored access token of `google_email` expired, as if its lifetime had run
    /// out, and drops its cached copy: the next access-token request must refresh.
    pub async fn expire_access_token(&self, google_email: &str) {
        let past = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 1000);
        let updated = self
            .tenant()
            .await
            .collection::<bson::Document>("googleauths")
            .update_one(
                bson::doc! { "subaccountId": SUBACCOUNT, "googleEmail": google_email },
                bson::doc! { "$set": { "expiresAt": past } },
            )
            .await
            .expect("update");
        assert_eq!(updated.matched_count, 1, "{google_email} is not stored");
        let mut redis = self.redis().await;
        let key = format!("{}:token:access:{SUBACCOUNT}:{google_email}", self.ctx.id);
        let _: () = redis::AsyncCommands::del(&mut redis, key)
            .await
            .expect("del");
        // What the worker holds in memory runs out too: as when the clock passes the expiry.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// The Redis key of a pending attempt.
    pub fn state_key(&self, state: &str) -> String {
        format!("{}:oauth:state:{}", self.ctx.id, state)
    }
}

pub async fn access_token_via(
    nats: &async_nats::Client,
    ns: &Namespace,
    subaccount: &SubaccountId,
    google_email: &str,
) -> AccessTokenReply {
    let request = Envelope::new(
        subaccount.clone(),
        uuid::Uuid::now_v7(),
        AccessTokenRequested {
            google_email: google_email.to_owned(),
        },
    );
    let reply = tokio::time::timeout(
        Duration::from_secs(40),
        nats.request(ns.access_token_requested(), request.to_bytes().into()),
    )
    .await
    .expect("answered in time")
    .expect("a worker answers");
    serde_json::from_slice(&reply.payload).expect("reply decodes")
}

/// The query of a URL as pairs.
pub fn query(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .into_owned()
        .collect()
}

/// The workers' `ACCESS_TOKEN_MEMORY_TTL` ([`OAuthStack::expire_access_token`] waits 300 ms).
const MEMORY_TTL: &str = "200ms";

fn worker_settings(
    google: &FakeGoogle,
    redirect_uri: &str,
    overrides: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = vec![
        ("GOOGLE_CLIENT_ID".into(), CLIENT_ID.into()),
        ("GOOGLE_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
        ("GOOGLE_AUTH_URL".into(), google.auth_url()),
        ("GOOGLE_TOKEN_URL".into(), google.token_url()),
        ("GOOGLE_USERINFO_URL".into(), google.userinfo_url()),
        ("GOOGLE_REVOKE_URL".into(), google.revoke_url()),
        ("GOOGLE_CALENDAR_API_URL".into(), google.calendar_api_base()),
        ("OAUTH_REDIRECT_URI".into(), redirect_uri.to_owned()),
        ("TOKEN_ENCRYPTION_KEYS".into(), KEY_A.into()),
        ("TOKEN_ENCRYPTION_KEY_ID".into(), "a".into()),
        ("PROVIDER_TIMEOUT".into(), "5s".into()),
        // Short, so that expire_access_token can wait it out.
        ("ACCESS_TOKEN_MEMORY_TTL".into(), MEMORY_TTL.into()),
    ];
    for (k, v) in overrides {
        settings.retain(|(name, _)| name != k);
        settings.push(((*k).into(), (*v).into()));
    }
    settings
}

async fn start_worker_on(
    ctx: &TestContext,
    listener: tokio::net::TcpListener,
    settings: &[(String, String)],
) -> RunningService {
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let config: OAuthWorkerConfig = ctx.config(&pairs);
    let mut worker = RunningService::start_on(listener, oauth_worker::SERVICE, |l, s| {
        oauth_worker::run(config, l, s)
    });
    worker.wait_ready(Duration::from_secs(30)).await;
    worker
}
