//! The per-tenant cap on webhook deliveries awaiting a retry, on a real redis-server: exact
//! under concurrent callers (as replicas are), a delivery that waits again keeps its place, an
//! attempted one frees it, expired ones stop counting, and the key always expires.

use std::time::Duration;

use e2e::TestContext;
use metadata_worker::webhooks::retry_cap::{RetryCap, Wait};
use schemas::SubaccountId;
use service_kit::consumer::{ConsumerSpec, Delivery};
use service_kit::redis::RedisKeys;

const TENANT: &str = "68cf05f060d294db17c0685e";
const OTHER: &str = "5f1e0c9a2b3d4e5f60718293";

fn spec(retry_delays: &[Duration], ack_wait: Duration) -> ConsumerSpec {
    ConsumerSpec {
        durable: "webhook-delivery",
        filter_subject: "t.events.>".into(),
        ack_wait,
        max_deliver: 16,
        max_ack_pending: 1000,
        concurrency: 4,
        retry_delays: retry_delays.to_vec(),
    }
}

fn delivery(sequence: u64, delivered: i64) -> Delivery {
    Delivery {
        stream_sequence: sequence,
        delivered,
        max_deliver: 16,
        replayed: false,
    }
}

fn tenant(id: &str) -> SubaccountId {
    SubaccountId::parse(id).expect("subaccount id")
}

struct Fixture {
    cap: RetryCap,
    redis: service_kit::redis::RedisConnection,
    keys: RedisKeys,
}

impl Fixture {
    async fn new(cap: u32, spec: ConsumerSpec) -> Self {
        let ctx = TestContext::new();
        let redis = service_kit::redis::connect(&ctx.common(&[]).redis, Duration::from_secs(10))
            .await
            .expect("redis");
        let keys = RedisKeys::new(ctx.id.clone());
        Self {
            cap: RetryCap::new(redis.clone(), keys.clone(), cap, spec),
            redis,
            keys,
        }
    }

    async fn awaiting(&self, subaccount: &str) -> Vec<u64> {
        let mut redis = self.redis.clone();
        redis::cmd("ZRANGE")
            .arg(self.keys.webhook_retrying(&tenant(subaccount)))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await
            .expect("ZRANGE")
    }

    async fn ttl_ms(&self, subaccount: &str) -> i64 {
        let mut redis = self.redis.clone();
        redis::cmd("PTTL")
            .arg(self.keys.webhook_retrying(&tenant(subaccount)))
            .query_async(&mut redis)
            .await
            .expect("PTTL")
    }
}

#[tokio::test]
async fn concurrent_failures_admit_exactly_the_cap_and_the_rest_are_refused() {
    let fixture = Fixture::new(5, spec(&[Duration::from_secs(60)], Duration::from_secs(40))).await;
    let t = tenant(TENANT);
    let decisions = futures::future::join_all(
        (1..=40u64).map(|sequence| fixture.cap.wait(&t, delivery(sequence, 1))),
    )
    .await;
    let admitted = decisions
        .iter()
        .filter(|d| matches!(d, Ok(Wait::Admitted { .. })))
        .count();
    let refused: Vec<_> = decisions
        .iter()
        .filter_map(|d| match d {
            Ok(Wait::Full { awaiting }) => Some(*awaiting),
            _ => None,
        })
        .collect();
    assert_eq!(admitted, 5, "{decisions:?}");
    assert_eq!(refused.len(), 35);
    assert!(refused.iter().all(|n| *n == 5), "{refused:?}");
    assert_eq!(fixture.awaiting(TENANT).await.len(), 5);
    // Another tenant is not affected.
    assert_eq!(
        fixture
            .cap
            .wait(&tenant(OTHER), delivery(100, 1))
            .await
            .expect("decided"),
        Wait::Admitted { awaiting: 1 }
    );
    // The key expires with its latest member: the 60 s delay (+20 % jitter) plus ack_wait.
    let ttl = fixture.ttl_ms(TENANT).await;
    assert!((100_000..=112_000).contains(&ttl), "PTTL {ttl}");
}

#[tokio::test]
async fn a_delivery_that_fails_again_keeps_its_place_and_an_attempted_one_frees_it() {
    let fixture = Fixture::new(2, spec(&[Duration::from_secs(60)], Duration::from_secs(40))).await;
    let t = tenant(TENANT);
    for sequence in [1, 2] {
        assert!(matches!(
            fixture.cap.wait(&t, delivery(sequence, 1)).await,
            Ok(Wait::Admitted { .. })
        ));
    }
    assert_eq!(
        fixture.cap.wait(&t, delivery(3, 1)).await.expect("decided"),
        Wait::Full { awaiting: 2 }
    );
    // Sequence 1 comes back and fails again: still admitted, still two.
    assert_eq!(
        fixture.cap.wait(&t, delivery(1, 2)).await.expect("decided"),
        Wait::Admitted { awaiting: 2 }
    );
    // Sequence 2 comes back and is delivered: it leaves, and there is room again.
    fixture
        .cap
        .attempted(&t, delivery(2, 2))
        .await
        .expect("removed");
    assert_eq!(fixture.awaiting(TENANT).await, vec![1]);
    assert_eq!(
        fixture.cap.wait(&t, delivery(4, 1)).await.expect("decided"),
        Wait::Admitted { awaiting: 2 }
    );
    // Both leave: the key is gone.
    fixture
        .cap
        .attempted(&t, delivery(1, 3))
        .await
        .expect("removed");
    fixture
        .cap
        .attempted(&t, delivery(4, 2))
        .await
        .expect("removed");
    assert!(fixture.awaiting(TENANT).await.is_empty());
    assert_eq!(fixture.ttl_ms(TENANT).await, -2, "no key left behind");
}

#[tokio::test]
async fn a_delivery_that_never_comes_back_stops_counting_after_its_expiry() {
    // After a first failure due back at the latest after 120 ms (100 ms + 20 %), after a second
    // one after 12 s; 100 ms of slack on top.
    let fixture = Fixture::new(
        2,
        spec(
            &[Duration::from_millis(100), Duration::from_secs(10)],
            Duration::from_millis(100),
        ),
    )
    .await;
    let t = tenant(TENANT);
    for (sequence, delivered) in [(1, 1), (2, 2)] {
        assert!(matches!(
            fixture.cap.wait(&t, delivery(sequence, delivered)).await,
            Ok(Wait::Admitted { .. })
        ));
    }
    assert_eq!(
        fixture.cap.wait(&t, delivery(3, 1)).await.expect("decided"),
        Wait::Full { awaiting: 2 }
    );
    let ttl = fixture.ttl_ms(TENANT).await;
    assert!((11_000..=12_100).contains(&ttl), "PTTL {ttl}");
    // Sequence 1 never came back (parked by JetStream, say): past its expiry it no longer
    // counts, while the key lives on for sequence 2.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        fixture.cap.wait(&t, delivery(3, 1)).await.expect("decided"),
        Wait::Admitted { awaiting: 2 }
    );
    assert_eq!(fixture.awaiting(TENANT).await, vec![3, 2], "by expiry");
}
