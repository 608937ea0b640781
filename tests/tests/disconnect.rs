//! Disconnect end to end over real servers and the fake Google: the api records the operation
//! and publishes the request, the oauth-worker revokes at the provider and deletes the tokens,
//! the metadata-worker marks the account disconnected; twice is harmless; a provider outage
//! only delays it; revocation authenticates the client as configured, and a revocation the
//! provider refuses for good still disconnects, saying so.

mod api_support;
mod oauth_support;

use std::time::Duration;

use api_support::{Api, token};
use e2e::fake_google::{ClientAuth, Decision};
use e2e::{RunningService, TestContext};
use metadata_worker::MetadataWorkerConfig;
use oauth_support::{OAuthStack, SUBACCOUNT};
use schemas::events::{
    AccessTokenRejectionCode, AccessTokenReply, ConnectionDisconnected, ConnectionFailed,
    FailureReason, RevocationOutcome,
};
use serde_json::Value;

const EMAIL: &str = "person@gmail.example";
const WAIT: Duration = Duration::from_secs(30);

async fn setup(worker: &[(&str, &str)]) -> (OAuthStack, Api, RunningService) {
    setup_with(worker, &[]).await
}

/// As [`setup`], with settings for the api too.
async fn setup_with(
    worker: &[(&str, &str)],
    api: &[(&str, &str)],
) -> (OAuthStack, Api, RunningService) {
    let ctx = TestContext::new();
    let stack = OAuthStack::start(ctx.clone(), worker).await;
    let api = Api::start_in(ctx.clone(), api).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let config: MetadataWorkerConfig = ctx.config(&[]);
    let mut metadata = RunningService::start(metadata_worker::SERVICE, |l, s| {
        metadata_worker::run(config, l, s)
    })
    .await;
    metadata.wait_ready(WAIT).await;
    let (_, page) = stack
        .connect(
            "user@example.com",
            Decision::Allow {
                account: Some(EMAIL.into()),
                scopes: None,
            },
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    (stack, api, metadata)
}

async fn delete(api: &Api, path: &str) -> api_support::Reply {
    api.send(
        reqwest::Method::DELETE,
        path,
        Some(&token(SUBACCOUNT)),
        None,
    )
    .await
}

/// Polls the operation until it is no longer pending.
async fn settled(api: &Api, operation: &str) -> Value {
    let path = format!("/api/connectors/{SUBACCOUNT}/operations/{operation}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = api.get(&path, Some(&token(SUBACCOUNT))).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        if reply.body["data"]["status"] != "pending" {
            return reply.body["data"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still pending: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metadata(api: &Api) -> Value {
    let reply = api
        .get(
            &format!("/api/connectors/{SUBACCOUNT}/google-calendar"),
            Some(&token(SUBACCOUNT)),
        )
        .await;
    reply.body["data"]["metadata"].clone()
}

#[tokio::test]
async fn disconnect_revokes_deletes_and_marks_the_account_and_twice_is_harmless() {
    let (stack, api, _metadata) = setup(&[]).await;
    let refresh = stack.google.refresh_token_of(EMAIL).expect("refresh token");
    metadata_until(&api, |m| m["isConnected"] == true).await;

    let reply = delete(
        &api,
        &format!("/api/connectors/{SUBACCOUNT}/google-calendar"),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let operation = reply.body["data"]["operationId"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(reply.body["data"]["status"], "pending");
    assert!(
        reply.headers["location"]
            .to_str()
            .expect("ascii")
            .ends_with(&format!("/operations/{operation}"))
    );
    let done = settled(&api, &operation).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["disconnected"], serde_json::json!([EMAIL]));

    // Revoked at the provider, gone from the vault and the cache, calendar kept but inactive.
    assert!(stack.google.is_revoked(&refresh));
    assert!(stack.google_auth(EMAIL).await.is_none());
    match stack.access_token(EMAIL).await {
        AccessTokenReply::Rejected { code, .. } => {
            assert_eq!(code, AccessTokenRejectionCode::NotConnected)
        }
        other => panic!("{other:?}"),
    }
    let calendars = stack.calendars().await;
    assert_eq!(calendars.len(), 1);
    assert_eq!(calendars[0].get_bool("isActive"), Ok(false));
    let events = stack.events::<ConnectionDisconnected>(WAIT).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload.google_email, EMAIL);
    assert_eq!(
        events[0].payload.revocation,
        Some(RevocationOutcome::Revoked)
    );
    assert_eq!(done["revocations"][0]["outcome"], "revoked", "{done}");

    // The metadata says so, the document stays.
    let stored = metadata_until(&api, |m| m["isConnected"] == false).await;
    assert_eq!(stored["googleEmail"], EMAIL);
    assert!(stored["disconnectedAt"].is_string(), "{stored}");

    // Again, and for one named account: harmless, done, nothing more revoked.
    let revokes = stack.google.revoke_requests();
    let again = delete(
        &api,
        &format!("/api/connectors/{SUBACCOUNT}/google-calendar/connections/{EMAIL}"),
    )
    .await;
    assert_eq!(again.status, 202, "{}", again.body);
    let done = settled(
        &api,
        again.body["data"]["operationId"].as_str().expect("id"),
    )
    .await;
    assert_eq!(done["status"], "done");
    assert_eq!(done["disconnected"], serde_json::json!([]));
    assert_eq!(stack.google.revoke_requests(), revokes);

    // Unknown operations and other connectors are named as such.
    let unknown = api
        .get(
            &format!("/api/connectors/{SUBACCOUNT}/operations/nope"),
            Some(&token(SUBACCOUNT)),
        )
        .await;
    unknown.assert_error(404, "operation_not_found");
    delete(&api, &format!("/api/connectors/{SUBACCOUNT}/outlook"))
        .await
        .assert_error(400, "invalid_field");
}

#[tokio::test]
async fn a_disconnect_waits_out_a_revocation_outage() {
    let (stack, api, _metadata) = setup(&[("DISCONNECT_RETRY_DELAYS", "300ms")]).await;
    let refresh = stack.google.refresh_token_of(EMAIL).expect("refresh token");
    // Down for longer than one delivery's in-process attempts (3 by default).
    stack.google.fail_next_revoke_requests(7, 503);
    let operation = request_disconnect(
        &api,
        &format!("/api/connectors/{SUBACCOUNT}/google-calendar"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        stack.google_auth(EMAIL).await.is_some(),
        "tokens kept until revoked"
    );
    let done = settled(&api, &operation).await;
    assert_eq!(done["status"], "done", "{done}");
    assert!(stack.google.is_revoked(&refresh));
    assert!(stack.google_auth(EMAIL).await.is_none());
}

/// Polls the metadata until `check` holds.
async fn metadata_until(api: &Api, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = metadata(api).await;
        if check(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metadata never got there: {m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn several_accounts_disconnected_one_at_a_time_and_capped() {
    const SECOND: &str = "second@gmail.example";
    const THIRD: &str = "third@gmail.example";
    let (stack, api, _metadata) = setup(&[("MAX_GOOGLE_ACCOUNTS", "2")]).await;
    metadata_until(&api, |m| m["isConnected"] == true).await;
    let allow = |account: &str| Decision::Allow {
        account: Some(account.into()),
        scopes: None,
    };
    let (_, page) = stack.connect("user@example.com", allow(SECOND)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let both = metadata_until(&api, |m| m["googleEmail"] == SECOND).await;
    assert_eq!(both["isConnected"], true);
    let listed: Vec<(&str, bool)> = both["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .map(|c| {
            (
                c["googleEmail"].as_str().expect("email"),
                c["isConnected"] == true,
            )
        })
        .collect();
    assert_eq!(listed, [(EMAIL, true), (SECOND, true)]);

    // A third account is over the cap: refused, its grant given back, nothing stored.
    let (_, page) = stack.connect("user@example.com", allow(THIRD)).await;
    assert_eq!(page.status, 409, "{}", page.body);
    assert!(stack.google_auth(THIRD).await.is_none());
    let refused = stack.events::<ConnectionFailed>(WAIT).await;
    assert_eq!(refused.len(), 1);
    assert_eq!(
        refused[0].payload.reason,
        FailureReason::AccountLimitReached
    );
    // Reconnecting an account already connected is not a new one.
    let (_, page) = stack.connect("user@example.com", allow(EMAIL)).await;
    assert_eq!(page.status, 200, "{}", page.body);

    // The most recently connected account goes; the other one is described again.
    let done = disconnected(
        &api,
        &format!("/api/connectors/{SUBACCOUNT}/google-calendar/connections/{EMAIL}"),
    )
    .await;
    assert_eq!(done["disconnected"], serde_json::json!([EMAIL]));
    let after = metadata_until(&api, |m| m["googleEmail"] == SECOND).await;
    assert_eq!(after["isConnected"], true);
    let first = after["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .find(|c| c["googleEmail"] == EMAIL)
        .expect("still listed")
        .clone();
    assert_eq!(first["isConnected"], false);
    assert!(first["disconnectedAt"].is_string(), "{first}");
    assert!(
        stack.google_auth(SECOND).await.is_some(),
        "the other account is kept"
    );
    // Room again for another account.
    let (_, page) = stack.connect("user@example.com", allow(THIRD)).await;
    assert_eq!(page.status, 200, "{}", page.body);
}

/// DELETE of every account, then the settled operation.
async fn disconnect_all(api: &Api) -> Value {
    disconnected(
        api,
        &format!("/api/connectors/{SUBACCOUNT}/google-calendar"),
    )
    .await
}

/// A service token the api accepts for the deprecated metadata endpoint.
const REPORTER_TOKEN: &str = "gcal_svc_disconnect-test-reporter-token";

fn reporter_tokens() -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(REPORTER_TOKEN.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("database-server:{hex}:connectors:metadata:write")
}

/// `connectedAt` of the stored metadata, one millisecond later (still in the past, so a
/// disconnect requested now is newer).
fn just_after(metadata: &Value) -> String {
    let at = chrono::DateTime::parse_from_rfc3339(metadata["connectedAt"].as_str().expect("at"))
        .expect("ISO 8601");
    (at + chrono::Duration::milliseconds(1))
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Waits for the disconnect requested at `path` to finish, and returns its operation.
async fn disconnected(api: &Api, path: &str) -> Value {
    let operation = request_disconnect(api, path).await;
    settled(api, &operation).await
}

/// DELETE at `path`, accepted (202): the operation's id.
async fn request_disconnect(api: &Api, path: &str) -> String {
    let reply = delete(api, path).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.body["data"]["operationId"]
        .as_str()
        .expect("id")
        .to_owned()
}

#[tokio::test]
async fn revocation_authenticates_the_client_as_the_token_requests_do() {
    // RFC 7009 §2.1: a provider that requires client authentication to revoke (here with the
    // method the token endpoint is configured for) revokes the grant.
    for method in [ClientAuth::Post, ClientAuth::Basic] {
        let (stack, api, _metadata) = setup(&[("OAUTH_CLIENT_AUTH_METHOD", method.name())]).await;
        stack.google.require_client_auth(Some(method));
        let refresh = stack.google.refresh_token_of(EMAIL).expect("refresh token");
        let done = disconnect_all(&api).await;
        assert_eq!(done["status"], "done", "{done}");
        assert_eq!(
            done["revocations"],
            serde_json::json!([{ "googleEmail": EMAIL, "outcome": "revoked" }]),
            "{method:?}"
        );
        assert!(stack.google.is_revoked(&refresh), "{method:?}");
        assert_eq!(stack.google.unauthenticated_revoke_requests(), 0);
    }
}

#[tokio::test]
async fn a_revocation_refused_for_good_still_disconnects_and_says_so() {
    let (stack, api, _metadata) = setup(&[]).await;
    metadata_until(&api, |m| m["isConnected"] == true).await;
    let refresh = stack.google.refresh_token_of(EMAIL).expect("refresh token");
    // The provider now wants another client authentication than the configured one: every
    // revocation is refused with 401 invalid_client, which retrying cannot fix.
    stack.google.require_client_auth(Some(ClientAuth::Post));

    let done = disconnect_all(&api).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["disconnected"], serde_json::json!([EMAIL]));
    let revocation = &done["revocations"][0];
    assert_eq!(revocation["googleEmail"], EMAIL);
    assert_eq!(revocation["outcome"], "refused", "{done}");
    assert!(
        revocation["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid_client")),
        "{done}"
    );
    assert!(
        !revocation["error"]
            .as_str()
            .unwrap_or_default()
            .contains("1//"),
        "a token leaked: {done}"
    );
    // Not retried: one refusal, one request.
    assert_eq!(stack.google.unauthenticated_revoke_requests(), 1);

    // Disconnected here: no tokens, no access token for anyone, the metadata says so ...
    assert!(stack.google_auth(EMAIL).await.is_none());
    match stack.access_token(EMAIL).await {
        AccessTokenReply::Rejected { code, .. } => {
            assert_eq!(code, AccessTokenRejectionCode::NotConnected)
        }
        other => panic!("{other:?}"),
    }
    let stored = metadata_until(&api, |m| m["isConnected"] == false).await;
    assert_eq!(stored["googleEmail"], EMAIL);
    // ... the event carries the refusal, the metrics count it, and the grant is still live
    // at the provider (what the report is for).
    let events = stack.events::<ConnectionDisconnected>(WAIT).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].payload.revocation,
        Some(RevocationOutcome::Refused)
    );
    let metrics = reqwest::get(format!("{}/metrics", stack.worker.base_url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("revocations_failed_total{")
                && l.contains("reason=\"invalid_client\"")),
        "{metrics}"
    );
    assert!(!stack.google.is_revoked(&refresh));
}

/// Every account of the metadata: (googleEmail, isConnected).
fn accounts(metadata: &Value) -> Vec<(String, bool)> {
    metadata["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .map(|c| {
            (
                c["googleEmail"].as_str().expect("email").to_owned(),
                c["isConnected"] == true,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_deprecated_report_is_stored_normalized_and_disconnect_finds_it() {
    let (_stack, api, _metadata) =
        setup_with(&[], &[("SERVICE_TOKENS", reporter_tokens().as_str())]).await;
    let connected = metadata_until(&api, |m| m["isConnected"] == true).await;

    // Another service reports the same account, spelled its own way.
    let reported = api
        .request(
            reqwest::Method::POST,
            &format!("/api/connectors/{SUBACCOUNT}/metadata/update"),
        )
        .header("x-service-token", REPORTER_TOKEN)
        .json(&serde_json::json!({ "metadata": {
            "calendarId": "507f1f77bcf86cd799439011",
            "userEmail": "user@example.com",
            "googleEmail": "PERSON@Gmail.Example ",
            "connectedAt": just_after(&connected),
            "isConnected": true,
        } }))
        .send()
        .await
        .expect("metadata update");
    assert_eq!(reported.status(), 202);
    let stored = metadata_until(&api, |m| m["calendarId"] == "507f1f77bcf86cd799439011").await;
    assert_eq!(stored["googleEmail"], EMAIL, "{stored}");
    assert_eq!(
        accounts(&stored),
        [(EMAIL.to_owned(), true)],
        "one account, one entry"
    );

    let done = disconnected(
        &api,
        &format!("/api/connectors/{SUBACCOUNT}/google-calendar/connections/Person@GMAIL.example"),
    )
    .await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["disconnected"], serde_json::json!([EMAIL]));
    let after = metadata_until(&api, |m| m["isConnected"] == false).await;
    assert_eq!(accounts(&after), [(EMAIL.to_owned(), false)]);
}

#[tokio::test]
async fn entries_stored_before_emails_were_normalized_are_found_by_disconnect() {
    let (stack, api, _metadata) = setup(&[]).await;
    let connectors = api
        .tenant_db(SUBACCOUNT)
        .await
        .collection::<bson::Document>(schemas::documents::connector_subaccount::COLLECTION);
    let old_spelling = "Person@Gmail.Example";

    // As the deprecated endpoint left it: the callback's entry, and the same account reported
    // later under another spelling, which the top-level fields describe.
    let connected = metadata_until(&api, |m| m["isConnected"] == true).await;
    let reported = bson::doc! {
        "calendarId": "507f1f77bcf86cd799439011",
        "userEmail": "user@example.com",
        "googleEmail": old_spelling,
        "connectedAt": just_after(&connected),
        "isConnected": true,
    };
    let callback_entry =
        bson::to_document(&connected["connections"][0]).expect("the callback's entry");
    let mut metadata = reported.clone();
    metadata.insert("connections", vec![callback_entry, reported.clone()]);
    connectors
        .update_one(
            bson::doc! {},
            bson::doc! { "$set": { "metadata": metadata } },
        )
        .await
        .expect("old-form metadata");
    let done = disconnected(
        &api,
        &format!("/api/connectors/{SUBACCOUNT}/google-calendar"),
    )
    .await;
    assert_eq!(done["disconnected"], serde_json::json!([EMAIL]), "{done}");
    let after = metadata_until(&api, |m| m["isConnected"] == false).await;
    assert_eq!(
        accounts(&after),
        [(EMAIL.to_owned(), false)],
        "both spellings are the one account, disconnected"
    );

    // Older still: one account in the spec's top-level fields, no `connections`.
    let (_, page) = stack
        .connect(
            "user@example.com",
            Decision::Allow {
                account: Some(EMAIL.into()),
                scopes: None,
            },
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let connected = metadata_until(&api, |m| m["isConnected"] == true).await;
    let mut legacy = reported;
    legacy.insert("connectedAt", just_after(&connected));
    connectors
        .update_one(bson::doc! {}, bson::doc! { "$set": { "metadata": legacy } })
        .await
        .expect("legacy metadata");
    let done = disconnected(
        &api,
        &format!("/api/connectors/{SUBACCOUNT}/google-calendar/connections/{EMAIL}"),
    )
    .await;
    assert_eq!(done["disconnected"], serde_json::json!([EMAIL]), "{done}");
    let after = metadata_until(&api, |m| m["isConnected"] == false).await;
    assert_eq!(accounts(&after), [(EMAIL.to_owned(), false)]);
}

#[tokio::test]
async fn a_late_disconnect_never_ends_a_newer_connection() {
    let (stack, api, _metadata) = setup(&[("DISCONNECT_RETRY_DELAYS", "500ms")]).await;
    metadata_until(&api, |m| m["isConnected"] == true).await;
    let first = stack.google_auth(EMAIL).await.expect("stored");
    assert_eq!(first.get_i64("generation"), Ok(1));
    let first_refresh = stack.google.refresh_token_of(EMAIL).expect("refresh token");

    // The disconnect is requested against generation 1, and held up at the provider.
    stack.google.fail_next_revoke_requests(1000, 503);
    let operation = request_disconnect(
        &api,
        &format!("/api/connectors/{SUBACCOUNT}/google-calendar/connections/{EMAIL}"),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while stack.google.revoke_requests() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Meanwhile the user connects the same account again: generation 2.
    let before_reconnect = chrono::Utc::now();
    let (_, page) = stack
        .connect(
            "user@example.com",
            Decision::Allow {
                account: Some(EMAIL.into()),
                scopes: None,
            },
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let second_refresh = stack.google.refresh_token_of(EMAIL).expect("refresh token");
    assert_ne!(first_refresh, second_refresh);
    assert_eq!(
        stack
            .google_auth(EMAIL)
            .await
            .expect("stored")
            .get_i64("generation"),
        Ok(2)
    );
    // The provider is back: the old request is handled now, and ends nothing.
    stack.google.fail_next_revoke_requests(0, 503);
    let done = settled(&api, &operation).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["disconnected"], serde_json::json!([]));
    assert!(!stack.google.is_revoked(&second_refresh));
    let kept = stack.google_auth(EMAIL).await.expect("the new grant stays");
    assert_eq!(kept.get_i64("generation"), Ok(2));
    match stack.access_token(EMAIL).await {
        AccessTokenReply::Issued { .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(
        stack
            .events::<ConnectionDisconnected>(Duration::from_millis(200))
            .await
            .is_empty(),
        "no disconnect announced"
    );
    let calendars = stack.calendars().await;
    assert_eq!(calendars[0].get_bool("isActive"), Ok(true));
    assert_eq!(metadata(&api).await["isConnected"], true);

    // A request from before generations existed (no `connections`), made before the
    // reconnect and handled only now, ends nothing either.
    let legacy = legacy_disconnect(&stack, before_reconnect).await;
    let done = settled(&api, &legacy).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["disconnected"], serde_json::json!([]));
    assert!(stack.google_auth(EMAIL).await.is_some());

    // A disconnect requested now ends generation 2 as usual.
    let done = disconnected(
        &api,
        &format!("/api/connectors/{SUBACCOUNT}/google-calendar"),
    )
    .await;
    assert_eq!(done["disconnected"], serde_json::json!([EMAIL]));
    assert!(stack.google.is_revoked(&second_refresh));
    assert!(stack.google_auth(EMAIL).await.is_none());
    metadata_until(&api, |m| m["isConnected"] == false).await;
}

/// Publishes a disconnect-requested for [`EMAIL`] as an api from before connection
/// generations wrote it (no `connections`), dated `at`, with its operation; returns the
/// operation id.
async fn legacy_disconnect(stack: &OAuthStack, at: chrono::DateTime<chrono::Utc>) -> String {
    use schemas::documents::operation::{COLLECTION, Operation, OperationStatus};
    let operation = uuid::Uuid::now_v7().to_string();
    let now = bson::DateTime::now();
    stack
        .tenant()
        .await
        .collection::<Operation>(COLLECTION)
        .insert_one(Operation {
            id: operation.clone(),
            subaccount_id: SUBACCOUNT.into(),
            kind: "disconnect".into(),
            google_email: Some(EMAIL.into()),
            status: OperationStatus::Pending,
            disconnected: Vec::new(),
            revocations: Vec::new(),
            error: None,
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("operation");
    let mut event = schemas::Envelope::new(
        stack.subaccount(),
        uuid::Uuid::now_v7(),
        schemas::events::DisconnectRequested {
            operation_id: operation.clone(),
            google_email: Some(EMAIL.into()),
            connections: None,
        },
    );
    event.occurred_at = at;
    let js = async_nats::jetstream::new(stack.nats.clone());
    service_kit::nats::publish_event(&js, &stack.ns, &event)
        .await
        .expect("published");
    operation
}
