//! The hostile-input suite (issue 14 §6): hundreds of requests an attacker would send — forged
//! and misused tokens, abusive paths, bodies and headers, forged and replayed OAuth callbacks,
//! webhook targets that reach inside the network, service-token abuse, floods — against one
//! real stack (api, an RS256 api, oauth-worker with the fake Google, a redirecting replica,
//! mailer with an SMTP sink) on the shared NATS, Redis and MongoDB.
//!
//! For every case: no 5xx, no success, the exact status and the error code the OpenAPI
//! document lists for it (or the callback's documented reason). Around every group a snapshot
//! of everything a request could change — the tenant databases and documents, Redis keys, the
//! JetStream streams, the emails sent, the provider calls — must come out unchanged.
//!
//! Cases run concurrently within their group; every problem of every case is collected and
//! reported at once.

mod api_support;
mod hostile_cases;
mod hostile_support;
mod oauth_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api_support::Api;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e::fake_google::Decision;
use e2e::smtp::SmtpSink;
use e2e::{RunningService, TestContext};
use hostile_support::snapshot::{Probe, Snapshot};
use hostile_support::{ANY_ROUTE, Case, Expect, Op, RawRequest, Target};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth_support::OAuthStack;
use schemas::events::{ConnectRequested, ConnectRequestedReply, ConnectionFailed};
use schemas::{Envelope, SubaccountId, UserEmail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Has a `google-calendar` connector.
const SUB_A: &str = oauth_support::SUBACCOUNT;
/// Another tenant, also with `google-calendar`.
const SUB_B: &str = "5f1e0c9a2b3d4e5f60718293";
/// A tenant whose database exists but that has no `google-calendar` connector.
const SUB_C: &str = "0123456789abcdef01234567";
/// The HS256 secret of the api (not the public development default).
const SECRET: &str = api_support::SECRET;

const RS256_A: &[u8] = include_bytes!("../fixtures/jwt/rs256-a.pem");
const RS256_B: &[u8] = include_bytes!("../fixtures/jwt/rs256-b.pem");
const ES256: &[u8] = include_bytes!("../fixtures/jwt/es256.pem");
const KID: &str = "rsa-1";
const ISSUER: &str = "https://idp.hostile.test";
const AUDIENCE: &str = "gcal-api";

/// Service tokens of the static list: one that may write metadata, one that may not, one the
/// limit group floods with.
const WRITER: &str = "gcal_svc_hostile-writer-token-0123456789";
const READER: &str = "gcal_svc_hostile-reader-token-0123456789";
const FLOODER: &str = "gcal_svc_hostile-flooder-token-012345678";

const CONNECT: Op = Op(
    "post",
    "/api/connectors/{subaccountId}/handlegooglecalendar",
);
const ADD: Op = Op("post", "/api/connectors/{subaccountId}");
const LIST: Op = Op("get", "/api/connectors/{subaccountId}");
const GET_ONE: Op = Op("get", "/api/connectors/{subaccountId}/{connectorId}");
const DISCONNECT_ALL: Op = Op("delete", "/api/connectors/{subaccountId}/{connectorId}");
const DISCONNECT_ONE: Op = Op(
    "delete",
    "/api/connectors/{subaccountId}/{connectorId}/connections/{googleEmail}",
);
const OPERATION: Op = Op(
    "get",
    "/api/connectors/{subaccountId}/operations/{operationId}",
);
const WEBHOOKS_POST: Op = Op("post", "/api/connectors/{subaccountId}/webhooks");
const WEBHOOKS_GET: Op = Op("get", "/api/connectors/{subaccountId}/webhooks");
const WEBHOOK_DELETE: Op = Op(
    "delete",
    "/api/connectors/{subaccountId}/webhooks/{webhookId}",
);
const DELIVERIES: Op = Op(
    "get",
    "/api/connectors/{subaccountId}/webhooks/{webhookId}/deliveries",
);
const METADATA: Op = Op("post", "/api/connectors/{subaccountId}/metadata/update");

fn connect_path(subaccount: &str) -> String {
    format!("/api/connectors/{subaccount}/handlegooglecalendar")
}

fn metadata_path(subaccount: &str) -> String {
    format!("/api/connectors/{subaccount}/metadata/update")
}

fn webhooks_path(subaccount: &str) -> String {
    format!("/api/connectors/{subaccount}/webhooks")
}

// ---------------------------------------------------------------------------------------------
// The stack

/// A JWKS endpoint serving the RS256 api's one key.
struct Jwks {
    url: String,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Jwks {
    async fn serve(keys: Vec<Jwk>) -> Self {
        let set = JwkSet { keys };
        let fetches = Arc::new(AtomicUsize::new(0));
        let counted = fetches.clone();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (set, counted) = (set.clone(), counted.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    axum::Json(set)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, fetches, task }
    }
}

impl Drop for Jwks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Everything the cases are sent to, on one test context.
struct Stack {
    oauth: OAuthStack,
    api: Api,
    rs_api: Api,
    jwks: Jwks,
    redirect: RunningService,
    mailer: RunningService,
    sink: SmtpSink,
    mongo: mongodb::Client,
    rsa_a: EncodingKey,
    rsa_b: EncodingKey,
    ec: EncodingKey,
    /// The RS256 api's public key as its JWKS publishes it (what an attacker can read).
    public_jwk: String,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Stack {
    async fn start() -> Self {
        let ctx = TestContext::new();
        // The api charges only connects for a missing connector (the limit group floods
        // SUB_C with those); the worker's budget covers the links the set-up issues.
        let worker_limits = [
            ("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", "100/1h"),
            ("RATE_LIMIT_EMAILS_PER_RECIPIENT", "1/1h"),
        ];
        let oauth = OAuthStack::start(ctx.clone(), &worker_limits).await;
        let service_tokens = format!(
            "database-server:{}:connectors:metadata:write,reader:{}:connectors:read,flooder:{}:connectors:metadata:write",
            sha256_hex(WRITER),
            sha256_hex(READER),
            sha256_hex(FLOODER),
        );
        let api_settings = [
            // Every read goes to MongoDB: a cache entry expiring mid-group is no change.
            ("CONNECTOR_CACHE_TTL", "0s"),
            ("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", "10/1h"),
            ("RATE_LIMIT_WEBHOOK_MANAGEMENT_PER_CALLER", "5/1h"),
            ("RATE_LIMIT_METADATA_UPDATE_PER_CALLER", "5/1h"),
            ("SERVICE_TOKENS", service_tokens.as_str()),
        ];
        let api = Api::start_in(ctx.clone(), &api_settings).await;

        let rsa_a = EncodingKey::from_rsa_pem(RS256_A).expect("fixture key");
        let mut jwk = Jwk::from_encoding_key(&rsa_a, Algorithm::RS256).expect("public JWK");
        jwk.common.key_id = Some(KID.to_owned());
        let public_jwk = serde_json::to_string(&jwk).expect("jwk json");
        let jwks = Jwks::serve(vec![jwk]).await;
        let rs_settings = [
            ("CONNECTOR_CACHE_TTL", "0s"),
            ("JWT_ALGORITHM", "RS256"),
            ("JWT_JWKS_URL", jwks.url.as_str()),
            // A token with an unknown `kid` may make the api fetch the keys once, not once
            // per token.
            ("JWT_JWKS_MIN_REFRESH_INTERVAL", "1h"),
            ("JWT_ISSUER", ISSUER),
            ("JWT_AUDIENCE", AUDIENCE),
        ];
        let rs_api = Api::start_in(ctx.clone(), &rs_settings).await;

        let redirect = oauth
            .replica(&[
                ("FRONTEND_REDIRECT_URL", "https://app.example/connected"),
                worker_limits[0],
                worker_limits[1],
            ])
            .await;
        let sink = SmtpSink::start();
        let smtp_url = sink.url();
        let mailer_config: mailer_worker::MailerWorkerConfig =
            ctx.config(&[("SMTP_URL", smtp_url.as_str()), ("SMTP_TIMEOUT", "2s")]);
        let mut mailer = RunningService::start(mailer_worker::SERVICE, |l, s| {
            mailer_worker::run(mailer_config, l, s)
        })
        .await;
        mailer.wait_ready(Duration::from_secs(30)).await;

        api.seed_google_calendar(SUB_A).await;
        api.seed_google_calendar(SUB_B).await;
        seed_other_connector(&api, SUB_C).await;
        let mongo = mongodb::Client::with_uri_str(&ctx.mongodb_uri)
            .await
            .expect("mongo client");
        Self {
            oauth,
            api,
            rs_api,
            jwks,
            redirect,
            mailer,
            sink,
            mongo,
            rsa_a,
            rsa_b: EncodingKey::from_rsa_pem(RS256_B).expect("fixture key"),
            ec: EncodingKey::from_ec_pem(ES256).expect("fixture key"),
            public_jwk,
        }
    }

    fn base_url(&self, target: Target) -> &str {
        match target {
            Target::Api => &self.api.service.base_url,
            Target::RsApi => &self.rs_api.service.base_url,
            Target::Worker => &self.oauth.worker.base_url,
            Target::Redirect => &self.redirect.base_url,
        }
    }

    async fn snapshot(&self) -> Snapshot {
        Probe {
            ctx: &self.oauth.ctx,
            ns: &self.oauth.ns,
            nats: &self.oauth.nats,
            mongo: &self.mongo,
            redis: self.oauth.redis().await,
            sink: &self.sink,
            google: &self.oauth.google,
        }
        .snapshot()
        .await
    }

    /// Asks the oauth-worker for a link for `subaccount`, as the api does.
    async fn issue_link(&self, subaccount: &str, user_email: &str) -> String {
        let request = Envelope::new(
            SubaccountId::parse(subaccount).expect("id"),
            uuid::Uuid::now_v7(),
            ConnectRequested {
                user_email: UserEmail::parse(user_email).expect("email"),
                send_email: false,
                tenant_name: None,
            },
        );
        let reply = self
            .oauth
            .nats
            .request(self.oauth.ns.connect_requested(), request.to_bytes().into())
            .await
            .expect("the worker answers");
        match serde_json::from_slice(&reply.payload).expect("reply decodes") {
            ConnectRequestedReply::Issued { auth_url, .. } => auth_url,
            other => panic!("no link: {other:?}"),
        }
    }
}

/// A connector other than `google-calendar`: the tenant's database exists, a connect or a
/// metadata update for it is a 404 that creates nothing.
async fn seed_other_connector(api: &Api, subaccount: &str) {
    use schemas::documents::connector_subaccount::{COLLECTION, ConnectorSubaccount};
    let now = bson::DateTime::now();
    api.tenant_db(subaccount)
        .await
        .collection::<ConnectorSubaccount>(COLLECTION)
        .insert_one(ConnectorSubaccount {
            id: bson::oid::ObjectId::new(),
            subaccount_id: subaccount.into(),
            connector_id: "other-connector".into(),
            connector_type: "crm".into(),
            config: bson::Document::new(),
            metadata: bson::Document::new(),
            is_active: true,
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("seed connector");
}

// ---------------------------------------------------------------------------------------------
// Running cases

/// Every problem found, by case or group.
#[derive(Default)]
struct Findings {
    problems: Vec<String>,
    cases: usize,
    /// Every answer must carry `X-Content-Type-Options: nosniff` (issue 14 §3).
    require_nosniff: bool,
}

impl Findings {
    /// Sends `cases` concurrently, judges each answer, and checks that the group changed
    /// nothing.
    async fn group(&mut self, stack: &Stack, group: &str, cases: Vec<Case>) {
        let before = stack.snapshot().await;
        self.run(stack, group, cases).await;
        let after = stack.snapshot().await;
        for change in before.changes(&after) {
            self.problems
                .push(format!("[{group}] state changed: {change}"));
        }
    }

    /// Sends `cases` concurrently and judges each answer.
    async fn run(&mut self, stack: &Stack, group: &str, cases: Vec<Case>) {
        self.cases += cases.len();
        let answers = futures::future::join_all(cases.iter().map(|case| async move {
            (case, case.request.send(stack.base_url(case.target)).await)
        }))
        .await;
        for (case, answer) in answers {
            let problems = match answer {
                Ok(reply) => {
                    let mut problems = case.judge(&reply);
                    if self.require_nosniff
                        && reply.header("x-content-type-options") != Some("nosniff")
                    {
                        problems.push(format!(
                            "{} answered without X-Content-Type-Options: nosniff",
                            reply.status
                        ));
                    }
                    problems
                }
                Err(error) => vec![format!("no answer: {error}")],
            };
            for problem in problems {
                self.problems
                    .push(format!("[{group}] {}: {problem}", case.name));
            }
        }
    }

    fn assert_none(&self) {
        assert!(
            self.problems.is_empty(),
            "{} problem(s) in {} hostile cases:\n{}",
            self.problems.len(),
            self.cases,
            self.problems.join("\n")
        );
    }
}

/// The code of a bad email address: every problem with an email field (`userEmail`,
/// `googleEmail`) is `invalid_email`.
const BAD_EMAIL: &str = "invalid_email";

fn bad_email_code(op: Op) -> Expect {
    api_error(400, BAD_EMAIL, op)
}

fn api_error(status: u16, code: &'static str, op: Op) -> Expect {
    Expect::Api { status, code, op }
}

// ---------------------------------------------------------------------------------------------
// Tokens

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Valid claims for a user of `subaccount` with `connectors:manage`; each call is a new user
/// (`sub`), so per-user limits never add up across cases.
fn claims(subaccount: &str) -> Value {
    let now = now();
    json!({
        "sub": format!("hostile-{}", uuid::Uuid::new_v4().simple()),
        "subaccountIds": [subaccount],
        // `connectors:invite` (issue 14 §1) lets the canary's link be emailed once that
        // permission exists; today it is an unknown permission, which changes nothing.
        "permissions": ["connectors:manage", "connectors:invite"],
        "iat": now, "nbf": now, "exp": now + 3600,
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("sign")
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    sign(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).expect("hmac key"),
    )
}

/// A valid token of the api for a new user of `subaccount`.
fn user_token(subaccount: &str) -> String {
    hs256(&claims(subaccount), SECRET.as_bytes())
}

/// `claims` changed by `change`, signed with the api's secret.
fn token_with(
    subaccount: &str,
    change: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> String {
    let mut value = claims(subaccount);
    change(value.as_object_mut().expect("object"));
    hs256(&value, SECRET.as_bytes())
}

/// A JWS with a hand-written header and signature.
fn handmade(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn connect_body() -> Value {
    json!({ "userEmail": "victim@example.com", "sendEmail": true })
}

/// A connect request for `subaccount` carrying `authorization` verbatim.
fn connect_with_authorization(subaccount: &str, authorization: impl Into<Vec<u8>>) -> RawRequest {
    RawRequest::post(connect_path(subaccount))
        .header("Authorization", authorization)
        .json(&connect_body())
}

fn connect_as(subaccount: &str, token: &str) -> RawRequest {
    connect_with_authorization(subaccount, format!("Bearer {token}"))
}

/// Sends `request` and insists on `status`: the legitimate requests that set a group up.
async fn expect_status(stack: &Stack, request: RawRequest, status: u16) {
    let reply = request
        .send(stack.base_url(Target::Api))
        .await
        .expect("answered");
    assert_eq!(reply.status, status, "set-up request: {}", reply.text());
}

// ---------------------------------------------------------------------------------------------
// The suite

/// How many distinct hostile requests the suite must send at least (issue 14 §6).
const AT_LEAST: usize = 150;

#[tokio::test]
async fn hostile_requests_are_refused_with_their_documented_code_and_change_nothing() {
    let stack = Stack::start().await;
    // Each service meets each tenant before the groups, so the snapshots compare tenants that
    // exist (that a refused read of a tenant never seen creates nothing is the
    // `refused_reads_create_no_database_or_collection` test below).
    for subaccount in [SUB_A, SUB_B, SUB_C] {
        expect_status(
            &stack,
            RawRequest::get(format!("/api/connectors/{subaccount}"))
                .bearer(&user_token(subaccount)),
            200,
        )
        .await;
    }
    let used = hostile_cases::callbacks::use_two_callbacks(&stack).await;
    let mut findings = Findings::default();

    findings
        .group(
            &stack,
            "user tokens",
            hostile_cases::tokens::forged_user_tokens(),
        )
        .await;
    // A valid RS256 token first: the api fetches its keys once, before the forgeries.
    let mut valid = claims(SUB_A);
    valid["iss"] = json!(ISSUER);
    valid["aud"] = json!(AUDIENCE);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.to_owned());
    let reply = RawRequest::get(format!("/api/connectors/{SUB_A}"))
        .bearer(&sign(&header, &valid, &stack.rsa_a))
        .send(stack.base_url(Target::RsApi))
        .await
        .expect("answered");
    assert_eq!(reply.status, 200, "a valid RS256 token: {}", reply.text());
    let fetched = stack.jwks.fetches.load(Ordering::SeqCst);
    findings
        .group(
            &stack,
            "RS256 tokens",
            hostile_cases::tokens::forged_rs256_tokens(&stack),
        )
        .await;
    let fetches = stack.jwks.fetches.load(Ordering::SeqCst) - fetched;
    if fetches > 0 {
        findings.problems.push(format!(
            "[RS256 tokens] made-up key ids made the api fetch its keys {fetches} more times"
        ));
    }
    findings
        .group(&stack, "paths", hostile_cases::paths::abusive_paths())
        .await;
    findings
        .group(&stack, "bodies", hostile_cases::bodies::abusive_bodies())
        .await;
    findings
        .group(&stack, "headers", hostile_cases::headers::abusive_headers())
        .await;
    findings
        .group(
            &stack,
            "forged callbacks",
            hostile_cases::callbacks::forged_callbacks(&used),
        )
        .await;
    hostile_cases::callbacks::live_state_group(&stack, &mut findings).await;
    findings
        .group(
            &stack,
            "webhook SSRF",
            hostile_cases::webhook_targets::ssrf_targets(),
        )
        .await;
    findings
        .group(
            &stack,
            "service tokens",
            hostile_cases::service_tokens::service_token_abuse(),
        )
        .await;
    hostile_cases::limits::limits(&stack, &mut findings).await;

    findings.assert_none();
    assert!(
        findings.cases >= AT_LEAST,
        "only {} hostile cases; issue 14 asks for at least {AT_LEAST}",
        findings.cases
    );
    stack.mailer.stop().await.expect("mailer stops");
}

// ---------------------------------------------------------------------------------------------
// Issue 14's honest answers and reads that create nothing.

/// Issue 14 §3: an address the mailer cannot deliver is refused with `invalid_email`; a body
/// that is not a JSON object is refused instead of being read positionally into the fields;
/// a charset other than UTF-8 is a 415; every answer carries `X-Content-Type-Options: nosniff`.
#[tokio::test]
async fn answers_tell_the_truth_about_hostile_input() {
    let stack = Stack::start().await;
    for subaccount in [SUB_A, SUB_B, SUB_C] {
        expect_status(
            &stack,
            RawRequest::get(format!("/api/connectors/{subaccount}"))
                .bearer(&user_token(subaccount)),
            200,
        )
        .await;
    }
    let mut findings = Findings {
        require_nosniff: true,
        ..Findings::default()
    };
    let undeliverable = |email: &str| {
        RawRequest::post(connect_path(SUB_A))
            .bearer(&user_token(SUB_A))
            .json(&json!({ "userEmail": email, "sendEmail": true }))
    };
    let invalid_email = |op| api_error(400, "invalid_email", op);
    let metadata = |google_email: &str| {
        RawRequest::post(metadata_path(SUB_A))
            .header("X-Service-Token", WRITER)
            .json(&json!({ "metadata": {
                "calendarId": "507f1f77bcf86cd799439011", "userEmail": "user@example.com",
                "googleEmail": google_email, "connectedAt": "2025-10-05T12:00:00.000Z",
                "isConnected": true,
            }}))
    };
    let emails: Vec<(&str, RawRequest, Expect)> = vec![
        (
            "quoted script",
            undeliverable("\"<script>\"@example.com"),
            invalid_email(CONNECT),
        ),
        (
            "quoted with a space",
            undeliverable("\"john doe\"@example.com"),
            invalid_email(CONNECT),
        ),
        (
            "quoted with an @",
            undeliverable("\"a@b\"@example.com"),
            invalid_email(CONNECT),
        ),
        (
            "non-ASCII local part",
            undeliverable("jöhn@example.com"),
            invalid_email(CONNECT),
        ),
        (
            "CJK local part",
            undeliverable("用户@example.com"),
            invalid_email(CONNECT),
        ),
        (
            "right-to-left override",
            undeliverable("\u{202e}moc.elpmaxe@victim@example.com"),
            invalid_email(CONNECT),
        ),
        (
            "IPv4 domain literal",
            undeliverable("a@[10.0.0.5]"),
            invalid_email(CONNECT),
        ),
        (
            "loopback domain literal",
            undeliverable("a@[127.0.0.1]"),
            invalid_email(CONNECT),
        ),
        (
            "IPv6 domain literal",
            undeliverable("a@[IPv6:::1]"),
            invalid_email(CONNECT),
        ),
        (
            "bare IP as domain",
            undeliverable("a@10.0.0.5"),
            invalid_email(CONNECT),
        ),
        (
            "underscore in the domain",
            undeliverable("a@ex_ample.com"),
            invalid_email(CONNECT),
        ),
        (
            "quoted googleEmail in a metadata update",
            metadata("\"x\"@gmail.com"),
            invalid_email(METADATA),
        ),
        (
            "domain-literal googleEmail in a metadata update",
            metadata("x@[10.0.0.5]"),
            invalid_email(METADATA),
        ),
        (
            "quoted account in a disconnect",
            RawRequest::delete(format!(
                "/api/connectors/{SUB_A}/google-calendar/connections/%22x%22%40gmail.example"
            ))
            .bearer(&user_token(SUB_A)),
            invalid_email(DISCONNECT_ONE),
        ),
    ];
    let json_body = |path: String, body: Value, auth: (&str, String)| {
        RawRequest::post(path).header(auth.0, auth.1).json(&body)
    };
    let bearer = || ("Authorization", format!("Bearer {}", user_token(SUB_A)));
    let invalid_field = |op| api_error(400, "invalid_field", op);
    let not_objects: Vec<(&str, RawRequest, Expect)> = vec![
        (
            "connect body read positionally from an array",
            json_body(
                connect_path(SUB_A),
                json!(["victim@example.com", true]),
                bearer(),
            ),
            invalid_field(CONNECT),
        ),
        (
            "connector read positionally from an array",
            json_body(
                format!("/api/connectors/{SUB_A}"),
                json!(["evil", "crm", {}]),
                bearer(),
            ),
            invalid_field(ADD),
        ),
        (
            "webhook read positionally from an array",
            json_body(
                webhooks_path(SUB_A),
                json!(["https://example.com/hook"]),
                bearer(),
            ),
            invalid_field(WEBHOOKS_POST),
        ),
        (
            "metadata read positionally from arrays",
            json_body(
                metadata_path(SUB_A),
                json!([[
                    "507f1f77bcf86cd799439011",
                    "user@example.com",
                    "googleuser@gmail.com",
                    "2025-10-05T12:00:00.000Z",
                    true
                ]]),
                ("X-Service-Token", WRITER.to_owned()),
            ),
            invalid_field(METADATA),
        ),
    ];
    // Each to its own address: the per-recipient email limit must not be what answers.
    let charset = |value: &str| {
        RawRequest::post(connect_path(SUB_A))
            .bearer(&user_token(SUB_A))
            .body(
                value,
                json!({ "userEmail": format!("{}@example.com", uuid::Uuid::new_v4().simple()) })
                    .to_string(),
            )
    };
    let unsupported = || api_error(415, "unsupported_media_type", CONNECT);
    let charsets: Vec<(&str, RawRequest, Expect)> = vec![
        (
            "charset latin1",
            charset("application/json; charset=latin1"),
            unsupported(),
        ),
        (
            "charset ISO-8859-1",
            charset("application/json; charset=ISO-8859-1"),
            unsupported(),
        ),
        (
            "charset utf-16",
            charset("application/json; charset=utf-16"),
            unsupported(),
        ),
        (
            "charset quoted UTF-16LE",
            charset("application/json; charset=\"UTF-16LE\""),
            unsupported(),
        ),
        (
            "charset utf-7",
            charset("application/json;charset=utf-7"),
            unsupported(),
        ),
        (
            "charset of +json",
            charset("application/merge-patch+json; charset=windows-1252"),
            unsupported(),
        ),
    ];
    // Answers of every kind: nosniff on each.
    let elsewhere: Vec<Case> = vec![
        Case::new(
            "unknown route",
            Target::Api,
            RawRequest::get("/nope"),
            api_error(404, "route_not_found", ANY_ROUTE),
        ),
        Case::new(
            "unknown method",
            Target::Api,
            RawRequest::new("PATCH", connect_path(SUB_A)),
            api_error(405, "method_not_allowed", ANY_ROUTE),
        ),
        Case::new(
            "no token",
            Target::Api,
            RawRequest::post(connect_path(SUB_A)).json(&connect_body()),
            api_error(401, "missing_token", CONNECT),
        ),
        Case::new(
            "body too large",
            Target::Api,
            charset("application/json").untyped_body("x".repeat(64 * 1024)),
            api_error(413, "payload_too_large", CONNECT),
        ),
        Case::new(
            "forged callback",
            Target::Worker,
            RawRequest::get(format!(
                "{}?state=forged&code=x",
                oauth_worker::callback::PATH
            )),
            Expect::Page { status: 400 },
        ),
        Case::new(
            "callback POSTed",
            Target::Worker,
            RawRequest::post(oauth_worker::callback::PATH),
            Expect::Protocol { status: 405 },
        ),
        Case::new(
            "unknown route of the oauth-worker",
            Target::Worker,
            RawRequest::get("/nope"),
            Expect::Protocol { status: 404 },
        ),
    ];
    let to_cases = |cases: Vec<(&str, RawRequest, Expect)>| -> Vec<Case> {
        cases
            .into_iter()
            .map(|(name, request, expect)| Case::new(name, Target::Api, request, expect))
            .collect()
    };
    findings
        .group(&stack, "undeliverable emails", to_cases(emails))
        .await;
    findings
        .group(&stack, "bodies that are not objects", to_cases(not_objects))
        .await;
    findings.group(&stack, "charsets", to_cases(charsets)).await;
    findings
        .group(&stack, "nosniff everywhere", elsewhere)
        .await;
    findings.assert_none();
}

/// Issue 14 §4: a refused read creates nothing — no tenant database for a subaccount never
/// seen, no collection for a read of one that exists.
#[tokio::test]
async fn refused_reads_create_no_database_or_collection() {
    // No warm-up: the services meet these tenants through the hostile requests themselves.
    let stack = Stack::start().await;
    let unseen = "abcdefabcdefabcdefabcdef";
    let unknown = "0199a3c2-7b1e-7c3a-9d2f-5e8b1a4c6d70";
    let token = || user_token(unseen);
    let cases: Vec<(&str, RawRequest, Expect)> = vec![
        (
            "read a connector of a subaccount never seen",
            RawRequest::get(format!("/api/connectors/{unseen}/google-calendar")).bearer(&token()),
            api_error(404, "connector_not_found", GET_ONE),
        ),
        (
            "connect a subaccount never seen",
            RawRequest::post(connect_path(unseen)).bearer(&token()).json(&connect_body()),
            api_error(404, "connector_not_found", CONNECT),
        ),
        (
            "disconnect a subaccount never seen",
            RawRequest::delete(format!("/api/connectors/{unseen}/google-calendar")).bearer(&token()),
            api_error(404, "connector_not_found", DISCONNECT_ALL),
        ),
        (
            "delete a webhook of a subaccount never seen",
            RawRequest::delete(format!("{}/{unknown}", webhooks_path(unseen))).bearer(&token()),
            api_error(404, "webhook_not_found", WEBHOOK_DELETE),
        ),
        (
            "webhook deliveries of a subaccount never seen",
            RawRequest::get(format!("{}/{unknown}/deliveries", webhooks_path(unseen))).bearer(&token()),
            api_error(404, "webhook_not_found", DELIVERIES),
        ),
        (
            "an unknown operation",
            RawRequest::get(format!("/api/connectors/{SUB_A}/operations/{unknown}"))
                .bearer(&user_token(SUB_A)),
            api_error(404, "operation_not_found", OPERATION),
        ),
        (
            "an operation id as a NoSQL operator",
            RawRequest::get(format!(
                "/api/connectors/{SUB_A}/operations/%7B%22%24ne%22%3Anull%7D"
            ))
            .bearer(&user_token(SUB_A)),
            api_error(404, "operation_not_found", OPERATION),
        ),
        (
            "an operation id of 8 KiB",
            RawRequest::get(format!("/api/connectors/{SUB_A}/operations/{}", "o".repeat(8192)))
                .bearer(&user_token(SUB_A)),
            api_error(404, "operation_not_found", OPERATION),
        ),
        (
            "a metadata update for a subaccount never seen",
            RawRequest::post(metadata_path(unseen))
                .header("X-Service-Token", WRITER)
                .json(&json!({ "metadata": {
                    "calendarId": "507f1f77bcf86cd799439011", "userEmail": "user@example.com",
                    "googleEmail": "googleuser@gmail.com", "connectedAt": "2025-10-05T12:00:00.000Z",
                    "isConnected": true,
                }})),
            api_error(404, "connector_not_found", METADATA),
        ),
    ];
    let mut findings = Findings::default();
    findings
        .group(
            &stack,
            "refused reads",
            cases
                .into_iter()
                .map(|(name, request, expect)| Case::new(name, Target::Api, request, expect))
                .collect(),
        )
        .await;
    findings.assert_none();
}
