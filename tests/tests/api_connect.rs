//! `POST /api/connectors/{subaccountId}/handlegooglecalendar` on real NATS, MongoDB and Redis.
//! The oauth-worker is a stand-in the test runs in the real queue group, so each test decides
//! what the worker answers and sees exactly what the api sent.

mod api_support;

use std::time::{Duration, Instant};

use api_support::*;
use e2e::jwt::MintToken;
use schemas::Event;
use schemas::events::{ConnectRejectionCode, ConnectRequested, ConnectRequestedReply};
use schemas::subjects::headers;
use serde_json::json;

#[tokio::test]
async fn connect_returns_the_specs_body_with_the_link_the_worker_issued() {
    let api = Api::start(&[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let worker = Responder::start(&api, Behaviour::Reply(issued(AUTH_URL, true))).await;

    let reply = api
        .post(
            &connect_path(SUBACCOUNT),
            Some(&token(SUBACCOUNT)),
            &json!({ "userEmail": "user@example.com" }),
        )
        .await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({
            "success": true,
            "message": "Authorization link sent to user@example.com",
            "data": {
                "authUrl": AUTH_URL,
                "userEmail": "user@example.com",
                "subaccountId": SUBACCOUNT,
                "emailSent": true
            }
        })
    );

    // Exactly one request reached the worker, and it says what the caller asked.
    let received = worker.received();
    assert_eq!(received.len(), 1);
    let envelope = received[0]
        .envelope
        .clone()
        .expect("a valid connect-requested envelope");
    assert_eq!(envelope.event_type, ConnectRequested::TYPE);
    assert_eq!(envelope.subaccount_id.as_str(), SUBACCOUNT);
    assert_eq!(envelope.payload.user_email.as_str(), "user@example.com");
    assert!(envelope.payload.send_email, "sendEmail defaults to true");
    assert!(received[0].reply_subject.is_some(), "sent as a request");

    // One correlation id: in the response header, the envelope and the NATS header.
    let correlation = reply
        .headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .expect("X-Correlation-Id header");
    let correlation = uuid::Uuid::parse_str(correlation).expect("a UUID");
    assert_eq!(correlation.get_version_num(), 7);
    assert_eq!(envelope.correlation_id, correlation);
    let nats_headers = received[0].headers.clone().expect("NATS headers");
    assert_eq!(
        nats_headers
            .get(headers::CORRELATION_ID)
            .map(|v| v.as_str()),
        Some(correlation.to_string().as_str())
    );
    assert_eq!(
        nats_headers.get(headers::EVENT_TYPE).map(|v| v.as_str()),
        Some(ConnectRequested::TYPE)
    );
}

#[tokio::test]
async fn connect_without_email_says_the_link_was_created() {
    let api = Api::start(&[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let worker = Responder::start(&api, Behaviour::Reply(issued(AUTH_URL, false))).await;

    let reply = api
        .post(
            &connect_path(SUBACCOUNT),
            Some(&token(SUBACCOUNT)),
            &json!({ "userEmail": "user@example.com", "sendEmail": false }),
        )
        .await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body["message"],
        "Authorization link created for user@example.com"
    );
    assert_eq!(reply.body["data"]["emailSent"], false);
    assert_eq!(reply.body["data"]["authUrl"], AUTH_URL);
    let envelope = worker.received()[0].envelope.clone().expect("envelope");
    assert!(!envelope.payload.send_email);
}

#[tokio::test]
async fn a_link_whose_email_could_not_be_queued_is_created_not_sent() {
    let api = Api::start(&[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    // The caller asked for an email; the worker could not get it accepted by JetStream.
    let worker = Responder::start(&api, Behaviour::Reply(issued(AUTH_URL, false))).await;

    let reply = api
        .post(
            &connect_path(SUBACCOUNT),
            Some(&token(SUBACCOUNT)),
            &json!({ "userEmail": "user@example.com", "sendEmail": true }),
        )
        .await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body["message"],
        "Authorization link created for user@example.com"
    );
    assert_eq!(reply.body["data"]["emailSent"], false);
    assert!(
        worker.received()[0]
            .envelope
            .clone()
            .expect("envelope")
            .payload
            .send_email
    );
}

#[tokio::test]
async fn missing_malformed_forged_and_expired_tokens_get_401_and_nothing_is_sent() {
    let api = Api::start(&[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let worker = Responder::start(&api, Behaviour::Reply(issued(AUTH_URL, true))).await;
    let body = json!({ "userEmail": "user@example.com" }).to_string();

    let mut expired = claims(SUBACCOUNT);
    expired.exp = expired.iat.expect("iat") - 3600;
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no Authorization header", None, "missing_token"),
        (
            "Basic scheme",
            Some("Basic dXNlcjpwYXNz".into()),
            "invalid_token",
        ),
        (
            "not a JWT",
            Some("Bearer not.a.jwt".into()),
            "invalid_token",
        ),
        (
            "signed with another secret",
            Some(format!(
                "Bearer {}",
                claims(SUBACCOUNT).sign_hs256(b"someone-elses-secret-of-32-bytes-or-more")
            )),
            "invalid_token",
        ),
        (
            "expired",
            Some(format!("Bearer {}", expired.sign_hs256(SECRET.as_bytes()))),
            "token_expired",
        ),
    ];
    for (case, authorization, code) in cases {
        let mut request = reqwest::Client::new()
            .post(format!(
                "{}{}",
                api.service.base_url,
                connect_path(SUBACCOUNT)
            ))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let value: serde_json::Value = response.json().await.expect("json body");
        assert_eq!(status, 401, "{case}: {value}");
        assert_eq!(value["success"], false, "{case}");
        assert_eq!(value["error"]["code"], code, "{case}: {value}");
        assert!(
            challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer")),
            "{case}: WWW-Authenticate {challenge:?}"
        );
        assert!(
            !value.to_string().contains(SECRET),
            "{case}: secret in the body"
        );
    }
    // A bad subaccount id without a token is still a 401: authentication comes first.
    api.post(&connect_path("nope"), None, &json!({}))
        .await
        .assert_error(401, "missing_token");

    assert!(worker.received().is_empty(), "nothing reached the worker");
}

#[tokio::test]
async fn tokens_without_the_subaccount_or_the_permission_get_403_and_admins_pass() {
    let api = Api::start(&[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let worker = Responder::start(&api, Behaviour::Reply(issued(AUTH_URL, true))).await;
    let body = json!({ "userEmail": "user@example.com" });

    let other = token(OTHER_SUBACCOUNT);
    let reply = api
        .post(&connect_path(SUBACCOUNT), Some(&other), &body)
        .await;
    reply.assert_error(403, "subaccount_forbidden");
    assert_eq!(reply.body["error"]["details"]["subaccountId"], SUBACCOUNT);

    let mut read_only = claims(SUBACCOUNT);
    read_only.permissions = vec!["connectors:read".into()];
    let reply = api
        .post(
            &connect_path(SUBACCOUNT),
            Some(&read_only.sign_hs256(SECRET.as_bytes())),
            &body,
        )
        .await;
    reply.assert_error(403, "permission_denied");
    assert!(
        reply.message().contains("connectors:manage"),
        "{}",
        reply.body
    );
    assert!(
        worker.received().is_empty(),
        "refused requests reach no worker"
    );

    // Validation comes before authorisation: bad input from the wrong user is a 400.
    api.post(
        &connect_path(SUBACCOUNT),
        Some(&other),
        &json!({ "userEmail": "nope" }),
    )
    .await
    .assert_error(400, "invalid_email");

    let mut admin = claims(OTHER_SUBACCOUNT);
    admin.subaccount_ids.clear();
    admin.roles = vec!["admin".into()];
    let reply = api
        .post(
            &connect_path(SUBACCOUNT),
            Some(&admin.sign_hs256(SECRET.as_bytes())),
            &body,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(worker.received().len(), 1);
}

#[tokio::test]
async fn invalid_input_gets_400_413_or_415_naming_the_problem_and_nothing_is_sent() {
    let api = Api::start(&[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let worker = Responder::start(&api, Behaviour::Reply(issued(AUTH_URL, true))).await;
    let token = token(SUBACCOUNT);
    let path = connect_path(SUBACCOUNT);

    let reply = api
        .post(
            &connect_path("not-a-subaccount"),
            Some(&token),
            &json!({ "userEmail": "user@example.com" }),
        )
        .await;
    reply.assert_error(400, "invalid_subaccount_id");
    assert!(reply.message().contains("24 hexadecimal"), "{}", reply.body);

    let reply = api
        .post(
            &path,
            Some(&token),
            &json!({ "userEmail": "user@@example" }),
        )
        .await;
    reply.assert_error(400, "invalid_email");
    assert_eq!(reply.body["error"]["details"]["field"], "userEmail");
    assert!(reply.message().contains("userEmail"), "{}", reply.body);

    let reply = api
        .post(
            &path,
            Some(&token),
            &json!({ "userEmail": "user@example.com", "sendMail": true }),
        )
        .await;
    reply.assert_error(400, "unknown_field");
    assert_eq!(reply.body["error"]["details"]["field"], "sendMail");
    assert!(
        reply.message().contains("sendEmail"),
        "lists the accepted fields: {}",
        reply.body
    );

    let reply = api
        .post(&path, Some(&token), &json!({ "sendEmail": true }))
        .await;
    reply.assert_error(400, "missing_field");
    assert_eq!(reply.body["error"]["details"]["field"], "userEmail");

    let reply = api
        .send(
            reqwest::Method::POST,
            &path,
            Some(&token),
            Some((
                "application/json",
                br#"{"userEmail": "user@example.com", "sendEmail": tru}"#.to_vec(),
            )),
        )
        .await;
    reply.assert_error(400, "invalid_json");
    assert_eq!(reply.body["error"]["details"]["field"], "sendEmail");
    assert!(reply.message().contains("`sendEmail`"), "{}", reply.body);

    let reply = api
        .send(
            reqwest::Method::POST,
            &path,
            Some(&token),
            Some((
                "text/plain",
                br#"{"userEmail": "user@example.com"}"#.to_vec(),
            )),
        )
        .await;
    reply.assert_error(415, "unsupported_media_type");

    let huge = json!({ "userEmail": "user@example.com", "padding": "x".repeat(32 * 1024) });
    let reply = api.post(&path, Some(&token), &huge).await;
    reply.assert_error(413, "payload_too_large");

    assert!(worker.received().is_empty(), "nothing reached the worker");
}

#[tokio::test]
async fn connect_for_a_subaccount_without_the_connector_is_404_and_nothing_is_sent() {
    let api = Api::start(&[]).await;
    let worker = Responder::start(&api, Behaviour::Reply(issued(AUTH_URL, true))).await;

    let reply = api
        .post(
            &connect_path(SUBACCOUNT),
            Some(&token(SUBACCOUNT)),
            &json!({ "userEmail": "user@example.com" }),
        )
        .await;

    reply.assert_error(404, "connector_not_found");
    assert!(
        reply.message().starts_with("Connector not found"),
        "{}",
        reply.body
    );
    assert!(
        reply
            .message()
            .contains(&format!("POST /api/connectors/{SUBACCOUNT}")),
        "tells the caller how to add it: {}",
        reply.body
    );
    assert!(worker.received().is_empty());
    assert!(
        api.stored_connectors(SUBACCOUNT).await.is_empty(),
        "nothing stored"
    );
}

#[tokio::test]
async fn no_oauth_worker_means_503_oauth_worker_unavailable_at_once() {
    let api = Api::start(&[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;

    let started = Instant::now();
    let reply = api
        .post(
            &connect_path(SUBACCOUNT),
            Some(&token(SUBACCOUNT)),
            &json!({ "userEmail": "user@example.com" }),
        )
        .await;

    reply.assert_error(503, "oauth_worker_unavailable");
    assert!(reply.headers.get("retry-after").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no responders is known at once, not after the timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_worker_that_never_answers_means_503_oauth_worker_timeout_not_a_hang() {
    let api = Api::start(&[("CONNECT_REQUEST_TIMEOUT", "300ms")]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let worker = Responder::start(&api, Behaviour::Silent).await;

    let started = Instant::now();
    let reply = api
        .post(
            &connect_path(SUBACCOUNT),
            Some(&token(SUBACCOUNT)),
            &json!({ "userEmail": "user@example.com" }),
        )
        .await;
    let took = started.elapsed();

    reply.assert_error(503, "oauth_worker_timeout");
    assert_eq!(reply.body["error"]["details"]["timeoutMs"], 300);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "bounded by CONNECT_REQUEST_TIMEOUT: {took:?}"
    );
    assert_eq!(worker.received().len(), 1, "the worker did get the request");
}

#[tokio::test]
async fn worker_refusals_and_nonsense_become_clear_errors_never_a_200() {
    let cases = [
        (
            Behaviour::Reply(ConnectRequestedReply::Rejected {
                code: ConnectRejectionCode::StateStoreUnavailable,
                message: "Redis is unavailable".into(),
            }),
            503,
            "state_store_unavailable",
        ),
        (
            Behaviour::Reply(ConnectRequestedReply::Rejected {
                code: ConnectRejectionCode::InvalidRequest,
                message: "unknown field".into(),
            }),
            500,
            "internal_error",
        ),
        (
            Behaviour::Raw(b"{\"status\":\"issued\"}".to_vec()),
            502,
            "oauth_worker_bad_reply",
        ),
        (
            Behaviour::Raw(b"not json".to_vec()),
            502,
            "oauth_worker_bad_reply",
        ),
        (
            Behaviour::Reply(issued("", true)),
            502,
            "oauth_worker_bad_reply",
        ),
    ];
    let api = Api::start(&[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let worker = Responder::start(&api, Behaviour::Silent).await;
    for (i, (behaviour, status, code)) in cases.into_iter().enumerate() {
        worker.answer_with(behaviour.clone());
        let reply = api
            .post(
                &connect_path(SUBACCOUNT),
                Some(&token(SUBACCOUNT)),
                &json!({ "userEmail": "user@example.com" }),
            )
            .await;
        reply.assert_error(status, code);
        assert!(
            reply.body.get("data").is_none(),
            "{behaviour:?}: {}",
            reply.body
        );
        assert_eq!(worker.received().len(), i + 1, "{behaviour:?}");
    }
}

#[tokio::test]
async fn addresses_the_mailer_cannot_deliver_are_400_invalid_email_and_nothing_is_sent() {
    let api = Api::start(&[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let worker = Responder::start(&api, Behaviour::Reply(issued(AUTH_URL, true))).await;
    let path = connect_path(SUBACCOUNT);
    let token = token(SUBACCOUNT);

    for (address, why) in [
        (r#""<script>"@example.com"#, "quoted"),
        ("jöhn@example.com", "ASCII"),
        ("a@[10.0.0.5]", "domain literal"),
        ("a@[IPv6:2001:db8::1]", "domain literal"),
        ("a@10.0.0.5", "IP address"),
        ("a@ex_ample.com", "domain name"),
    ] {
        let reply = api
            .post(&path, Some(&token), &json!({ "userEmail": address }))
            .await;
        reply.assert_error(400, "invalid_email");
        assert_eq!(reply.body["error"]["details"]["field"], "userEmail");
        assert!(reply.message().contains(why), "{address}: {}", reply.body);
    }
    assert!(worker.received().is_empty(), "nothing reached the worker");

    // An internationalized domain is deliverable: accepted, and passed on as given.
    let reply = api
        .post(
            &path,
            Some(&token),
            &json!({ "userEmail": "user@bücher.example" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["data"]["userEmail"], "user@bücher.example");
    let received = worker.received();
    assert_eq!(received.len(), 1);
    let envelope = received[0].envelope.as_ref().expect("decodes");
    assert_eq!(envelope.payload.user_email.as_str(), "user@bücher.example");
}

fn sha256_hex(token: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn every_json_route_takes_one_object_in_utf8_only() {
    const WRITER: &str = "gcal_svc_bodies-writer-token-for-tests";
    let tokens = format!(
        "database-server:{}:connectors:metadata:write",
        sha256_hex(WRITER)
    );
    let api = Api::start(&[
        ("SERVICE_TOKENS", tokens.as_str()),
        ("API_DEV_MODE", "true"),
    ])
    .await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let worker = Responder::start(&api, Behaviour::Reply(issued(AUTH_URL, true))).await;
    let user = token(SUBACCOUNT);
    // Each JSON route, its caller, and a body it accepts as an object, written as an array of
    // the same values: serde alone reads such an array into the fields, in order.
    let routes = [
        (
            connect_path(SUBACCOUNT),
            Some(user.as_str()),
            json!(["user@example.com", true]),
        ),
        (
            format!("/api/connectors/{OTHER_SUBACCOUNT}"),
            Some(user.as_str()),
            json!(["google-calendar"]),
        ),
        (
            format!("/api/connectors/{SUBACCOUNT}/metadata/update"),
            Some(WRITER),
            json!([{
                "calendarId": "507f1f77bcf86cd799439011", "userEmail": "user@example.com",
                "googleEmail": "googleuser@gmail.com", "connectedAt": "2025-10-05T12:00:00.000Z",
                "isConnected": true,
            }]),
        ),
        (
            format!("/api/connectors/{SUBACCOUNT}/webhooks"),
            Some(user.as_str()),
            json!(["https://hooks.example.com/calendar"]),
        ),
        ("/dev/token".to_owned(), None, json!([SUBACCOUNT])),
    ];
    for (path, caller, array) in &routes {
        let reply = api
            .send(
                reqwest::Method::POST,
                path,
                *caller,
                Some(("application/json", array.to_string().into_bytes())),
            )
            .await;
        reply.assert_error(400, "invalid_field");
        assert!(
            reply
                .message()
                .contains("expected a JSON object, got an array"),
            "{path}: {}",
            reply.body
        );
        assert_eq!(reply.body["error"]["details"]["field"], json!(null));
        for scalar in ["\"user@example.com\"", "42", "null"] {
            api.send(
                reqwest::Method::POST,
                path,
                *caller,
                Some(("application/json", scalar.as_bytes().to_vec())),
            )
            .await
            .assert_error(400, "invalid_field");
        }
        for content_type in [
            "application/json; charset=iso-8859-1",
            "application/json;charset=UTF-16",
        ] {
            let reply = api
                .send(
                    reqwest::Method::POST,
                    path,
                    *caller,
                    Some((content_type, b"{}".to_vec())),
                )
                .await;
            reply.assert_error(415, "unsupported_media_type");
            assert!(reply.message().contains("utf-8"), "{}", reply.body);
        }
    }
    assert!(worker.received().is_empty(), "nothing reached the worker");
    assert!(
        api.stored_connectors(OTHER_SUBACCOUNT).await.is_empty(),
        "no connector added"
    );

    // UTF-8 named in any case is JSON as usual.
    let reply = api
        .send(
            reqwest::Method::POST,
            &connect_path(SUBACCOUNT),
            Some(&user),
            Some((
                "application/json; charset=UTF-8",
                br#"{"userEmail": "user@example.com"}"#.to_vec(),
            )),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(worker.received().len(), 1);
}
