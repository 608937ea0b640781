//! Oversized, duplicated and contradictory headers, and broken body framing.

use crate::*;

/// Oversized, duplicated and contradictory headers, and broken body framing.
pub fn abusive_headers() -> Vec<Case> {
    let body = connect_body().to_string();
    let base = || RawRequest::post(connect_path(SUB_A));
    let framed = |extra: &[(&str, &str)], payload: &str| {
        let mut request = base()
            .bearer(&user_token(SUB_A))
            .header("Content-Type", "application/json")
            .unframed();
        for (name, value) in extra {
            request = request.header(name, *value);
        }
        request.untyped_body(payload.to_owned())
    };
    let cases: Vec<(&str, RawRequest, Expect)> = vec![
        (
            "a header of 100 KiB",
            base()
                .bearer(&user_token(SUB_A))
                .header("X-Padding", "p".repeat(100 * 1024))
                .body("text/plain", body.clone()),
            api_error(415, "unsupported_media_type", CONNECT),
        ),
        (
            "header section of 1 MiB",
            base()
                .header("X-Padding", "p".repeat(1024 * 1024))
                .json(&connect_body()),
            Expect::Protocol { status: 431 },
        ),
        (
            "200 headers",
            (0..200)
                .fold(base(), |r, i| r.header(&format!("X-H{i}"), "v"))
                .json(&connect_body()),
            Expect::Protocol { status: 431 },
        ),
        (
            "two Authorization headers, garbage first",
            base()
                .header("Authorization", "Bearer garbage")
                .bearer(&user_token(SUB_A))
                .json(&connect_body()),
            api_error(401, "invalid_token", CONNECT),
        ),
        (
            "two Authorization headers, another tenant's first",
            base()
                .bearer(&user_token(SUB_B))
                .bearer(&user_token(SUB_A))
                .json(&connect_body()),
            api_error(403, "subaccount_forbidden", CONNECT),
        ),
        (
            "two Content-Types, text first",
            base()
                .bearer(&user_token(SUB_A))
                .header("Content-Type", "text/plain")
                .json(&connect_body()),
            api_error(415, "unsupported_media_type", CONNECT),
        ),
        (
            "Content-Length not a number",
            framed(&[("Content-Length", "abc")], &body),
            Expect::Protocol { status: 400 },
        ),
        (
            "two different Content-Lengths",
            framed(
                &[
                    ("Content-Length", &body.len().to_string()),
                    ("Content-Length", &(body.len() + 5).to_string()),
                ],
                &body,
            ),
            Expect::Protocol { status: 400 },
        ),
        (
            "Content-Length of 2^64",
            framed(&[("Content-Length", "18446744073709551616")], &body),
            Expect::Protocol { status: 400 },
        ),
        (
            "negative Content-Length",
            framed(&[("Content-Length", "-1")], &body),
            Expect::Protocol { status: 400 },
        ),
        (
            "Content-Length of 10 MB, 64 KiB sent",
            framed(&[("Content-Length", "10000000")], &"x".repeat(64 * 1024)),
            api_error(413, "payload_too_large", CONNECT),
        ),
        (
            "Expect: 100-continue with 10 MB, 64 KiB sent at once",
            framed(
                &[("Content-Length", "10000000"), ("Expect", "100-continue")],
                &"x".repeat(64 * 1024),
            ),
            api_error(413, "payload_too_large", CONNECT),
        ),
        (
            // RFC 9112 §6.3: chunked wins and the connection is closed; what the chunks
            // carry is judged like any body, here with a forged token.
            "Content-Length and chunked together",
            base()
                .bearer(&hs256(
                    &claims(SUB_A),
                    b"another-secret-of-at-least-32-bytes!!",
                ))
                .header("Content-Type", "application/json")
                .header("Content-Length", "4")
                .header("Transfer-Encoding", "chunked")
                .unframed()
                .untyped_body(format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())),
            api_error(401, "invalid_token", CONNECT),
        ),
        (
            "chunked with a bad chunk size",
            framed(
                &[("Transfer-Encoding", "chunked")],
                &format!("zz\r\n{body}\r\n0\r\n\r\n"),
            ),
            Expect::Protocol { status: 400 },
        ),
        (
            "chunked, 1 MiB in small chunks",
            framed(
                &[("Transfer-Encoding", "chunked")],
                &format!(
                    "{}0\r\n\r\n",
                    format!("400\r\n{}\r\n", "x".repeat(1024)).repeat(1024)
                ),
            ),
            api_error(413, "payload_too_large", CONNECT),
        ),
        (
            "Transfer-Encoding gzip",
            framed(&[("Transfer-Encoding", "gzip")], &body),
            Expect::Protocol { status: 400 },
        ),
        (
            "header name with a space",
            base()
                .header("Bad Header", "x")
                .bearer(&user_token(SUB_A))
                .json(&connect_body()),
            Expect::Protocol { status: 400 },
        ),
        (
            "obsolete line folding",
            base()
                .header("X-Folded", "a\r\n b")
                .bearer(&user_token(SUB_A))
                .json(&connect_body()),
            Expect::Protocol { status: 400 },
        ),
        (
            "header value with a NUL",
            base()
                .header("X-Nul", "a\0b")
                .bearer(&user_token(SUB_A))
                .json(&connect_body()),
            Expect::Protocol { status: 400 },
        ),
        (
            "X-Forwarded-For claiming loopback",
            base()
                .header("X-Forwarded-For", "127.0.0.1")
                .header("X-Real-IP", "127.0.0.1")
                .json(&connect_body()),
            api_error(401, "missing_token", CONNECT),
        ),
        (
            "X-HTTP-Method-Override to DELETE",
            RawRequest::get(format!("/api/connectors/{SUB_B}/google-calendar"))
                .bearer(&user_token(SUB_A))
                .header("X-HTTP-Method-Override", "DELETE"),
            api_error(403, "subaccount_forbidden", GET_ONE),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, request, expect)| Case::new(name, Target::Api, request, expect))
        .collect()
}
