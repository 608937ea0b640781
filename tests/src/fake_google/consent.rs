//! The authorization endpoint: validates the request like Google, shows a consent page, and
//! redirects back to the client with a code or `error=access_denied`.
//!
//! The page is meant to be clicked by a headless browser; its contract:
//! - `input#account` (name `account`): the Google account to connect, prefilled with
//!   `login_hint`, else the configured default account, else [`super::FALLBACK_ACCOUNT`];
//! - `input#scope-0`, `#scope-1`, … (name `scope`): one checked box per requested scope, in
//!   request order — untick one for a partial grant;
//! - `button#allow` / `button#deny` (name `decision`, values `allow` / `deny`), posting to
//!   [`super::DECISION_PATH`] with the pending request's id in the hidden `pending` field.
//!
//! A request with an unknown client or redirect URI, or an invalid one, gets a 400 error page
//! and no redirect, as at Google (`Error 400: redirect_uri_mismatch`).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use url::Url;

use super::modes::Profile;
use super::state::{IssuedCode, PendingConsent, State as FakeState};
use super::{AUTH_PATH, AppState, DECISION_PATH, FALLBACK_ACCOUNT, FakeGoogle, random_token};

/// What the user does on the consent page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Clicks "Allow".
    Allow {
        /// The account to connect; `None` keeps the prefilled one (`login_hint` or default).
        account: Option<String>,
        /// The scopes left ticked; `None` keeps all requested ones ticked.
        scopes: Option<Vec<String>>,
    },
    /// Clicks "Cancel".
    Deny,
}

impl Decision {
    /// Allow with the prefilled account and every requested scope.
    pub fn allow() -> Self {
        Self::Allow {
            account: None,
            scopes: None,
        }
    }
}

impl FakeGoogle {
    /// Plays the user's part without a browser: opens `auth_url` (as the client built it),
    /// answers the consent page with `decision` through the same HTTP endpoints a browser
    /// uses, and returns where the fake redirects — the client's callback URL with
    /// `code`/`scope`/`state`, or `error=access_denied`/`state`. Fails if the authorization
    /// request is refused (the error page) or the decision is rejected.
    pub async fn consent(&self, auth_url: &str, decision: Decision) -> anyhow::Result<Url> {
        consent_at(&self.http, &self.base_url, auth_url, decision).await
    }
}

/// [`FakeGoogle::consent`] against a fake Google served at `base_url` by another process (the
/// `fake-google` binary, as the benchmarks run it). `http` must not follow redirects.
pub async fn consent_at(
    http: &reqwest::Client,
    base_url: &str,
    auth_url: &str,
    decision: Decision,
) -> anyhow::Result<Url> {
    let page = http
        .get(auth_url)
        .send()
        .await
        .context("opening the consent page")?;
    let status = page.status();
    let html = page.text().await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "the authorization request was refused ({status}): {}",
        page_text(&html)
    );
    let pending = pending_id(&html).context("the consent page has no pending id")?;
    let mut form = vec![("pending", pending)];
    match decision {
        Decision::Deny => form.push(("decision", "deny".to_owned())),
        Decision::Allow { account, scopes } => {
            if let Some(account) = account {
                form.push(("account", account));
            }
            let scopes = match scopes {
                Some(scopes) => scopes,
                None => requested_scopes(auth_url)?,
            };
            form.extend(scopes.into_iter().map(|scope| ("scope", scope)));
            form.push(("decision", "allow".to_owned()));
        }
    }
    let answer = http
        .post(format!("{base_url}{DECISION_PATH}"))
        .form(&form)
        .send()
        .await
        .context("posting the decision")?;
    let status = answer.status();
    let location = answer
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match location {
        Some(location) if status.is_redirection() => {
            Url::parse(&location).with_context(|| format!("redirect to {location:?}"))
        }
        _ => {
            let html = answer.text().await.unwrap_or_default();
            anyhow::bail!(
                "the decision was not accepted ({status}): {}",
                page_text(&html)
            )
        }
    }
}

/// The hidden `pending` field's value on a consent page.
fn pending_id(html: &str) -> Option<String> {
    let marker = r#"name="pending" value=""#;
    let start = html.find(marker)? + marker.len();
    let len = html[start..].find('"')?;
    Some(html[start..start + len].to_owned())
}

fn requested_scopes(auth_url: &str) -> anyhow::Result<Vec<String>> {
    let url = Url::parse(auth_url).with_context(|| format!("{auth_url:?} is not a URL"))?;
    Ok(url
        .query_pairs()
        .find(|(name, _)| name == "scope")
        .map(|(_, scope)| scope.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default())
}

/// An error or consent page's problem, for error reports: the text of its `p#error`.
fn page_text(html: &str) -> String {
    html.find(r#"<p id="error""#)
        .and_then(|start| {
            let rest = &html[start..];
            let text = &rest[rest.find('>')? + 1..];
            text.find("</p>").map(|end| &text[..end])
        })
        .map(|text| html_escape::decode_html_entities(text).into_owned())
        .unwrap_or_else(|| html.chars().take(300).collect())
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(AUTH_PATH, get(authorize))
        .route(DECISION_PATH, post(decide))
}

async fn authorize(
    State(shared): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let config = &shared.config;
    let refuse = |error: &str, detail: &str| error_page(error, detail, &params);

    let Some(client_id) = param("client_id") else {
        return refuse("invalid_request", "Missing required parameter: client_id");
    };
    if client_id != config.client_id {
        return refuse("invalid_client", "The OAuth client was not found.");
    }
    let Some(redirect_uri) = param("redirect_uri") else {
        return refuse(
            "invalid_request",
            "Missing required parameter: redirect_uri",
        );
    };
    if !config.redirect_uris.iter().any(|uri| uri == redirect_uri) {
        return refuse(
            "redirect_uri_mismatch",
            "The redirect_uri is not registered for this OAuth client; it must match one \
             exactly.",
        );
    }
    match param("response_type") {
        Some("code") => {}
        None => {
            return refuse(
                "invalid_request",
                "Missing required parameter: response_type",
            );
        }
        Some(_) => {
            return refuse(
                "unsupported_response_type",
                "Only response_type=code is supported.",
            );
        }
    }
    let mut scopes: Vec<String> = Vec::new();
    for scope in param("scope").unwrap_or_default().split_whitespace() {
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    if scopes.is_empty() {
        return refuse("invalid_request", "Missing required parameter: scope");
    }
    let profile = shared.lock().modes.profile;
    let (valid, invalid): (Vec<&String>, Vec<&String>) =
        scopes.iter().partition(|scope| known_scope(scope, profile));
    if !invalid.is_empty() {
        return refuse(
            "invalid_scope",
            &format!(
                "Some requested scopes were invalid. {{valid={valid:?}, invalid={invalid:?}}}"
            ),
        );
    }
    let Some(code_challenge) = param("code_challenge") else {
        return refuse(
            "invalid_request",
            "Missing required parameter: code_challenge (PKCE is required)",
        );
    };
    if param("code_challenge_method") != Some("S256") {
        return refuse(
            "invalid_request",
            "code_challenge_method must be S256 (plain and missing are not accepted)",
        );
    }
    if code_challenge.len() != 43
        || !code_challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return refuse(
            "invalid_request",
            "Invalid code_challenge: expected 43 base64url characters (S256).",
        );
    }
    let access_type = param("access_type");
    if !matches!(access_type, None | Some("online" | "offline")) {
        return refuse(
            "invalid_request",
            "Invalid access_type: expected online or offline.",
        );
    }

    let account = param("login_hint")
        .map(str::to_owned)
        .or_else(|| config.default_account.clone())
        .unwrap_or_else(|| FALLBACK_ACCOUNT.to_owned());
    let pending = PendingConsent {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        scopes,
        state: params.get("state").cloned(),
        account,
        access_type: access_type.map(str::to_owned),
        prompt: param("prompt").map(str::to_owned),
        include_granted_scopes: param("include_granted_scopes") == Some("true"),
        code_challenge: code_challenge.to_owned(),
    };
    let id = random_token(16);
    let page = consent_page(&id, &pending, None);
    shared.lock().pending.insert(id, pending);
    Html(page).into_response()
}

async fn decide(State(shared): State<AppState>, body: Bytes) -> Response {
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let id = field("pending").unwrap_or_default();
    let Some(pending) = shared.lock().pending.get(id).cloned() else {
        return answered_already();
    };
    let redirect = match field("decision") {
        Some("deny") => {
            if shared.lock().pending.remove(id).is_none() {
                return answered_already();
            }
            tracing::info!(client = %pending.client_id, "fake Google: consent denied");
            back_to_client(
                &pending.redirect_uri,
                &[("error", "access_denied")],
                &pending,
            )
        }
        Some("allow") => {
            let account = field("account")
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .unwrap_or(&pending.account)
                .to_ascii_lowercase();
            if !looks_like_email(&account) {
                let message = format!("{account:?} is not an email address.");
                return again(id, &pending, &message);
            }
            let ticked: Vec<String> = fields
                .iter()
                .filter(|(n, _)| n == "scope")
                .map(|(_, v)| v.clone())
                .collect();
            if let Some(stranger) = ticked.iter().find(|s| !pending.scopes.contains(s)) {
                let message = format!("{stranger:?} was not requested.");
                return again(id, &pending, &message);
            }
            if ticked.is_empty() {
                return again(
                    id,
                    &pending,
                    "Select at least one permission, or choose Cancel.",
                );
            }
            let (code, scope) = {
                let mut state = shared.lock();
                if state.pending.remove(id).is_none() {
                    return answered_already();
                }
                issue_code(&mut state, &pending, &account, &ticked)
            };
            tracing::info!(%account, client = %pending.client_id, %scope, "fake Google: consent allowed");
            back_to_client(
                &pending.redirect_uri,
                &[("code", &code), ("scope", &scope)],
                &pending,
            )
        }
        _ => return again(id, &pending, "Choose Allow or Cancel."),
    };
    match redirect {
        Ok(url) => Redirect::to(url.as_str()).into_response(),
        Err(e) => error_page("invalid_request", &e.to_string(), &HashMap::new()),
    }
}

fn answered_already() -> Response {
    error_page(
        "invalid_request",
        "This consent request is unknown or was already answered. Start again from the \
         application.",
        &HashMap::new(),
    )
}

/// Issues a code for the ticked scopes, plus — with `include_granted_scopes=true`, as at
/// Google — every scope the account already granted this client. Returns the code and the
/// granted scopes, space-separated. Offline access (a refresh token at redemption) is
/// `access_type=offline` at Google; for an OpenID provider, the `offline_access` scope
/// granted with `prompt=consent` (OIDC Core §11: otherwise it is ignored).
fn issue_code(
    state: &mut FakeState,
    pending: &PendingConsent,
    account: &str,
    ticked: &[String],
) -> (String, String) {
    let mut scopes: Vec<String> = pending
        .scopes
        .iter()
        .filter(|s| ticked.contains(s))
        .cloned()
        .collect();
    let profile = state.modes.profile;
    let forced_consent = pending
        .prompt
        .as_deref()
        .is_some_and(|p| p.split_whitespace().any(|p| p == "consent"));
    let offline = match profile {
        Profile::Google => pending.access_type.as_deref() == Some("offline"),
        Profile::Oidc => forced_consent && scopes.iter().any(|s| s == OFFLINE_ACCESS),
    };
    if profile == Profile::Oidc && !offline {
        scopes.retain(|s| s != OFFLINE_ACCESS);
    }
    if pending.include_granted_scopes && profile == Profile::Google {
        let earlier: Vec<String> = state
            .live_grants(&pending.client_id, account)
            .flat_map(|g| g.scopes.iter().cloned())
            .collect();
        for scope in earlier {
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
    }
    let code = format!("4/0A{}", random_token(32));
    let scope = super::scope_string(&scopes);
    state.codes.insert(
        code.clone(),
        IssuedCode {
            client_id: pending.client_id.clone(),
            redirect_uri: pending.redirect_uri.clone(),
            code_challenge: pending.code_challenge.clone(),
            account: account.to_owned(),
            scopes,
            offline,
            forced_consent,
            issued_at: Instant::now(),
            redeemed: None,
        },
    );
    (code, scope)
}

/// The consent page again, with what was wrong; the request stays pending.
fn again(id: &str, pending: &PendingConsent, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Html(consent_page(id, pending, Some(message))),
    )
        .into_response()
}

/// The client's redirect URI with `params` and the request's `state` added to its query.
fn back_to_client(
    redirect_uri: &str,
    params: &[(&str, &str)],
    pending: &PendingConsent,
) -> anyhow::Result<Url> {
    let mut url = Url::parse(redirect_uri)?;
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
        if let Some(state) = &pending.state {
            query.append_pair("state", state);
        }
    }
    Ok(url)
}

fn looks_like_email(account: &str) -> bool {
    match account.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !account.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

fn escape(text: &str) -> String {
    html_escape::encode_quoted_attribute(text).into_owned()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f1f3f4;color:#202124}\
main{max-width:34em;margin:3em auto;background:#fff;border:1px solid #dadce0;border-radius:8px;padding:2em}\
h1{font-size:1.4em;font-weight:500}fieldset{border:0;padding:0;margin:1em 0}\
legend{font-weight:500;margin-bottom:.5em}.scope{display:flex;gap:.5em;margin:.6em 0}\
code{font-size:.85em;color:#5f6368;word-break:break-all}input[type=email]{width:100%;padding:.5em;font-size:1em}\
.buttons{display:flex;flex-direction:row-reverse;gap:1em;margin-top:1.5em}\
button{font-size:1em;padding:.6em 1.5em;border-radius:4px;border:1px solid #dadce0;background:#fff;cursor:pointer}\
button#allow{background:#1a73e8;color:#fff;border-color:#1a73e8}\
[role=alert]{color:#d93025}dl{font-size:.85em;color:#5f6368}dt{font-weight:500}dd{margin:0 0 .4em;word-break:break-all}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body><main>\n{body}</main></body></html>\n",
        escape(title)
    )
}

fn consent_page(id: &str, pending: &PendingConsent, problem: Option<&str>) -> String {
    let mut body = format!(
        "<h1>Fake Google: sign in to continue</h1>\n\
         <p><strong>{}</strong> wants access to your Google Account.</p>\n",
        escape(&pending.client_id)
    );
    if let Some(problem) = problem {
        body.push_str(&format!(
            "<p id=\"error\" role=\"alert\">{}</p>\n",
            escape(problem)
        ));
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"{DECISION_PATH}\">\n\
         <input type=\"hidden\" name=\"pending\" value=\"{}\">\n\
         <p><label for=\"account\">Google account (email address)</label><br>\
         <input type=\"email\" id=\"account\" name=\"account\" value=\"{}\" required autocomplete=\"email\"></p>\n\
         <fieldset><legend>Allow it to:</legend>\n",
        escape(id),
        escape(&pending.account),
    ));
    for (i, scope) in pending.scopes.iter().enumerate() {
        body.push_str(&format!(
            "<div class=\"scope\"><input type=\"checkbox\" id=\"scope-{i}\" name=\"scope\" value=\"{}\" checked>\
             <label for=\"scope-{i}\">{}<br><code>{}</code></label></div>\n",
            escape(scope),
            escape(describe(scope)),
            escape(scope),
        ));
    }
    body.push_str(
        "</fieldset>\n<div class=\"buttons\">\
         <button type=\"submit\" id=\"allow\" name=\"decision\" value=\"allow\">Allow</button>\
         <button type=\"submit\" id=\"deny\" name=\"decision\" value=\"deny\" formnovalidate>Cancel</button>\
         </div>\n</form>\n<details><summary>Request details</summary><dl>\n",
    );
    let details = [
        ("redirect_uri", Some(pending.redirect_uri.as_str())),
        ("access_type", pending.access_type.as_deref()),
        ("prompt", pending.prompt.as_deref()),
        (
            "include_granted_scopes",
            Some(if pending.include_granted_scopes {
                "true"
            } else {
                "false"
            }),
        ),
        ("state", pending.state.as_deref()),
    ];
    for (name, value) in details {
        if let Some(value) = value {
            body.push_str(&format!("<dt>{name}</dt><dd>{}</dd>\n", escape(value)));
        }
    }
    body.push_str("</dl></details>\n");
    page("Sign in - Fake Google Accounts", &body)
}

/// The OpenID Connect scope that asks for a refresh token (OIDC Core §11).
const OFFLINE_ACCESS: &str = "offline_access";

/// Scopes Google knows that this fake may meet: sign-in and Calendar, and `offline_access` as
/// an OpenID provider (Google has no such scope). Anything else — a typo in production's
/// configuration, say — is Google's `invalid_scope` error page.
fn known_scope(scope: &str, profile: Profile) -> bool {
    if scope == OFFLINE_ACCESS {
        return profile == Profile::Oidc;
    }
    const CALENDAR: [&str; 18] = [
        "calendar",
        "calendar.readonly",
        "calendar.events",
        "calendar.events.readonly",
        "calendar.events.owned",
        "calendar.events.owned.readonly",
        "calendar.events.freebusy",
        "calendar.events.public.readonly",
        "calendar.freebusy",
        "calendar.settings.readonly",
        "calendar.addons.execute",
        "calendar.calendarlist",
        "calendar.calendarlist.readonly",
        "calendar.calendars",
        "calendar.calendars.readonly",
        "calendar.acls",
        "calendar.acls.readonly",
        "calendar.app.created",
    ];
    match scope.strip_prefix("https://www.googleapis.com/auth/") {
        Some(name) => {
            CALENDAR.contains(&name) || matches!(name, "userinfo.email" | "userinfo.profile")
        }
        None => matches!(scope, "openid" | "email" | "profile"),
    }
}

/// What Google's consent screen says for the scopes this service uses.
fn describe(scope: &str) -> &str {
    match scope {
        "openid" => "Associate you with your personal info on Google",
        OFFLINE_ACCESS => "Keep access while you are not using the app",
        "email" | "https://www.googleapis.com/auth/userinfo.email" => {
            "See your primary Google Account email address"
        }
        "profile" | "https://www.googleapis.com/auth/userinfo.profile" => {
            "See your personal info, including any personal info you've made publicly available"
        }
        "https://www.googleapis.com/auth/calendar" => {
            "See, edit, share, and permanently delete all the calendars you can access using Google Calendar"
        }
        "https://www.googleapis.com/auth/calendar.readonly" => {
            "See and download any calendar you can access using your Google Calendar"
        }
        "https://www.googleapis.com/auth/calendar.events" => {
            "View and edit events on all your calendars"
        }
        other => other,
    }
}

/// Google's "Access blocked" page: 400, the error code, and the request's parameters.
fn error_page(error: &str, detail: &str, params: &HashMap<String, String>) -> Response {
    tracing::info!(%error, %detail, "fake Google: authorization request refused");
    let mut body = format!(
        "<h1>Access blocked: this app's request is invalid</h1>\n\
         <p><strong>Error 400: {}</strong></p>\n<p id=\"error\">{}</p>\n",
        escape(error),
        escape(detail),
    );
    if !params.is_empty() {
        let mut names: Vec<&String> = params.keys().collect();
        names.sort();
        body.push_str("<details><summary>Request details</summary><dl>\n");
        for name in names {
            body.push_str(&format!(
                "<dt>{}</dt><dd>{}</dd>\n",
                escape(name),
                escape(&params[name])
            ));
        }
        body.push_str("</dl></details>\n");
    }
    (
        StatusCode::BAD_REQUEST,
        Html(page(&format!("Error 400: {error}"), &body)),
    )
        .into_response()
}
