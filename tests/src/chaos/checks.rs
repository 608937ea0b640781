//! After the flows: wait until everything is quiet, then check what the issue promises.
//!
//! - every flow whose callback said "connected" has `metadata.isConnected: true` and its
//!   account in `connections[]` (0 lost);
//! - every link answered with `emailSent: true` produced exactly one email (0 lost, 0
//!   duplicate), and no link produced two;
//! - no request took longer than [`HUNG_AFTER`];
//! - every restarted process became ready;
//! - with two replicas, killing one fails only requests in flight at the kill: no request that
//!   started while a service replica was down was refused or left unanswered;
//! - every `/readyz` answered within a second;
//! - the dead-letter stream is empty (every dead letter is listed for investigation).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use schemas::documents::connector_subaccount::{COLLECTION, GOOGLE_CALENDAR_CONNECTOR_ID};
use schemas::subjects::Namespace;

use super::HUNG_AFTER;
use super::report::{Check, Ending, Figures, Log};
use super::users::{Flow, Users};
use crate::cluster::{Cluster, READY_TIMEOUT, Role};

/// How long the system may take to settle after the last flow: a delivery that a killed
/// mailer had claimed waits out the claim's lease and the retry delays (a few minutes).
const SETTLE: Duration = Duration::from_secs(360);

pub async fn run(
    cluster: &mut Cluster,
    users: &Users,
    flows: &[Flow],
    log: &Log,
) -> (Figures, Vec<Check>) {
    let mut checks = Vec::new();
    let kills = log.kills();
    let requests = log.requests();

    // Everything killed came back (the killer waits); anything that died on its own did not.
    let http = reqwest::Client::new();
    let mut down = Vec::new();
    for member in &mut cluster.members {
        if let Err(e) = member.wait_ready(&http, READY_TIMEOUT).await {
            down.push(e.lines().next().unwrap_or_default().to_owned());
        }
    }
    let not_ready: Vec<String> = kills
        .iter()
        .filter(|k| k.ready_at.is_none())
        .map(|k| {
            format!(
                "{} killed at {:.3}s: {}",
                k.member,
                k.at.as_secs_f64(),
                k.ready_error.as_deref().unwrap_or("never restarted")
            )
        })
        .chain(down.into_iter().map(|d| format!("down at the end: {d}")))
        .collect();
    checks.push(Check {
        name: "every restarted process became ready",
        passed: not_ready.is_empty(),
        summary: format!("{} of {} restarts not ready", not_ready.len(), kills.len()),
        details: not_ready,
    });

    let js = match driver(users).await {
        Ok(js) => Some(js),
        Err(e) => {
            checks.push(failed("NATS reachable after the run", e));
            None
        }
    };
    let ns = Namespace::new(&users.namespace).expect("the run's namespace is valid");
    if let Some(js) = &js {
        let quiet = quiescence(js, &ns).await;
        checks.push(Check {
            name: "consumers drained",
            passed: quiet.is_ok(),
            summary: quiet
                .clone()
                .err()
                .unwrap_or_else(|| "every durable consumer caught up".into()),
            details: Vec::new(),
        });
    }

    // Connected flows are stored (polling: the metadata-worker may still be at it).
    let connected: Vec<&Flow> = flows.iter().filter(|f| f.connected).collect();
    let deadline = Instant::now() + SETTLE;
    let missing = loop {
        let missing = match unstored(users, &connected).await {
            Ok(missing) => missing,
            Err(e) => vec![format!("cannot read MongoDB: {e}")],
        };
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let lost_connections = missing.len();
    checks.push(Check {
        name: "every connected flow is in connectorsubaccount",
        passed: missing.is_empty(),
        summary: format!("{} lost of {} connected", missing.len(), connected.len()),
        details: missing,
    });

    // Exactly one email per link answered with emailSent: true.
    let deadline = Instant::now() + SETTLE;
    let tally = loop {
        let tally = match users.mailbox().await {
            Ok(messages) => tally_emails(flows, &messages),
            Err(e) => EmailTally {
                emails: 0,
                lost: vec![e],
                duplicated: Vec::new(),
                resent: Vec::new(),
                unanswered: Vec::new(),
            },
        };
        if tally.lost.is_empty() || Instant::now() > deadline {
            break tally;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mailed = flows
        .iter()
        .flat_map(|f| &f.links)
        .filter(|l| l.email_sent)
        .count();
    // Every link was asked for with sendEmail: true; with one process down at a time, JetStream
    // or (while a stream elects a leader) the oauth-worker's outbox can always take the job.
    let not_queued: Vec<String> = flows
        .iter()
        .flat_map(|f| f.links.iter().map(move |l| (f, l)))
        .filter(|(_, l)| !l.email_sent)
        .map(|(f, l)| {
            format!(
                "flow {} link {} answered emailSent: false; correlation {}",
                f.index,
                l.state,
                l.correlation_id.as_deref().unwrap_or("?")
            )
        })
        .collect();
    checks.push(Check {
        name: "every link asked for with sendEmail: true was queued (emailSent: true)",
        passed: not_queued.is_empty(),
        summary: format!(
            "{} of {} answered emailSent: false",
            not_queued.len(),
            mailed + not_queued.len()
        ),
        details: not_queued,
    });
    checks.push(Check {
        name: "every link answered with emailSent: true was emailed",
        passed: tally.lost.is_empty(),
        summary: format!("{} lost of {mailed}", tally.lost.len()),
        details: tally.lost.clone(),
    });
    checks.push(Check {
        name: "no link was emailed for two events",
        passed: tally.duplicated.is_empty(),
        summary: format!(
            "{} duplicated of {} emails",
            tally.duplicated.len(),
            tally.emails
        ),
        details: tally.duplicated.clone(),
    });
    // SMTP has no exactly-once: a mailer killed after the server's 250 and before it recorded
    // the send leaves a claim that the next delivery takes over and sends again, under the
    // same Message-ID. Listed, not failed: see mailer-worker/src/sent.rs.
    checks.push(Check {
        name: "resent after a mailer died between SMTP's 250 and recording it (same Message-ID)",
        passed: true,
        summary: format!("{} resent", tally.resent.len()),
        details: tally.resent.clone(),
    });

    // A link issued and queued whose reply was lost (the api answered 503) is still emailed:
    // the person gets a valid link, and the retry another one. Listed, not failed.
    checks.push(Check {
        name: "emailed though the connect answer was lost (a valid link the platform was told failed)",
        passed: true,
        summary: format!("{} emailed", tally.unanswered.len()),
        details: tally.unanswered.clone(),
    });

    let hung: Vec<String> = requests
        .iter()
        .filter(|r| r.elapsed > HUNG_AFTER || r.ending == Ending::Unanswered("timed out".into()))
        .map(|r| {
            format!(
                "flow {} {:?} took {:.1}s ({:?}); request {}",
                r.flow,
                r.step,
                r.elapsed.as_secs_f64(),
                r.ending,
                r.request_id
            )
        })
        .collect();
    checks.push(Check {
        name: "no request hung",
        passed: hung.is_empty(),
        summary: format!(
            "{} of {} requests took longer than {HUNG_AFTER:?}",
            hung.len(),
            requests.len()
        ),
        details: hung.clone(),
    });

    // Replica kills: a request in flight at a kill may fail; one that started while a service
    // replica was down (and so was not held by it) must not be refused or left unanswered.
    let mut stretch = Vec::new();
    for r in requests.iter().filter(|r| !r.ending.is_answer()) {
        let Some((kill, false)) = super::report::cause(r, &kills) else {
            continue;
        };
        let service = cluster
            .members
            .iter()
            .find(|m| m.name == kill.member)
            .is_some_and(|m| matches!(m.role, Role::Service(_)));
        if service {
            stretch.push(format!(
                "{} down since {:.3}s: flow {} {:?} at {:.3}s {:?}; request {}",
                kill.member,
                kill.at.as_secs_f64(),
                r.flow,
                r.step,
                r.started.as_secs_f64(),
                r.ending,
                r.request_id
            ));
        }
    }
    checks.push(Check {
        name: "a replica down refuses nothing",
        passed: stretch.is_empty(),
        summary: format!(
            "{} requests refused or unanswered while a service replica was down",
            stretch.len()
        ),
        details: stretch,
    });

    let (probes, slowest, slow) = log.probes();
    checks.push(Check {
        name: "every /readyz answered within a second",
        passed: slow.is_empty(),
        summary: format!(
            "{} of {probes} slower than 1 s (slowest {:.0} ms)",
            slow.len(),
            slowest.as_secs_f64() * 1000.0
        ),
        details: slow
            .iter()
            .map(|p| {
                format!(
                    "{} at {:.3}s took {:.0} ms ({:?})",
                    p.target,
                    p.at.as_secs_f64(),
                    p.elapsed.as_secs_f64() * 1000.0,
                    p.status
                )
            })
            .collect(),
    });

    let dead_letters = match &js {
        Some(js) => dead_letters(js, &ns).await,
        None => vec!["NATS was not reachable".into()],
    };
    checks.push(Check {
        name: "the dead-letter stream holds nothing unexplained",
        passed: dead_letters.is_empty(),
        summary: format!("{} dead letters", dead_letters.len()),
        details: dead_letters.clone(),
    });

    let failed_requests = requests.iter().filter(|r| r.failed()).count();
    let figures = Figures {
        flows: flows.len(),
        connected: connected.len(),
        kills: kills.len(),
        lost: lost_connections + tally.lost.len(),
        duplicated: tally.duplicated.len(),
        resent: tally.resent.len(),
        hung: hung.len(),
        dead_letters: dead_letters.len(),
        emails: tally.emails,
        requests: requests.len(),
        failed_requests,
    };
    (figures, checks)
}

fn failed(name: &'static str, why: String) -> Check {
    Check {
        name,
        passed: false,
        summary: why,
        details: Vec::new(),
    }
}

/// JetStream as the run's `driver` identity (every subject).
async fn driver(users: &Users) -> Result<async_nats::jetstream::Context, String> {
    let auth = crate::nats_auth::auth();
    let dir = crate::process::scratch_dir("chaos-driver");
    let creds = auth.mint_driver(&dir);
    let options = async_nats::ConnectOptions::with_credentials_file(creds)
        .await
        .map_err(|e| e.to_string())?
        .add_root_certificates(auth.ca.clone().into())
        .require_tls(true);
    let seeds: Vec<&str> = users.nats_url.split(',').collect();
    let client = options.connect(seeds).await.map_err(|e| e.to_string())?;
    Ok(async_nats::jetstream::new(client))
}

/// Waits until every durable consumer of the domain stream has nothing pending or
/// unacknowledged, twice in a row a second apart.
async fn quiescence(js: &async_nats::jetstream::Context, ns: &Namespace) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    let mut quiet_rounds = 0;
    let mut last = String::new();
    while Instant::now() < deadline {
        match busy_consumers(js, ns).await {
            Ok(busy) if busy.is_empty() => {
                quiet_rounds += 1;
                if quiet_rounds == 2 {
                    return Ok(());
                }
            }
            Ok(busy) => {
                quiet_rounds = 0;
                last = busy.join(", ");
            }
            Err(e) => {
                quiet_rounds = 0;
                last = e;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(format!("not quiet after {SETTLE:?}: {last}"))
}

async fn busy_consumers(
    js: &async_nats::jetstream::Context,
    ns: &Namespace,
) -> Result<Vec<String>, String> {
    let stream = js
        .get_stream(ns.events_stream())
        .await
        .map_err(|e| e.to_string())?;
    let infos: Vec<_> = stream
        .consumers()
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(infos
        .into_iter()
        .filter(|c| c.config.durable_name.is_some())
        .filter(|c| c.num_pending > 0 || c.num_ack_pending > 0)
        .map(|c| {
            format!(
                "{} ({} pending, {} unacknowledged)",
                c.name, c.num_pending, c.num_ack_pending
            )
        })
        .collect())
}

/// Connected flows whose account is not connected in their subaccount's document.
async fn unstored(users: &Users, connected: &[&Flow]) -> Result<Vec<String>, String> {
    let client = mongodb::Client::with_uri_str(&users.mongodb_uri)
        .await
        .map_err(|e| e.to_string())?;
    let mut stored: HashMap<String, HashSet<String>> = HashMap::new();
    let mut described: HashMap<String, bool> = HashMap::new();
    for subaccount in &users.subaccounts {
        let database = users
            .database_template
            .replace("{subaccountId}", subaccount);
        let document = client
            .database(&database)
            .collection::<mongodb::bson::Document>(COLLECTION)
            .find_one(mongodb::bson::doc! { "connectorId": GOOGLE_CALENDAR_CONNECTOR_ID })
            .await
            .map_err(|e| e.to_string())?;
        let Some(document) = document else { continue };
        let metadata = document.get_document("metadata").ok();
        described.insert(
            subaccount.clone(),
            metadata
                .and_then(|m| m.get_bool("isConnected").ok())
                .unwrap_or(false),
        );
        let accounts = stored.entry(subaccount.clone()).or_default();
        if let Some(connections) = metadata.and_then(|m| m.get_array("connections").ok()) {
            for connection in connections.iter().filter_map(|c| c.as_document()) {
                if connection.get_bool("isConnected").unwrap_or(false)
                    && let Ok(email) = connection.get_str("googleEmail")
                {
                    accounts.insert(email.to_owned());
                }
            }
        }
    }
    Ok(connected
        .iter()
        .filter(|flow| {
            !described.get(&flow.subaccount).copied().unwrap_or(false)
                || !stored
                    .get(&flow.subaccount)
                    .is_some_and(|accounts| accounts.contains(&flow.account))
        })
        .map(|flow| {
            format!(
                "flow {} ({} on {}) is not connected in MongoDB; correlation ids {}",
                flow.index,
                flow.account,
                flow.subaccount,
                flow.correlation_ids().join(", ")
            )
        })
        .collect())
}

/// The mailbox, per link answered `emailSent: true`.
struct EmailTally {
    emails: usize,
    /// Links with no email.
    lost: Vec<String>,
    /// Links emailed for two different events (two Message-IDs): something sent a link twice.
    duplicated: Vec<String>,
    /// Links whose one event was emailed twice (same Message-ID): the mailer died between the
    /// SMTP server's `250` and recording the send, and the next delivery sent it again.
    resent: Vec<String>,
    /// Links emailed whose connect answer never reached the person (the oauth-worker issued
    /// and queued it, then the reply was lost with a NATS node or timed out at the api).
    unanswered: Vec<String>,
}

fn tally_emails(flows: &[Flow], messages: &[serde_json::Value]) -> EmailTally {
    // Per link: the Message-ID (it names the event) and arrival of each copy.
    let mut per_state: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for message in messages {
        let text = message["text"].as_str().unwrap_or_default();
        if let Some(state) = state_in(text) {
            per_state.entry(state).or_default().push((
                message["messageId"]
                    .as_str()
                    .unwrap_or("no Message-ID")
                    .to_owned(),
                message["receivedAt"].as_str().unwrap_or("?").to_owned(),
            ));
        }
    }
    let mut lost = Vec::new();
    for flow in flows {
        for link in flow.links.iter().filter(|l| l.email_sent) {
            if !per_state.contains_key(&link.state) {
                lost.push(format!(
                    "flow {} ({}): link {} was answered emailSent: true and never arrived; correlation {}",
                    flow.index,
                    flow.account,
                    link.state,
                    link.correlation_id.as_deref().unwrap_or("-")
                ));
            }
        }
    }
    let known: HashSet<&str> = flows
        .iter()
        .flat_map(|f| f.links.iter().map(|l| l.state.as_str()))
        .collect();
    let mut unanswered: Vec<String> = per_state
        .iter()
        .filter(|(state, _)| !known.contains(state.as_str()))
        .map(|(state, copies)| {
            let (id, at) = &copies[0];
            format!("link {state}: {id} at {at}")
        })
        .collect();
    unanswered.sort();
    let (mut duplicated, mut resent) = (Vec::new(), Vec::new());
    for (state, copies) in per_state.iter().filter(|(_, copies)| copies.len() > 1) {
        let ids: HashSet<&str> = copies.iter().map(|(id, _)| id.as_str()).collect();
        let line = format!(
            "link {state} emailed {} times: {}",
            copies.len(),
            copies
                .iter()
                .map(|(id, at)| format!("{id} at {at}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        if ids.len() > 1 {
            duplicated.push(line);
        } else {
            resent.push(line);
        }
    }
    EmailTally {
        emails: messages.len(),
        lost,
        duplicated,
        resent,
        unanswered,
    }
}

/// The `state` of the consent link in an email's text.
fn state_in(text: &str) -> Option<String> {
    let start = text.find("state=")? + "state=".len();
    let state: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '%'))
        .collect();
    (!state.is_empty()).then_some(state)
}

/// Every dead letter, with its headers.
async fn dead_letters(js: &async_nats::jetstream::Context, ns: &Namespace) -> Vec<String> {
    let Some(messages) = crate::stream::messages(js, &ns.dead_letter_stream(), None).await else {
        return Vec::new();
    };
    messages
        .iter()
        .map(|m| {
            let headers = m
                .headers
                .as_ref()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| {
                            format!(
                                "{k}={}",
                                v.iter().map(|v| v.as_str()).collect::<Vec<_>>().join("|")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            format!("{}: {headers}", m.subject)
        })
        .collect()
}
