//! Forged, replayed and abusive OAuth callbacks, at the page and at the frontend redirect.

use crate::*;

/// Callback URLs used once before the groups run, to be replayed.
pub struct UsedCallbacks {
    /// A consent that connected an account.
    connected: String,
    /// A consent the user denied.
    denied: String,
}

/// Consents once and once denies, so their callbacks can be replayed; waits until both
/// outcomes are recorded, so nothing they cause lands inside a group.
pub async fn use_two_callbacks(stack: &Stack) -> UsedCallbacks {
    let link = stack.issue_link(SUB_A, "replayed@example.com").await;
    let connected = stack
        .oauth
        .consent(
            &link,
            Decision::Allow {
                account: Some("replayed@gmail.example".into()),
                scopes: None,
            },
        )
        .await;
    let page = stack.oauth.open(&connected).await;
    assert_eq!(page.status, 200, "the first use connects: {}", page.body);
    let link = stack.issue_link(SUB_A, "denied@example.com").await;
    let denied = stack.oauth.consent(&link, Decision::Deny).await;
    assert_eq!(stack.oauth.open(&denied).await.status, 400);
    wait_for_failures(stack, 1).await;
    UsedCallbacks { connected, denied }
}

/// Waits until the stream holds `n` connection-failed events (they are published in the
/// background).
pub async fn wait_for_failures(stack: &Stack, n: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = stack
            .oauth
            .events::<ConnectionFailed>(Duration::ZERO)
            .await
            .len();
        if found >= n || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The path and query of a callback URL.
pub fn path_of(url: &str) -> String {
    let url = url::Url::parse(url).expect("url");
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

pub fn query_value(url: &str, name: &str) -> String {
    oauth_support::query(url)[name].clone()
}

/// Callbacks whose state is missing, forged, malformed or already used: a failure page (or a
/// redirect naming `link_expired`), no code exchanged, nothing stored, no event.
pub fn forged_callbacks(used: &UsedCallbacks) -> Vec<Case> {
    let callback = oauth_worker::callback::PATH;
    let connected = path_of(&used.connected);
    let swapped_code = connected.replace(
        &query_value(&used.connected, "code"),
        "another-code-entirely",
    );
    let queries: Vec<(&str, String)> = vec![
        ("no query", callback.to_owned()),
        ("code without state", format!("{callback}?code=abc")),
        ("empty state", format!("{callback}?state=&code=abc")),
        (
            "forged state",
            format!("{callback}?state=forged-state-value&code=abc"),
        ),
        (
            "state of 513 characters",
            format!("{callback}?state={}&code=abc", "s".repeat(513)),
        ),
        (
            "state of 48 KiB",
            format!("{callback}?state={}&code=abc", "s".repeat(48 * 1024)),
        ),
        ("state a Redis glob", format!("{callback}?state=*&code=abc")),
        (
            "state naming a Redis key",
            format!("{callback}?state=t*%3Aoauth%3Astate%3A*&code=abc"),
        ),
        (
            "state with CRLF",
            format!("{callback}?state=x%0D%0ASET%20a%201&code=abc"),
        ),
        ("state with NUL", format!("{callback}?state=x%00y&code=abc")),
        (
            "state not UTF-8",
            format!("{callback}?state=%FF%FE&code=abc"),
        ),
        (
            "state given twice",
            format!("{callback}?state=a&state=b&code=abc"),
        ),
        (
            "broken percent-encoding",
            format!("{callback}?state=%zz&code=%"),
        ),
        (
            "error without state",
            format!("{callback}?error=access_denied"),
        ),
        (
            "script in error without state",
            format!("{callback}?error=%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
        ),
        ("replayed successful callback", connected.clone()),
        ("replayed callback with another code", swapped_code),
        ("replayed denied callback", path_of(&used.denied)),
    ];
    let mut cases = Vec::new();
    for (name, target) in queries {
        cases.push(Case::new(
            format!("callback page: {name}"),
            Target::Worker,
            RawRequest::get(target.clone()),
            Expect::Page { status: 400 },
        ));
        cases.push(Case::new(
            format!("callback redirect: {name}"),
            Target::Redirect,
            RawRequest::get(target),
            Expect::Redirect {
                reason: "link_expired",
            },
        ));
    }
    cases.push(Case::new(
        "callback POSTed",
        Target::Worker,
        RawRequest::post(format!("{callback}?state=x&code=y"))
            .body("application/x-www-form-urlencoded", "state=x&code=y"),
        Expect::Protocol { status: 405 },
    ));
    cases
}

/// Callbacks that carry a live state but a forged code, another tenant's state, or an
/// abusive `error`: each consumes its state and records connection-failed, and nothing else.
pub async fn live_state_callbacks(stack: &Stack) -> Vec<Case> {
    let callback = oauth_worker::callback::PATH;
    // A code this tenant's consent produced, for another attempt's state.
    let donor = stack.issue_link(SUB_A, "donor@example.com").await;
    let donor = stack.oauth.consent(&donor, Decision::allow()).await;
    let code = query_value(&donor, "code");
    let state = |url: String| query_value(&url, "state");
    let other_tenant = state(stack.issue_link(SUB_B, "b-user@example.com").await);
    let mut fresh = Vec::new();
    for i in 0..7 {
        fresh.push(state(
            stack
                .issue_link(SUB_A, &format!("victim{i}@example.com"))
                .await,
        ));
    }
    vec![
        Case::new(
            "another tenant's state with this tenant's code",
            Target::Worker,
            RawRequest::get(format!("{callback}?state={other_tenant}&code={code}")),
            Expect::Page { status: 400 },
        ),
        Case::new(
            "live state with a forged code",
            Target::Worker,
            RawRequest::get(format!("{callback}?state={}&code=forged-code", fresh[0])),
            Expect::Page { status: 400 },
        ),
        Case::new(
            "live state with a code full of quotes and operators",
            Target::Redirect,
            RawRequest::get(format!(
                "{callback}?state={}&code=x%27%20OR%201%3D1%3B%20--%20%7B%22%24ne%22%3A1%7D",
                fresh[1]
            )),
            Expect::Redirect {
                reason: "provider_error",
            },
        ),
        Case::new(
            "live state with a code of 8 KiB",
            Target::Worker,
            RawRequest::get(format!(
                "{callback}?state={}&code={}",
                fresh[2],
                "c".repeat(8192)
            )),
            Expect::Page { status: 400 },
        ),
        Case::new(
            "live state, error and another attempt's code together",
            Target::Worker,
            RawRequest::get(format!(
                "{callback}?state={}&error=access_denied&code={code}",
                fresh[3]
            )),
            Expect::Page { status: 400 },
        ),
        Case::new(
            "live state with a script in error",
            Target::Worker,
            RawRequest::get(format!(
                "{callback}?state={}&error=%3Cscript%3Ealert(1)%3C%2Fscript%3E&error_description=%3Cimg%20src%3Dx%3E",
                fresh[4]
            )),
            Expect::Page { status: 400 },
        ),
        Case::new(
            "live state with an error of 10 KiB",
            Target::Redirect,
            RawRequest::get(format!(
                "{callback}?state={}&error={}",
                fresh[5],
                "e".repeat(10 * 1024)
            )),
            Expect::Redirect {
                reason: "provider_error",
            },
        ),
        Case::new(
            "live state with error=access_denied and a forged scope",
            Target::Redirect,
            RawRequest::get(format!(
                "{callback}?state={}&error=access_denied&scope=https://www.googleapis.com/auth/calendar",
                fresh[6]
            )),
            Expect::Redirect {
                reason: "access_denied",
            },
        ),
    ]
}

/// The callbacks with live states: each consumes its state and records exactly one
/// connection-failed; no token is issued, nothing is stored, nothing is sent.
pub async fn live_state_group(stack: &Stack, findings: &mut Findings) {
    let cases = live_state_callbacks(stack).await;
    let consumed = cases.len();
    let failures_before = wait_for_failures(stack, 0).await;
    let before = stack.snapshot().await;
    findings.run(stack, "live-state callbacks", cases).await;
    let failures_after = wait_for_failures(stack, failures_before + consumed).await;
    if failures_after != failures_before + consumed {
        findings.problems.push(format!(
            "[live-state callbacks] {consumed} connection-failed expected, {} recorded",
            failures_after - failures_before
        ));
    }
    let after = stack.snapshot().await;
    for change in before.changes(&after) {
        let expected = (change.starts_with("Redis: ")
            && (change.contains(":oauth:state:") && change.ends_with(" disappeared")
                || change.contains(":oauth:live-states:")))
            || change.starts_with("JetStream: ")
            || change.starts_with("provider calls")
            // Each failure is stored in the tenant's `outbox` before the page is answered and
            // removed once published; storing it makes the tenant's (empty) collections.
            || (change.starts_with("MongoDB: ")
                && (change.ends_with("appeared (0 documents)")
                    || change.contains(".outbox appeared")));
        if !expected {
            findings
                .problems
                .push(format!("[live-state callbacks] state changed: {change}"));
        }
    }
    if after.provider[2] != before.provider[2] {
        findings.problems.push(format!(
            "[live-state callbacks] the provider issued {} access tokens",
            after.provider[2] - before.provider[2]
        ));
    }
    let (events_before, events_after) = (
        before.streams[&stack.oauth.ns.events_stream()].0,
        after.streams[&stack.oauth.ns.events_stream()].0,
    );
    if events_after - events_before != consumed as u64 {
        findings.problems.push(format!(
            "[live-state callbacks] the stream gained {} events, {consumed} expected (connection-failed only)",
            events_after - events_before
        ));
    }
}
