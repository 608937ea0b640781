//! Forged, tampered, expired and misused user tokens: HS256 against the api, key confusion,
//! `kid` tricks and claim checks against the RS256 api.

use crate::*;

/// Forged, tampered, expired and misused user tokens against the HS256 api.
pub fn forged_user_tokens() -> Vec<Case> {
    let invalid = || api_error(401, "invalid_token", CONNECT);
    let forbidden = |code| api_error(403, code, CONNECT);
    let good = claims(SUB_A);
    let valid = user_token(SUB_A);
    let (head, rest) = valid.split_once('.').expect("jws");
    let (payload, signature) = rest.split_once('.').expect("jws");
    let none = |alg: &str| handmade(&json!({ "alg": alg, "typ": "JWT" }), &good, "");
    let mut cases = vec![
        (
            "no Authorization header",
            RawRequest::post(connect_path(SUB_A)).json(&connect_body()),
            api_error(401, "missing_token", CONNECT),
        ),
        ("alg none", connect_as(SUB_A, &none("none")), invalid()),
        ("alg None", connect_as(SUB_A, &none("None")), invalid()),
        ("alg NONE", connect_as(SUB_A, &none("NONE")), invalid()),
        (
            "alg none with the real signature kept",
            connect_as(
                SUB_A,
                &format!(
                    "{}.{payload}.{signature}",
                    b64(br#"{"alg":"none","typ":"JWT"}"#)
                ),
            ),
            invalid(),
        ),
        (
            "alg header removed",
            connect_as(
                SUB_A,
                &format!("{}.{payload}.{signature}", b64(br#"{"typ":"JWT"}"#)),
            ),
            invalid(),
        ),
        (
            "HS384 with the api's secret",
            connect_as(
                SUB_A,
                &sign(
                    &Header::new(Algorithm::HS384),
                    &good,
                    &EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
                ),
            ),
            invalid(),
        ),
        (
            "HS512 with the api's secret",
            connect_as(
                SUB_A,
                &sign(
                    &Header::new(Algorithm::HS512),
                    &good,
                    &EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
                ),
            ),
            invalid(),
        ),
        (
            "wrong secret",
            connect_as(
                SUB_A,
                &hs256(&good, b"another-secret-of-at-least-32-bytes!!"),
            ),
            invalid(),
        ),
        (
            "the public development secret",
            connect_as(
                SUB_A,
                &hs256(&good, service_kit::auth::DEV_JWT_SECRET.as_bytes()),
            ),
            invalid(),
        ),
        (
            "one-byte secret",
            connect_as(SUB_A, &hs256(&good, b"x")),
            invalid(),
        ),
        (
            "claims swapped under a valid signature",
            connect_as(
                SUB_A,
                &format!(
                    "{head}.{}.{signature}",
                    b64(claims(SUB_B).to_string().as_bytes())
                ),
            ),
            invalid(),
        ),
        (
            "expired an hour ago",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("exp".into(), json!(now() - 3600));
                }),
            ),
            api_error(401, "token_expired", CONNECT),
        ),
        (
            "exp zero",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("exp".into(), json!(0));
                }),
            ),
            api_error(401, "token_expired", CONNECT),
        ),
        (
            "nbf in an hour",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("nbf".into(), json!(now() + 3600));
                }),
            ),
            invalid(),
        ),
        (
            "no exp",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.remove("exp");
                }),
            ),
            invalid(),
        ),
        (
            "exp as a string",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("exp".into(), json!("9999999999"));
                }),
            ),
            invalid(),
        ),
        (
            "exp negative",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("exp".into(), json!(-1));
                }),
            ),
            invalid(),
        ),
        (
            "no sub",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.remove("sub");
                }),
            ),
            invalid(),
        ),
        (
            "subaccountIds as a string",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("subaccountIds".into(), json!(SUB_A));
                }),
            ),
            invalid(),
        ),
        (
            "permissions as a string",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("permissions".into(), json!("connectors:manage"));
                }),
            ),
            invalid(),
        ),
        (
            "claims are an array",
            connect_as(SUB_A, &hs256(&json!([good.clone()]), SECRET.as_bytes())),
            invalid(),
        ),
        (
            "token for another subaccount",
            connect_as(SUB_A, &user_token(SUB_B)),
            forbidden("subaccount_forbidden"),
        ),
        (
            "subaccountIds wildcard",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("subaccountIds".into(), json!(["*"]));
                }),
            ),
            forbidden("subaccount_forbidden"),
        ),
        (
            "subaccountIds prefix of the id",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("subaccountIds".into(), json!([&SUB_A[..12]]));
                }),
            ),
            forbidden("subaccount_forbidden"),
        ),
        (
            "subaccountIds empty",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("subaccountIds".into(), json!([]));
                }),
            ),
            forbidden("subaccount_forbidden"),
        ),
        (
            "role Admin (not admin)",
            connect_as(
                SUB_A,
                &token_with(SUB_B, |c| {
                    c.insert("roles".into(), json!(["Admin"]));
                }),
            ),
            forbidden("subaccount_forbidden"),
        ),
        (
            "role admin with a trailing space",
            connect_as(
                SUB_A,
                &token_with(SUB_B, |c| {
                    c.insert("roles".into(), json!(["admin "]));
                }),
            ),
            forbidden("subaccount_forbidden"),
        ),
        (
            "admin role as a string claim",
            connect_as(
                SUB_A,
                &token_with(SUB_B, |c| {
                    c.insert("role".into(), json!("admin"));
                }),
            ),
            forbidden("subaccount_forbidden"),
        ),
        (
            "admin role without the permission",
            connect_as(
                SUB_A,
                &token_with(SUB_B, |c| {
                    c.insert("roles".into(), json!(["admin"]));
                    c.insert("permissions".into(), json!([]));
                }),
            ),
            forbidden("permission_denied"),
        ),
        (
            "no permissions",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.remove("permissions");
                }),
            ),
            forbidden("permission_denied"),
        ),
        (
            "permission in another case",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("permissions".into(), json!(["Connectors:Manage"]));
                }),
            ),
            forbidden("permission_denied"),
        ),
        (
            "permission with a trailing space",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("permissions".into(), json!(["connectors:manage "]));
                }),
            ),
            forbidden("permission_denied"),
        ),
        (
            "permission wildcard",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("permissions".into(), json!(["*", "connectors:*"]));
                }),
            ),
            forbidden("permission_denied"),
        ),
        (
            "signature truncated",
            connect_as(SUB_A, &valid[..valid.len() - 4]),
            invalid(),
        ),
        (
            "signature removed",
            connect_as(SUB_A, &format!("{head}.{payload}.")),
            invalid(),
        ),
        (
            "two segments",
            connect_as(SUB_A, &format!("{head}.{payload}")),
            invalid(),
        ),
        (
            "four segments",
            connect_as(SUB_A, &format!("{valid}.{signature}")),
            invalid(),
        ),
        ("garbage", connect_as(SUB_A, "garbage"), invalid()),
        ("dots only", connect_as(SUB_A, "..."), invalid()),
        ("not base64", connect_as(SUB_A, "!!!.@@@.###"), invalid()),
        (
            "header is not JSON",
            connect_as(
                SUB_A,
                &format!("{}.{payload}.{signature}", b64(b"not json")),
            ),
            invalid(),
        ),
        (
            "token of 20 KiB",
            connect_as(SUB_A, &format!("{valid}{}", "A".repeat(20 * 1024))),
            invalid(),
        ),
        (
            "claims padded to 40 KiB",
            connect_as(
                SUB_A,
                &token_with(SUB_A, |c| {
                    c.insert("padding".into(), json!("x".repeat(40 * 1024)));
                }),
            ),
            invalid(),
        ),
        (
            "scheme Basic",
            connect_with_authorization(SUB_A, format!("Basic {}", b64(b"user:password"))),
            invalid(),
        ),
        (
            "scheme Token with a valid token",
            connect_with_authorization(SUB_A, format!("Token {valid}")),
            invalid(),
        ),
        (
            "BEARER with a forged token",
            connect_with_authorization(
                SUB_A,
                format!(
                    "BEARER {}",
                    hs256(&good, b"another-secret-of-at-least-32-bytes!!")
                ),
            ),
            invalid(),
        ),
        (
            "Bearer and a tab",
            connect_with_authorization(SUB_A, format!("Bearer\t{valid}")),
            invalid(),
        ),
        (
            "Bearer without a space",
            connect_with_authorization(SUB_A, format!("Bearer{valid}")),
            invalid(),
        ),
        (
            "Bearer alone",
            connect_with_authorization(SUB_A, "Bearer"),
            invalid(),
        ),
        (
            "Bearer with two tokens",
            connect_with_authorization(SUB_A, format!("Bearer {valid} {valid}")),
            invalid(),
        ),
        (
            "Bearer with a comma-joined second credential",
            connect_with_authorization(SUB_A, format!("Bearer garbage, Bearer {valid}")),
            invalid(),
        ),
        (
            "token with a control character",
            connect_with_authorization(SUB_A, format!("Bearer {valid}\u{1}x")),
            Expect::Protocol { status: 400 },
        ),
        (
            "non-UTF-8 bytes in the header",
            connect_with_authorization(SUB_A, b"Bearer \xff\xfe\xfd".to_vec()),
            invalid(),
        ),
        (
            "kid header on HS256 pointing at a file",
            connect_as(SUB_A, &{
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some("../../../../dev/null".into());
                sign(
                    &header,
                    &good,
                    &EncodingKey::from_secret(b"x").expect("key"),
                )
            }),
            invalid(),
        ),
    ];
    // The same forgeries against the routes that change something.
    let forged = hs256(&claims(SUB_A), b"another-secret-of-at-least-32-bytes!!");
    cases.push((
        "forged token adding a connector",
        RawRequest::post(format!("/api/connectors/{SUB_A}"))
            .bearer(&forged)
            .json(&json!({ "connectorId": "evil", "connectorType": "crm" })),
        api_error(401, "invalid_token", ADD),
    ));
    cases.push((
        "forged token registering a webhook",
        RawRequest::post(webhooks_path(SUB_A))
            .bearer(&forged)
            .json(&json!({ "url": "https://example.com/hook" })),
        api_error(401, "invalid_token", WEBHOOKS_POST),
    ));
    cases.push((
        "forged token disconnecting every account",
        RawRequest::delete(format!("/api/connectors/{SUB_A}/google-calendar")).bearer(&forged),
        api_error(401, "invalid_token", DISCONNECT_ALL),
    ));
    cases.push((
        "expired token disconnecting one account",
        RawRequest::delete(format!(
            "/api/connectors/{SUB_A}/google-calendar/connections/a@gmail.example"
        ))
        .bearer(&token_with(SUB_A, |c| {
            c.insert("exp".into(), json!(now() - 3600));
        })),
        api_error(401, "token_expired", DISCONNECT_ONE),
    ));
    cases.push((
        "alg none listing connectors",
        RawRequest::get(format!("/api/connectors/{SUB_A}")).bearer(&none("none")),
        api_error(401, "invalid_token", LIST),
    ));
    cases
        .into_iter()
        .map(|(name, request, expect)| Case::new(name, Target::Api, request, expect))
        .collect()
}

/// Key confusion, `kid` tricks and claim checks against the RS256 api (issuer and audience
/// configured).
pub fn forged_rs256_tokens(stack: &Stack) -> Vec<Case> {
    let list = format!("/api/connectors/{SUB_A}");
    let invalid = || api_error(401, "invalid_token", LIST);
    let idp = |subaccount: &str| {
        let mut c = claims(subaccount);
        c["iss"] = json!(ISSUER);
        c["aud"] = json!(AUDIENCE);
        c
    };
    let rs = |kid: Option<&str>, claims: &Value, key: &EncodingKey| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        sign(&header, claims, key)
    };
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = idp(SUB_A);
        change(&mut c);
        rs(Some(KID), &c, &stack.rsa_a)
    };
    let jwk_b = Jwk::from_encoding_key(&stack.rsa_b, Algorithm::RS256).expect("jwk");
    let public: Value = serde_json::from_str(&stack.public_jwk).expect("jwk");
    let modulus = public["n"].as_str().expect("n").to_owned();
    let cases: Vec<(&str, String, Expect)> = vec![
        (
            "HS256 signed with the published public key (JWK JSON)",
            {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some(KID.into());
                sign(
                    &header,
                    &idp(SUB_A),
                    &EncodingKey::from_secret(stack.public_jwk.as_bytes()).expect("key"),
                )
            },
            invalid(),
        ),
        (
            "HS256 signed with the public modulus",
            {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some(KID.into());
                sign(
                    &header,
                    &idp(SUB_A),
                    &EncodingKey::from_secret(modulus.as_bytes()).expect("key"),
                )
            },
            invalid(),
        ),
        (
            "HS256 signed with the api's HS secret",
            hs256(&idp(SUB_A), SECRET.as_bytes()),
            invalid(),
        ),
        (
            "alg none",
            handmade(&json!({ "alg": "none", "kid": KID }), &idp(SUB_A), ""),
            invalid(),
        ),
        (
            "RS384 with the real key",
            {
                let mut header = Header::new(Algorithm::RS384);
                header.kid = Some(KID.into());
                sign(&header, &idp(SUB_A), &stack.rsa_a)
            },
            invalid(),
        ),
        (
            "PS256 with the real key",
            {
                let mut header = Header::new(Algorithm::PS256);
                header.kid = Some(KID.into());
                sign(&header, &idp(SUB_A), &stack.rsa_a)
            },
            invalid(),
        ),
        (
            "ES256 with another key",
            {
                let mut header = Header::new(Algorithm::ES256);
                header.kid = Some(KID.into());
                sign(&header, &idp(SUB_A), &stack.ec)
            },
            invalid(),
        ),
        (
            "the key's kid, another key's signature",
            rs(Some(KID), &idp(SUB_A), &stack.rsa_b),
            invalid(),
        ),
        (
            "unknown kid",
            rs(Some("rsa-unknown"), &idp(SUB_A), &stack.rsa_b),
            invalid(),
        ),
        (
            "kid path traversal",
            rs(Some("../../../../etc/passwd"), &idp(SUB_A), &stack.rsa_b),
            invalid(),
        ),
        (
            "kid injection",
            rs(Some("rsa-1' OR '1'='1"), &idp(SUB_A), &stack.rsa_b),
            invalid(),
        ),
        (
            "kid of 8 KiB",
            rs(Some(&"k".repeat(8192)), &idp(SUB_A), &stack.rsa_b),
            invalid(),
        ),
        (
            "no kid, another key",
            rs(None, &idp(SUB_A), &stack.rsa_b),
            invalid(),
        ),
        (
            "jku pointing at the attacker's keys",
            {
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some(KID.into());
                header.jku = Some("https://attacker.example/jwks.json".into());
                sign(&header, &idp(SUB_A), &stack.rsa_b)
            },
            invalid(),
        ),
        (
            "embedded jwk of the attacker's key",
            {
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some(KID.into());
                header.jwk = Some(jwk_b.clone());
                sign(&header, &idp(SUB_A), &stack.rsa_b)
            },
            invalid(),
        ),
        (
            "x5u pointing at the attacker",
            {
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some(KID.into());
                header.x5u = Some("https://attacker.example/cert.pem".into());
                sign(&header, &idp(SUB_A), &stack.rsa_b)
            },
            invalid(),
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://attacker.example")),
            invalid(),
        ),
        (
            "issuer with a trailing slash",
            with(&|c| c["iss"] = json!(format!("{ISSUER}/"))),
            invalid(),
        ),
        (
            "issuer in another case",
            with(&|c| c["iss"] = json!(ISSUER.to_uppercase())),
            invalid(),
        ),
        (
            "no issuer",
            with(&|c| {
                c.as_object_mut().expect("object").remove("iss");
            }),
            invalid(),
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("another-api")),
            invalid(),
        ),
        (
            "audience list without ours",
            with(&|c| c["aud"] = json!(["another-api", "gcal-api-x"])),
            invalid(),
        ),
        (
            "no audience",
            with(&|c| {
                c.as_object_mut().expect("object").remove("aud");
            }),
            invalid(),
        ),
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 3600)),
            api_error(401, "token_expired", LIST),
        ),
        (
            "valid token of another tenant",
            rs(Some(KID), &idp(SUB_B), &stack.rsa_a),
            api_error(403, "subaccount_forbidden", LIST),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, token, expect)| {
            Case::new(
                format!("RS256 api: {name}"),
                Target::RsApi,
                RawRequest::get(list.clone()).bearer(&token),
                expect,
            )
        })
        .collect()
}
