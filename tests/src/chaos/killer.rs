//! The kills: every [`Options::kill_every`] a random member of the cluster — any NATS node,
//! Redis, the MongoDB-wire server, the SMTP sink, any replica of any service; each once per
//! round of as many kills as there are members, in a random order — gets SIGKILL,
//! stays down for a random [`Options::pause`], is started again as it was and waited on until
//! ready. One process is down at a time, so a majority of the NATS nodes is always up (the
//! cluster shape promises to survive one failure, not two).

use std::time::Duration;

use rand::seq::SliceRandom as _;
use rand::{RngExt as _, SeedableRng as _};
use tokio_util::sync::CancellationToken;

use super::Options;
use super::report::Log;
use crate::cluster::{Cluster, READY_TIMEOUT};

pub async fn run(cluster: &mut Cluster, options: &Options, log: &Log, stop: CancellationToken) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let http = reqwest::Client::new();
    let victims: Vec<usize> = (0..cluster.members.len())
        .filter(|&i| {
            let name = &cluster.members[i].name;
            options.victims.is_empty()
                || options.victims.iter().any(|v| name.starts_with(v.as_str()))
        })
        .collect();
    if victims.is_empty() {
        eprintln!(
            "chaos: CHAOS_VICTIMS {:?} names no member; nothing is killed",
            options.victims
        );
        return;
    }
    let mut deck: Vec<usize> = Vec::new();
    loop {
        let wait = between(&mut rng, options.kill_every);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        // A shuffled deck, dealt to the end before it is shuffled again: random, yet every
        // member is killed once in every round of as many kills as there are members.
        if deck.is_empty() {
            deck.clone_from(&victims);
            deck.shuffle(&mut rng);
        }
        let victim = deck.pop().expect("refilled above");
        let member = &mut cluster.members[victim];
        let pid = member.pid();
        member.kill();
        let kill = log.killed(&member.name, pid);
        eprintln!(
            "chaos: {:>8.3}s killed {}",
            log.now().as_secs_f64(),
            member.name
        );
        // The pause is not cut short by the end of the flows: everything killed comes back.
        tokio::time::sleep(between(&mut rng, options.pause)).await;
        let started = member.restart().map_err(|e| format!("cannot start: {e}"));
        log.restarted(kill);
        let ready = match started {
            Ok(()) => member.wait_ready(&http, READY_TIMEOUT).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &ready {
            eprintln!("chaos: {} did not become ready: {e}", member.name);
        }
        log.ready(kill, ready);
    }
}

fn between(rng: &mut rand::rngs::StdRng, (low, high): (Duration, Duration)) -> Duration {
    if high <= low {
        return low;
    }
    let millis = rng.random_range(low.as_millis()..=high.as_millis());
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}
