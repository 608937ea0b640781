//! Extractors that turn a request into valid domain values or an [`ApiError`] in the house
//! shape — axum's own rejections answer with plain text, which the spec's clients cannot read.
//!
//! - [`SubaccountPath`] / [`ConnectorPath`]: path segments parsed into `SubaccountId` and
//!   `ConnectorId`.
//! - [`ApiJson`]: `Content-Type: application/json` in UTF-8 (415 otherwise, a `charset`
//!   other than `utf-8` included), at most the configured number of bytes (413), and a JSON
//!   object whose errors name the field (400; an array or any other non-object is refused,
//!   never read positionally into the fields).

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use schemas::{ConnectorId, DecodeError, SubaccountId};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The configured body cap (`API_MAX_BODY_BYTES`), for the 413 message. The cap itself is
/// enforced by the `DefaultBodyLimit` layer while the body streams in.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// `{subaccountId}` of the route, valid.
#[derive(Debug, Clone)]
pub struct SubaccountPath(pub SubaccountId);

/// `{subaccountId}/{connectorId}` of the route, both valid.
#[derive(Debug, Clone)]
pub struct ConnectorPath {
    pub subaccount: SubaccountId,
    pub connector: ConnectorId,
}

async fn path_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    name: &'static str,
) -> Result<String, ApiError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        // Only a segment that is not UTF-8 once percent-decoded gets here.
        .map_err(|_| ApiError::InvalidField {
            field: Some(name.to_owned()),
            reason: "the path is not valid UTF-8".into(),
        })?;
    params
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .ok_or_else(|| ApiError::Internal(format!("route has no {{{name}}} parameter")))
}

impl<S: Send + Sync> FromRequestParts<S> for SubaccountPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = path_param(parts, state, "subaccountId").await?;
        SubaccountId::parse(&raw)
            .map(Self)
            .map_err(|error| ApiError::InvalidPath {
                field: "subaccountId",
                error,
            })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ConnectorPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let SubaccountPath(subaccount) = SubaccountPath::from_request_parts(parts, state).await?;
        let raw = path_param(parts, state, "connectorId").await?;
        let connector = ConnectorId::parse(&raw).map_err(|error| ApiError::InvalidPath {
            field: "connectorId",
            error,
        })?;
        Ok(Self {
            subaccount,
            connector,
        })
    }
}

/// A JSON body of type `T`, or the precise reason it is not one.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
    BodyLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = BodyLimit::from_ref(state).0;
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::InvalidJson {
                        field: None,
                        reason: "the body could not be read".into(),
                        line: 0,
                        column: 0,
                    }
                }
            })?;
        parse_json_object(&bytes).map(Self)
    }
}

/// `application/json` or an `application/*+json` type, whose `charset` parameter, if any, is
/// UTF-8 (JSON exchanged between systems is UTF-8, RFC 8259 §8.1: a body declared as another
/// charset would be read as something it is not).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    let utf8 = parts.all(|parameter| match parameter.split_once('=') {
        Some((name, charset)) if name.trim().eq_ignore_ascii_case("charset") => {
            let charset = charset.trim().trim_matches('"');
            // `utf8` is the WHATWG Encoding Standard's other label for UTF-8.
            charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    });
    json && utf8
}

/// [`parse_json`] for a body that must be a JSON object: serde reads a struct from an array
/// too (`["a@example.com", true]` positionally into its fields), which no caller means.
pub fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Malformed is malformed whatever it starts with: the syntax error, with its position.
        schemas::json::decode::<serde::de::IgnoredAny>(bytes).map_err(into_api_error)?;
        let got = match first {
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            _ => "a number",
        };
        return Err(ApiError::InvalidField {
            field: None,
            reason: format!("expected a JSON object, got {got}"),
        });
    }
    parse_json(bytes)
}

/// Deserializes `bytes`, naming the field of the first problem (`userEmail`, `config.x`).
/// The decoding and its error classification are the contracts crate's, shared with events.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    schemas::json::decode(bytes).map_err(into_api_error)
}

fn into_api_error(error: DecodeError) -> ApiError {
    let field_at = |path: &str| (path != "." && !path.is_empty()).then(|| path.to_owned());
    match error {
        DecodeError::Syntax {
            path,
            line,
            column,
            message,
        } => ApiError::InvalidJson {
            field: field_at(&path),
            reason: message,
            line,
            column,
        },
        DecodeError::UnknownField {
            path,
            field,
            message,
        } => ApiError::UnknownField {
            field: join(field_at(&path).as_deref(), &field),
            message,
        },
        DecodeError::MissingField {
            path,
            field,
            message,
        } => ApiError::MissingField {
            field: join(field_at(&path).as_deref(), &field),
            message,
        },
        DecodeError::InvalidValue { path, message } if is_email_field(&path) => {
            ApiError::InvalidEmail {
                field: path,
                reason: message,
            }
        }
        DecodeError::InvalidValue { path, message } => ApiError::InvalidField {
            field: field_at(&path),
            reason: friendlier(&message),
        },
        // Only envelopes have a type and version; a request body never yields these.
        other @ (DecodeError::WrongType { .. } | DecodeError::UnsupportedVersion { .. }) => {
            ApiError::InvalidField {
                field: None,
                reason: other.to_string(),
            }
        }
    }
}

/// Whether the field at `path` holds an email address (a `UserEmail`): its problems answer
/// `invalid_email`.
fn is_email_field(path: &str) -> bool {
    let name = path.rsplit('.').next().unwrap_or(path);
    matches!(name, "userEmail" | "googleEmail")
}

/// The full path of field `name` reported at `path`: serde_path_to_error reports an unknown
/// field at the field itself and a missing one at its parent.
fn join(path: Option<&str>, name: &str) -> String {
    match path {
        Some(path) if path == name || path.ends_with(&format!(".{name}")) => path.to_owned(),
        Some(parent) => format!("{parent}.{name}"),
        None => name.to_owned(),
    }
}

/// serde names our Rust types ("expected struct ConnectBody"); callers know a JSON object.
fn friendlier(message: &str) -> String {
    match message.find("expected struct ") {
        Some(cut) => format!("{}expected a JSON object", &message[..cut]),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::UserEmail;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        user_email: UserEmail,
        #[allow(dead_code)]
        send_email: Option<bool>,
    }

    fn err(raw: &str) -> ApiError {
        parse_json::<Body>(raw.as_bytes()).expect_err("should fail")
    }

    #[test]
    fn problems_name_their_field() {
        match err(r#"{"userEmail": "x@example.com", "surprise": 1}"#) {
            ApiError::UnknownField { field, message } => {
                assert_eq!(field, "surprise");
                assert!(
                    message.contains("userEmail"),
                    "lists accepted fields: {message}"
                );
            }
            other => panic!("{other:?}"),
        }
        match err(r#"{"sendEmail": true}"#) {
            ApiError::MissingField { field, .. } => assert_eq!(field, "userEmail"),
            other => panic!("{other:?}"),
        }
        match err(r#"{"userEmail": "not-an-address"}"#) {
            ApiError::InvalidEmail { field, reason } => {
                assert_eq!(field, "userEmail");
                assert!(reason.contains("not a valid email address"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match err(r#"{"userEmail": "\"<script>\"@example.com"}"#) {
            ApiError::InvalidEmail { field, reason } => {
                assert_eq!(field, "userEmail");
                assert!(reason.contains("quoted"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match err(r#"{"userEmail": "x@example.com", "sendEmail": "yes"}"#) {
            ApiError::InvalidField { field, .. } => assert_eq!(field.as_deref(), Some("sendEmail")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_json_says_where() {
        match err(r#"{"userEmail": "x@example.com", "sendEmail": tru}"#) {
            ApiError::InvalidJson {
                field,
                line,
                column,
                ..
            } => {
                assert_eq!(field.as_deref(), Some("sendEmail"));
                assert_eq!((line, column), (1, 48));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(err(""), ApiError::InvalidJson { .. }));
        assert!(matches!(
            err(r#"{"userEmail": "x@example.com"} trailing"#),
            ApiError::InvalidJson { .. }
        ));
        let array = err("[]").to_string();
        assert!(array.contains("expected a JSON object"), "{array}");
    }

    #[test]
    fn only_an_object_is_a_body() {
        let object = |raw: &str| parse_json_object::<Body>(raw.as_bytes());
        assert!(object(r#" {"userEmail": "x@example.com"}"#).is_ok());
        // serde alone would read this array positionally into the struct.
        assert!(parse_json::<Body>(br#"["x@example.com", true]"#).is_ok());
        for (raw, got) in [
            (r#"["x@example.com", true]"#, "an array"),
            (" []", "an array"),
            (r#""x@example.com""#, "a string"),
            ("42", "a number"),
            ("true", "a boolean"),
            ("null", "null"),
        ] {
            match object(raw) {
                Err(ApiError::InvalidField {
                    field: None,
                    reason,
                }) => {
                    assert_eq!(
                        reason,
                        format!("expected a JSON object, got {got}"),
                        "{raw}"
                    );
                }
                other => panic!("{raw}: {other:?}"),
            }
        }
        // Malformed JSON stays a syntax error, whatever it starts with.
        assert!(matches!(object("[1,"), Err(ApiError::InvalidJson { .. })));
        assert!(matches!(object(""), Err(ApiError::InvalidJson { .. })));
    }

    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("application/json;charset=UTF-8", true),
            ("application/json; charset=\"utf-8\"", true),
            ("application/json; charset=iso-8859-1", false),
            ("application/json; Charset=UTF-16", false),
            ("application/json; charset=utf8", true),
            ("application/json; charset=latin1", false),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            headers.insert(header::CONTENT_TYPE, value.parse().expect("header"));
            assert_eq!(is_json(&headers), ok, "{value}");
        }
    }
}
