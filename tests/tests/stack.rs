//! The whole system on real infrastructure: all four services start, report ready, expose
//! metrics, and report clearly when a dependency goes away.

use std::time::Duration;

use api::ApiConfig;
use e2e::servers::NatsServer;
use e2e::{RunningService, TestContext};
use mailer_worker::MailerWorkerConfig;
use metadata_worker::MetadataWorkerConfig;
use oauth_worker::OAuthWorkerConfig;

const READY: Duration = Duration::from_secs(30);

async fn start_all(ctx: &TestContext, overrides: &[(&str, &str)]) -> Vec<RunningService> {
    let api_config: ApiConfig = ctx.config(overrides);
    let oauth_config: OAuthWorkerConfig = ctx.config(overrides);
    let metadata_config: MetadataWorkerConfig = ctx.config(overrides);
    let mailer_config: MailerWorkerConfig = ctx.config(overrides);
    vec![
        RunningService::start(api::SERVICE, |l, s| api::run(api_config, l, s)).await,
        RunningService::start(oauth_worker::SERVICE, |l, s| {
            oauth_worker::run(oauth_config, l, s)
        })
        .await,
        RunningService::start(metadata_worker::SERVICE, |l, s| {
            metadata_worker::run(metadata_config, l, s)
        })
        .await,
        RunningService::start(mailer_worker::SERVICE, |l, s| {
            mailer_worker::run(mailer_config, l, s)
        })
        .await,
    ]
}

/// Stops every service, each cleanly.
async fn stop_all(services: Vec<RunningService>) {
    for service in services {
        let name = service.name;
        service
            .stop()
            .await
            .unwrap_or_else(|e| panic!("{name} stopped with an error: {e}"));
    }
}

#[tokio::test]
async fn all_four_services_become_ready_on_real_infrastructure_and_stop_cleanly() {
    let ctx = TestContext::new();
    let mut services = start_all(&ctx, &[]).await;
    for service in &mut services {
        let body = service.wait_ready(READY).await;
        assert_eq!(body["status"], "ready", "{}: {body}", service.name);
        assert_eq!(body["service"], service.name);
        for dependency in ["nats", "mongodb", "redis"] {
            assert_eq!(
                body["checks"][dependency]["ok"], true,
                "{}: {body}",
                service.name
            );
        }
        let (status, alive) = service.get("/healthz").await;
        assert_eq!((status, alive["status"].as_str()), (200, Some("alive")));
        let (status, metrics) = service.get("/metrics").await;
        assert_eq!(status, 200);
        let text = metrics.as_str().expect("prometheus text");
        assert!(
            text.contains("http_requests_total"),
            "{}: {text}",
            service.name
        );
    }

    // The workers provisioned both streams under this test's namespace.
    let nats = ctx.nats().await;
    let js = async_nats::jetstream::new(nats);
    let ns = schemas::subjects::Namespace::new(&ctx.id).expect("namespace");
    for stream in [ns.events_stream(), ns.dead_letter_stream()] {
        let mut stream = js.get_stream(&stream).await.expect("stream exists");
        let info = stream.info().await.expect("info");
        assert_eq!(
            info.config.storage,
            async_nats::jetstream::stream::StorageType::File
        );
    }

    stop_all(services).await;
}

#[tokio::test]
async fn every_answer_of_every_service_says_nosniff() {
    let ctx = TestContext::new();
    let mut services = start_all(&ctx, &[]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for service in &mut services {
        service.wait_ready(READY).await;
        let mut requests = vec![
            (reqwest::Method::GET, "/healthz", 200),
            (reqwest::Method::GET, "/readyz", 200),
            (reqwest::Method::GET, "/metrics", 200),
            (reqwest::Method::GET, "/no/such/path", 404),
            (reqwest::Method::DELETE, "/healthz", 405),
        ];
        match service.name {
            "api" => requests.extend([
                (
                    reqwest::Method::GET,
                    "/api/connectors/68cf05f060d294db17c0685e",
                    401,
                ),
                (reqwest::Method::GET, "/openapi.json", 200),
                (reqwest::Method::GET, "/docs/", 200),
            ]),
            "oauth-worker" => {
                requests.push((reqwest::Method::GET, oauth_worker::callback::PATH, 400));
            }
            _ => {}
        }
        for (method, path, status) in requests {
            let response = http
                .request(method.clone(), format!("{}{path}", service.base_url))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{} {method} {path}: {e}", service.name));
            assert_eq!(
                response.status().as_u16(),
                status,
                "{} {method} {path}",
                service.name
            );
            assert_eq!(
                response
                    .headers()
                    .get("x-content-type-options")
                    .and_then(|v| v.to_str().ok()),
                Some("nosniff"),
                "{} {method} {path}",
                service.name
            );
        }
    }
    for service in services {
        service.stop().await.expect("clean stop");
    }
}

#[tokio::test]
async fn readyz_turns_red_naming_nats_when_it_stops_and_green_when_it_returns() {
    let ctx = TestContext::new();
    let mut nats = NatsServer::start();
    let url = nats.url();
    let overrides = [("NATS_URL", url.as_str())];
    let mut services = start_all(&ctx, &overrides).await;
    for service in &mut services {
        service.wait_ready(READY).await;
    }

    nats.stop();
    for service in &mut services {
        let body = service.wait_readyz(503, READY).await;
        assert_eq!(body["status"], "not_ready", "{}: {body}", service.name);
        assert_eq!(
            body["checks"]["nats"]["ok"], false,
            "{}: {body}",
            service.name
        );
        let reason = body["checks"]["nats"]["error"].as_str().unwrap_or_default();
        assert!(
            reason.contains("NATS connection is"),
            "{}: {reason}",
            service.name
        );
        assert_eq!(
            body["checks"]["mongodb"]["ok"], true,
            "only NATS is down: {body}"
        );
        assert_eq!(
            body["checks"]["redis"]["ok"], true,
            "only NATS is down: {body}"
        );
        // Liveness is not readiness: the process is fine.
        assert_eq!(service.get("/healthz").await.0, 200);
    }

    nats.restart();
    for service in &mut services {
        service.wait_ready(READY).await;
    }
    stop_all(services).await;
}

/// A dependency that hangs (SIGSTOP: its sockets stay open, nothing answers) makes every
/// service's `/readyz` answer 503 naming it, within a second; when it comes back, ready again.
#[tokio::test]
async fn readyz_answers_within_a_second_while_redis_or_mongodb_hangs() {
    let ctx = TestContext::new();
    let redis = e2e::servers::RedisServer::start();
    let mongo = e2e::servers::MongoServer::start();
    let (redis_url, mongo_uri) = (redis.url(), mongo.uri());
    let overrides = [
        ("REDIS_URL", redis_url.as_str()),
        ("MONGODB_URI", mongo_uri.as_str()),
    ];
    let mut services = start_all(&ctx, &overrides).await;
    for service in &mut services {
        service.wait_ready(READY).await;
    }
    for (dependency, freeze, thaw) in [
        (
            "redis",
            Box::new(|| redis.freeze()) as Box<dyn Fn()>,
            Box::new(|| redis.thaw()) as Box<dyn Fn()>,
        ),
        (
            "mongodb",
            Box::new(|| mongo.freeze()),
            Box::new(|| mongo.thaw()),
        ),
    ] {
        freeze();
        for service in &services {
            for _ in 0..2 {
                let started = std::time::Instant::now();
                let (status, body) = service.get("/readyz").await;
                let took = started.elapsed();
                assert!(
                    took < Duration::from_secs(1),
                    "{}: /readyz took {took:?} while {dependency} hangs",
                    service.name
                );
                assert_eq!(status, 503, "{}: {body}", service.name);
                assert_eq!(
                    body["checks"][dependency]["ok"], false,
                    "{}: {body}",
                    service.name
                );
            }
        }
        thaw();
        for service in &mut services {
            service.wait_ready(READY).await;
        }
    }
    stop_all(services).await;
}
