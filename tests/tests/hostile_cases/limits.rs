//! Every limit, set up with legitimate requests and then exceeded.

use crate::*;

/// Every limit answers 429 with `details.limit` and `Retry-After`, and a refused request
/// stores and sends nothing. Sets up each limit with legitimate requests first, including a
/// link emailed to the canary address (whose email must then be the only one ever sent).
pub async fn limits(stack: &Stack, findings: &mut Findings) {
    let flooder = token_with(SUB_A, |c| {
        c.insert("sub".into(), json!("hostile-flooder"));
    });
    for _ in 0..5 {
        expect_status(
            stack,
            RawRequest::get(webhooks_path(SUB_A)).bearer(&flooder),
            200,
        )
        .await;
    }
    for _ in 0..10 {
        expect_status(
            stack,
            RawRequest::post(connect_path(SUB_C))
                .bearer(&user_token(SUB_C))
                .json(&connect_body()),
            404,
        )
        .await;
    }
    let metadata = json!({ "metadata": {
        "calendarId": "507f1f77bcf86cd799439011", "userEmail": "user@example.com",
        "googleEmail": "googleuser@gmail.com", "connectedAt": "2025-10-05T12:00:00.000Z",
        "isConnected": true,
    }});
    for _ in 0..5 {
        expect_status(
            stack,
            RawRequest::post(metadata_path(SUB_C))
                .header("X-Service-Token", FLOODER)
                .json(&metadata),
            404,
        )
        .await;
    }
    // The one email of the whole suite.
    expect_status(
        stack,
        RawRequest::post(connect_path(SUB_A))
            .bearer(&user_token(SUB_A))
            .json(&json!({ "userEmail": "canary@example.com" })),
        200,
    )
    .await;
    stack
        .sink
        .wait_for_messages(1, Duration::from_secs(30))
        .await;
    // The mailer records the email as sent just after the SMTP server took it.
    let sent = stack
        .api
        .tenant_db(SUB_A)
        .await
        .collection::<bson::Document>(mailer_worker::sent::COLLECTION);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sent
        .find_one(bson::doc! { "status": "sent" })
        .await
        .expect("read")
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mailer never recorded the canary's email as sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let webhook_limited = |op| Expect::Limited {
        limit: "webhook_management_per_caller",
        op,
    };
    let connect_limited = Expect::Limited {
        limit: "connect_per_subaccount",
        op: CONNECT,
    };
    let recipient_limited = || Expect::Limited {
        limit: "emails_per_recipient",
        op: CONNECT,
    };
    let unknown_webhook = "0199a3c2-7b1e-7c3a-9d2f-5e8b1a4c6d70";
    let cases: Vec<(&str, RawRequest, Expect)> = vec![
        (
            "webhook management over the limit: list",
            RawRequest::get(webhooks_path(SUB_A)).bearer(&flooder),
            webhook_limited(WEBHOOKS_GET),
        ),
        (
            "webhook management over the limit: register a private target",
            RawRequest::post(webhooks_path(SUB_A))
                .bearer(&flooder)
                .json(&json!({ "url": "https://127.0.0.1/" })),
            webhook_limited(WEBHOOKS_POST),
        ),
        (
            "webhook management over the limit: delete",
            RawRequest::delete(format!("{}/{unknown_webhook}", webhooks_path(SUB_A)))
                .bearer(&flooder),
            webhook_limited(WEBHOOK_DELETE),
        ),
        (
            "webhook management over the limit: deliveries",
            RawRequest::get(format!(
                "{}/{unknown_webhook}/deliveries",
                webhooks_path(SUB_A)
            ))
            .bearer(&flooder),
            webhook_limited(DELIVERIES),
        ),
        (
            "connects over the limit for a subaccount without the connector",
            RawRequest::post(connect_path(SUB_C))
                .bearer(&user_token(SUB_C))
                .json(&connect_body()),
            connect_limited,
        ),
        (
            "metadata updates over the limit",
            RawRequest::post(metadata_path(SUB_C))
                .header("X-Service-Token", FLOODER)
                .json(&metadata),
            Expect::Limited {
                limit: "metadata_update_per_caller",
                op: METADATA,
            },
        ),
        (
            "a second email to the canary, in capitals",
            RawRequest::post(connect_path(SUB_A))
                .bearer(&user_token(SUB_A))
                .json(&json!({ "userEmail": "CANARY@EXAMPLE.COM" })),
            recipient_limited(),
        ),
        (
            "a second email to the canary, domain in capitals",
            RawRequest::post(connect_path(SUB_A))
                .bearer(&user_token(SUB_A))
                .json(&json!({ "userEmail": "canary@Example.com", "sendEmail": true })),
            recipient_limited(),
        ),
        (
            "a second email to the canary from another tenant",
            RawRequest::post(connect_path(SUB_B))
                .bearer(&user_token(SUB_B))
                .json(&json!({ "userEmail": "canary@example.com" })),
            recipient_limited(),
        ),
    ];
    let cases = cases
        .into_iter()
        .map(|(name, request, expect)| Case::new(name, Target::Api, request, expect))
        .collect();
    findings.group(stack, "limits", cases).await;

    let emails = stack.sink.messages();
    let recipients: Vec<&String> = emails.iter().flat_map(|m| m.to.iter()).collect();
    if recipients != ["canary@example.com"] {
        findings.problems.push(format!(
            "[limits] the canary's email should be the only one sent; recipients: {recipients:?}"
        ));
    }
}
