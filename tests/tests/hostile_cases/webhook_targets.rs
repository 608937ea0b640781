//! Webhook URLs aimed at the inside of the network, in every spelling.

use crate::*;

/// Webhook URLs aimed at the inside of the network, in every spelling.
pub fn ssrf_targets() -> Vec<Case> {
    let targets: Vec<(&str, &str)> = vec![
        ("https://127.0.0.1/", "private_address"),
        ("https://127.0.0.1:6379/", "private_address"),
        ("https://127.255.255.254/hook", "private_address"),
        ("https://localhost/", "private_address"),
        ("https://LOCALHOST./", "private_address"),
        ("https://api.localhost/", "private_address"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "private_address",
        ),
        ("https://169.254.170.2/v2/credentials", "private_address"),
        ("https://10.0.0.1/", "private_address"),
        ("https://172.16.0.1/", "private_address"),
        ("https://172.31.255.255/", "private_address"),
        ("https://192.168.1.1/", "private_address"),
        ("https://100.64.0.1/", "private_address"),
        ("https://0.0.0.0/", "private_address"),
        ("https://255.255.255.255/", "private_address"),
        ("https://224.0.0.251/", "private_address"),
        ("https://2130706433/", "private_address"),
        ("https://2852039166/", "private_address"),
        ("https://0177.0.0.1/", "private_address"),
        ("https://0x7f000001/", "private_address"),
        ("https://0x7f.1/", "private_address"),
        ("https://127.1/", "private_address"),
        ("https://0/", "private_address"),
        ("https://%31%32%37.0.0.1/", "private_address"),
        ("https://\u{ff11}\u{ff12}\u{ff17}.0.0.1/", "private_address"),
        ("https://[::1]/", "private_address"),
        ("https://[::]/", "private_address"),
        ("https://[0:0:0:0:0:0:0:1]/", "private_address"),
        ("https://[::ffff:127.0.0.1]/", "private_address"),
        ("https://[::ffff:7f00:1]/", "private_address"),
        ("https://[::ffff:169.254.169.254]/", "private_address"),
        ("https://[::127.0.0.1]/", "private_address"),
        ("https://[64:ff9b::a9fe:a9fe]/", "private_address"),
        ("https://[2002:7f00:1::]/", "private_address"),
        ("https://[fd00:ec2::254]/", "private_address"),
        ("https://[fe80::1]/", "private_address"),
        ("https://[fc00::1]/", "private_address"),
        ("https://[ff02::1]/", "private_address"),
        (
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "private_address",
        ),
        ("https://127.0.0.1#@example.com/", "private_address"),
        ("https://127.0.0.1?@example.com/", "private_address"),
        ("  https://127.0.0.1/  ", "private_address"),
        ("https://127.0.0.1\t/", "private_address"),
        ("https://example.com@127.0.0.1/", "credentials_in_url"),
        ("https://user:pass@example.com/", "credentials_in_url"),
        ("https://:@127.0.0.1/", "private_address"),
        ("http://127.0.0.1/", "not_https"),
        ("http://example.com/hook", "not_https"),
        ("file:///etc/passwd", "unsupported_scheme"),
        ("gopher://127.0.0.1:6379/_SET%20a%201", "unsupported_scheme"),
        ("ftp://example.com/", "unsupported_scheme"),
        ("dict://127.0.0.1:11211/stat", "unsupported_scheme"),
        ("ldap://127.0.0.1/", "unsupported_scheme"),
        ("ws://127.0.0.1/", "unsupported_scheme"),
        ("javascript:alert(1)", "unsupported_scheme"),
        ("data:text/plain,hello", "unsupported_scheme"),
        ("not a url", "malformed"),
        ("", "malformed"),
        ("//127.0.0.1/", "malformed"),
        ("https://", "malformed"),
        ("https://[fe80::1%25eth0]/", "malformed"),
        ("https://[::1/", "malformed"),
        ("https://300.0.0.1/", "malformed"),
    ];
    let mut cases: Vec<Case> = targets
        .into_iter()
        .map(|(url, reason)| {
            Case::new(
                format!("webhook to {url:?}"),
                Target::Api,
                RawRequest::post(webhooks_path(SUB_A))
                    .bearer(&user_token(SUB_A))
                    .json(&json!({ "url": url })),
                Expect::WebhookUrl { reason },
            )
        })
        .collect();
    cases.push(Case::new(
        "webhook URL of 3000 characters",
        Target::Api,
        RawRequest::post(webhooks_path(SUB_A))
            .bearer(&user_token(SUB_A))
            .json(&json!({ "url": format!("https://example.com/{}", "p".repeat(3000)) })),
        Expect::WebhookUrl {
            reason: "malformed",
        },
    ));
    cases
}
