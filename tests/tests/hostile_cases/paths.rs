//! Path segments an attacker makes up, and paths into another tenant.

use crate::*;

/// Subaccount ids, connector names and other path segments an attacker makes up, and paths
/// into another tenant.
pub fn abusive_paths() -> Vec<Case> {
    let bad_id = |op| api_error(400, "invalid_subaccount_id", op);
    let token = || user_token(SUB_A);
    let connect = |path: String| {
        RawRequest::post(path)
            .bearer(&token())
            .json(&connect_body())
    };
    let get = |path: String| RawRequest::get(path).bearer(&token());
    let delete = |path: String| RawRequest::delete(path).bearer(&token());
    let long = "a".repeat(8 * 1024);
    let cases: Vec<(&str, RawRequest, Expect)> = vec![
        (
            "subaccount id of 23 characters",
            connect(connect_path(&SUB_A[..23])),
            bad_id(CONNECT),
        ),
        (
            "subaccount id of 25 characters",
            connect(connect_path(&format!("{SUB_A}0"))),
            bad_id(CONNECT),
        ),
        (
            "subaccount id not hex",
            connect(connect_path("zzzzzzzzzzzzzzzzzzzzzzzz")),
            bad_id(CONNECT),
        ),
        (
            "subaccount id with full-width digits",
            connect(connect_path(&format!("%EF%BC%96%EF%BC%98{}", &SUB_A[2..]))),
            bad_id(CONNECT),
        ),
        (
            "subaccount id with a percent-encoded slash",
            connect(connect_path(&format!(
                "{}%2F{}",
                &SUB_A[..12],
                &SUB_A[12..]
            ))),
            bad_id(CONNECT),
        ),
        (
            "subaccount id with a NUL byte",
            connect(connect_path(&format!("{}%00", &SUB_A[..23]))),
            bad_id(CONNECT),
        ),
        (
            "subaccount id followed by an encoded NUL",
            connect(connect_path(&format!("{SUB_A}%00"))),
            bad_id(CONNECT),
        ),
        (
            "subaccount id with a trailing encoded space",
            connect(connect_path(&format!("{SUB_A}%20"))),
            bad_id(CONNECT),
        ),
        (
            "subaccount id `..`",
            connect(connect_path("..")),
            bad_id(CONNECT),
        ),
        (
            "subaccount id `%2e%2e`",
            connect(connect_path("%2e%2e")),
            bad_id(CONNECT),
        ),
        (
            "subaccount id as a NoSQL operator",
            get("/api/connectors/%7B%22%24ne%22%3Anull%7D".to_owned()),
            bad_id(LIST),
        ),
        (
            "subaccount id with a regex",
            get("/api/connectors/.%2A".to_owned()),
            bad_id(LIST),
        ),
        (
            "subaccount id that is not UTF-8",
            get(format!("/api/connectors/%FF%FE{}", &SUB_A[2..])),
            api_error(400, "invalid_field", LIST),
        ),
        (
            "subaccount id of 8 KiB",
            get(format!("/api/connectors/{long}")),
            bad_id(LIST),
        ),
        (
            "`..` walking out of another tenant's path",
            connect(format!(
                "/api/connectors/{SUB_B}/../{SUB_A}/handlegooglecalendar"
            )),
            api_error(404, "route_not_found", ANY_ROUTE),
        ),
        (
            "encoded `..` walking into another tenant",
            get(format!("/api/connectors/{SUB_A}/%2e%2e%2f{SUB_B}")),
            api_error(400, "invalid_connector_id", GET_ONE),
        ),
        (
            "doubled slash",
            connect(format!("/api/connectors//{SUB_A}/handlegooglecalendar")),
            api_error(404, "route_not_found", ANY_ROUTE),
        ),
        (
            "unknown connector",
            get(format!("/api/connectors/{SUB_A}/not-a-connector")),
            api_error(404, "connector_not_found", GET_ONE),
        ),
        (
            "connector id in capitals",
            get(format!("/api/connectors/{SUB_A}/Google-Calendar")),
            api_error(400, "invalid_connector_id", GET_ONE),
        ),
        (
            "connector id with an underscore",
            get(format!("/api/connectors/{SUB_A}/google_calendar")),
            api_error(400, "invalid_connector_id", GET_ONE),
        ),
        (
            "connector id of 65 characters",
            get(format!("/api/connectors/{SUB_A}/{}", "a".repeat(65))),
            api_error(400, "invalid_connector_id", GET_ONE),
        ),
        (
            "connector id with a NUL byte",
            get(format!("/api/connectors/{SUB_A}/google-calendar%00")),
            api_error(400, "invalid_connector_id", GET_ONE),
        ),
        (
            "connector id as a NoSQL operator",
            get(format!("/api/connectors/{SUB_A}/%24where")),
            api_error(400, "invalid_connector_id", GET_ONE),
        ),
        (
            "disconnecting another connector",
            delete(format!("/api/connectors/{SUB_A}/other-connector")),
            api_error(400, "invalid_field", DISCONNECT_ALL),
        ),
        (
            "disconnecting an account that is not an address",
            delete(format!(
                "/api/connectors/{SUB_A}/google-calendar/connections/not-an-address"
            )),
            api_error(400, BAD_EMAIL, DISCONNECT_ONE),
        ),
        (
            "disconnecting an account with an encoded slash",
            delete(format!(
                "/api/connectors/{SUB_A}/google-calendar/connections/a%2F..%2F%40gmail.example"
            )),
            api_error(400, BAD_EMAIL, DISCONNECT_ONE),
        ),
        (
            "disconnecting an account as a NoSQL operator",
            delete(format!(
                "/api/connectors/{SUB_A}/google-calendar/connections/%7B%22%24ne%22%3A1%7D"
            )),
            api_error(400, BAD_EMAIL, DISCONNECT_ONE),
        ),
        (
            "webhook id as a NoSQL operator",
            delete(format!(
                "/api/connectors/{SUB_A}/webhooks/%7B%22%24ne%22%3Anull%7D"
            )),
            api_error(404, "webhook_not_found", WEBHOOK_DELETE),
        ),
        (
            "deliveries of an unknown webhook",
            get(format!(
                "/api/connectors/{SUB_A}/webhooks/0199a3c2-7b1e-7c3a-9d2f-5e8b1a4c6d70/deliveries"
            )),
            api_error(404, "webhook_not_found", DELIVERIES),
        ),
        (
            "deliveries with a negative limit",
            get(format!(
                "/api/connectors/{SUB_A}/webhooks/0199a3c2-7b1e-7c3a-9d2f-5e8b1a4c6d70/deliveries?limit=-1"
            )),
            api_error(400, "invalid_field", DELIVERIES),
        ),
        (
            "deliveries with a huge limit",
            get(format!(
                "/api/connectors/{SUB_A}/webhooks/0199a3c2-7b1e-7c3a-9d2f-5e8b1a4c6d70/deliveries?limit=99999999999999999999"
            )),
            api_error(400, "invalid_field", DELIVERIES),
        ),
        (
            "deliveries with an unknown query parameter",
            get(format!(
                "/api/connectors/{SUB_A}/webhooks/0199a3c2-7b1e-7c3a-9d2f-5e8b1a4c6d70/deliveries?where=1"
            )),
            api_error(400, "invalid_field", DELIVERIES),
        ),
        (
            "PUT on the connect route",
            RawRequest::new("PUT", connect_path(SUB_A))
                .bearer(&token())
                .json(&connect_body()),
            api_error(405, "method_not_allowed", ANY_ROUTE),
        ),
        (
            "TRACE on a connector",
            RawRequest::new("TRACE", format!("/api/connectors/{SUB_A}")).bearer(&token()),
            api_error(405, "method_not_allowed", ANY_ROUTE),
        ),
        (
            "a made-up method",
            RawRequest::new("HACK", format!("/api/connectors/{SUB_A}")).bearer(&token()),
            api_error(405, "method_not_allowed", ANY_ROUTE),
        ),
        (
            "unknown route under a tenant",
            get(format!("/api/connectors/{SUB_A}/google-calendar/tokens")),
            api_error(404, "route_not_found", ANY_ROUTE),
        ),
        (
            "path of 60 KiB",
            get(format!("/api/connectors/{}", "a/".repeat(30 * 1024))),
            api_error(404, "route_not_found", ANY_ROUTE),
        ),
        // Into another tenant, on every route, with a valid token of this one.
        (
            "another tenant: connect",
            connect(connect_path(SUB_B)),
            api_error(403, "subaccount_forbidden", CONNECT),
        ),
        (
            "another tenant spelled in capitals: connect",
            connect(connect_path(&SUB_B.to_uppercase())),
            api_error(403, "subaccount_forbidden", CONNECT),
        ),
        (
            "another tenant percent-encoded: connect",
            connect(connect_path(
                &SUB_B
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect::<String>(),
            )),
            api_error(403, "subaccount_forbidden", CONNECT),
        ),
        (
            "another tenant: add a connector",
            RawRequest::post(format!("/api/connectors/{SUB_B}"))
                .bearer(&token())
                .json(&json!({ "connectorId": "evil", "connectorType": "crm" })),
            api_error(403, "subaccount_forbidden", ADD),
        ),
        (
            "another tenant: list connectors",
            get(format!("/api/connectors/{SUB_B}")),
            api_error(403, "subaccount_forbidden", LIST),
        ),
        (
            "another tenant: read its connector",
            get(format!("/api/connectors/{SUB_B}/google-calendar")),
            api_error(403, "subaccount_forbidden", GET_ONE),
        ),
        (
            "another tenant: disconnect every account",
            delete(format!("/api/connectors/{SUB_B}/google-calendar")),
            api_error(403, "subaccount_forbidden", DISCONNECT_ALL),
        ),
        (
            "another tenant: disconnect one account",
            delete(format!(
                "/api/connectors/{SUB_B}/google-calendar/connections/a@gmail.example"
            )),
            api_error(403, "subaccount_forbidden", DISCONNECT_ONE),
        ),
        (
            "another tenant: read an operation",
            get(format!(
                "/api/connectors/{SUB_B}/operations/0199a3c2-7b1e-7c3a-9d2f-5e8b1a4c6d70"
            )),
            api_error(403, "subaccount_forbidden", OPERATION),
        ),
        (
            "another tenant: register a webhook",
            RawRequest::post(webhooks_path(SUB_B))
                .bearer(&token())
                .json(&json!({ "url": "https://example.com/hook" })),
            api_error(403, "subaccount_forbidden", WEBHOOKS_POST),
        ),
        (
            "another tenant: list webhooks",
            get(webhooks_path(SUB_B)),
            api_error(403, "subaccount_forbidden", WEBHOOKS_GET),
        ),
        (
            "another tenant: delete a webhook",
            delete(format!(
                "{}/0199a3c2-7b1e-7c3a-9d2f-5e8b1a4c6d70",
                webhooks_path(SUB_B)
            )),
            api_error(403, "subaccount_forbidden", WEBHOOK_DELETE),
        ),
        (
            "another tenant: webhook deliveries",
            get(format!(
                "{}/0199a3c2-7b1e-7c3a-9d2f-5e8b1a4c6d70/deliveries",
                webhooks_path(SUB_B)
            )),
            api_error(403, "subaccount_forbidden", DELIVERIES),
        ),
        (
            "another tenant named in X-Original-URL",
            connect(connect_path(SUB_B)).header("X-Original-URL", connect_path(SUB_A)),
            api_error(403, "subaccount_forbidden", CONNECT),
        ),
        (
            "another tenant, absolute-form request target",
            connect(format!("http://127.0.0.1{}", connect_path(SUB_B))),
            api_error(403, "subaccount_forbidden", CONNECT),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, request, expect)| Case::new(name, Target::Api, request, expect))
        .collect()
}
