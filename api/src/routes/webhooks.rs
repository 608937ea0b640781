//! Webhook endpoints of a subaccount (see docs/webhooks.md):
//!
//! - `POST /api/connectors/{subaccountId}/webhooks` — register `{url, events?, description?}`;
//!   201 with the signing secret, shown this once;
//! - `GET /api/connectors/{subaccountId}/webhooks` — list (never the secret);
//! - `DELETE /api/connectors/{subaccountId}/webhooks/{webhookId}` — remove;
//! - `GET /api/connectors/{subaccountId}/webhooks/{webhookId}/deliveries?limit=` — the last
//!   attempts, newest first.
//!
//! The URL must satisfy the target policy (https unless `WEBHOOK_ALLOW_HTTP`; no loopback,
//! private, link-local or other non-public address, by literal or by DNS, unless
//! `WEBHOOK_ALLOW_PRIVATE_TARGETS`); the metadata-worker checks it again at every delivery.
//! Same authorization as the connector routes: a token granting the subaccount and
//! `connectors:manage`. Bad input changes nothing.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get};
use bson::doc;
use futures::TryStreamExt;
use mongodb::options::FindOptions;
use schemas::SubaccountId;
use schemas::documents::webhook::{
    DELIVERIES_COLLECTION, ENDPOINT_SLOT_FIELD, ENDPOINTS_COLLECTION, WEBHOOK_EVENT_TYPES,
    WebhookDelivery, WebhookEndpoint,
};
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::auth::{AuthenticatedUser, MANAGE_CONNECTORS};
use service_kit::webhook::WebhookSecrets;

use super::Success;
use crate::error::ApiError;
use crate::extract::{ApiJson, SubaccountPath};
use crate::state::AppState;

/// Longest `description` accepted.
const MAX_DESCRIPTION: usize = 500;
/// Default and largest `limit` of the delivery log.
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/connectors/{subaccountId}/webhooks",
            get(list_webhooks).post(register_webhook),
        )
        .route(
            "/api/connectors/{subaccountId}/webhooks/{webhookId}",
            delete(delete_webhook),
        )
        .route(
            "/api/connectors/{subaccountId}/webhooks/{webhookId}/deliveries",
            get(list_deliveries),
        )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterBody {
    /// `https://` (unless `WEBHOOK_ALLOW_HTTP`), resolving to public addresses only.
    #[schema(format = "uri", example = "https://example.com/hooks/calendar")]
    url: String,
    /// Event types to receive (default: all of them).
    #[serde(default)]
    #[schema(example = json!(["connection-succeeded", "connection-failed", "connection-disconnected"]))]
    events: Option<Vec<String>>,
    /// At most 500 characters.
    #[serde(default)]
    description: Option<String>,
}

/// `POST /api/connectors/{subaccountId}/webhooks`.
#[utoipa::path(
    post,
    path = "/api/connectors/{subaccountId}/webhooks",
    operation_id = "registerWebhook",
    tag = "webhooks",
    summary = "Register a webhook endpoint",
    description = "Answers 201 with the endpoint and its signing secret, shown this once.",
    params(crate::openapi::SubaccountParam),
    request_body = RegisterBody,
    security(("userToken" = [])),
    responses(
        (status = 201, description = "The endpoint, with `secret`.", body = Success<crate::openapi::WebhookDoc>),
        crate::openapi::RegisterWebhookFailures,
    ),
)]
async fn register_webhook(
    State(state): State<AppState>,
    user: AuthenticatedUser,
    SubaccountPath(subaccount): SubaccountPath,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    user.authorize(&subaccount, MANAGE_CONNECTORS)?;
    state.limiter.webhook_management(&user).await?;
    let events = match body.events {
        None => WEBHOOK_EVENT_TYPES
            .iter()
            .map(|t| (*t).to_owned())
            .collect(),
        Some(events) => validate_events(events)?,
    };
    let description = body.description.map(|d| d.trim().to_owned());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(ApiError::InvalidField {
            field: Some("description".into()),
            reason: format!("must be at most {MAX_DESCRIPTION} characters"),
        });
    }
    let url = state
        .webhooks
        .policy
        .check_target(&body.url)
        .await
        .map_err(ApiError::InvalidWebhookUrl)?;

    let collection = endpoints(&state, &subaccount).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let secret = WebhookSecrets::generate();
    let now = bson::DateTime::now();
    let endpoint = WebhookEndpoint {
        id: id.clone(),
        subaccount_id: subaccount.to_string(),
        url: url.to_string(),
        events,
        description: description.filter(|d| !d.is_empty()),
        enabled: true,
        created_at: now,
        updated_at: now,
        disabled_at: None,
        disabled_reason: None,
        secret: state
            .webhooks
            .secrets
            .seal(&secret, subaccount.as_str(), &id),
        slot: None,
    };
    let endpoint = insert_within_cap(
        &collection,
        &subaccount,
        state.webhooks.max_endpoints,
        endpoint,
    )
    .await?;
    // Before the answer: every event handled after it is announced to the new endpoint.
    service_kit::webhook::endpoints_changed(&state.infra.redis, &state.infra.keys, &subaccount)
        .await;
    tracing::info!(webhook_id = %id, "webhook endpoint registered");
    let mut data = render(&endpoint);
    data["secret"] = json!(*secret);
    Ok((
        StatusCode::CREATED,
        Json(Success::new(
            Some("Webhook registered. Store the secret now: it is not shown again".into()),
            data,
        )),
    )
        .into_response())
}

/// How many lost races one registration tolerates before answering 503. Each lost race
/// means another registration of the subaccount took the place, so under the cap this is
/// reached only by a flood of concurrent registrations and deletions.
const SLOT_ATTEMPTS: usize = 64;

/// Stores `endpoint` in a free place under the cap, exactly: each endpoint holds one of the
/// subaccount's `limit` places (`slot`, unique per subaccount by index), so of concurrent
/// registrations at most `limit` can ever be stored, whatever their timing.
///
/// Why places instead of a counter: the place and the endpoint are one document, written
/// by one insert and freed by one delete, so a crash between two writes cannot leave a count
/// that disagrees with the endpoints (a counter document would need a repair after every
/// crash between its increment and the insert, or transactions, which a standalone MongoDB
/// does not have).
async fn insert_within_cap(
    collection: &mongodb::Collection<WebhookEndpoint>,
    subaccount: &SubaccountId,
    limit: usize,
    mut endpoint: WebhookEndpoint,
) -> Result<WebhookEndpoint, ApiError> {
    let places = i32::try_from(limit).unwrap_or(i32::MAX);
    for _ in 0..SLOT_ATTEMPTS {
        let held = held_slots(collection, subaccount).await?;
        if held.len() >= limit {
            return Err(ApiError::WebhookLimitReached { limit });
        }
        // Endpoints registered before places existed get one first, so they count.
        if let Some(unplaced) = held.iter().position(|(_, slot)| slot.is_none()) {
            let taken: Vec<i32> = held.iter().filter_map(|(_, slot)| *slot).collect();
            let free = (0..).find(|s| !taken.contains(s)).unwrap_or(0);
            place(collection, &held[unplaced].0, free).await?;
            continue;
        }
        let free: Vec<i32> = (0..places)
            .filter(|s| !held.iter().any(|(_, slot)| *slot == Some(*s)))
            .collect();
        if free.is_empty() {
            // More endpoints than places (the cap was lowered): none until enough are deleted.
            return Err(ApiError::WebhookLimitReached { limit });
        }
        // A random free place: concurrent registrations then rarely collide.
        endpoint.slot = Some(free[rand::random_range(0..free.len())]);
        match collection.insert_one(&endpoint).await {
            Ok(_) => return Ok(endpoint),
            Err(e) if service_kit::mongo::is_duplicate_key(&e) => continue,
            Err(e) => return Err(ApiError::database(e, "storing the webhook endpoint")),
        }
    }
    tracing::warn!(
        attempts = SLOT_ATTEMPTS,
        "every free webhook place was taken by a concurrent registration; answering 503"
    );
    Err(ApiError::DatabaseUnavailable)
}

/// Every endpoint of the subaccount: its id and place.
async fn held_slots(
    collection: &mongodb::Collection<WebhookEndpoint>,
    subaccount: &SubaccountId,
) -> Result<Vec<(String, Option<i32>)>, ApiError> {
    let docs: Vec<bson::Document> = collection
        .clone_with_type::<bson::Document>()
        .find(doc! { "subaccountId": subaccount.as_str() })
        .projection(doc! { "_id": 1, ENDPOINT_SLOT_FIELD: 1 })
        .await
        .map_err(|e| ApiError::database(e, "counting webhook endpoints"))?
        .try_collect()
        .await
        .map_err(|e| ApiError::database(e, "counting webhook endpoints"))?;
    Ok(docs
        .iter()
        .filter_map(|d| {
            let id = d.get_str("_id").ok()?.to_owned();
            let slot = d.get_i32(ENDPOINT_SLOT_FIELD).ok();
            Some((id, slot))
        })
        .collect())
}

/// Gives an endpoint registered before places existed the place `slot`, unless it has one
/// by now or the place is taken (the caller looks again either way).
async fn place(
    collection: &mongodb::Collection<WebhookEndpoint>,
    id: &str,
    slot: i32,
) -> Result<(), ApiError> {
    let placed = collection
        .update_one(
            doc! { "_id": id, ENDPOINT_SLOT_FIELD: { "$exists": false } },
            doc! { "$set": { ENDPOINT_SLOT_FIELD: slot } },
        )
        .await;
    match placed {
        Ok(_) => Ok(()),
        Err(e) if service_kit::mongo::is_duplicate_key(&e) => Ok(()),
        Err(e) => Err(ApiError::database(e, "placing a webhook endpoint")),
    }
}

fn validate_events(events: Vec<String>) -> Result<Vec<String>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::InvalidField {
            field: Some("events".into()),
            reason: format!(
                "must name at least one of {}, or be left out for all of them",
                WEBHOOK_EVENT_TYPES.join(", ")
            ),
        });
    }
    let mut chosen: Vec<String> = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        if !WEBHOOK_EVENT_TYPES.contains(&event.as_str()) {
            return Err(ApiError::InvalidField {
                field: Some(format!("events[{index}]")),
                reason: format!(
                    "unknown event type `{}`; expected one of {}",
                    event.chars().take(64).collect::<String>(),
                    WEBHOOK_EVENT_TYPES.join(", ")
                ),
            });
        }
        if !chosen.contains(&event) {
            chosen.push(event);
        }
    }
    Ok(chosen)
}

/// `GET /api/connectors/{subaccountId}/webhooks`: oldest first, never the secret.
#[utoipa::path(
    get,
    path = "/api/connectors/{subaccountId}/webhooks",
    operation_id = "listWebhooks",
    tag = "webhooks",
    summary = "List webhook endpoints",
    description = "Oldest first, never the secret.",
    params(crate::openapi::SubaccountParam),
    security(("userToken" = [])),
    responses(
        (status = 200, description = "The endpoints.", body = Success<Vec<crate::openapi::WebhookDoc>>),
        crate::openapi::ListWebhooksFailures,
    ),
)]
async fn list_webhooks(
    State(state): State<AppState>,
    user: AuthenticatedUser,
    SubaccountPath(subaccount): SubaccountPath,
) -> Result<Json<Success<Vec<Value>>>, ApiError> {
    user.authorize(&subaccount, MANAGE_CONNECTORS)?;
    state.limiter.webhook_management(&user).await?;
    let found: Vec<WebhookEndpoint> = existing_endpoints(&state, &subaccount)
        .find(doc! { "subaccountId": subaccount.as_str() })
        .sort(doc! { "_id": 1 })
        .await
        .map_err(|e| ApiError::database(e, "listing webhook endpoints"))?
        .try_collect()
        .await
        .map_err(|e| ApiError::database(e, "listing webhook endpoints"))?;
    Ok(Json(Success::new(None, found.iter().map(render).collect())))
}

#[derive(Debug, Deserialize)]
struct WebhookPath {
    #[serde(rename = "subaccountId")]
    _subaccount: String,
    #[serde(rename = "webhookId")]
    webhook: String,
}

/// `DELETE /api/connectors/{subaccountId}/webhooks/{webhookId}`. Requests already queued for
/// it are dropped by the deliverer (it finds no endpoint).
#[utoipa::path(
    delete,
    path = "/api/connectors/{subaccountId}/webhooks/{webhookId}",
    operation_id = "deleteWebhook",
    tag = "webhooks",
    summary = "Delete a webhook endpoint",
    description = "Deliveries still queued for it are dropped.",
    params(crate::openapi::SubaccountParam, crate::openapi::WebhookParam),
    security(("userToken" = [])),
    responses(
        (status = 200, description = "The deleted endpoint.", body = Success<crate::openapi::WebhookDoc>),
        crate::openapi::DeleteWebhookFailures,
    ),
)]
async fn delete_webhook(
    State(state): State<AppState>,
    user: AuthenticatedUser,
    SubaccountPath(subaccount): SubaccountPath,
    Path(path): Path<WebhookPath>,
) -> Result<Json<Success<Value>>, ApiError> {
    user.authorize(&subaccount, MANAGE_CONNECTORS)?;
    state.limiter.webhook_management(&user).await?;
    let deleted = existing_endpoints(&state, &subaccount)
        .find_one_and_delete(doc! { "_id": &path.webhook, "subaccountId": subaccount.as_str() })
        .await
        .map_err(|e| ApiError::database(e, "deleting the webhook endpoint"))?;
    match deleted {
        Some(endpoint) => {
            service_kit::webhook::endpoints_changed(
                &state.infra.redis,
                &state.infra.keys,
                &subaccount,
            )
            .await;
            tracing::info!(webhook_id = %endpoint.id, "webhook endpoint deleted");
            Ok(Json(Success::new(
                Some("Webhook deleted".into()),
                render(&endpoint),
            )))
        }
        None => Err(ApiError::WebhookNotFound {
            subaccount,
            webhook: path.webhook,
        }),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesQuery {
    #[serde(default)]
    limit: Option<String>,
}

/// `GET /api/connectors/{subaccountId}/webhooks/{webhookId}/deliveries?limit=`: the last
/// attempts, newest first (default 20, at most 100).
#[utoipa::path(
    get,
    path = "/api/connectors/{subaccountId}/webhooks/{webhookId}/deliveries",
    operation_id = "listWebhookDeliveries",
    tag = "webhooks",
    summary = "An endpoint's recent delivery attempts",
    description = "Newest first.",
    params(
        crate::openapi::SubaccountParam,
        crate::openapi::WebhookParam,
        crate::openapi::DeliveriesLimit
    ),
    security(("userToken" = [])),
    responses(
        (status = 200, description = "The attempts.", body = Success<Vec<crate::openapi::WebhookDeliveryDoc>>),
        crate::openapi::DeliveriesFailures,
    ),
)]
async fn list_deliveries(
    State(state): State<AppState>,
    user: AuthenticatedUser,
    SubaccountPath(subaccount): SubaccountPath,
    Path(path): Path<WebhookPath>,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Success<Vec<Value>>>, ApiError> {
    user.authorize(&subaccount, MANAGE_CONNECTORS)?;
    state.limiter.webhook_management(&user).await?;
    let bad_limit = || ApiError::InvalidField {
        field: Some("limit".into()),
        reason: format!("must be a whole number from 1 to {MAX_LIMIT}"),
    };
    let Query(query) = query.map_err(|_| bad_limit())?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(bad_limit)?,
    };
    let endpoint = existing_endpoints(&state, &subaccount)
        .find_one(doc! { "_id": &path.webhook, "subaccountId": subaccount.as_str() })
        .await
        .map_err(|e| ApiError::database(e, "reading the webhook endpoint"))?;
    if endpoint.is_none() {
        return Err(ApiError::WebhookNotFound {
            subaccount,
            webhook: path.webhook,
        });
    }
    let found: Vec<WebhookDelivery> = state
        .infra
        .mongo
        .existing(&subaccount)
        .collection::<WebhookDelivery>(DELIVERIES_COLLECTION)
        .find(doc! { "endpointId": &path.webhook })
        .with_options(
            FindOptions::builder()
                .sort(doc! { "attemptedAt": -1, "_id": -1 })
                .limit(limit)
                .build(),
        )
        .await
        .map_err(|e| ApiError::database(e, "reading the delivery log"))?
        .try_collect()
        .await
        .map_err(|e| ApiError::database(e, "reading the delivery log"))?;
    Ok(Json(Success::new(
        None,
        found.iter().map(render_delivery).collect(),
    )))
}

fn iso(at: bson::DateTime) -> String {
    at.to_chrono()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An endpoint as the api shows it: never its secret.
fn render(endpoint: &WebhookEndpoint) -> Value {
    let mut value = json!({
        "id": endpoint.id,
        "url": endpoint.url,
        "events": endpoint.events,
        "enabled": endpoint.enabled,
        "createdAt": iso(endpoint.created_at),
        "updatedAt": iso(endpoint.updated_at),
    });
    if let Some(description) = &endpoint.description {
        value["description"] = json!(description);
    }
    if let Some(at) = endpoint.disabled_at {
        value["disabledAt"] = json!(iso(at));
    }
    if let Some(reason) = &endpoint.disabled_reason {
        value["disabledReason"] = json!(reason);
    }
    value
}

fn render_delivery(delivery: &WebhookDelivery) -> Value {
    json!({
        "id": delivery.id,
        "eventId": delivery.event_id,
        "eventType": delivery.event_type,
        "attempt": delivery.attempt,
        "attemptedAt": iso(delivery.attempted_at),
        "statusCode": delivery.status_code,
        "error": delivery.error,
        "durationMs": delivery.duration_ms,
        "outcome": delivery.outcome.as_str(),
    })
}

/// For registration, which creates a document: the tenant's indexes are ensured.
async fn endpoints(
    state: &AppState,
    subaccount: &SubaccountId,
) -> Result<mongodb::Collection<WebhookEndpoint>, ApiError> {
    Ok(state
        .infra
        .mongo
        .connection_for(subaccount)
        .await
        .map_err(|e| ApiError::database(e, "opening the tenant database"))?
        .collection(ENDPOINTS_COLLECTION))
}

/// For reads and deletes.
fn existing_endpoints(
    state: &AppState,
    subaccount: &SubaccountId,
) -> mongodb::Collection<WebhookEndpoint> {
    state
        .infra
        .mongo
        .existing(subaccount)
        .collection(ENDPOINTS_COLLECTION)
}
