//! How a webhook is signed (docs/webhooks.md, "Verifying a webhook"):
//!
//! `Gcal-Webhook-Signature: v1=<lowercase hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`,
//! where `secret` is the endpoint's secret exactly as shown at registration (`whsec_...`, as
//! UTF-8 bytes) and `timestamp` the `Gcal-Webhook-Timestamp` header (unix seconds).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The event id (receivers de-duplicate on it).
pub const ID_HEADER: &str = "Gcal-Webhook-Id";
/// When the attempt was signed, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "Gcal-Webhook-Timestamp";
/// `v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "Gcal-Webhook-Signature";

/// The `Gcal-Webhook-Signature` value for `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + 64);
    out.push_str("v1=");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_known_vector() {
        // printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'whsec_test'
        let signature = sign("whsec_test", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            signature,
            "v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_ne!(signature, sign("whsec_test", 1_700_000_001, br#"{"a":1}"#));
        assert_ne!(signature, sign("whsec_tesT", 1_700_000_000, br#"{"a":1}"#));
        assert_ne!(signature, sign("whsec_test", 1_700_000_000, br#"{"a":2}"#));
    }
}
