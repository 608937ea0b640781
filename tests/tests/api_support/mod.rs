//! What the api tests share: the api started on port 0 against a test context, an HTTP
//! client that returns status, headers and JSON, tokens, connector seeding, and a stand-in
//! oauth-worker that answers connect requests over real NATS in the real queue group.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::ApiConfig;
use e2e::jwt::{MintToken, UserClaims};
use e2e::{RunningService, TestContext};
use futures::StreamExt;
use schemas::documents::connector_subaccount::{
    CALENDAR_CONNECTOR_TYPE, COLLECTION, ConnectorSubaccount, GOOGLE_CALENDAR_CONNECTOR_ID,
};
use schemas::events::{ConnectRequested, ConnectRequestedReply};
use schemas::subjects::{Namespace, OAUTH_WORKER_QUEUE};
use schemas::{DecodeError, Envelope};
use serde_json::Value;

/// The HS256 secret the tests configure (not the development default, to prove the setting
/// is read).
pub const SECRET: &str = "e2e-api-tests-secret-at-least-32-bytes!";
/// A subaccount id as the spec writes them.
pub const SUBACCOUNT: &str = "68cf05f060d294db17c0685e";
pub const OTHER_SUBACCOUNT: &str = "5f1e0c9a2b3d4e5f60718293";

pub const READY: Duration = Duration::from_secs(30);

/// The api under test, with the context it runs in.
#[derive(Debug)]
pub struct Api {
    pub ctx: TestContext,
    pub service: RunningService,
    pub namespace: Namespace,
    http: reqwest::Client,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    /// Asserts the seed's error shape, the status and the code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "body: {}",
            self.body
        );
        assert_eq!(self.body["success"], false, "{}", self.body);
        assert!(!self.message().is_empty(), "{}", self.body);
        assert!(
            self.body["error"]
                .as_object()
                .is_some_and(|e| e.contains_key("details")),
            "{}",
            self.body
        );
    }
}

/// Sends `request`: the status, the headers and the body as JSON (a JSON string when it is
/// not JSON).
pub async fn reply(request: reqwest::RequestBuilder) -> Reply {
    let (client, request) = request.build_split();
    let request = request.expect("a well-formed request");
    let what = format!("{} {}", request.method(), request.url());
    let response = client
        .execute(request)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

impl Api {
    /// A fresh context and the api in it, ready.
    pub async fn start(overrides: &[(&str, &str)]) -> Self {
        Self::start_in(TestContext::new(), overrides).await
    }

    pub async fn start_in(ctx: TestContext, overrides: &[(&str, &str)]) -> Self {
        let mut settings = vec![("JWT_SECRET", SECRET)];
        settings.extend_from_slice(overrides);
        let config: ApiConfig = ctx.config(&settings);
        let mut service = RunningService::start(api::SERVICE, |l, s| api::run(config, l, s)).await;
        service.wait_ready(READY).await;
        Self {
            namespace: Namespace::new(&ctx.id).expect("namespace"),
            ctx,
            service,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http client"),
        }
    }

    /// A request for `path` of the api; [`reply`] sends it.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.service.base_url))
    }

    /// Sends a request; `body` is (content type, bytes).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        let mut request = self.request(method, path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        reply(request).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(
            reqwest::Method::POST,
            path,
            token,
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    /// The tenant database of `subaccount` in this context.
    pub async fn tenant_db(&self, subaccount: &str) -> mongodb::Database {
        let client = mongodb::Client::with_uri_str(&self.ctx.mongodb_uri)
            .await
            .expect("mongo client");
        client.database(&format!("{}_{subaccount}", self.ctx.id))
    }

    /// Writes a `google-calendar` connector straight into MongoDB, as the platform would.
    pub async fn seed_google_calendar(&self, subaccount: &str) {
        let now = mongodb::bson::DateTime::now();
        self.tenant_db(subaccount)
            .await
            .collection::<ConnectorSubaccount>(COLLECTION)
            .insert_one(ConnectorSubaccount {
                id: mongodb::bson::oid::ObjectId::new(),
                subaccount_id: subaccount.into(),
                connector_id: GOOGLE_CALENDAR_CONNECTOR_ID.into(),
                connector_type: CALENDAR_CONNECTOR_TYPE.into(),
                config: mongodb::bson::Document::new(),
                metadata: mongodb::bson::Document::new(),
                is_active: true,
                created_at: now,
                updated_at: now,
            })
            .await
            .expect("seed connector");
    }

    /// Every connector document of `subaccount`, straight from MongoDB.
    pub async fn stored_connectors(&self, subaccount: &str) -> Vec<mongodb::bson::Document> {
        let cursor = self
            .tenant_db(subaccount)
            .await
            .collection::<mongodb::bson::Document>(COLLECTION)
            .find(mongodb::bson::doc! {})
            .await
            .expect("find");
        futures::TryStreamExt::try_collect(cursor)
            .await
            .expect("collect")
    }
}

/// A user allowed to manage connectors of `subaccount`, valid for an hour.
pub fn claims(subaccount: &str) -> UserClaims {
    UserClaims::for_subaccount(subaccount, Duration::from_secs(3600))
}

/// A token for [`claims`], signed with the tests' secret.
pub fn token(subaccount: &str) -> String {
    claims(subaccount).sign_hs256(SECRET.as_bytes())
}

pub fn connect_path(subaccount: &str) -> String {
    format!("/api/connectors/{subaccount}/handlegooglecalendar")
}

/// How the stand-in oauth-worker answers.
#[derive(Debug, Clone)]
pub enum Behaviour {
    Reply(ConnectRequestedReply),
    Raw(Vec<u8>),
    /// Takes the request and never answers.
    Silent,
}

/// A connect request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub envelope: Result<Envelope<ConnectRequested>, DecodeError>,
    pub headers: Option<async_nats::HeaderMap>,
    pub reply_subject: Option<String>,
}

/// Listens in the oauth-worker's queue group on `connect_requested()`, like the real worker.
#[derive(Debug)]
pub struct Responder {
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    task: tokio::task::JoinHandle<()>,
}

impl Responder {
    pub async fn start(api: &Api, behaviour: Behaviour) -> Self {
        let client = api.ctx.nats().await;
        let mut subscription = client
            .queue_subscribe(
                api.namespace.connect_requested(),
                OAUTH_WORKER_QUEUE.to_owned(),
            )
            .await
            .expect("queue subscribe");
        // The subscription is registered on the server before the test sends anything.
        client.flush().await.expect("flush");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let behaviour = Arc::new(Mutex::new(behaviour));
        let current = behaviour.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                log.lock().expect("log").push(Received {
                    envelope: Envelope::<ConnectRequested>::decode(&message.payload),
                    headers: message.headers.clone(),
                    reply_subject: message.reply.as_ref().map(ToString::to_string),
                });
                let behaviour = current.lock().expect("behaviour").clone();
                let answer = match behaviour {
                    Behaviour::Reply(reply) => serde_json::to_vec(&reply).expect("reply json"),
                    Behaviour::Raw(bytes) => bytes,
                    Behaviour::Silent => continue,
                };
                if let Some(reply) = message.reply {
                    client
                        .publish(reply, answer.into())
                        .await
                        .expect("publish reply");
                    client.flush().await.expect("flush reply");
                }
            }
        });
        Self {
            received,
            behaviour,
            task,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }

    /// Changes how the next requests are answered.
    pub fn answer_with(&self, behaviour: Behaviour) {
        *self.behaviour.lock().expect("behaviour") = behaviour;
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reply of a worker that issued a link.
pub fn issued(auth_url: &str, email_sent: bool) -> ConnectRequestedReply {
    ConnectRequestedReply::Issued {
        auth_url: auth_url.into(),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(10),
        email_sent,
        // Never the settings: every link the api returns in these tests is the fake worker's.
        link_settings: None,
    }
}

pub const AUTH_URL: &str =
    "https://accounts.google.com/o/oauth2/v2/auth?response_type=code&client_id=e2e&state=abc";
