//! The connector endpoints the spec relies on: add a connector to a subaccount, list them, read
//! one. All require a token granting the subaccount and `connectors:manage`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use bson::Document;
use schemas::ConnectorId;
use schemas::documents::connector_subaccount::CALENDAR_CONNECTOR_TYPE;
use serde::Deserialize;
use serde_json::{Map, Value};
use service_kit::auth::{AuthenticatedUser, MANAGE_CONNECTORS};

use super::Success;
use crate::connectors::{NewConnector, config_document};
use crate::error::ApiError;
use crate::extract::{ApiJson, ConnectorPath, SubaccountPath};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/connectors/{subaccountId}",
            post(add_connector).get(list_connectors),
        )
        .route(
            "/api/connectors/{subaccountId}/{connectorId}",
            get(get_connector).delete(super::disconnect::disconnect_all),
        )
        .route(
            "/api/connectors/{subaccountId}/{connectorId}/connections/{googleEmail}",
            axum::routing::delete(super::disconnect::disconnect_one),
        )
        .route(
            "/api/connectors/{subaccountId}/operations/{operationId}",
            get(super::disconnect::get_operation),
        )
}

/// `POST /api/connectors/{subaccountId}`. `connectorType` may be left out for
/// `google-calendar` (it is `calendar`); `config` defaults to `{}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AddConnectorBody {
    /// 1-64 of a-z, 0-9 and `-`.
    #[schema(value_type = String, pattern = "^[a-z0-9-]{1,64}$", example = "google-calendar")]
    connector_id: ConnectorId,
    /// 1-64 of a-z, 0-9, `-` and `_`; required except for `google-calendar` (`calendar`).
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9_-]{1,64}$", example = "calendar")]
    connector_type: Option<String>,
    /// Stored as given (default `{}`); keys may not be empty, start with `$` or contain `.`.
    #[serde(default)]
    config: Option<Map<String, Value>>,
}

#[utoipa::path(
    post,
    path = "/api/connectors/{subaccountId}",
    operation_id = "addConnector",
    tag = "connectors",
    summary = "Add a connector to a subaccount",
    description = "Creates the subaccount's connector document; answers 201 with it and its \
`Location`, 409 when the subaccount already has this connector.",
    params(crate::openapi::SubaccountParam),
    request_body = AddConnectorBody,
    security(("userToken" = [])),
    responses(
        (status = 201, description = "The connector, as stored.", body = Success<crate::openapi::ConnectorDoc>,
            headers(("Location" = String, description = "`/api/connectors/{subaccountId}/{connectorId}`"))),
        crate::openapi::AddConnectorFailures,
    ),
)]
async fn add_connector(
    State(state): State<AppState>,
    user: AuthenticatedUser,
    SubaccountPath(subaccount): SubaccountPath,
    ApiJson(body): ApiJson<AddConnectorBody>,
) -> Result<Response, ApiError> {
    let connector_type = connector_type(&body.connector_id, body.connector_type)?;
    let config = match body.config {
        Some(config) => config_document(config)?,
        None => Document::new(),
    };
    user.authorize(&subaccount, MANAGE_CONNECTORS)?;
    let connector_id = body.connector_id;
    let location = format!("/api/connectors/{subaccount}/{connector_id}");
    let created = state
        .connectors
        .create(
            &subaccount,
            NewConnector {
                connector_id: connector_id.clone(),
                connector_type,
                config,
            },
        )
        .await?;
    tracing::info!(%subaccount, connector = %connector_id, user = %user.sub, "connector added");
    let mut response = (
        StatusCode::CREATED,
        Json(Success::new(
            Some(format!(
                "Connector {connector_id} added to subaccount {subaccount}"
            )),
            created,
        )),
    )
        .into_response();
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// The stored `connectorType`: given (1-64 of a-z, 0-9, `-`, `_`), or implied for the one
/// connector whose type the spec fixes.
fn connector_type(connector: &ConnectorId, given: Option<String>) -> Result<String, ApiError> {
    match given {
        Some(given) => {
            let ok = (1..=64).contains(&given.len())
                && given.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if ok {
                Ok(given)
            } else {
                Err(ApiError::InvalidField {
                    field: Some("connectorType".into()),
                    reason: "must be 1-64 characters of a-z, 0-9, '-' and '_'".into(),
                })
            }
        }
        None if *connector == ConnectorId::google_calendar() => {
            Ok(CALENDAR_CONNECTOR_TYPE.to_owned())
        }
        None => Err(ApiError::MissingField {
            field: "connectorType".into(),
            message: format!(
                "missing field `connectorType` (required for connectors other than {})",
                ConnectorId::google_calendar()
            ),
        }),
    }
}

/// `GET /api/connectors/{subaccountId}`.
#[utoipa::path(
    get,
    path = "/api/connectors/{subaccountId}",
    operation_id = "listConnectors",
    tag = "connectors",
    summary = "List a subaccount's connectors",
    description = "Every connector of the subaccount, oldest first (cached in Redis).",
    params(crate::openapi::SubaccountParam),
    security(("userToken" = [])),
    responses(
        (status = 200, description = "The connectors.", body = Success<Vec<crate::openapi::ConnectorDoc>>),
        crate::openapi::ListConnectorsFailures,
    ),
)]
async fn list_connectors(
    State(state): State<AppState>,
    user: AuthenticatedUser,
    SubaccountPath(subaccount): SubaccountPath,
) -> Result<Json<Success<Vec<Value>>>, ApiError> {
    user.authorize(&subaccount, MANAGE_CONNECTORS)?;
    let connectors = state.connectors.list(&subaccount).await?;
    Ok(Json(Success::new(None, connectors)))
}

/// `GET /api/connectors/{subaccountId}/{connectorId}`.
#[utoipa::path(
    get,
    path = "/api/connectors/{subaccountId}/{connectorId}",
    operation_id = "getConnector",
    tag = "connectors",
    summary = "Read one connector",
    description = "One connector of the subaccount, e.g. `google-calendar` with its connection \
metadata (cached in Redis).",
    params(crate::openapi::SubaccountParam, crate::openapi::ConnectorParam),
    security(("userToken" = [])),
    responses(
        (status = 200, description = "The connector.", body = Success<crate::openapi::ConnectorDoc>),
        crate::openapi::GetConnectorFailures,
    ),
)]
async fn get_connector(
    State(state): State<AppState>,
    user: AuthenticatedUser,
    ConnectorPath {
        subaccount,
        connector,
    }: ConnectorPath,
) -> Result<Json<Success<Value>>, ApiError> {
    user.authorize(&subaccount, MANAGE_CONNECTORS)?;
    match state.connectors.get(&subaccount, &connector).await? {
        Some(document) => Ok(Json(Success::new(None, document))),
        None => Err(ApiError::ConnectorNotFound {
            subaccount,
            connector,
        }),
    }
}
