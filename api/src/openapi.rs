//! The api's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations
//! and the request and response types, served at `GET /openapi.json` (no auth) with Swagger UI
//! at `/docs` (its assets are compiled into the binary: nothing is fetched from the internet).
//!
//! The committed `api/openapi.json` is exactly [`to_json`]; `cargo run -p api --bin
//! write-openapi` rewrites it, and the e2e test `openapi` fails while the two differ.
//!
//! **Failures come from one place**: each endpoint's [`Failures`] below (status → the
//! `error.code`s answered with it), which the handler's annotation names. Each failure
//! response lists its codes in its description and in `x-error-codes`. The e2e test
//! `every_documented_status_is_produced_and_nothing_else` makes a real request for every
//! documented (method, path, status) and fails on a status it cannot produce or one it meets
//! undocumented. `500` is documented only where a caller can cause it (an oauth-worker that
//! refuses a request it should accept); elsewhere an internal error would be a bug.
//!
//! Not documented, on purpose: `/healthz`, `/readyz` and `/metrics` (service-kit's probes
//! for orchestrators and Prometheus, not the frontend's API), the try-it page and its `/dev/...`
//! helpers (served only with `API_DEV_MODE`, for a developer's machine), `/openapi.json` and
//! `/docs` themselves, and the house-shaped `404 route_not_found` / `405 method_not_allowed` that any
//! unknown path or method gets.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Deprecated, Ref, RefOr};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::routes::{connectors, disconnect, google_calendar, metadata_update, webhooks};
use crate::state::AppState;

/// Where the document is served.
pub const SPEC_PATH: &str = "/openapi.json";
/// Where Swagger UI is served (`/docs` redirects to `/docs/`).
pub const DOCS_PATH: &str = "/docs";
/// The security scheme of user tokens (`Authorization: Bearer <JWT>`).
pub const USER_TOKEN: &str = "userToken";
/// The security schemes of service tokens: `X-Service-Token`, or `Authorization: Bearer`.
pub const SERVICE_TOKEN: &str = "serviceToken";
pub const SERVICE_BEARER: &str = "serviceBearer";
/// The deprecated operation, marked `deprecated: true`.
const DEPRECATED_PATH: &str = "/api/connectors/{subaccountId}/metadata/update";

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Google Calendar connector API",
        description = "The REST surface the frontend calls: connect a subaccount's Google Calendar, \
manage its connectors, disconnect accounts, register webhooks. Every answer is JSON: `{\"success\": true, \"message\"?, \
\"data\"}` on success, `{\"success\": false, \"message\", \"error\": {\"code\", \"details\"}}` on failure, \
where `error.code` is stable and each failure response lists the codes it can carry. Checks run in \
this order: authentication (401/503), input (400/413/415), permission (403), existence (404); a \
refused request changes nothing. A request body is one JSON object sent as `application/json` in \
UTF-8 (a `charset` other than `utf-8` is a 415). Every answer carries \
`X-Content-Type-Options: nosniff`. Health probes (`/healthz`, `/readyz`, `/metrics`) are not part \
of this document. To try a call here, press Authorize and paste a user token (see the `userToken` \
scheme for how to get one on a local run)."
    ),
    paths(
        google_calendar::handle_google_calendar,
        connectors::add_connector,
        connectors::list_connectors,
        connectors::get_connector,
        disconnect::disconnect_all,
        disconnect::disconnect_one,
        disconnect::get_operation,
        metadata_update::update_metadata,
        webhooks::register_webhook,
        webhooks::list_webhooks,
        webhooks::delete_webhook,
        webhooks::list_deliveries,
    ),
    components(schemas(crate::error::ErrorBody<'static>)),
    modifiers(&SecuritySchemes, &Deprecations),
    tags(
        (name = "connect", description = "Connecting a Google Calendar account"),
        (name = "connectors", description = "A subaccount's connectors"),
        (name = "disconnect", description = "Disconnecting Google accounts, asynchronously"),
        (name = "webhooks", description = "Signed notifications of connection events to a subaccount's endpoints"),
        (name = "deprecated", description = "Kept for the reference platform; do not build on it"),
    )
)]
pub struct ApiDoc;

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The served bytes: pretty JSON with a final newline, the committed `api/openapi.json`.
pub fn to_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"OpenAPI document: {e}\"}}"));
    json.push('\n');
    json
}

/// `GET /openapi.json` and Swagger UI under `/docs`, neither behind authentication.
pub fn router() -> Router<AppState> {
    static SPEC: LazyLock<String> = LazyLock::new(to_json);
    let docs: Router<AppState> = SwaggerUi::new(DOCS_PATH)
        // No spec validator badge: it would send the document to validator.swagger.io.
        .config(Config::from(SPEC_PATH).validator_url("none"))
        .into();
    let docs = docs.layer(axum::middleware::map_response(docs_headers));
    Router::new()
        .route(
            SPEC_PATH,
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    SPEC.as_str(),
                )
                    .into_response()
            }),
        )
        .merge(docs)
}

/// Swagger UI's policy: its scripts, styles and images from this origin only (its stylesheet
/// inlines its icons as `data:` images), requests to this origin only (the document, "Try it
/// out"), no inline script, no frames, no plugins, no form posts, never framed.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                            img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                            form-action 'none'; frame-ancestors 'none'";

/// The docs page's security headers, on each of its files.
async fn docs_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Declares the two ways to authenticate.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            USER_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A user's JWT: `sub`, `subaccountIds` (or role `admin`), `permissions` \
                         containing `connectors:manage`, `exp`. Your platform's auth server \
                         issues them (HS256 with `JWT_SECRET`, or RS256/ES256 from `JWT_JWKS_URL`). \
                         On a local run: `cargo run -q -p api --bin mint-dev-token -- <subaccountId>` \
                         prints one; with `API_DEV_MODE=true` (what `scripts/run-local.sh` runs), \
                         `POST /dev/token` `{\"subaccountId\"}` answers one for a subaccount.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SERVICE_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Service-Token",
                "A service token, validated by the auth server or the configured token list.",
            ))),
        );
        components.add_security_scheme(
            SERVICE_BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The same service token in `Authorization: Bearer <token>` (when both \
                         headers are sent they must agree).",
                    ))
                    .build(),
            ),
        );
    }
}

/// Marks the deprecated metadata update `deprecated: true`.
struct Deprecations;

impl Modify for Deprecations {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(item) = openapi.paths.paths.get_mut(DEPRECATED_PATH) {
            for operation in [&mut item.post].into_iter().flatten() {
                mark_deprecated(operation);
            }
        }
    }
}

fn mark_deprecated(operation: &mut Operation) {
    operation.deprecated = Some(Deprecated::True);
}

// ---------------------------------------------------------------------------------------------
// Path parameters.

/// `{subaccountId}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub struct SubaccountParam {
    /// The subaccount: 24 hexadecimal characters (a MongoDB ObjectId).
    #[param(pattern = "^[0-9a-fA-F]{24}$", example = "68cf05f060d294db17c0685e")]
    pub subaccount_id: String,
}

/// `{connectorId}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub struct ConnectorParam {
    /// The connector: 1-64 of a-z, 0-9 and `-`.
    #[param(pattern = "^[a-z0-9-]{1,64}$", example = "google-calendar")]
    pub connector_id: String,
}

/// `{googleEmail}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub struct GoogleEmailParam {
    /// The connected Google account to disconnect.
    #[param(format = "email", example = "googleuser@gmail.com")]
    pub google_email: String,
}

/// `{operationId}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub struct OperationParam {
    /// The operation id a disconnect answered with.
    #[param(example = "0199a3c2-7b1e-7c3a-9d2f-5e8b1a4c6d70")]
    pub operation_id: String,
}

/// `{webhookId}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub struct WebhookParam {
    /// The id registration answered with.
    #[param(example = "0199a3c2-7b1e-7c3a-9d2f-5e8b1a4c6d70")]
    pub webhook_id: String,
}

/// `?limit=`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesLimit {
    /// How many attempts, newest first: 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// Documentation-only shapes of bodies the handlers build as JSON values.

/// A connector of a subaccount, as the platform's services return it (Mongoose's JSON).
/// Fields written by other systems are returned as they are.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Connector)]
pub struct ConnectorDoc {
    /// Hex ObjectId.
    #[serde(rename = "_id")]
    pub id: String,
    pub subaccount_id: String,
    #[schema(example = "google-calendar")]
    pub connector_id: String,
    #[schema(example = "calendar")]
    pub connector_type: String,
    /// Free-form configuration, as given when the connector was added.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// What the connector's workers record; `{}` until the first event. For `google-calendar`:
    /// the spec's `calendarId`, `userEmail`, `googleEmail`, `connectedAt` (ISO 8601) and
    /// `isConnected`, describing the most recently connected account that is still connected
    /// (or, when none is, the most recently connected one, with `reason` and
    /// `reauthRequiredAt`, or `disconnectedAt`), then `connections`: every Google account of
    /// the subaccount in that same shape, keyed by `googleEmail`.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub is_active: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A disconnect, as recorded.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Operation)]
pub struct OperationDoc {
    pub operation_id: String,
    /// `disconnect`.
    pub kind: String,
    pub status: OperationStatusDoc,
    pub subaccount_id: String,
    /// The account concerned; `null`: every connected account.
    #[schema(format = "email")]
    pub google_email: Option<String>,
    /// The accounts disconnected (once `done`).
    pub disconnected: Vec<String>,
    /// For each account disconnected, what the provider answered to the revocation. An
    /// account whose revocation was `refused` (e.g. `invalid_client`) is disconnected here
    /// all the same, but its grant may still be live at the provider.
    pub revocations: Vec<AccountRevocationDoc>,
    /// Why it failed (only when `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A webhook endpoint (never its secret, except once in the registration's answer).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Webhook)]
pub struct WebhookDoc {
    pub id: String,
    #[schema(format = "uri")]
    pub url: String,
    /// Subscribed event types.
    #[schema(example = json!(["connection-succeeded", "connection-failed", "connection-disconnected"]))]
    pub events: Vec<String>,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub description: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// When deliveries were stopped (only when disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, format = DateTime)]
    pub disabled_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub disabled_reason: Option<String>,
    /// The signing secret: only in the answer to registration, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub secret: Option<String>,
}

/// One delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WebhookDelivery)]
pub struct WebhookDeliveryDoc {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub attempt: i64,
    #[schema(format = DateTime)]
    pub attempted_at: String,
    /// The endpoint's HTTP status, when it answered.
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
    /// `delivered`, `retrying`, `failed` or `endpoint_disabled`.
    pub outcome: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = OperationStatus)]
pub enum OperationStatusDoc {
    Pending,
    Done,
    Failed,
}

/// One account's revocation in a disconnect.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AccountRevocation)]
pub struct AccountRevocationDoc {
    #[schema(format = "email")]
    pub google_email: String,
    pub outcome: RevocationOutcomeDoc,
    /// The provider's refusal (its error code and description), only when `refused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub error: Option<String>,
}

/// `revoked`; `already_invalid` (the provider no longer knew the token: expired or revoked
/// before); `refused` (the provider refused for good; disconnected here anyway).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RevocationOutcome)]
pub enum RevocationOutcomeDoc {
    Revoked,
    AlreadyInvalid,
    Refused,
}

// ---------------------------------------------------------------------------------------------
// Failures: the one place each endpoint's error statuses and codes are listed.

/// One endpoint's failures: status → the `error.code`s answered with it, and the headers every
/// answer of the endpoint carries.
#[derive(Debug, Clone, Default)]
pub struct Failures {
    by_status: BTreeMap<u16, Vec<&'static str>>,
    headers: Vec<(&'static str, String)>,
    /// A sentence after a status's codes, saying when it is answered.
    notes: BTreeMap<u16, Vec<&'static str>>,
}

const SUCCESSOR: (&str, &str) = (
    "Link",
    "`<.../handlegooglecalendar>; rel=\"successor-version\"`: the connect flow records the \
     metadata by itself.",
);

fn deprecation() -> String {
    format!(
        "`@{}` (RFC 9745): deprecated since that instant.",
        metadata_update::DEPRECATED_SINCE_UNIX
    )
}

impl Failures {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `codes` under `status`.
    pub fn with(mut self, status: StatusCode, codes: &[&'static str]) -> Self {
        let entry = self.by_status.entry(status.as_u16()).or_default();
        for code in codes {
            if !entry.contains(code) {
                entry.push(code);
            }
        }
        self
    }

    /// Adds a sentence to `status`'s description.
    fn note(mut self, status: StatusCode, note: &'static str) -> Self {
        let entry = self.notes.entry(status.as_u16()).or_default();
        if !entry.contains(&note) {
            entry.push(note);
        }
        self
    }

    /// A body with an email field (`userEmail`, `googleEmail`; schemas::UserEmail).
    fn email_field(self) -> Self {
        self.with(StatusCode::BAD_REQUEST, &["invalid_email"]).note(
            StatusCode::BAD_REQUEST,
            "`invalid_email`: not an address the mailer can deliver to: a quoted local part \
             (`\"...\"@`), a non-ASCII local part, a domain literal (`a@[10.0.0.5]`) or a domain \
             that is not a valid IDNA name; an internationalized domain (`user@bücher.example`) \
             is accepted and mailed to its ASCII form.",
        )
    }

    /// A header every answer carries, failures included.
    fn header(mut self, (name, description): (&'static str, &str)) -> Self {
        self.headers.push((name, description.to_owned()));
        self
    }

    /// The statuses and their codes.
    pub fn statuses(&self) -> impl Iterator<Item = (u16, &[&'static str])> {
        self.by_status
            .iter()
            .map(|(status, codes)| (*status, codes.as_slice()))
    }

    /// `Authorization: Bearer <JWT>` (service_kit::auth).
    fn user_token(self) -> Self {
        self.with(
            StatusCode::UNAUTHORIZED,
            &["missing_token", "invalid_token", "token_expired"],
        )
        .with(StatusCode::SERVICE_UNAVAILABLE, &["auth_unavailable"])
    }

    /// A service token (crate::service_auth).
    fn service_token(self) -> Self {
        self.with(
            StatusCode::UNAUTHORIZED,
            &["service_token_required", "invalid_service_token"],
        )
        .with(
            StatusCode::SERVICE_UNAVAILABLE,
            &["service_auth_unavailable", "service_auth_not_configured"],
        )
    }

    /// `{subaccountId}` (and any later segment that is not UTF-8).
    fn subaccount_path(self) -> Self {
        self.with(
            StatusCode::BAD_REQUEST,
            &["invalid_subaccount_id", "invalid_field"],
        )
    }

    /// `{subaccountId}/{connectorId}`.
    fn connector_path(self) -> Self {
        self.subaccount_path()
            .with(StatusCode::BAD_REQUEST, &["invalid_connector_id"])
    }

    /// An `ApiJson` body.
    fn json_body(self) -> Self {
        self.with(
            StatusCode::BAD_REQUEST,
            &[
                "invalid_json",
                "unknown_field",
                "missing_field",
                "invalid_field",
            ],
        )
        .note(
            StatusCode::BAD_REQUEST,
            "The body must be one JSON object: an array or any other value is `invalid_field` \
             (`details.field` null).",
        )
        .with(StatusCode::PAYLOAD_TOO_LARGE, &["payload_too_large"])
        .with(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &["unsupported_media_type"],
        )
        .note(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "`Content-Type` is not `application/json` (or `application/*+json`), or names a \
             `charset` other than `utf-8`.",
        )
    }

    /// `AuthenticatedUser::authorize` for `connectors:manage`.
    fn user_forbidden(self) -> Self {
        self.with(
            StatusCode::FORBIDDEN,
            &["subaccount_forbidden", "permission_denied"],
        )
    }

    /// A rate limit (api/src/limits.rs, or the oauth-worker's connect limits).
    fn rate_limited(self) -> Self {
        self.with(StatusCode::TOO_MANY_REQUESTS, &["rate_limited"])
    }

    /// MongoDB did not answer.
    fn database(self) -> Self {
        self.with(StatusCode::SERVICE_UNAVAILABLE, &["database_unavailable"])
    }

    /// The OpenAPI responses, keyed by status.
    pub fn responses(&self) -> BTreeMap<String, RefOr<Response>> {
        self.by_status
            .iter()
            .map(|(status, codes)| (status.to_string(), self.response(*status, codes).into()))
            .collect()
    }

    fn response(&self, status: u16, codes: &[&'static str]) -> Response {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let listed = codes
            .iter()
            .map(|code| format!("`{code}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut description = format!("{reason}; `error.code`: {listed}.");
        for note in self.notes.get(&status).into_iter().flatten() {
            description.push(' ');
            description.push_str(note);
        }
        let mut response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(RefOr::Ref(Ref::from_schema_name("ErrorResponse")))),
            )
            .extensions(Some(Extensions::from_iter([(
                "x-error-codes",
                serde_json::json!(codes),
            )])));
        let mut headers = self.headers.clone();
        if status == 401 {
            headers.push((
                "WWW-Authenticate",
                "The scheme to authenticate with (RFC 9110).".to_owned(),
            ));
        }
        if status == 429 {
            headers.push((
                "Retry-After",
                "Whole seconds until a retry can succeed (the same as `error.details.retryAfterSeconds`); \
                 `error.details.limit` names the limit."
                    .to_owned(),
            ));
        }
        if status == 503 {
            headers.push((
                "Retry-After",
                "`1` when retrying can succeed: with every code but `auth_unavailable` and \
                 `service_auth_not_configured`."
                    .to_owned(),
            ));
        }
        for (name, description) in headers {
            response = response.header(name, string_header(&description));
        }
        response.build()
    }
}

fn string_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Object::with_type(Type::String))
        .description(Some(description))
        .build()
}

macro_rules! endpoint_failures {
    ($($(#[$meta:meta])* $name:ident = $failures:expr;)+) => {$(
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name;

        impl $name {
            pub fn failures() -> Failures {
                $failures
            }
        }

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                Self::failures().responses()
            }
        }
    )+};
}

endpoint_failures! {
    /// `POST /api/connectors/{subaccountId}/handlegooglecalendar`.
    ConnectFailures = Failures::new()
        .user_token()
        .subaccount_path()
        .json_body()
        .email_field()
        .user_forbidden()
        // Emailing the link to another address without `connectors:invite`.
        .with(StatusCode::FORBIDDEN, &["invite_not_permitted"])
        .with(StatusCode::NOT_FOUND, &["connector_not_found"])
        // connect_per_subaccount, emails_per_subaccount, emails_per_recipient,
        // live_states_per_subaccount.
        .rate_limited()
        .database()
        .with(
            StatusCode::SERVICE_UNAVAILABLE,
            &["oauth_worker_unavailable", "oauth_worker_timeout", "state_store_unavailable"],
        )
        .with(StatusCode::BAD_GATEWAY, &["oauth_worker_bad_reply"])
        // The oauth-worker refused the request as invalid: a version mismatch between services.
        .with(StatusCode::INTERNAL_SERVER_ERROR, &["internal_error"]);

    /// `POST /api/connectors/{subaccountId}`.
    AddConnectorFailures = Failures::new()
        .user_token()
        .subaccount_path()
        .json_body()
        .user_forbidden()
        .with(StatusCode::CONFLICT, &["connector_exists"])
        .database();

    /// `GET /api/connectors/{subaccountId}`.
    ListConnectorsFailures = Failures::new()
        .user_token()
        .subaccount_path()
        .user_forbidden()
        .database();

    /// `GET /api/connectors/{subaccountId}/{connectorId}`.
    GetConnectorFailures = Failures::new()
        .user_token()
        .connector_path()
        .user_forbidden()
        .with(StatusCode::NOT_FOUND, &["connector_not_found"])
        .database();

    /// Both disconnects: `invalid_field` also for a connector other than `google-calendar`,
    /// `invalid_email` for a `{googleEmail}` that is not an address.
    DisconnectFailures = Failures::new()
        .user_token()
        .connector_path()
        .email_field()
        .user_forbidden()
        .with(StatusCode::NOT_FOUND, &["connector_not_found"])
        .database()
        .with(StatusCode::SERVICE_UNAVAILABLE, &["event_stream_unavailable"]);

    /// `GET /api/connectors/{subaccountId}/operations/{operationId}`.
    OperationFailures = Failures::new()
        .user_token()
        .subaccount_path()
        .user_forbidden()
        .with(StatusCode::NOT_FOUND, &["operation_not_found"])
        .database();

    /// `POST /api/connectors/{subaccountId}/webhooks`: `invalid_field` also for `events` and
    /// `description`.
    RegisterWebhookFailures = Failures::new()
        .user_token()
        .subaccount_path()
        .json_body()
        .with(StatusCode::BAD_REQUEST, &["invalid_webhook_url"])
        .user_forbidden()
        .with(StatusCode::CONFLICT, &["webhook_limit_reached"])
        // webhook_management_per_caller.
        .rate_limited()
        .database();

    /// `GET /api/connectors/{subaccountId}/webhooks`.
    ListWebhooksFailures = Failures::new()
        .user_token()
        .subaccount_path()
        .user_forbidden()
        // webhook_management_per_caller.
        .rate_limited()
        .database();

    /// `DELETE /api/connectors/{subaccountId}/webhooks/{webhookId}`.
    DeleteWebhookFailures = Failures::new()
        .user_token()
        .subaccount_path()
        .user_forbidden()
        .with(StatusCode::NOT_FOUND, &["webhook_not_found"])
        // webhook_management_per_caller.
        .rate_limited()
        .database();

    /// `GET /api/connectors/{subaccountId}/webhooks/{webhookId}/deliveries`: `invalid_field`
    /// also for `limit`.
    DeliveriesFailures = Failures::new()
        .user_token()
        .subaccount_path()
        .user_forbidden()
        .with(StatusCode::NOT_FOUND, &["webhook_not_found"])
        // webhook_management_per_caller.
        .rate_limited()
        .database();

    /// `POST /api/connectors/{subaccountId}/metadata/update` (deprecated).
    MetadataUpdateFailures = Failures::new()
        .service_token()
        .subaccount_path()
        .json_body()
        .email_field()
        .with(StatusCode::FORBIDDEN, &["insufficient_permission"])
        .with(StatusCode::NOT_FOUND, &["connector_not_found"])
        // metadata_update_per_caller.
        .rate_limited()
        .database()
        .with(StatusCode::SERVICE_UNAVAILABLE, &["event_stream_unavailable"])
        .header(("Deprecation", &deprecation()))
        .header(SUCCESSOR);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn spec() -> Value {
        serde_json::from_str(&to_json()).expect("the document is JSON")
    }

    #[test]
    fn it_is_openapi_3_1_with_both_auth_schemes() {
        let spec = spec();
        assert!(
            spec["openapi"]
                .as_str()
                .expect("version")
                .starts_with("3.1"),
            "{}",
            spec["openapi"]
        );
        let schemes = &spec["components"]["securitySchemes"];
        assert_eq!(schemes[USER_TOKEN]["scheme"], "bearer");
        assert_eq!(schemes[USER_TOKEN]["bearerFormat"], "JWT");
        assert_eq!(schemes[SERVICE_TOKEN]["in"], "header");
        assert_eq!(schemes[SERVICE_TOKEN]["name"], "X-Service-Token");
        assert_eq!(schemes[SERVICE_BEARER]["scheme"], "bearer");
    }

    #[test]
    fn only_the_metadata_update_is_deprecated() {
        let spec = spec();
        let mut deprecated = Vec::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("item") {
                if operation["deprecated"] == true {
                    deprecated.push(format!("{method} {path}"));
                }
            }
        }
        assert_eq!(deprecated, [format!("post {DEPRECATED_PATH}")]);
    }

    #[test]
    fn the_error_schema_is_the_body_errors_answer_with() {
        let spec = spec();
        let schema = &spec["components"]["schemas"]["ErrorResponse"];
        let keys = |v: &Value| {
            let mut keys: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(&schema["properties"]), ["error", "message", "success"]);
        let response = crate::error::ApiError::RouteNotFound.into_response();
        let body = futures::executor::block_on(axum::body::to_bytes(response.into_body(), 4096))
            .expect("body");
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(keys(&body), ["error", "message", "success"]);
        assert_eq!(keys(&body["error"]), ["code", "details"]);
    }

    #[test]
    fn every_failure_lists_its_codes() {
        let spec = spec();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("item") {
                for (status, response) in operation["responses"].as_object().expect("responses") {
                    if status.starts_with('2') {
                        continue;
                    }
                    let codes = response["x-error-codes"].as_array();
                    assert!(
                        codes.is_some_and(|c| !c.is_empty()),
                        "{method} {path} {status}: {response}"
                    );
                }
            }
        }
    }
}
