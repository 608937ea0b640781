//! The token endpoint, `POST /token` (form-encoded), for `authorization_code` and
//! `refresh_token` grants.
//!
//! The client authenticates with HTTP Basic (the `oauth2` crate's default; id and secret
//! form-url-encoded first, RFC 6749 §2.3.1) or with `client_id` + `client_secret` in the body;
//! Google accepts both ([`super::FakeGoogle::require_client_auth`] narrows it to one). Errors are RFC 6749 §5.2 JSON bodies; every answer carries
//! `Cache-Control: no-store`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use base64::Engine as _;
use serde::Serialize;
use serde_json::json;

use super::faults::injected_failure;
use super::modes::{ClientAuth, Modes};
use super::state::{CODE_LIFETIME, Grant, State as FakeState, s256};
use super::{AppState, FakeGoogleConfig, TOKEN_PATH, random_token, scope_string};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .layer(axum::middleware::map_response(no_store))
}

async fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// A successful token response, as Google sends it (less the `id_token`).
#[derive(Debug, Serialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// Left out by [`super::FakeGoogle::omit_token_response_scope`].
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    token_type: &'static str,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn invalid_request(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

async fn token(State(shared): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let params: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let param = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let grant_type = param("grant_type").unwrap_or_default();

    let mut state = shared.lock();
    *state
        .counters
        .token_requests
        .entry(grant_type.to_owned())
        .or_default() += 1;
    if let Some(status) = state.faults.failing_token.take() {
        return injected_failure(status);
    }
    if let Err(description) =
        authenticate(&shared.config, &headers, &params, state.modes.client_auth)
    {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &description);
    }
    match grant_type {
        "authorization_code" => redeem_code(&mut state, &shared.config, &param),
        "refresh_token" => refresh(&mut state, &shared.config, &param),
        "" => invalid_request("Missing required parameter: grant_type"),
        other => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("Invalid grant_type: {other}"),
        ),
    }
}

/// Accepts the configured client by HTTP Basic or by body parameters — only by `required`
/// when set; anything else is an `invalid_client`, described by the error.
pub(super) fn authenticate(
    config: &FakeGoogleConfig,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    required: Option<ClientAuth>,
) -> Result<(), String> {
    let basic = headers.get(header::AUTHORIZATION);
    let used = if basic.is_some() {
        ClientAuth::Basic
    } else {
        ClientAuth::Post
    };
    if let Some(required) = required
        && (required != used || (used == ClientAuth::Post && !params.contains_key("client_secret")))
    {
        return Err(format!(
            "Client authentication failed: this client must authenticate with {}.",
            required.name()
        ));
    }
    if required.is_some() && basic.is_some() && params.contains_key("client_secret") {
        // RFC 6749 §2.3: one authentication method per request (checked when strict).
        return Err("The client used more than one authentication method.".into());
    }
    let (id, secret) = match basic {
        Some(value) => match basic_credentials(value) {
            Some(pair) => pair,
            None => return Err("Malformed Authorization header.".into()),
        },
        None => (
            params.get("client_id").cloned().unwrap_or_default(),
            params.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if id.is_empty() {
        return Err("Could not determine client ID from request.".into());
    }
    if params
        .get("client_id")
        .is_some_and(|body_id| *body_id != id)
    {
        return Err("client_id in the body and in the Authorization header differ.".into());
    }
    if id != config.client_id {
        return Err("The OAuth client was not found.".into());
    }
    if secret != config.client_secret {
        return Err("Unauthorized".into());
    }
    Ok(())
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, decoded.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

/// Undoes `application/x-www-form-urlencoded` encoding of one value.
fn form_decode(value: &str) -> String {
    // An encoded value holds no raw `=` or `&`, so it parses as a single key.
    url::form_urlencoded::parse(value.as_bytes())
        .next()
        .map(|(key, _)| key.into_owned())
        .unwrap_or_default()
}

fn redeem_code<'a>(
    state: &mut FakeState,
    config: &FakeGoogleConfig,
    param: &impl Fn(&str) -> Option<&'a str>,
) -> Response {
    let Some(code) = param("code") else {
        return invalid_request("Missing required parameter: code");
    };
    let Some(redirect_uri) = param("redirect_uri") else {
        return invalid_request("Missing required parameter: redirect_uri");
    };
    let Some(issued) = state.codes.get(code) else {
        return invalid_grant("Malformed auth code.");
    };
    if let Some(grant) = issued.redeemed {
        // RFC 6749 §4.1.2: a code used twice revokes what it issued.
        state.grants[grant].revoked = true;
        tracing::info!("fake Google: authorization code reused; its tokens are revoked");
        return invalid_grant("Bad Request: the authorization code was already redeemed.");
    }
    if issued.issued_at.elapsed() > CODE_LIFETIME {
        return invalid_grant("The authorization code has expired.");
    }
    if issued.client_id != config.client_id {
        return invalid_grant("The authorization code was issued to another client.");
    }
    if issued.redirect_uri != redirect_uri {
        return invalid_grant("redirect_uri does not match the one in the authorization request.");
    }
    let Some(verifier) = param("code_verifier") else {
        return invalid_grant("Missing code verifier.");
    };
    if !valid_verifier(verifier) || s256(verifier) != issued.code_challenge {
        return invalid_grant("Invalid code verifier.");
    }

    // Like Google, a second offline consent of the same account only yields a new refresh
    // token when the user was made to consent again (`prompt=consent`).
    let has_refresh_token = state
        .live_grants(&issued.client_id, &issued.account)
        .any(|g| g.refresh_token.is_some());
    let refresh_token = (issued.offline
        && (issued.forced_consent || !has_refresh_token)
        && !state.faults.withhold_refresh_tokens)
        .then(|| format!("1//0{}", random_token(48)));
    let grant_id = state.grants.len();
    let scopes = issued.scopes.clone();
    state.grants.push(Grant {
        client_id: issued.client_id.clone(),
        account: issued.account.clone(),
        scopes: scopes.clone(),
        refresh_token: refresh_token.clone(),
        revoked: false,
    });
    if let Some(issued) = state.codes.get_mut(code) {
        issued.redeemed = Some(grant_id);
    }
    if let Some(refresh_token) = &refresh_token {
        state.refresh_tokens.insert(refresh_token.clone(), grant_id);
    }
    let (access_token, lifetime) = state.mint_access_token(grant_id);
    tracing::info!(
        account = %state.grants[grant_id].account,
        offline = refresh_token.is_some(),
        "fake Google: code exchanged for tokens"
    );
    Json(TokenResponse {
        access_token,
        expires_in: lifetime.as_secs(),
        refresh_token,
        scope: stated_scope(&state.modes, &scopes),
        token_type: "Bearer",
    })
    .into_response()
}

/// The `scope` of a token response, unless the fake is told to leave it out.
fn stated_scope(modes: &Modes, scopes: &[String]) -> Option<String> {
    (!modes.omit_token_response_scope).then(|| scope_string(scopes))
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn refresh<'a>(
    state: &mut FakeState,
    config: &FakeGoogleConfig,
    param: &impl Fn(&str) -> Option<&'a str>,
) -> Response {
    let Some(refresh_token) = param("refresh_token") else {
        return invalid_request("Missing required parameter: refresh_token");
    };
    let known = state.refresh_tokens.get(refresh_token).copied();
    if let Some(id) = known {
        let account = state.grants[id].account.clone();
        *state
            .counters
            .refresh_requests_by_account
            .entry(account)
            .or_default() += 1;
    }
    let grant_id = known.filter(|&id| {
        let grant = &state.grants[id];
        !grant.revoked && grant.client_id == config.client_id
    });
    let Some(grant_id) = grant_id else {
        return invalid_grant("Token has been expired or revoked.");
    };
    let (access_token, lifetime) = state.mint_access_token(grant_id);
    Json(TokenResponse {
        access_token,
        expires_in: lifetime.as_secs(),
        refresh_token: None,
        scope: stated_scope(&state.modes, &state.grants[grant_id].scopes),
        token_type: "Bearer",
    })
    .into_response()
}
