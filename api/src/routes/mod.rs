//! The api's HTTP surface: one module per route group, merged here with the shared health
//! endpoints. Every error, including an unknown path or method, answers in the house shape.

pub mod connectors;
pub mod disconnect;
pub mod google_calendar;
pub mod metadata_update;
pub mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;

/// Every route the api serves.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(connectors::router())
        .merge(google_calendar::router())
        .merge(metadata_update::router())
        .merge(webhooks::router())
        .merge(crate::openapi::router())
        .merge(crate::try_it::router(&state))
        .route("/favicon.ico", get(favicon))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Enforced while the body streams in, so an oversized body is never buffered whole.
        .layer(DefaultBodyLimit::max(state.body_limit.0))
        .with_state(state.clone());
    service_kit::health::router(crate::SERVICE, state.infra.clone()).merge(api)
}

/// The spec's success body: `{"success": true, "message"?, "data"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Success<T> {
    /// Always `true`.
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub data: T,
}

impl<T> Success<T> {
    pub fn new(message: Option<String>, data: T) -> Self {
        Self {
            success: true,
            message,
            data,
        }
    }
}

/// A 16×16 calendar, compiled in.
const FAVICON: &[u8] = include_bytes!("../favicon.ico");

/// `/favicon.ico`: browsers ask for it on every page they show (the try-it page, `/docs`);
/// an icon instead of a 404 in every browser console. No token: it is a public image.
async fn favicon() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "image/x-icon"),
            (CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
}

async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
