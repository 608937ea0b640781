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
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AddConnectorBody {
    connector_id: ConnectorId,
    #[serde(default)]
    connector_type: Option<String>,
    #[serde(default)]
    config: Option<Map<String, Value>>,
}

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
