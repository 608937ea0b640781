//! `/readyz` of every service address, twice a second, each answer timed: readiness must
//! answer within a second even while a dependency is down or restarting. The api's and the
//! oauth-worker's replicas share one address each (a probe reaches either); each worker
//! replica has its own health address. A killed worker refuses at once, which is an answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::report::Log;
use crate::cluster::{Cluster, Role};

/// The probe targets: `(name, address)`.
pub fn targets(cluster: &Cluster) -> Vec<(String, SocketAddr)> {
    let mut targets = vec![
        ("api".to_owned(), cluster.api),
        ("oauth-worker".to_owned(), cluster.oauth),
    ];
    for member in &cluster.members {
        if let (Role::Service("metadata-worker" | "mailer-worker"), Some(addr)) =
            (member.role, member.health_addr())
        {
            targets.push((member.name.clone(), addr));
        }
    }
    targets
}

pub async fn run(targets: Vec<(String, SocketAddr)>, log: Arc<Log>, stop: CancellationToken) {
    let http = reqwest::Client::builder()
        // Far beyond the bound: a slow answer is measured, not cut short.
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    while !stop.is_cancelled() {
        let round = targets.iter().map(|(name, addr)| {
            let http = http.clone();
            let log = log.clone();
            async move {
                let at = log.now();
                let clock = Instant::now();
                let status = http
                    .get(format!("http://{addr}/readyz"))
                    .send()
                    .await
                    .ok()
                    .map(|r| r.status().as_u16());
                log.probed(name, at, clock.elapsed(), status);
            }
        });
        futures::future::join_all(round).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
