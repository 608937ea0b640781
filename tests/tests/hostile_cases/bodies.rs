//! Malformed, oversized, mistyped and hostile bodies on every route that takes one.

use crate::*;

/// A JSON document nested `depth` levels deep under `key`.
pub fn nested(key: &str, depth: usize) -> String {
    format!(
        "{}1{}",
        format!("{{\"{key}\":").repeat(depth),
        "}".repeat(depth)
    )
}

/// Malformed, oversized, mistyped and hostile bodies on every route that takes one.
pub fn abusive_bodies() -> Vec<Case> {
    let connect = |content_type: &str, body: Vec<u8>| {
        RawRequest::post(connect_path(SUB_A))
            .bearer(&user_token(SUB_A))
            .body(content_type, body)
    };
    let connect_json = |body: Value| connect("application/json", body.to_string().into_bytes());
    let bad_email = |email: &str| connect_json(json!({ "userEmail": email, "sendEmail": true }));
    let invalid_field = |op| api_error(400, "invalid_field", op);
    let add = |body: Value| {
        RawRequest::post(format!("/api/connectors/{SUB_A}"))
            .bearer(&user_token(SUB_A))
            .json(&body)
    };
    let webhook = |body: Value| {
        RawRequest::post(webhooks_path(SUB_A))
            .bearer(&user_token(SUB_A))
            .json(&body)
    };
    let metadata = |change: &dyn Fn(&mut Value)| {
        let mut body = json!({ "metadata": {
            "calendarId": "507f1f77bcf86cd799439011", "userEmail": "user@example.com",
            "googleEmail": "googleuser@gmail.com", "connectedAt": "2025-10-05T12:00:00.000Z",
            "isConnected": true,
        }});
        change(&mut body);
        RawRequest::post(metadata_path(SUB_A))
            .header("X-Service-Token", WRITER)
            .json(&body)
    };
    let big =
        |n: usize| format!("{{\"userEmail\":\"{}@example.com\"}}", "a".repeat(n)).into_bytes();
    let mut cases: Vec<(&str, RawRequest, Expect)> = vec![
        ("unterminated object", connect("application/json", b"{".to_vec()), api_error(400, "invalid_json", CONNECT)),
        ("empty body", connect("application/json", Vec::new()), api_error(400, "invalid_json", CONNECT)),
        (
            "trailing garbage",
            connect("application/json", br#"{"userEmail":"victim@example.com"} {"sendEmail":true}"#.to_vec()),
            api_error(400, "invalid_json", CONNECT),
        ),
        (
            "single quotes",
            connect("application/json", b"{'userEmail':'victim@example.com'}".to_vec()),
            api_error(400, "invalid_json", CONNECT),
        ),
        (
            "comment in JSON",
            connect("application/json", b"{/* hi */\"userEmail\":\"victim@example.com\"}".to_vec()),
            api_error(400, "invalid_json", CONNECT),
        ),
        (
            "byte order mark",
            connect("application/json", "\u{feff}{\"userEmail\":\"victim@example.com\"}".as_bytes().to_vec()),
            api_error(400, "invalid_json", CONNECT),
        ),
        (
            "UTF-16 body",
            connect(
                "application/json",
                "{\"userEmail\":\"victim@example.com\"}"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect(),
            ),
            api_error(400, "invalid_json", CONNECT),
        ),
        (
            "invalid UTF-8 in a string",
            connect("application/json", b"{\"userEmail\":\"victim\xff@example.com\"}".to_vec()),
            api_error(400, "invalid_json", CONNECT),
        ),
        (
            "lone surrogate escape",
            connect("application/json", br#"{"userEmail":"\ud800@example.com"}"#.to_vec()),
            api_error(400, "invalid_json", CONNECT),
        ),
        (
            "arrays nested 2 000 deep",
            connect(
                "application/json",
                format!("{{\"userEmail\":{}{}}}", "[".repeat(2_000), "]".repeat(2_000)).into_bytes(),
            ),
            bad_email_code(CONNECT),
        ),
        (
            "objects nested 200 deep",
            connect("application/json", nested("userEmail", 200).into_bytes()),
            bad_email_code(CONNECT),
        ),
        (
            "body of 17 KiB",
            connect("application/json", big(17 * 1024)),
            api_error(413, "payload_too_large", CONNECT),
        ),
        (
            "body of 1 MiB",
            connect("application/json", big(1024 * 1024)),
            api_error(413, "payload_too_large", CONNECT),
        ),
        (
            "Content-Type text/plain",
            connect("text/plain", connect_body().to_string().into_bytes()),
            api_error(415, "unsupported_media_type", CONNECT),
        ),
        (
            "no Content-Type",
            RawRequest::post(connect_path(SUB_A))
                .bearer(&user_token(SUB_A))
                .untyped_body(connect_body().to_string()),
            api_error(415, "unsupported_media_type", CONNECT),
        ),
        (
            "form-encoded",
            connect("application/x-www-form-urlencoded", b"userEmail=victim%40example.com".to_vec()),
            api_error(415, "unsupported_media_type", CONNECT),
        ),
        (
            "multipart",
            connect(
                "multipart/form-data; boundary=x",
                b"--x\r\nContent-Disposition: form-data; name=\"userEmail\"\r\n\r\nvictim@example.com\r\n--x--\r\n".to_vec(),
            ),
            api_error(415, "unsupported_media_type", CONNECT),
        ),
        ("text/json", connect("text/json", connect_body().to_string().into_bytes()), api_error(415, "unsupported_media_type", CONNECT)),
        (
            "application/jsonx",
            connect("application/jsonx", connect_body().to_string().into_bytes()),
            api_error(415, "unsupported_media_type", CONNECT),
        ),
        (
            "XML",
            connect("application/xml", b"<userEmail>victim@example.com</userEmail>".to_vec()),
            api_error(415, "unsupported_media_type", CONNECT),
        ),
        (
            "unknown field",
            connect_json(json!({ "userEmail": "victim@example.com", "bcc": "evil@example.com" })),
            api_error(400, "unknown_field", CONNECT),
        ),
        (
            "__proto__ field",
            connect_json(json!({ "userEmail": "victim@example.com", "__proto__": { "admin": true } })),
            api_error(400, "unknown_field", CONNECT),
        ),
        (
            "subaccountId smuggled in the body",
            connect_json(json!({ "userEmail": "victim@example.com", "subaccountId": SUB_B })),
            api_error(400, "unknown_field", CONNECT),
        ),
        ("missing userEmail", connect_json(json!({ "sendEmail": true })), api_error(400, "missing_field", CONNECT)),
        ("body null", connect_json(json!(null)), invalid_field(CONNECT)),
        ("body a number", connect_json(json!(1)), invalid_field(CONNECT)),
        ("body a string", connect_json(json!("victim@example.com")), invalid_field(CONNECT)),
        ("body true", connect_json(json!(true)), invalid_field(CONNECT)),
        ("body an empty array", connect_json(json!([])), invalid_field(CONNECT)),
        ("body null adding a connector", add(json!(null)), invalid_field(ADD)),
        ("body an empty array adding a connector", add(json!([])), invalid_field(ADD)),
        ("body null registering a webhook", webhook(json!(null)), invalid_field(WEBHOOKS_POST)),
        ("body a string registering a webhook", webhook(json!("https://example.com/hook")), invalid_field(WEBHOOKS_POST)),
        ("userEmail a number", connect_json(json!({ "userEmail": 1 })), bad_email_code(CONNECT)),
        ("userEmail null", connect_json(json!({ "userEmail": null })), bad_email_code(CONNECT)),
        ("userEmail an object", connect_json(json!({ "userEmail": { "$ne": "" } })), bad_email_code(CONNECT)),
        ("userEmail an array", connect_json(json!({ "userEmail": ["victim@example.com", "evil@example.com"] })), bad_email_code(CONNECT)),
        ("sendEmail a string", connect_json(json!({ "userEmail": "victim@example.com", "sendEmail": "false" })), invalid_field(CONNECT)),
        ("sendEmail a number", connect_json(json!({ "userEmail": "victim@example.com", "sendEmail": 0 })), invalid_field(CONNECT)),
        (
            "duplicate userEmail",
            connect(
                "application/json",
                br#"{"userEmail":"victim@example.com","userEmail":"evil@example.com"}"#.to_vec(),
            ),
            invalid_field(CONNECT),
        ),
        ("email without @", bad_email("not-an-email"), bad_email_code(CONNECT)),
        ("email without domain", bad_email("victim@"), bad_email_code(CONNECT)),
        ("email without local part", bad_email("@example.com"), bad_email_code(CONNECT)),
        ("email with a dotless domain", bad_email("victim@localhost"), bad_email_code(CONNECT)),
        ("email with a space", bad_email("vic tim@example.com"), bad_email_code(CONNECT)),
        ("email with a double dot", bad_email("victim@example..com"), bad_email_code(CONNECT)),
        ("email with a leading dot", bad_email(".victim@example.com"), bad_email_code(CONNECT)),
        ("email with a hyphen-led label", bad_email("victim@-example.com"), bad_email_code(CONNECT)),
        ("email with CRLF and Bcc", bad_email("victim@example.com\r\nBcc: evil@example.com"), bad_email_code(CONNECT)),
        ("email with a newline in the local part", bad_email("vic\ntim@example.com"), bad_email_code(CONNECT)),
        ("email with a NUL", bad_email("victim@example.com\u{0}evil@example.com"), bad_email_code(CONNECT)),
        ("email in angle brackets", bad_email("<victim@example.com>"), bad_email_code(CONNECT)),
        ("email with a display name", bad_email("Victim <victim@example.com>"), bad_email_code(CONNECT)),
        ("two emails, comma", bad_email("victim@example.com,evil@example.com"), bad_email_code(CONNECT)),
        ("two emails, semicolon", bad_email("victim@example.com;evil@example.com"), bad_email_code(CONNECT)),
        ("email with a 65-character local part", bad_email(&format!("{}@example.com", "a".repeat(65))), bad_email_code(CONNECT)),
        ("email with a 64-character label", bad_email(&format!("victim@{}.com", "a".repeat(64))), bad_email_code(CONNECT)),
        (
            "email of 300 characters",
            bad_email(&format!("victim@{}.com", vec!["a".repeat(60); 5].join("."))),
            bad_email_code(CONNECT),
        ),
        ("email of 8 KiB", bad_email(&format!("{}@example.com", "a".repeat(8 * 1024))), bad_email_code(CONNECT)),
        // Adding a connector.
        ("connectorId in capitals", add(json!({ "connectorId": "Evil", "connectorType": "crm" })), invalid_field(ADD)),
        ("connectorId with a path", add(json!({ "connectorId": "../evil", "connectorType": "crm" })), invalid_field(ADD)),
        ("connectorId an operator", add(json!({ "connectorId": { "$ne": null }, "connectorType": "crm" })), invalid_field(ADD)),
        ("connectorType with a space", add(json!({ "connectorId": "evil", "connectorType": "c r m" })), invalid_field(ADD)),
        ("connectorType of 65 characters", add(json!({ "connectorId": "evil", "connectorType": "c".repeat(65) })), invalid_field(ADD)),
        ("connectorType missing for another connector", add(json!({ "connectorId": "evil" })), api_error(400, "missing_field", ADD)),
        ("config a string", add(json!({ "connectorId": "evil", "connectorType": "crm", "config": "x" })), invalid_field(ADD)),
        ("config key $where", add(json!({ "connectorId": "evil", "connectorType": "crm", "config": { "$where": "sleep(1000)" } })), invalid_field(ADD)),
        ("config key with a dot", add(json!({ "connectorId": "evil", "connectorType": "crm", "config": { "a.b": 1 } })), invalid_field(ADD)),
        ("config empty key", add(json!({ "connectorId": "evil", "connectorType": "crm", "config": { "": 1 } })), invalid_field(ADD)),
        ("config operator nested in an array", add(json!({ "connectorId": "evil", "connectorType": "crm", "config": { "a": [{ "$gt": 1 }] } })), invalid_field(ADD)),
        ("config key with a NUL", add(json!({ "connectorId": "evil", "connectorType": "crm", "config": { "a\u{0}b": 1 } })), invalid_field(ADD)),
        (
            "config nested 200 deep",
            RawRequest::post(format!("/api/connectors/{SUB_A}"))
                .bearer(&user_token(SUB_A))
                .body(
                    "application/json",
                    format!(
                        "{{\"connectorId\":\"evil\",\"connectorType\":\"crm\",\"config\":{}}}",
                        nested("a", 200)
                    ),
                ),
            api_error(400, "invalid_json", ADD),
        ),
        (
            // Deep enough to pass the JSON parser's own limit (128) and, unchecked, to overflow
            // the stack of a debug build on its way to MongoDB (which refuses more than 100).
            "config nested 110 deep",
            RawRequest::post(format!("/api/connectors/{SUB_A}"))
                .bearer(&user_token(SUB_A))
                .body(
                    "application/json",
                    format!(
                        "{{\"connectorId\":\"evil\",\"connectorType\":\"crm\",\"config\":{}}}",
                        nested("a", 110)
                    ),
                ),
            invalid_field(ADD),
        ),
        (
            "body of 17 KiB adding a connector",
            add(json!({ "connectorId": "evil", "connectorType": "crm", "config": { "a": "x".repeat(17 * 1024) } })),
            api_error(413, "payload_too_large", ADD),
        ),
        // Registering a webhook.
        ("webhook description of 501 characters", webhook(json!({ "url": "https://example.com/hook", "description": "d".repeat(501) })), invalid_field(WEBHOOKS_POST)),
        ("webhook with no events", webhook(json!({ "url": "https://example.com/hook", "events": [] })), invalid_field(WEBHOOKS_POST)),
        ("webhook with an unknown event", webhook(json!({ "url": "https://example.com/hook", "events": ["token-refreshed"] })), invalid_field(WEBHOOKS_POST)),
        ("webhook events a string", webhook(json!({ "url": "https://example.com/hook", "events": "all" })), invalid_field(WEBHOOKS_POST)),
        ("webhook url a number", webhook(json!({ "url": 1 })), invalid_field(WEBHOOKS_POST)),
        ("webhook url missing", webhook(json!({ "events": ["connection-succeeded"] })), api_error(400, "missing_field", WEBHOOKS_POST)),
        ("webhook with a secret of its own", webhook(json!({ "url": "https://example.com/hook", "secret": "whsec_mine" })), api_error(400, "unknown_field", WEBHOOKS_POST)),
        (
            "webhook body of 17 KiB",
            webhook(json!({ "url": "https://example.com/hook", "description": "d".repeat(17 * 1024) })),
            api_error(413, "payload_too_large", WEBHOOKS_POST),
        ),
        // The deprecated metadata update, with a token that may write.
        ("metadata isConnected false", metadata(&|b| b["metadata"]["isConnected"] = json!(false)), invalid_field(METADATA)),
        ("metadata connectedAt next year", metadata(&|b| b["metadata"]["connectedAt"] = json!("2099-01-01T00:00:00Z")), invalid_field(METADATA)),
        ("metadata connectedAt before 1970", metadata(&|b| b["metadata"]["connectedAt"] = json!("1969-12-31T23:59:59Z")), invalid_field(METADATA)),
        ("metadata connectedAt without a zone", metadata(&|b| b["metadata"]["connectedAt"] = json!("2025-10-05T12:00:00")), invalid_field(METADATA)),
        ("metadata calendarId an operator", metadata(&|b| b["metadata"]["calendarId"] = json!({ "$ne": null })), invalid_field(METADATA)),
        ("metadata calendarId not hex", metadata(&|b| b["metadata"]["calendarId"] = json!("zzzzzzzzzzzzzzzzzzzzzzzz")), invalid_field(METADATA)),
        ("metadata googleEmail invalid", metadata(&|b| b["metadata"]["googleEmail"] = json!("evil")), bad_email_code(METADATA)),
        ("metadata userEmail with CRLF", metadata(&|b| b["metadata"]["userEmail"] = json!("a@example.com\r\nBcc: x@example.com")), bad_email_code(METADATA)),
        ("metadata with an extra field", metadata(&|b| b["metadata"]["tokens"] = json!("x")), api_error(400, "unknown_field", METADATA)),
        ("metadata missing", metadata(&|b| *b = json!({})), api_error(400, "missing_field", METADATA)),
        ("metadata null", metadata(&|b| *b = json!({ "metadata": null })), invalid_field(METADATA)),
        ("metadata body of 17 KiB", metadata(&|b| b["metadata"]["padding"] = json!("x".repeat(17 * 1024))), api_error(413, "payload_too_large", METADATA)),
    ];
    cases.push((
        "metadata as form data",
        RawRequest::post(metadata_path(SUB_A))
            .header("X-Service-Token", WRITER)
            .body("application/x-www-form-urlencoded", "metadata=1"),
        api_error(415, "unsupported_media_type", METADATA),
    ));
    cases
        .into_iter()
        .map(|(name, request, expect)| Case::new(name, Target::Api, request, expect))
        .collect()
}
