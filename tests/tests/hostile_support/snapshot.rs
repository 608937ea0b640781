//! Everything a request could leave behind, read straight from the servers: the test's tenant
//! databases and their documents, its Redis keys, its JetStream streams, the emails the SMTP
//! sink received and the calls the fake Google served. Two snapshots that differ name what
//! changed.

use std::collections::BTreeMap;

use async_nats::jetstream;
use e2e::TestContext;
use futures::TryStreamExt;
use schemas::subjects::Namespace;

/// What is kept of one moment. Rate-limit buckets are left out: charging a refused request
/// to a limit is what limits are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `database.collection` → its documents as canonical extended JSON, sorted.
    pub documents: BTreeMap<String, Vec<String>>,
    /// Redis key → its value as text (members sorted for sets).
    pub redis: BTreeMap<String, String>,
    /// Stream name → (messages, last sequence).
    pub streams: BTreeMap<String, (u64, u64)>,
    /// Emails received by the SMTP sink.
    pub emails: usize,
    /// The fake Google's counters: code exchanges, refreshes, access tokens issued, revocations.
    pub provider: [usize; 4],
}

/// Where the snapshot is read.
pub struct Probe<'a> {
    pub ctx: &'a TestContext,
    pub ns: &'a Namespace,
    pub nats: &'a async_nats::Client,
    pub mongo: &'a mongodb::Client,
    pub redis: redis::aio::MultiplexedConnection,
    pub sink: &'a e2e::smtp::SmtpSink,
    pub google: &'a e2e::fake_google::FakeGoogle,
}

impl Probe<'_> {
    pub async fn snapshot(&self) -> Snapshot {
        Snapshot {
            documents: self.documents().await,
            redis: self.redis_state().await,
            streams: self.streams().await,
            emails: self.sink.messages().len(),
            provider: [
                self.google.token_requests("authorization_code"),
                self.google.token_requests("refresh_token"),
                self.google.issued_access_tokens(),
                self.google.revoke_requests(),
            ],
        }
    }

    async fn documents(&self) -> BTreeMap<String, Vec<String>> {
        let prefix = format!("{}_", self.ctx.id);
        let mut out = BTreeMap::new();
        let names = self
            .mongo
            .list_database_names()
            .await
            .expect("list databases");
        for name in names.into_iter().filter(|n| n.starts_with(&prefix)) {
            let database = self.mongo.database(&name);
            let collections = database
                .list_collection_names()
                .await
                .expect("list collections");
            // A database with no collection yet still counts: it was created.
            out.entry(name.clone()).or_insert_with(Vec::new);
            for collection in collections {
                let mut documents: Vec<String> = database
                    .collection::<bson::Document>(&collection)
                    .find(bson::doc! {})
                    .await
                    .expect("find")
                    .try_collect::<Vec<_>>()
                    .await
                    .expect("read")
                    .into_iter()
                    .map(|d| bson::Bson::Document(d).into_canonical_extjson().to_string())
                    .collect();
                documents.sort();
                out.insert(format!("{name}.{collection}"), documents);
            }
        }
        out
    }

    async fn redis_state(&self) -> BTreeMap<String, String> {
        let mut redis = self.redis.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.ctx.id))
            .query_async(&mut redis)
            .await
            .expect("KEYS");
        let mut out = BTreeMap::new();
        for key in keys.into_iter().filter(|k| !k.contains(":ratelimit:")) {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .expect("TYPE");
            let value = match kind.as_str() {
                "string" => redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<Vec<u8>>>(&mut redis)
                    .await
                    .expect("GET")
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default(),
                "zset" => {
                    let members: Vec<String> = redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut redis)
                        .await
                        .expect("ZRANGE");
                    members.join(",")
                }
                "set" => {
                    let mut members: Vec<String> = redis::cmd("SMEMBERS")
                        .arg(&key)
                        .query_async(&mut redis)
                        .await
                        .expect("SMEMBERS");
                    members.sort();
                    members.join(",")
                }
                other => format!("<{other}>"),
            };
            out.insert(key, value);
        }
        out
    }

    async fn streams(&self) -> BTreeMap<String, (u64, u64)> {
        let js = jetstream::new(self.nats.clone());
        let mut out = BTreeMap::new();
        for name in [self.ns.events_stream(), self.ns.dead_letter_stream()] {
            let state = match js.get_stream(&name).await {
                Ok(mut stream) => {
                    let info = stream.info().await.expect("stream info");
                    (info.state.messages, info.state.last_sequence)
                }
                Err(_) => (0, 0),
            };
            out.insert(name, state);
        }
        out
    }
}

impl Snapshot {
    /// What changed from `self` to `after`, in words; empty when nothing did.
    pub fn changes(&self, after: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (name, documents) in &after.documents {
            match self.documents.get(name) {
                None => out.push(format!(
                    "MongoDB: {name} appeared ({} documents)",
                    documents.len()
                )),
                Some(before) if before != documents => out.push(format!(
                    "MongoDB: {name} changed ({} → {} documents)",
                    before.len(),
                    documents.len()
                )),
                Some(_) => {}
            }
        }
        for name in self.documents.keys() {
            if !after.documents.contains_key(name) {
                out.push(format!("MongoDB: {name} disappeared"));
            }
        }
        for (key, value) in &after.redis {
            match self.redis.get(key) {
                None => out.push(format!("Redis: {key} appeared")),
                Some(before) if before != value => out.push(format!("Redis: {key} changed")),
                Some(_) => {}
            }
        }
        for key in self.redis.keys() {
            if !after.redis.contains_key(key) {
                out.push(format!("Redis: {key} disappeared"));
            }
        }
        if self.streams != after.streams {
            out.push(format!(
                "JetStream: {:?} → {:?}",
                self.streams, after.streams
            ));
        }
        if self.emails != after.emails {
            out.push(format!("SMTP: {} → {} emails", self.emails, after.emails));
        }
        if self.provider != after.provider {
            out.push(format!(
                "provider calls (code exchanges, refreshes, tokens issued, revocations): {:?} → {:?}",
                self.provider, after.provider
            ));
        }
        out
    }
}
