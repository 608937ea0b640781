//! What the hostile-input suite is made of: a case (one hostile request and the answer it must
//! get), a bare HTTP client that sends requests verbatim ([`raw`]), snapshots of everything a
//! request could change ([`snapshot`]), and the api's OpenAPI document, which every expected
//! error code must be listed in.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod raw;
pub mod snapshot;

use std::sync::LazyLock;

use serde_json::Value;

pub use raw::{RawReply, RawRequest};

/// Which server a case is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The api, HS256 user tokens.
    Api,
    /// A second api on the same servers with RS256 tokens from a JWKS endpoint, `JWT_ISSUER`
    /// and `JWT_AUDIENCE` set.
    RsApi,
    /// The oauth-worker showing its own pages.
    Worker,
    /// An oauth-worker replica with `FRONTEND_REDIRECT_URL`: failures are a 303 naming the
    /// reason.
    Redirect,
}

/// An operation of the OpenAPI document: method and path template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op(pub &'static str, pub &'static str);

/// Any path: the house-shaped `404 route_not_found` / `405 method_not_allowed` every unknown
/// path or method gets (documented once, in the document's description of what is left out).
pub const ANY_ROUTE: Op = Op("any", "any");

/// The answer a case must get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The api's error body with `code`, listed for `status` of `op` in the OpenAPI document.
    Api {
        status: u16,
        code: &'static str,
        op: Op,
    },
    /// The api's 429 naming `limit` in `error.details.limit`, with `Retry-After`.
    Limited { limit: &'static str, op: Op },
    /// The api's 400 `invalid_webhook_url` with `error.details.reason`.
    WebhookUrl { reason: &'static str },
    /// The oauth-worker's own failure page with `status`.
    Page { status: u16 },
    /// The oauth-worker's 303 to the frontend with `status=error&reason=<reason>`.
    Redirect { reason: &'static str },
    /// Refused by the HTTP layer (hyper) before any handler: `status`, no house body.
    Protocol { status: u16 },
}

/// One hostile request.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub target: Target,
    pub request: RawRequest,
    pub expect: Expect,
}

impl Case {
    pub fn new(
        name: impl Into<String>,
        target: Target,
        request: RawRequest,
        expect: Expect,
    ) -> Self {
        Self {
            name: name.into(),
            target,
            request,
            expect,
        }
    }

    /// What is wrong with `reply` for this case; empty when it is the expected answer.
    pub fn judge(&self, reply: &RawReply) -> Vec<String> {
        let mut problems = Vec::new();
        if reply.status >= 500 {
            problems.push(format!("answered {} (a 5xx)", reply.status));
        }
        if (200..300).contains(&reply.status) {
            problems.push(format!(
                "answered {}: the hostile request succeeded",
                reply.status
            ));
        }
        let body = reply.json();
        let code = reply.code();
        let mut api_error = |status: u16, wanted: &str, op: Op| {
            if (reply.status, code.as_deref()) != (status, Some(wanted)) {
                problems.push(format!(
                    "expected {status} `{wanted}`, got {} {:?}: {}",
                    reply.status,
                    code,
                    short(&reply.text())
                ));
            }
            if body["success"] != Value::Bool(false) || !body["message"].is_string() {
                problems.push(format!(
                    "not the house error shape: {}",
                    short(&reply.text())
                ));
            }
            // Hostile input is not echoed back at length (a 48 KiB value, say).
            if reply.body.len() > MAX_ERROR_BYTES {
                problems.push(format!(
                    "an error body of {} bytes echoes the input",
                    reply.body.len()
                ));
            }
            if !documented(op, status, wanted) {
                problems.push(format!(
                    "{status} `{wanted}` is not documented for {} {}",
                    op.0, op.1
                ));
            }
        };
        match &self.expect {
            Expect::Api { status, code, op } => api_error(*status, code, *op),
            Expect::Limited { limit, op } => {
                api_error(429, "rate_limited", *op);
                if body["error"]["details"]["limit"] != *limit {
                    problems.push(format!("429 does not name `{limit}`: {body}"));
                }
                if reply
                    .header("retry-after")
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_none()
                {
                    problems.push("429 without a numeric Retry-After".into());
                }
            }
            Expect::WebhookUrl { reason } => {
                api_error(
                    400,
                    "invalid_webhook_url",
                    Op("post", "/api/connectors/{subaccountId}/webhooks"),
                );
                if body["error"]["details"]["reason"] != *reason {
                    problems.push(format!(
                        "expected reason `{reason}`, got {}",
                        body["error"]["details"]["reason"]
                    ));
                }
            }
            Expect::Page { status } => {
                if reply.status != *status {
                    problems.push(format!(
                        "expected a {status} page, got {}: {}",
                        reply.status,
                        short(&reply.text())
                    ));
                }
                if !reply
                    .header("content-type")
                    .is_some_and(|t| t.starts_with("text/html"))
                    || !reply.text().contains("data-status=\"error\"")
                {
                    problems.push(format!("not the failure page: {}", short(&reply.text())));
                }
                if reply.header("referrer-policy") != Some("no-referrer") {
                    problems.push("the page leaks its URL (the code) in Referer".into());
                }
                if reply.text().to_ascii_lowercase().contains("<script") {
                    problems.push("the page reflects a script".into());
                }
            }
            Expect::Redirect { reason } => {
                let location = reply.header("location").unwrap_or_default();
                let pairs: Vec<(String, String)> = url::Url::parse(location)
                    .map(|u| u.query_pairs().into_owned().collect())
                    .unwrap_or_default();
                let has = |k: &str, v: &str| pairs.iter().any(|(a, b)| a == k && b == v);
                if reply.status != 303 || !has("status", "error") || !has("reason", reason) {
                    problems.push(format!(
                        "expected 303 to the frontend with reason={reason}, got {} {location:?}",
                        reply.status
                    ));
                }
            }
            Expect::Protocol { status } => {
                if reply.status != *status {
                    problems.push(format!(
                        "expected the HTTP layer's {status}, got {}: {}",
                        reply.status,
                        short(&reply.text())
                    ));
                }
            }
        }
        problems
    }
}

/// The largest error body a hostile request may get.
const MAX_ERROR_BYTES: usize = 2048;

/// The api's OpenAPI document, as the code generates it now.
static OPENAPI: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(&api::openapi::to_json()).expect("OpenAPI JSON"));

/// Whether `code` is listed for `status` of `op` (`x-error-codes`).
pub fn documented(op: Op, status: u16, code: &str) -> bool {
    if op == ANY_ROUTE {
        return matches!(
            (status, code),
            (404, "route_not_found") | (405, "method_not_allowed")
        );
    }
    OPENAPI["paths"][op.1][op.0]["responses"][status.to_string()]["x-error-codes"]
        .as_array()
        .is_some_and(|codes| codes.iter().any(|c| c == code))
}

/// Enough of a body to recognise it in a failure message.
pub fn short(text: &str) -> String {
    text.chars().take(300).collect()
}
