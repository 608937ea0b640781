//! Service-token abuse on the deprecated metadata route.

use crate::*;

/// Service tokens forged, mixed up with user tokens, or lacking the permission, on the
/// deprecated metadata route.
pub fn service_token_abuse() -> Vec<Case> {
    let body = json!({ "metadata": {
        "calendarId": "507f1f77bcf86cd799439011", "userEmail": "user@example.com",
        "googleEmail": "googleuser@gmail.com", "connectedAt": "2025-10-05T12:00:00.000Z",
        "isConnected": true,
    }});
    let update = || RawRequest::post(metadata_path(SUB_A)).json(&body);
    let invalid = || api_error(401, "invalid_service_token", METADATA);
    let user = user_token(SUB_A);
    let cases: Vec<(&str, RawRequest, Expect)> = vec![
        (
            "no token",
            update(),
            api_error(401, "service_token_required", METADATA),
        ),
        (
            "garbage X-Service-Token",
            update().header("X-Service-Token", "garbage"),
            invalid(),
        ),
        ("garbage bearer", update().bearer("garbage"), invalid()),
        ("a user token as bearer", update().bearer(&user), invalid()),
        (
            "a user token as X-Service-Token",
            update().header("X-Service-Token", user.clone()),
            invalid(),
        ),
        (
            "the token's SHA-256 instead of the token",
            update().header("X-Service-Token", sha256_hex(WRITER)),
            invalid(),
        ),
        (
            "the token in capitals",
            update().header("X-Service-Token", WRITER.to_uppercase()),
            invalid(),
        ),
        (
            "the token with one character more",
            update().header("X-Service-Token", format!("{WRITER}x")),
            invalid(),
        ),
        (
            "the token less one character",
            update().header("X-Service-Token", &WRITER[..WRITER.len() - 1]),
            invalid(),
        ),
        (
            "the token and a second word",
            update().header("X-Service-Token", format!("{WRITER} x")),
            invalid(),
        ),
        (
            "an empty X-Service-Token",
            update().header("X-Service-Token", ""),
            invalid(),
        ),
        (
            "a token of 20 KiB",
            update().header("X-Service-Token", "t".repeat(20 * 1024)),
            invalid(),
        ),
        (
            "a token that is not UTF-8",
            update().header("X-Service-Token", b"\xff\xfe".to_vec()),
            invalid(),
        ),
        (
            "the good token beside a different bearer",
            update()
                .header("X-Service-Token", WRITER)
                .bearer("another-token"),
            invalid(),
        ),
        (
            "two X-Service-Tokens, garbage first",
            update()
                .header("X-Service-Token", "garbage")
                .header("X-Service-Token", WRITER),
            invalid(),
        ),
        (
            "Basic credentials only",
            update().header("Authorization", format!("Basic {}", b64(WRITER.as_bytes()))),
            api_error(401, "service_token_required", METADATA),
        ),
        (
            "a token without the permission",
            update().header("X-Service-Token", READER),
            api_error(403, "insufficient_permission", METADATA),
        ),
        (
            "a token without the permission, bad input first",
            RawRequest::post(metadata_path(SUB_A))
                .header("X-Service-Token", READER)
                .json(&json!({ "metadata": { "isConnected": true } })),
            api_error(400, "missing_field", METADATA),
        ),
        (
            "a token without the permission for another tenant",
            RawRequest::post(metadata_path(SUB_B))
                .header("X-Service-Token", READER)
                .json(&body),
            api_error(403, "insufficient_permission", METADATA),
        ),
        (
            "a good token, bad subaccount id",
            RawRequest::post(metadata_path("..%2F..%2Fadmin"))
                .header("X-Service-Token", WRITER)
                .json(&body),
            api_error(400, "invalid_subaccount_id", METADATA),
        ),
        (
            "a service token on a user route",
            RawRequest::post(connect_path(SUB_A))
                .bearer(WRITER)
                .json(&connect_body()),
            api_error(401, "invalid_token", CONNECT),
        ),
        (
            "a service token as X-Service-Token on a user route",
            RawRequest::post(connect_path(SUB_A))
                .header("X-Service-Token", WRITER)
                .json(&connect_body()),
            api_error(401, "missing_token", CONNECT),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, request, expect)| {
            Case::new(
                format!("service token: {name}"),
                Target::Api,
                request,
                expect,
            )
        })
        .collect()
}
