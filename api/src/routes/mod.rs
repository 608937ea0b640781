//! The api's HTTP surface: one module per route group, merged here.

use axum::Router;
use service_kit::Infrastructure;

/// Every route the api serves. The connector routes arrive with the connect-flow issue; today
/// the api serves the shared health and metrics endpoints.
pub fn router(infra: Infrastructure) -> Router {
    service_kit::health::router(crate::SERVICE, infra)
}
