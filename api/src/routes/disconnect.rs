//! Disconnecting Google accounts, durably and asynchronously:
//!
//! - `DELETE /api/connectors/{subaccountId}/google-calendar` — every connected account;
//! - `DELETE /api/connectors/{subaccountId}/google-calendar/connections/{googleEmail}` — one;
//! - `GET /api/connectors/{subaccountId}/operations/{operationId}` — how it went.
//!
//! A DELETE records an operation (`pending`) in the tenant's `operations` collection, publishes
//! disconnect-requested to JetStream and answers 202 with the operation id and its URL. The
//! oauth-worker revokes the tokens at the provider (retrying while the provider is down),
//! deletes them, marks the calendar entry inactive, announces connection-disconnected (the
//! metadata-worker sets `isConnected: false`) and marks the operation `done` or `failed`.
//! Disconnecting what is not connected is harmless: the operation is simply `done`.
//!
//! The request names each account with the generation of its connection at the time of the
//! DELETE; the oauth-worker ends only those, so an account connected again before the
//! request is handled stays connected.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use bson::doc;
use schemas::documents::connector_subaccount::GOOGLE_CALENDAR_CONNECTOR_ID;
use schemas::documents::google_auth;
use schemas::documents::operation::{COLLECTION, Operation, OperationStatus};
use schemas::events::{ConnectionGeneration, DisconnectRequested};
use schemas::{ConnectorId, Envelope, SubaccountId, UserEmail};
use serde_json::json;
use service_kit::auth::{AuthenticatedUser, MANAGE_CONNECTORS};
use service_kit::http::RequestId;
use service_kit::mongo::Expiry;

use super::Success;
use crate::error::ApiError;
use crate::extract::{ConnectorPath, SubaccountPath};
use crate::state::AppState;

/// `DELETE /api/connectors/{subaccountId}/{connectorId}` (only `google-calendar` has
/// connections to disconnect).
#[utoipa::path(
    delete,
    path = "/api/connectors/{subaccountId}/{connectorId}",
    operation_id = "disconnectAll",
    tag = "disconnect",
    summary = "Disconnect every Google account of the subaccount",
    description = "Records a disconnect operation and answers 202 at once; the oauth-worker \
revokes and deletes the tokens and the metadata-worker marks the accounts disconnected. Follow \
the operation at its `Location`. Only `google-calendar` has connections (another connector is a \
400 `invalid_field`). Disconnecting what is not connected is harmless. The request ends the \
connections as they are at the time of the DELETE: an account connected again afterwards, even \
before the disconnect is carried out, stays connected.",
    params(crate::openapi::SubaccountParam, crate::openapi::ConnectorParam),
    security(("userToken" = [])),
    responses(
        (status = 202, description = "The operation, `pending`.", body = Success<crate::openapi::OperationDoc>,
            headers(("Location" = String, description = "`/api/connectors/{subaccountId}/operations/{operationId}`"))),
        crate::openapi::DisconnectFailures,
    ),
)]
pub async fn disconnect_all(
    State(state): State<AppState>,
    request_id: RequestId,
    user: AuthenticatedUser,
    path: ConnectorPath,
) -> Result<Response, ApiError> {
    disconnect(&state, request_id, &user, path, None).await
}

/// `DELETE /api/connectors/{subaccountId}/{connectorId}/connections/{googleEmail}`.
#[utoipa::path(
    delete,
    path = "/api/connectors/{subaccountId}/{connectorId}/connections/{googleEmail}",
    operation_id = "disconnectOne",
    tag = "disconnect",
    summary = "Disconnect one Google account",
    description = "As disconnecting every account, for `googleEmail` only.",
    params(
        crate::openapi::SubaccountParam,
        crate::openapi::ConnectorParam,
        crate::openapi::GoogleEmailParam
    ),
    security(("userToken" = [])),
    responses(
        (status = 202, description = "The operation, `pending`.", body = Success<crate::openapi::OperationDoc>,
            headers(("Location" = String, description = "`/api/connectors/{subaccountId}/operations/{operationId}`"))),
        crate::openapi::DisconnectFailures,
    ),
)]
pub async fn disconnect_one(
    State(state): State<AppState>,
    request_id: RequestId,
    user: AuthenticatedUser,
    path: ConnectorPath,
    Path((_, _, google_email)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let email = UserEmail::parse(&google_email).map_err(|e| ApiError::InvalidEmail {
        field: "googleEmail".into(),
        reason: e.to_string(),
    })?;
    disconnect(
        &state,
        request_id,
        &user,
        path,
        Some(email.google_account_key()),
    )
    .await
}

async fn disconnect(
    state: &AppState,
    request_id: RequestId,
    user: &AuthenticatedUser,
    ConnectorPath {
        subaccount,
        connector,
    }: ConnectorPath,
    google_email: Option<String>,
) -> Result<Response, ApiError> {
    if connector.as_str() != GOOGLE_CALENDAR_CONNECTOR_ID {
        return Err(ApiError::InvalidField {
            field: Some("connectorId".into()),
            reason: format!("only {GOOGLE_CALENDAR_CONNECTOR_ID} has connections to disconnect"),
        });
    }
    user.authorize(&subaccount, MANAGE_CONNECTORS)?;
    if !state.connectors.exists(&subaccount, &connector).await? {
        return Err(ApiError::ConnectorNotFound {
            subaccount,
            connector: ConnectorId::google_calendar(),
        });
    }
    let connections = current_connections(state, &subaccount, google_email.as_deref()).await?;
    let operation_id = uuid::Uuid::now_v7().to_string();
    let now = bson::DateTime::now();
    let operation = Operation {
        id: operation_id.clone(),
        subaccount_id: subaccount.to_string(),
        kind: "disconnect".into(),
        google_email: google_email.clone(),
        status: OperationStatus::Pending,
        disconnected: Vec::new(),
        revocations: Vec::new(),
        error: None,
        created_at: now,
        updated_at: now,
    };
    let operations = operations(state, &subaccount).await?;
    operations
        .insert_one(&operation)
        .await
        .map_err(|e| ApiError::database(e, "recording the operation"))?;
    // The request's id is the correlation id of the whole disconnect.
    let event = Envelope::new(
        subaccount.clone(),
        request_id.0,
        DisconnectRequested {
            operation_id: operation_id.clone(),
            google_email: google_email.clone(),
            connections: Some(connections),
        },
    );
    let published = tokio::time::timeout(
        state.publish_timeout,
        service_kit::nats::publish_event(&state.infra.jetstream, &state.infra.namespace, &event),
    )
    .await;
    if let Err(error) = published
        .map_err(|_| format!("no acknowledgement within {:?}", state.publish_timeout))
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        tracing::error!(%operation_id, %error, "disconnect request not stored by JetStream");
        let _ = operations
            .update_one(
                doc! { "_id": &operation_id },
                doc! { "$set": { "status": "failed", "error": "the request could not be recorded", "updatedAt": bson::DateTime::now() } },
            )
            .await;
        return Err(ApiError::EventStreamUnavailable);
    }
    tracing::info!(%operation_id, account = ?google_email, "disconnect requested");
    let location = format!("/api/connectors/{subaccount}/operations/{operation_id}");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Success::new(
            Some("Disconnect requested".into()),
            render(&operation),
        )),
    )
        .into_response();
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// The accounts concerned (one, or every account of the subaccount) with the generation of
/// their current connection, read now: the request ends these connections and no later one,
/// however late the oauth-worker handles it. An account connected after this read (even
/// before the request is handled) stays connected.
async fn current_connections(
    state: &AppState,
    subaccount: &SubaccountId,
    google_email: Option<&str>,
) -> Result<Vec<ConnectionGeneration>, ApiError> {
    use futures::TryStreamExt;
    let mut filter = doc! { "subaccountId": subaccount.as_str() };
    if let Some(email) = google_email {
        filter.insert("googleEmail", email);
    }
    let documents: Vec<bson::Document> = state
        .infra
        .mongo
        .connection_for(subaccount)
        .await
        .map_err(|e| ApiError::database(e, "opening the tenant database"))?
        .collection::<bson::Document>(google_auth::COLLECTION)
        .find(filter)
        .projection(doc! { "googleEmail": 1, google_auth::GENERATION_FIELD: 1 })
        .await
        .map_err(|e| ApiError::database(e, "reading the connected accounts"))?
        .try_collect()
        .await
        .map_err(|e| ApiError::database(e, "reading the connected accounts"))?;
    Ok(documents
        .iter()
        .filter_map(|d| {
            Some(ConnectionGeneration {
                google_email: d.get_str("googleEmail").ok()?.to_owned(),
                // Absent on documents stored before generations existed: 0.
                generation: match d.get(google_auth::GENERATION_FIELD) {
                    Some(bson::Bson::Int64(g)) => *g,
                    Some(bson::Bson::Int32(g)) => i64::from(*g),
                    _ => 0,
                },
            })
        })
        .collect())
}

/// `GET /api/connectors/{subaccountId}/operations/{operationId}`.
#[utoipa::path(
    get,
    path = "/api/connectors/{subaccountId}/operations/{operationId}",
    operation_id = "getOperation",
    tag = "disconnect",
    summary = "Follow a disconnect",
    description = "`pending`, `done` (with `disconnected`: the accounts, and `revocations`: what \
the provider answered to each revocation — an account whose revocation was `refused` is \
disconnected all the same) or `failed` (with `error`).",
    params(crate::openapi::SubaccountParam, crate::openapi::OperationParam),
    security(("userToken" = [])),
    responses(
        (status = 200, description = "The operation.", body = Success<crate::openapi::OperationDoc>),
        crate::openapi::OperationFailures,
    ),
)]
pub async fn get_operation(
    State(state): State<AppState>,
    user: AuthenticatedUser,
    SubaccountPath(subaccount): SubaccountPath,
    Path((_, operation_id)): Path<(String, String)>,
) -> Result<Json<Success<serde_json::Value>>, ApiError> {
    user.authorize(&subaccount, MANAGE_CONNECTORS)?;
    // Operation ids are UUIDs: anything else is not one, without a database read, and is
    // echoed cut short (a hostile path must not come back as a large body).
    if uuid::Uuid::parse_str(&operation_id).is_err() {
        let mut shown: String = operation_id.chars().take(64).collect();
        if shown.len() < operation_id.len() {
            shown.push('…');
        }
        return Err(ApiError::OperationNotFound {
            subaccount,
            operation: shown,
        });
    }
    // A read creates nothing: no TTL index, no database for an unknown subaccount.
    let found = state
        .infra
        .mongo
        .existing(&subaccount)
        .collection::<Operation>(COLLECTION)
        .find_one(doc! { "_id": &operation_id })
        .await
        .map_err(|e| ApiError::database(e, "reading the operation"))?;
    match found {
        Some(operation) => Ok(Json(Success::new(None, render(&operation)))),
        None => Err(ApiError::OperationNotFound {
            subaccount,
            operation: operation_id,
        }),
    }
}

fn render(operation: &Operation) -> serde_json::Value {
    let status = match operation.status {
        OperationStatus::Pending => "pending",
        OperationStatus::Done => "done",
        OperationStatus::Failed => "failed",
    };
    let iso = |at: bson::DateTime| {
        at.to_chrono()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let mut value = json!({
        "operationId": operation.id,
        "kind": operation.kind,
        "status": status,
        "subaccountId": operation.subaccount_id,
        "googleEmail": operation.google_email,
        "disconnected": operation.disconnected,
        "revocations": operation.revocations,
        "createdAt": iso(operation.created_at),
        "updatedAt": iso(operation.updated_at),
    });
    if let Some(error) = &operation.error {
        value["error"] = json!(error);
    }
    value
}

/// How long an operation can be looked up: one is recorded per DELETE, so without an end the
/// collection grows with requests. A client follows one for seconds to minutes; a month
/// leaves room to look back, and matches the replay window of its disconnect-requested event
/// (a replay after the operation expired still disconnects, it just has no operation to mark).
const OPERATION_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The operations' TTL index (on `createdAt`).
const OPERATION_EXPIRY: Expiry = Expiry {
    collection: COLLECTION,
    field: "createdAt",
    ttl: OPERATION_RETENTION,
};

async fn operations(
    state: &AppState,
    subaccount: &SubaccountId,
) -> Result<mongodb::Collection<Operation>, ApiError> {
    let mongo = &state.infra.mongo;
    let db = mongo
        .connection_for(subaccount)
        .await
        .map_err(|e| ApiError::database(e, "opening the tenant database"))?;
    mongo
        .ensure_expiry(&db, OPERATION_EXPIRY)
        .await
        .map_err(|e| ApiError::database(e, "ensuring the operations' TTL index"))?;
    Ok(db.collection(COLLECTION))
}
