//! JSON Schema (2020-12) of every message on the wire, generated from the Rust types so they
//! cannot disagree. `cargo run -p schemas --bin write-json-schemas` writes them to
//! `schemas/json/`; `tests/json_schemas_are_fresh.rs` fails when a committed file is stale.

use schemars::{JsonSchema, schema_for};
use serde_json::{Value, json};

use crate::envelope::{Envelope, Event};
use crate::events::{
    AccessTokenReply, AccessTokenRequested, AuthLinkIssued, ConnectRequested,
    ConnectRequestedReply, ConnectionDisconnected, ConnectionFailed, ConnectionReported,
    ConnectionSucceeded, DisconnectRequested, WebhookDeliveryRequested,
};

/// Folder, relative to the `schemas` crate, where the generated files are committed.
pub const DIR: &str = "json";

/// Every generated schema: `(file name, schema)`, sorted by file name.
pub fn all() -> Vec<(String, Value)> {
    let mut files = vec![
        event::<ConnectRequested>(),
        event::<AuthLinkIssued>(),
        event::<ConnectionSucceeded>(),
        event::<ConnectionFailed>(),
        event::<ConnectionReported>(),
        event::<ConnectionDisconnected>(),
        event::<DisconnectRequested>(),
        event::<WebhookDeliveryRequested>(),
        plain::<ConnectRequestedReply>(
            format!(
                "{}-reply.v{}.schema.json",
                ConnectRequested::TYPE,
                ConnectRequested::VERSION
            ),
            "The oauth-worker's reply to connect-requested (not enveloped: it answers a request).",
        ),
        event::<AccessTokenRequested>(),
        plain::<AccessTokenReply>(
            format!(
                "{}-reply.v{}.schema.json",
                AccessTokenRequested::TYPE,
                AccessTokenRequested::VERSION
            ),
            "The oauth-worker's reply to access-token-requested (not enveloped).",
        ),
    ];
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// The full enveloped event, with `type` and `version` pinned to the event's constants.
fn event<E: Event>() -> (String, Value) {
    let mut schema = serde_json::to_value(schema_for!(Envelope<E>)).expect("schema is JSON");
    schema["title"] = json!(E::TYPE);
    schema["$id"] = json!(format!("{}.v{}", E::TYPE, E::VERSION));
    schema["properties"]["type"] = json!({ "const": E::TYPE });
    schema["properties"]["version"] = json!({ "const": E::VERSION });
    (format!("{}.v{}.schema.json", E::TYPE, E::VERSION), schema)
}

fn plain<T: JsonSchema>(file: String, description: &str) -> (String, Value) {
    let mut schema = serde_json::to_value(schema_for!(T)).expect("schema is JSON");
    schema["description"] = json!(description);
    (file, schema)
}

/// The exact bytes a schema file holds: pretty JSON and a final newline.
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("schema is JSON");
    text.push('\n');
    text
}
