//! NATS JWTs (the `ed25519-nkey` profile of nats-io/jwt v2, as `nsc` writes them): a JSON
//! header and claims, base64url without padding, signed with the issuer's nkey.
//!
//! The claims hold the standard fields (`jti`, `iat`, `iss`, `name`, `sub`) and a `nats`
//! object whose `type` says what the token is: an operator (self-signed), an account (signed
//! by the operator) or a user (signed by its account, carrying its permissions).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest, Sha512_256};

use schemas::bus_access::Permissions;

/// A signed JWT for `subject`, issued by `issuer` now.
pub fn sign(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> anyhow::Result<String> {
    sign_at(issuer, subject, name, nats, chrono::Utc::now().timestamp())
}

/// A signed JWT issued at `issued_at`: the same claims give the same token (ed25519 signatures
/// are deterministic), which a server reload needs for the operator.
pub fn sign_at(
    issuer: &KeyPair,
    subject: &str,
    name: &str,
    nats: Value,
    issued_at: i64,
) -> anyhow::Result<String> {
    let mut claims = json!({
        "jti": "",
        "iat": issued_at,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
    });
    // The id is a hash of the standard claims (without the id), as nats-io/jwt computes it.
    let digest = Sha512_256::digest(serde_json::to_vec(&claims)?);
    claims["jti"] = json!(data_encoding::BASE32_NOPAD.encode(&digest));
    claims["nats"] = nats;
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?);
    let input = format!("{header}.{body}");
    let signature = issuer
        .sign(input.as_bytes())
        .map_err(|e| anyhow::anyhow!("signing a NATS JWT: {e}"))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// The operator's self-signed JWT, naming the system account. Issued at a fixed time, so it is
/// the same token every time the configuration is written: nats-server cannot reload a
/// changed operator.
pub fn operator(
    operator: &KeyPair,
    name: &str,
    system_account: &str,
    issued_at: i64,
) -> anyhow::Result<String> {
    sign_at(
        operator,
        &operator.public_key(),
        name,
        json!({ "type": "operator", "version": 2, "system_account": system_account }),
        issued_at,
    )
}

/// An account's JWT, signed by the operator. `jetstream` gives it unlimited JetStream
/// storage (the limits are the streams' own); `revoked` lists user keys whose credentials
/// issued until the given time are refused.
pub fn account(
    operator: &KeyPair,
    account: &KeyPair,
    name: &str,
    jetstream: bool,
    revoked: &[(String, i64)],
    issued_at: i64,
) -> anyhow::Result<String> {
    let mut limits = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    });
    if jetstream {
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[key] = json!(-1);
        }
    }
    let mut nats = json!({
        "limits": limits,
        "default_permissions": { "pub": {}, "sub": {} },
        "type": "account",
        "version": 2,
    });
    if !revoked.is_empty() {
        nats["revocations"] = revoked
            .iter()
            .map(|(key, until)| (key.clone(), json!(until)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    sign_at(operator, &account.public_key(), name, nats, issued_at)
}

/// A user's JWT, signed by its account, carrying `permissions`.
pub fn user(
    account: &KeyPair,
    user: &KeyPair,
    name: &str,
    permissions: &Permissions,
) -> anyhow::Result<String> {
    let list = |allow: &[String], deny: &[String]| {
        let mut side = serde_json::Map::new();
        if !allow.is_empty() {
            side.insert("allow".into(), json!(allow));
        }
        if !deny.is_empty() {
            side.insert("deny".into(), json!(deny));
        }
        Value::Object(side)
    };
    let mut nats = json!({
        "pub": list(&permissions.publish_allow, &permissions.publish_deny),
        "sub": list(&permissions.subscribe_allow, &permissions.subscribe_deny),
        "subs": -1, "data": -1, "payload": -1,
        "type": "user",
        "version": 2,
    });
    if permissions.allow_responses {
        // One reply per request received, within the server's default response window.
        nats["resp"] = json!({ "max": 1, "ttl": 0 });
    }
    sign(account, &user.public_key(), name, nats)
}

/// A `.creds` file: the user's JWT and nkey seed, in the layout `nsc` writes and every NATS
/// client reads.
pub fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// The user JWT and seed in a `.creds` file's text.
pub fn parse_creds(text: &str) -> Option<(String, String)> {
    let block = |begin: &str| {
        let rest = text.split(begin).nth(1)?;
        let body = rest.split("------END").next()?;
        Some(body.trim().to_owned())
    };
    Some((
        block("-----BEGIN NATS USER JWT-----")?,
        block("-----BEGIN USER NKEY SEED-----")?,
    ))
}

/// The claims of a JWT (not verified: for reading back what this module wrote).
pub fn claims(jwt: &str) -> Option<Value> {
    let body = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_jwt_verifies_with_the_issuer_key_and_says_who_it_is() {
        let op = KeyPair::new_operator();
        let acc = KeyPair::new_account();
        let jwt = account(&op, &acc, "gcal", true, &[("UABC".into(), 5)], 7).expect("jwt");
        let parts: Vec<_> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
        op.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("signed by the operator");
        let claims = claims(&jwt).expect("claims");
        assert_eq!(claims["iss"], json!(op.public_key()));
        assert_eq!(claims["sub"], json!(acc.public_key()));
        assert_eq!(claims["nats"]["type"], json!("account"));
        assert_eq!(claims["nats"]["limits"]["disk_storage"], json!(-1));
        assert_eq!(claims["nats"]["revocations"]["UABC"], json!(5));
        assert_eq!(claims["jti"].as_str().expect("jti").len(), 52);
    }

    #[test]
    fn creds_files_round_trip() {
        let text = creds("a.b.c", "SUSEED");
        assert_eq!(parse_creds(&text), Some(("a.b.c".into(), "SUSEED".into())));
    }
}
