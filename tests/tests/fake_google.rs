//! The fake Google OAuth provider, driven as production drives Google: the real `oauth2` crate
//! (v5 `BasicClient`, reqwest with redirects off) for the authorization URL, the code exchange
//! with PKCE and refreshes, plus plain reqwest for userinfo, the Calendar API and revocation.
//! No other infrastructure.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::fake_google::{ClientAuth, Decision, FakeGoogle, FakeGoogleConfig, Profile};
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, HttpClientError, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

const CLIENT_ID: &str = "test-client.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "GOCSPX-test-secret";
const REDIRECT_URI: &str = "http://127.0.0.1:3004/api/google/callback";
const CALENDAR: &str = "https://www.googleapis.com/auth/calendar";
/// What the oauth-worker requests.
const SCOPES: [&str; 3] = [CALENDAR, "openid", "email"];
/// The extra parameters the oauth-worker adds.
const OFFLINE: [(&str, &str); 3] = [
    ("access_type", "offline"),
    ("prompt", "consent"),
    ("include_granted_scopes", "true"),
];

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;
type TokenError = RequestTokenError<HttpClientError<reqwest::Error>, BasicErrorResponse>;

async fn start() -> FakeGoogle {
    start_with(FakeGoogleConfig::new(
        CLIENT_ID,
        CLIENT_SECRET,
        REDIRECT_URI,
    ))
    .await
}

async fn start_with(config: FakeGoogleConfig) -> FakeGoogle {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
    FakeGoogle::start(config, addr)
        .await
        .expect("fake Google starts")
}

/// As the oauth-worker builds it, with `secret` and `redirect_uri` to get wrong on purpose.
fn oauth_client(fake: &FakeGoogle, secret: &str, redirect_uri: &str) -> Client {
    BasicClient::new(ClientId::new(CLIENT_ID.into()))
        .set_client_secret(ClientSecret::new(secret.into()))
        .set_auth_uri(AuthUrl::new(fake.auth_url()).expect("auth URL"))
        .set_token_uri(TokenUrl::new(fake.token_url()).expect("token URL"))
        .set_redirect_uri(RedirectUrl::new(redirect_uri.into()).expect("redirect URI"))
}

fn client(fake: &FakeGoogle) -> Client {
    oauth_client(fake, CLIENT_SECRET, REDIRECT_URI)
}

/// oauth2 5 takes the HTTP client; like production, it must not follow redirects.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

/// An authorization URL as the client builds it, with what the callback needs to finish.
struct Authorization {
    url: Url,
    csrf: CsrfToken,
    verifier: PkceCodeVerifier,
}

fn authorize(client: &Client, scopes: &[&str], extra: &[(&str, &str)]) -> Authorization {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes.iter().map(|s| Scope::new((*s).to_owned())))
        .set_pkce_challenge(challenge);
    for (name, value) in extra {
        request = request.add_extra_param(*name, *value);
    }
    let (url, csrf) = request.url();
    Authorization {
        url,
        csrf,
        verifier,
    }
}

/// The authorization URL for `account`, as the oauth-worker builds it.
fn authorize_account(client: &Client, account: &str) -> Authorization {
    let mut extra = OFFLINE.to_vec();
    extra.push(("login_hint", account));
    authorize(client, &SCOPES, &extra)
}

fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

async fn exchange(
    client: &Client,
    code: &str,
    verifier: PkceCodeVerifier,
) -> Result<BasicTokenResponse, TokenError> {
    client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(verifier)
        .request_async(&http())
        .await
}

async fn refresh(client: &Client, refresh_token: &str) -> Result<BasicTokenResponse, TokenError> {
    client
        .exchange_refresh_token(&RefreshToken::new(refresh_token.to_owned()))
        .request_async(&http())
        .await
}

/// Consent with `decision` and exchange the code: the whole happy flow for one account.
async fn connect(fake: &FakeGoogle, account: &str, decision: Decision) -> BasicTokenResponse {
    let client = client(fake);
    let auth = authorize_account(&client, account);
    let callback = fake
        .consent(auth.url.as_str(), decision)
        .await
        .expect("consent");
    let code = query(&callback, "code").expect("a code in the callback");
    exchange(&client, &code, auth.verifier)
        .await
        .expect("code exchange")
}

fn server_error(result: Result<BasicTokenResponse, TokenError>) -> BasicErrorResponseType {
    match result {
        Err(RequestTokenError::ServerResponse(error)) => error.error().clone(),
        Err(other) => panic!("expected an OAuth error response, got {other:?}"),
        Ok(token) => panic!(
            "expected an OAuth error response, got a token for {:?}",
            token.scopes()
        ),
    }
}

/// `url` with its `name` parameter set to `value`, as no oauth2 client would build it.
fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(n, v)| {
            let v = if n == name {
                value.into()
            } else {
                v.into_owned()
            };
            (n.into_owned(), v)
        })
        .collect();
    let mut url = url.clone();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url
}

/// The message of an error page.
fn error_message(page: &str) -> &str {
    page.split("<p id=\"error\">")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_default()
}

async fn get_bearer(url: &str, token: &str) -> (StatusCode, Value) {
    let response = http()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn primary_calendar(fake: &FakeGoogle, token: &str) -> (StatusCode, Value) {
    let url = format!("{}/users/me/calendarList/primary", fake.calendar_api_base());
    get_bearer(&url, token).await
}

/// Revokes as production must: oauth2's own `revoke_token` refuses non-HTTPS URLs.
async fn revoke(fake: &FakeGoogle, token: &str) -> (StatusCode, String) {
    let response = http()
        .post(fake.revoke_url())
        .form(&[("token", token)])
        .send()
        .await
        .expect("POST /revoke");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn happy_path_exchanges_reads_identity_and_calendar_refreshes_and_revokes() {
    let fake = start().await;
    let client = client(&fake);
    let auth = authorize_account(&client, "alice@example.com");
    assert!(auth.url.as_str().starts_with(&fake.auth_url()));

    let callback = fake
        .consent(auth.url.as_str(), Decision::allow())
        .await
        .expect("consent");
    assert!(callback.as_str().starts_with(REDIRECT_URI), "{callback}");
    assert_eq!(
        query(&callback, "state").as_deref(),
        Some(auth.csrf.secret().as_str())
    );
    assert_eq!(query(&callback, "scope"), Some(SCOPES.join(" ")));
    let code = query(&callback, "code").expect("code");

    let token = exchange(&client, &code, auth.verifier)
        .await
        .expect("code exchange");
    let access = token.access_token().secret().clone();
    let refresh_token = token
        .refresh_token()
        .expect("offline access has a refresh token")
        .secret()
        .clone();
    assert!(access.starts_with("ya29."), "{access}");
    assert!(refresh_token.starts_with("1//"), "{refresh_token}");
    assert_eq!(token.expires_in(), Some(Duration::from_secs(3599)));
    let granted: Vec<&str> = token
        .scopes()
        .expect("scope")
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(granted, SCOPES);
    assert_eq!(
        fake.refresh_token_of("alice@example.com").as_deref(),
        Some(refresh_token.as_str())
    );

    let (status, me) = get_bearer(&fake.userinfo_url(), &access).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["email_verified"], true);
    let sub = me["sub"].as_str().expect("sub").to_owned();
    assert!(!sub.is_empty());

    let (status, calendar) = primary_calendar(&fake, &access).await;
    assert_eq!(status, StatusCode::OK, "{calendar}");
    assert_eq!(calendar["kind"], "calendar#calendarListEntry");
    assert_eq!(calendar["id"], "alice@example.com");
    assert_eq!(calendar["primary"], true);
    assert_eq!(calendar["accessRole"], "owner");

    let refreshed = refresh(&client, &refresh_token).await.expect("refresh");
    let access2 = refreshed.access_token().secret().clone();
    assert_ne!(access2, access);
    assert!(
        refreshed.refresh_token().is_none(),
        "a refresh gives no new refresh token"
    );
    assert_eq!(refreshed.scopes(), token.scopes());
    let (status, me2) = get_bearer(&fake.userinfo_url(), &access2).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me2["sub"].as_str(), Some(sub.as_str()), "sub is stable");
    assert_eq!(fake.token_requests("authorization_code"), 1);
    assert_eq!(fake.token_requests("refresh_token"), 1);
    assert_eq!(fake.refresh_requests_of("alice@example.com"), 1);
    assert_eq!(fake.refresh_requests_of("nobody@example.com"), 0);
    assert_eq!(fake.issued_access_tokens(), 2);

    let (status, body) = revoke(&fake, &refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(fake.is_revoked(&refresh_token));
    assert!(
        fake.is_revoked(&access2),
        "access tokens of a revoked refresh token die with it"
    );
    let (status, _) = get_bearer(&fake.userinfo_url(), &access2).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        server_error(refresh(&client, &refresh_token).await),
        BasicErrorResponseType::InvalidGrant
    );
}

#[tokio::test]
async fn deny_redirects_with_access_denied_and_the_state() {
    let fake = start().await;
    let client = client(&fake);
    let auth = authorize_account(&client, "bob@example.com");

    let callback = fake
        .consent(auth.url.as_str(), Decision::Deny)
        .await
        .expect("consent");

    assert!(callback.as_str().starts_with(REDIRECT_URI), "{callback}");
    assert_eq!(query(&callback, "error").as_deref(), Some("access_denied"));
    assert_eq!(
        query(&callback, "state").as_deref(),
        Some(auth.csrf.secret().as_str())
    );
    assert_eq!(query(&callback, "code"), None);
}

#[tokio::test]
async fn unticked_calendar_is_a_partial_grant_without_calendar_access() {
    let fake = start().await;
    let client = client(&fake);
    let auth = authorize_account(&client, "carol@example.com");

    let callback = fake
        .consent(
            auth.url.as_str(),
            Decision::Allow {
                account: None,
                scopes: Some(vec!["openid".into(), "email".into()]),
            },
        )
        .await
        .expect("consent");
    assert_eq!(query(&callback, "scope").as_deref(), Some("openid email"));

    let code = query(&callback, "code").expect("code");
    let token = exchange(&client, &code, auth.verifier)
        .await
        .expect("code exchange");
    let granted: Vec<&str> = token
        .scopes()
        .expect("scope")
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(granted, ["openid", "email"]);
    let access = token.access_token().secret();

    let (status, body) = primary_calendar(&fake, access).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], 403);
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(
        body["error"]["message"],
        "Request had insufficient authentication scopes."
    );
    let (status, me) = get_bearer(&fake.userinfo_url(), access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], "carol@example.com");
}

#[tokio::test]
async fn the_account_typed_on_the_consent_page_is_the_one_connected() {
    let fake = start().await;
    let token = connect(
        &fake,
        "hint@example.com",
        Decision::Allow {
            account: Some("Other.Person@Example.com".into()),
            scopes: None,
        },
    )
    .await;

    let (status, me) = get_bearer(&fake.userinfo_url(), token.access_token().secret()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], "other.person@example.com");
    assert!(fake.refresh_token_of("hint@example.com").is_none());
    assert!(fake.refresh_token_of("other.person@example.com").is_some());
}

#[tokio::test]
async fn invalid_authorization_requests_get_an_error_page_and_no_redirect() {
    let fake = start().await;
    let good = client(&fake);
    let elsewhere = oauth_client(
        &fake,
        CLIENT_SECRET,
        "http://127.0.0.1:3004/api/google/other",
    );
    let trailing_slash = oauth_client(&fake, CLIENT_SECRET, &format!("{REDIRECT_URI}/"));
    let stranger = BasicClient::new(ClientId::new("someone-else".into()))
        .set_auth_uri(AuthUrl::new(fake.auth_url()).expect("auth URL"))
        .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.into()).expect("redirect URI"));
    let (stranger_url, _) = stranger
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new(CALENDAR.into()))
        .set_pkce_challenge(PkceCodeChallenge::new_random_sha256().0)
        .url();
    let without_pkce = good
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new(CALENDAR.into()))
        .url()
        .0;
    let plain_pkce = with_param(
        &authorize(&good, &SCOPES, &[]).url,
        "code_challenge_method",
        "plain",
    );
    let without_scope = authorize(&good, &[], &[]).url;
    let implicit = with_param(
        &authorize(&good, &SCOPES, &[]).url,
        "response_type",
        "token",
    );
    let misspelled = authorize(
        &good,
        &["openid", "https://www.googleapis.com/auth/calender"],
        &[],
    )
    .url;

    let cases = [
        (
            ("redirect_uri_mismatch", "redirect_uri"),
            authorize(&elsewhere, &SCOPES, &[]).url,
        ),
        (
            ("redirect_uri_mismatch", "redirect_uri"),
            authorize(&trailing_slash, &SCOPES, &[]).url,
        ),
        (("invalid_client", "not found"), stranger_url),
        (("invalid_request", "code_challenge"), without_pkce),
        (("invalid_request", "S256"), plain_pkce),
        (("invalid_request", "parameter: scope"), without_scope),
        (("invalid_scope", "auth/calender"), misspelled),
        (
            ("unsupported_response_type", "response_type=code"),
            implicit,
        ),
    ];
    for ((code, detail), url) in cases {
        let response = http().get(url.as_str()).send().await.expect("GET auth");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{url}");
        assert!(
            response.headers().get("location").is_none(),
            "never redirects a bad request: {url}"
        );
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        let page = response.text().await.expect("body");
        assert!(
            page.contains(&format!("Error 400: {code}")),
            "{code} not on the page for {url}:\n{page}"
        );
        assert!(
            error_message(&page).contains(detail),
            "{detail:?} not in the error message for {url}:\n{page}"
        );
        assert!(
            !page.contains("id=\"allow\""),
            "no consent form on an error page"
        );

        let error = fake
            .consent(url.as_str(), Decision::allow())
            .await
            .expect_err("consent on a refused request");
        assert!(error.to_string().contains("400"), "{error:#}");
    }
    assert_eq!(fake.issued_access_tokens(), 0);
}

#[tokio::test]
async fn wrong_pkce_verifier_or_redirect_uri_is_invalid_grant() {
    let fake = start().await;
    let client = client(&fake);
    let auth = authorize_account(&client, "dave@example.com");
    let callback = fake
        .consent(auth.url.as_str(), Decision::allow())
        .await
        .expect("consent");
    let code = query(&callback, "code").expect("code");

    let other_verifier = PkceCodeChallenge::new_random_sha256().1;
    assert_eq!(
        server_error(exchange(&client, &code, other_verifier).await),
        BasicErrorResponseType::InvalidGrant
    );
    let missing_verifier = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .request_async(&http())
        .await;
    assert_eq!(
        server_error(missing_verifier),
        BasicErrorResponseType::InvalidGrant
    );
    let other_redirect = oauth_client(&fake, CLIENT_SECRET, "http://127.0.0.1:3004/other");
    let verifier = PkceCodeVerifier::new(auth.verifier.secret().clone());
    assert_eq!(
        server_error(exchange(&other_redirect, &code, verifier).await),
        BasicErrorResponseType::InvalidGrant
    );
    assert_eq!(
        server_error(exchange(&client, "4/0Anot-a-code", auth.verifier).await),
        BasicErrorResponseType::InvalidGrant
    );
    assert_eq!(fake.issued_access_tokens(), 0);
}

#[tokio::test]
async fn reused_code_is_invalid_grant_and_revokes_what_it_issued() {
    let fake = start().await;
    let client = client(&fake);
    let auth = authorize_account(&client, "erin@example.com");
    let callback = fake
        .consent(auth.url.as_str(), Decision::allow())
        .await
        .expect("consent");
    let code = query(&callback, "code").expect("code");
    let verifier = auth.verifier.secret().clone();

    let first = exchange(&client, &code, auth.verifier)
        .await
        .expect("first exchange");
    let second = exchange(&client, &code, PkceCodeVerifier::new(verifier)).await;

    assert_eq!(server_error(second), BasicErrorResponseType::InvalidGrant);
    let access = first.access_token().secret();
    let refresh_token = first.refresh_token().expect("refresh token").secret();
    assert!(fake.is_revoked(access));
    assert!(fake.is_revoked(refresh_token));
    let (status, _) = get_bearer(&fake.userinfo_url(), access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn client_authenticates_by_basic_or_body_and_a_wrong_secret_is_invalid_client() {
    let fake = start().await;
    for auth_type in [AuthType::BasicAuth, AuthType::RequestBody] {
        let right = client(&fake).set_auth_type(auth_type.clone());
        let wrong = oauth_client(&fake, "not-the-secret", REDIRECT_URI).set_auth_type(auth_type);
        let auth = authorize_account(&right, "frank@example.com");
        let callback = fake
            .consent(auth.url.as_str(), Decision::allow())
            .await
            .expect("consent");
        let code = query(&callback, "code").expect("code");
        let verifier = auth.verifier.secret().clone();

        let refused = exchange(&wrong, &code, PkceCodeVerifier::new(verifier)).await;
        assert_eq!(server_error(refused), BasicErrorResponseType::InvalidClient);
        exchange(&right, &code, auth.verifier)
            .await
            .expect("the right secret still redeems the code");
    }

    let response = http()
        .post(fake.token_url())
        .basic_auth(CLIENT_ID, Some("not-the-secret"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "1//x")])
        .send()
        .await
        .expect("POST /token");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_client");
    let response = http()
        .post(fake.token_url())
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "1//x")])
        .send()
        .await
        .expect("POST /token");
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "no client at all"
    );
}

#[tokio::test]
async fn token_endpoint_rejects_malformed_requests_without_caching() {
    let fake = start().await;
    let post = |form: Vec<(&'static str, &'static str)>| {
        let request = http()
            .post(fake.token_url())
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&form);
        async move { request.send().await.expect("POST /token") }
    };
    let cases = [
        (vec![("grant_type", "password")], "unsupported_grant_type"),
        (vec![("code", "x")], "invalid_request"),
        (
            vec![("grant_type", "authorization_code")],
            "invalid_request",
        ),
        (vec![("grant_type", "refresh_token")], "invalid_request"),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "1//unknown"),
            ],
            "invalid_grant",
        ),
    ];
    for (form, expected) in cases {
        let response = post(form.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{form:?}");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], expected, "{form:?}");
    }
    let unknown = post(vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", "1//unknown"),
    ])
    .await;
    let body: Value = unknown.json().await.expect("JSON");
    assert_eq!(
        body["error_description"],
        "Token has been expired or revoked."
    );
}

#[tokio::test]
async fn an_injected_token_failure_is_answered_then_the_retry_succeeds() {
    let fake = start().await;
    let client = client(&fake);
    let auth = authorize_account(&client, "grace@example.com");
    let callback = fake
        .consent(auth.url.as_str(), Decision::allow())
        .await
        .expect("consent");
    let code = query(&callback, "code").expect("code");

    fake.fail_next_token_requests(1, 500);
    let response = http()
        .post(fake.token_url())
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "authorization_code"), ("code", &code)])
        .send()
        .await
        .expect("POST /token");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"], "server_error");

    fake.fail_next_token_requests(1, 503);
    let failed = exchange(
        &client,
        &code,
        PkceCodeVerifier::new(auth.verifier.secret().clone()),
    )
    .await;
    assert_eq!(
        server_error(failed),
        BasicErrorResponseType::Extension("temporarily_unavailable".into())
    );
    exchange(&client, &code, auth.verifier)
        .await
        .expect("the retry succeeds with the same code");
    assert_eq!(fake.token_requests("authorization_code"), 3);
    assert_eq!(fake.issued_access_tokens(), 1);
}

#[tokio::test]
async fn latency_delays_back_channel_requests() {
    let fake = start().await;
    let token = connect(&fake, "heidi@example.com", Decision::allow()).await;
    let access = token.access_token().secret();

    fake.set_latency(Duration::from_millis(400));
    let started = Instant::now();
    let (status, _) = get_bearer(&fake.userinfo_url(), access).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "userinfo answered after {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    refresh(&client(&fake), token.refresh_token().expect("rt").secret())
        .await
        .expect("refresh");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "token answered after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_injected_revoke_failure_leaves_the_token_valid_until_the_retry() {
    let fake = start().await;
    let token = connect(&fake, "ivan@example.com", Decision::allow()).await;
    let refresh_token = token.refresh_token().expect("rt").secret();

    fake.fail_next_revoke_requests(1, 503);
    let (status, body) = revoke(&fake, refresh_token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("temporarily_unavailable"), "{body}");
    assert!(!fake.is_revoked(refresh_token));

    let (status, _) = revoke(&fake, refresh_token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(fake.is_revoked(refresh_token));
    assert_eq!(fake.revoke_requests(), 2);
}

#[tokio::test]
async fn revoking_an_access_token_revokes_its_grant_and_twice_is_invalid_token() {
    let fake = start().await;
    let token = connect(&fake, "judy@example.com", Decision::allow()).await;
    let access = token.access_token().secret();
    let refresh_token = token.refresh_token().expect("rt").secret();

    let (status, _) = revoke(&fake, access).await;
    assert_eq!(status, StatusCode::OK);
    assert!(fake.is_revoked(refresh_token), "as at Google");
    assert_eq!(
        server_error(refresh(&client(&fake), refresh_token).await),
        BasicErrorResponseType::InvalidGrant
    );

    for token in [access.as_str(), refresh_token, "ya29.never-issued"] {
        let (status, body) = revoke(&fake, token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{token}");
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(body["error_description"], "Token expired or revoked");
    }
}

#[tokio::test]
async fn the_user_removing_access_revokes_the_accounts_tokens_only() {
    let fake = start().await;
    let kept = connect(&fake, "kim@example.com", Decision::allow()).await;
    let removed = connect(&fake, "leo@example.com", Decision::allow()).await;

    assert_eq!(fake.revoke_refresh_tokens_of("leo@example.com"), 1);

    let client = client(&fake);
    assert_eq!(
        server_error(refresh(&client, removed.refresh_token().expect("rt").secret()).await),
        BasicErrorResponseType::InvalidGrant
    );
    let (status, _) = primary_calendar(&fake, removed.access_token().secret()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    refresh(&client, kept.refresh_token().expect("rt").secret())
        .await
        .expect("another account's token still works");
}

#[tokio::test]
async fn refresh_tokens_come_with_offline_access_and_again_only_with_prompt_consent() {
    let fake = start().await;
    let client = client(&fake);
    let account = "mia@example.com";
    let consent_and_exchange = async |extra: &[(&str, &str)]| {
        let mut extra = extra.to_vec();
        extra.push(("login_hint", account));
        let auth = authorize(&client, &SCOPES, &extra);
        let callback = fake
            .consent(auth.url.as_str(), Decision::allow())
            .await
            .expect("consent");
        let code = query(&callback, "code").expect("code");
        exchange(&client, &code, auth.verifier)
            .await
            .expect("exchange")
    };

    let online = consent_and_exchange(&[]).await;
    assert!(online.refresh_token().is_none(), "online access");
    let first = consent_and_exchange(&[("access_type", "offline")]).await;
    assert!(first.refresh_token().is_some(), "first offline consent");
    let again = consent_and_exchange(&[("access_type", "offline")]).await;
    assert!(
        again.refresh_token().is_none(),
        "Google sends no new refresh token on re-consent without prompt=consent"
    );
    let forced = consent_and_exchange(&OFFLINE).await;
    assert!(forced.refresh_token().is_some(), "prompt=consent");
}

#[tokio::test]
async fn as_an_openid_provider_refresh_tokens_come_with_offline_access_under_prompt_consent() {
    let fake = start().await;
    fake.set_profile(Profile::Oidc);
    let client = client(&fake);
    let consent_and_exchange = async |scopes: &[&str], extra: &[(&str, &str)]| {
        let mut extra = extra.to_vec();
        extra.push(("login_hint", "ola@example.com"));
        let auth = authorize(&client, scopes, &extra);
        let callback = fake
            .consent(auth.url.as_str(), Decision::allow())
            .await
            .expect("consent");
        let code = query(&callback, "code").expect("code");
        exchange(&client, &code, auth.verifier)
            .await
            .expect("exchange")
    };
    let with_offline: Vec<&str> = SCOPES.iter().copied().chain(["offline_access"]).collect();

    let google_way = consent_and_exchange(&SCOPES, &OFFLINE).await;
    assert!(
        google_way.refresh_token().is_none(),
        "access_type means nothing to an OpenID provider"
    );
    let no_prompt = consent_and_exchange(&with_offline, &[]).await;
    assert!(
        no_prompt.refresh_token().is_none(),
        "offline_access without prompt=consent is ignored (OIDC Core §11)"
    );
    assert!(
        !no_prompt
            .scopes()
            .expect("scope")
            .iter()
            .any(|s| s.as_str() == "offline_access")
    );
    let offline = consent_and_exchange(&with_offline, &[("prompt", "consent")]).await;
    let refresh_token = offline.refresh_token().expect("offline_access granted");
    refresh(&client, refresh_token.secret())
        .await
        .expect("the refresh token works");

    // Google knows no offline_access scope.
    fake.set_profile(Profile::Google);
    let auth = authorize(&client, &with_offline, &[("prompt", "consent")]);
    let refused = fake
        .consent(auth.url.as_str(), Decision::allow())
        .await
        .expect_err("invalid_scope at Google");
    assert!(
        refused.to_string().contains("offline_access"),
        "{refused:#}"
    );
}

#[tokio::test]
async fn strict_client_authentication_is_required_at_the_token_and_revocation_endpoints() {
    let fake = start().await;
    let token = connect(&fake, "pia@example.com", Decision::allow()).await;
    let access_token = token.access_token().secret().clone();
    fake.require_client_auth(Some(ClientAuth::Post));

    // The token endpoint takes only the required method.
    let refresh_token = token.refresh_token().expect("offline").secret().clone();
    let basic = refresh(&client(&fake), &refresh_token).await;
    assert_eq!(server_error(basic), BasicErrorResponseType::InvalidClient);
    refresh(
        &client(&fake).set_auth_type(AuthType::RequestBody),
        &refresh_token,
    )
    .await
    .expect("client_secret_post is accepted");

    // Revocation: without client authentication, or with another method, 401 invalid_client
    // and the token stays valid.
    let (status, body) = revoke(&fake, &access_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("invalid_client"), "{body}");
    let basic = http()
        .post(fake.revoke_url())
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("token", access_token.as_str())])
        .send()
        .await
        .expect("POST /revoke");
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    let wrong = http()
        .post(fake.revoke_url())
        .form(&[
            ("token", access_token.as_str()),
            ("client_id", CLIENT_ID),
            ("client_secret", "not-the-secret"),
        ])
        .send()
        .await
        .expect("POST /revoke");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(fake.unauthenticated_revoke_requests(), 3);
    assert!(!fake.is_revoked(&access_token));
    let right = http()
        .post(fake.revoke_url())
        .form(&[
            ("token", access_token.as_str()),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .expect("POST /revoke");
    assert_eq!(right.status(), StatusCode::OK);
    assert!(fake.is_revoked(&access_token));
}

#[tokio::test]
async fn userinfo_and_token_responses_can_leave_out_email_verified_and_scope() {
    let fake = start().await;
    fake.omit_token_response_scope(true);
    fake.omit_email_verified(true);
    let token = connect(&fake, "quinn@example.com", Decision::allow()).await;
    assert!(token.scopes().is_none());
    let (status, info) = get_bearer(&fake.userinfo_url(), token.access_token().secret()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["email"], "quinn@example.com");
    assert!(info.get("email_verified").is_none(), "{info}");
}

#[tokio::test]
async fn include_granted_scopes_adds_what_the_account_granted_before() {
    let fake = start().await;
    connect(&fake, "noor@example.com", Decision::allow()).await;
    let client = client(&fake);
    let auth = authorize_account(&client, "noor@example.com");

    let callback = fake
        .consent(
            auth.url.as_str(),
            Decision::Allow {
                account: None,
                scopes: Some(vec!["openid".into()]),
            },
        )
        .await
        .expect("consent");

    let scope = query(&callback, "scope").expect("scope");
    let mut granted: Vec<&str> = scope.split(' ').collect();
    granted.sort_unstable();
    let mut all = SCOPES.to_vec();
    all.sort_unstable();
    assert_eq!(granted, all);
}

#[tokio::test]
async fn an_expired_access_token_is_refused_and_a_refresh_replaces_it() {
    let fake = start().await;
    fake.set_access_token_lifetime(Duration::ZERO);
    let token = connect(&fake, "olga@example.com", Decision::allow()).await;
    assert_eq!(token.expires_in(), Some(Duration::ZERO));

    let (status, body) = get_bearer(&fake.userinfo_url(), token.access_token().secret()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_token");
    let (status, body) = primary_calendar(&fake, token.access_token().secret()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");

    fake.set_access_token_lifetime(Duration::from_secs(3599));
    let refreshed = refresh(&client(&fake), token.refresh_token().expect("rt").secret())
        .await
        .expect("refresh");
    let (status, _) = primary_calendar(&fake, refreshed.access_token().secret()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn userinfo_and_calendar_need_their_scopes() {
    let fake = start().await;
    let client = client(&fake);
    let grant = async |scopes: &[&str]| {
        let auth = authorize(&client, scopes, &[("login_hint", "pat@example.com")]);
        let callback = fake
            .consent(auth.url.as_str(), Decision::allow())
            .await
            .expect("consent");
        let code = query(&callback, "code").expect("code");
        let token = exchange(&client, &code, auth.verifier)
            .await
            .expect("exchange");
        token.access_token().secret().clone()
    };

    let openid_only = grant(&["openid"]).await;
    let (status, me) = get_bearer(&fake.userinfo_url(), &openid_only).await;
    assert_eq!(status, StatusCode::OK);
    assert!(me["sub"].is_string());
    assert!(
        me.get("email").is_none(),
        "no email without the email scope"
    );

    let events_only = grant(&["https://www.googleapis.com/auth/calendar.events"]).await;
    let (status, _) = get_bearer(&fake.userinfo_url(), &events_only).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = primary_calendar(&fake, &events_only).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "calendarList needs calendar or calendar.readonly"
    );

    let readonly = grant(&["https://www.googleapis.com/auth/calendar.readonly"]).await;
    let (status, _) = primary_calendar(&fake, &readonly).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get_bearer(&fake.userinfo_url(), "ya29.made-up").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn consent_page_has_the_controls_a_browser_test_clicks() {
    let fake = start().await;
    let auth = authorize_account(&client(&fake), "quinn@example.com");
    let page = http()
        .get(auth.url.as_str())
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("page");

    for needle in [
        "<html lang=\"en\"",
        "<label for=\"account\"",
        "id=\"account\" name=\"account\" value=\"quinn@example.com\"",
        "id=\"scope-0\" name=\"scope\" value=\"https://www.googleapis.com/auth/calendar\" checked",
        "id=\"scope-1\" name=\"scope\" value=\"openid\" checked",
        "id=\"scope-2\" name=\"scope\" value=\"email\" checked",
        "<label for=\"scope-2\"",
        "id=\"allow\" name=\"decision\" value=\"allow\"",
        "id=\"deny\" name=\"decision\" value=\"deny\"",
        "action=\"/o/oauth2/v2/auth/decision\"",
    ] {
        assert!(page.contains(needle), "{needle:?} missing from\n{page}");
    }
    assert!(!page.contains("scope-3"));

    let stale = http()
        .post(format!("{}/o/oauth2/v2/auth/decision", fake.base_url()))
        .form(&[("pending", "nope"), ("decision", "allow")])
        .send()
        .await
        .expect("POST decision");
    assert_eq!(stale.status(), StatusCode::BAD_REQUEST);
    assert!(stale.headers().get("location").is_none());
}

#[tokio::test]
async fn a_consent_page_is_answered_once() {
    let fake = start().await;
    let auth = authorize_account(&client(&fake), "rae@example.com");
    let page = http()
        .get(auth.url.as_str())
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("page");
    let pending = page
        .split("name=\"pending\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("pending id")
        .to_owned();
    let answer = async || {
        http()
            .post(format!("{}/o/oauth2/v2/auth/decision", fake.base_url()))
            .form(&[
                ("pending", pending.as_str()),
                ("account", "rae@example.com"),
                ("scope", "openid"),
                ("decision", "allow"),
            ])
            .send()
            .await
            .expect("POST decision")
    };

    let first = answer().await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let second = answer().await;
    assert_eq!(second.status(), StatusCode::BAD_REQUEST);
    assert!(second.headers().get("location").is_none());
}

#[tokio::test]
async fn a_decision_the_page_cannot_accept_is_asked_again_not_redirected() {
    let fake = start().await;
    let auth = authorize_account(&client(&fake), "tess@example.com");
    let cases = [
        (Some("not an email"), None, "is not an email address"),
        (None, Some(vec![]), "Select at least one permission"),
        (
            None,
            Some(vec!["profile".to_owned()]),
            "\"profile\" was not requested",
        ),
    ];
    for (account, scopes, expected) in cases {
        let error = fake
            .consent(
                auth.url.as_str(),
                Decision::Allow {
                    account: account.map(str::to_owned),
                    scopes,
                },
            )
            .await
            .expect_err("refused decision");
        let message = format!("{error:#}");
        assert!(message.contains("400"), "{message}");
        assert!(message.contains(expected), "{message}");
    }
    assert_eq!(fake.token_requests("authorization_code"), 0);
    let granted = fake.consent(auth.url.as_str(), Decision::allow()).await;
    assert!(query(&granted.expect("consent"), "code").is_some());
}

#[tokio::test]
async fn hostile_parameters_are_escaped_on_consent_and_error_pages() {
    let fake = start().await;
    let hint = "\"><script>alert(1)</script><x y='";
    let auth = authorize(&client(&fake), &SCOPES, &[("login_hint", hint)]);
    let page = http()
        .get(auth.url.as_str())
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("page");

    assert!(page.contains("id=\"allow\""), "a consent page:\n{page}");
    assert!(!page.contains("<script>"), "{page}");
    assert!(
        page.contains("value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;x y=&#x27;\""),
        "{page}"
    );

    let auth = authorize(
        &client(&fake),
        &["openid", "<b>bold</b>"],
        &[("state", "<i>state</i>")],
    );
    let stranger = Url::parse_with_params(
        &fake.auth_url(),
        &[
            ("client_id", "<script>evil()</script>"),
            ("redirect_uri", REDIRECT_URI),
        ],
    )
    .expect("URL");
    for (url, escaped) in [
        (auth.url, "&lt;b&gt;bold&lt;/b&gt;"),
        (stranger, "&lt;script&gt;evil()&lt;/script&gt;"),
    ] {
        let error_page = http()
            .get(url.as_str())
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("page");
        assert!(error_page.contains("Error 400"), "{error_page}");
        assert!(error_page.contains(escaped), "{error_page}");
        for raw in ["<script>", "<b>", "<i>"] {
            assert!(!error_page.contains(raw), "{raw} unescaped:\n{error_page}");
        }
    }
}

#[tokio::test]
async fn faults_and_state_over_http() {
    let fake = start().await;
    let token = connect(&fake, "sam@example.com", Decision::allow()).await;
    let http = http();

    let set = http
        .post(format!("{}/_fake/faults", fake.base_url()))
        .json(&json!({
            "latencyMs": 1,
            "failNextTokenRequests": { "count": 1, "status": 502 },
        }))
        .send()
        .await
        .expect("POST faults");
    assert_eq!(set.status(), StatusCode::OK);
    let state: Value = set.json().await.expect("JSON");
    assert_eq!(state["failNextTokenRequests"]["count"], 1);
    assert_eq!(state["latencyMs"], 1);

    let client = client(&fake);
    let refresh_token = token.refresh_token().expect("rt").secret();
    let failed = refresh(&client, refresh_token).await;
    assert_eq!(
        server_error(failed),
        BasicErrorResponseType::Extension("server_error".into())
    );
    refresh(&client, refresh_token)
        .await
        .expect("the next one succeeds");

    let bad = http
        .post(format!("{}/_fake/faults", fake.base_url()))
        .json(&json!({ "failNextRevokeRequests": { "count": 1, "status": 200 } }))
        .send()
        .await
        .expect("POST faults");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let removed = http
        .post(format!("{}/_fake/faults", fake.base_url()))
        .json(&json!({ "revokeRefreshTokensOf": "sam@example.com" }))
        .send()
        .await
        .expect("POST faults");
    assert_eq!(removed.status(), StatusCode::OK);
    assert!(fake.is_revoked(refresh_token));

    let state: Value = http
        .get(format!("{}/_fake/state", fake.base_url()))
        .send()
        .await
        .expect("GET state")
        .json()
        .await
        .expect("JSON");
    assert_eq!(state["tokenRequests"]["authorization_code"], 1);
    assert_eq!(state["tokenRequests"]["refresh_token"], 2);
    // The injected failure answers before the refresh token is read: one counted refresh.
    assert_eq!(state["refreshRequestsByAccount"]["sam@example.com"], 1);
    assert_eq!(state["issuedAccessTokens"], 2);
    assert_eq!(state["failNextTokenRequests"]["count"], 0);
    assert_eq!(state["grants"][0]["account"], "sam@example.com");
    assert_eq!(state["grants"][0]["revoked"], true);
    assert!(
        !state.to_string().contains(refresh_token.as_str()),
        "no token values"
    );
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let fake = start().await;
    let url = format!("{}/healthz", fake.base_url());
    assert_eq!(
        http().get(&url).send().await.expect("GET").status(),
        StatusCode::OK
    );

    fake.shutdown().await;

    assert!(
        http().get(&url).send().await.is_err(),
        "nothing listens after shutdown"
    );
}

#[tokio::test]
async fn the_binary_serves_its_configuration_and_stops_on_sigterm() {
    let port = e2e::process::free_port();
    let dir = e2e::process::scratch_dir("fake-google");
    let log = dir.join("fake-google.log");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fake-google"));
    command
        .env_clear()
        .env("FAKE_GOOGLE_ADDR", format!("127.0.0.1:{port}"))
        .env("GOOGLE_CLIENT_ID", CLIENT_ID)
        .env("GOOGLE_CLIENT_SECRET", CLIENT_SECRET)
        .env(
            "OAUTH_REDIRECT_URI",
            format!("http://127.0.0.1:1/cb, {REDIRECT_URI}"),
        );
    let mut child = e2e::process::spawn(command, &log).expect("spawn fake-google");
    let line = e2e::process::wait_for_line(
        &mut child,
        &log,
        "fake-google: client",
        Duration::from_secs(20),
    )
    .expect("start-up line");
    let base = format!("http://127.0.0.1:{port}");
    assert!(line.contains(&format!("{base}/o/oauth2/v2/auth")), "{line}");
    assert!(line.contains(&format!("{base}/token")), "{line}");

    // The second registered redirect URI is accepted: a consent page, not an error page.
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let (url, _) = BasicClient::new(ClientId::new(CLIENT_ID.into()))
        .set_auth_uri(AuthUrl::new(format!("{base}/o/oauth2/v2/auth")).expect("URL"))
        .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.into()).expect("URL"))
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new(CALENDAR.into()))
        .set_pkce_challenge(challenge)
        .url();
    let page = http().get(url.as_str()).send().await.expect("GET auth");
    assert_eq!(page.status(), StatusCode::OK);
    let state = http()
        .get(format!("{base}/_fake/state"))
        .send()
        .await
        .expect("GET state");
    assert_eq!(state.status(), StatusCode::OK);

    e2e::process::terminate(&mut child);
    let status = child.wait().expect("exit status");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
}
