//! Tenant MongoDB connections: the seed's `connectionService.getConnection(subaccountId)`.
//!
//! By default each subaccount has its own database, named from `MONGODB_DATABASE_TEMPLATE`. One
//! driver client (a connection pool) serves every tenant; the first time a process touches a
//! tenant, the indexes its collections rely on are created, and the tenant is remembered so
//! that later calls cost a set lookup.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Database, IndexModel};
use schemas::SubaccountId;
use schemas::documents::{calendar, connector_subaccount, google_auth, webhook};

use crate::config::{DatabaseTemplate, MongoUri};
use crate::startup::{Dependency, StartupError, retry_for};

const MONGODB: Dependency = Dependency {
    setting: "MONGODB_URI",
    what: "MongoDB",
};

/// Hands out tenant databases. Cheap to clone (shared state behind an `Arc`).
#[derive(Debug, Clone)]
pub struct TenantDatabases {
    client: Client,
    template: DatabaseTemplate,
    /// Tenants whose indexes this process has ensured.
    indexed: Arc<Mutex<HashSet<SubaccountId>>>,
    /// TTL indexes this process has ensured.
    expiring: Arc<Mutex<HashSet<ExpiryKey>>>,
}

/// One TTL index of one tenant database: (database, collection, field).
type ExpiryKey = (String, &'static str, &'static str);

/// A TTL index: the server deletes a document of `collection` once the date in its `field`
/// is `ttl` old. For collections that grow with requests (logs, de-duplication records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub collection: &'static str,
    pub field: &'static str,
    pub ttl: Duration,
}

impl Expiry {
    /// `expireAfterSeconds` of the index (whole seconds, at least one).
    pub fn seconds(&self) -> i64 {
        i64::try_from(self.ttl.as_secs().max(1)).unwrap_or(i64::MAX)
    }
}

/// MongoDB's codes for "an index on these keys exists with other options".
/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;
const INDEX_OPTIONS_CONFLICT: i32 = 85;
const INDEX_KEY_SPECS_CONFLICT: i32 = 86;

impl TenantDatabases {
    /// Connects and pings the server, retrying for at most `limit`.
    pub async fn connect(
        uri: &MongoUri,
        template: DatabaseTemplate,
        app_name: &str,
        limit: Duration,
    ) -> Result<Self, StartupError> {
        let mut options =
            ClientOptions::parse(&uri.0)
                .await
                .map_err(|e| StartupError::Misconfigured {
                    setting: "MONGODB_URI",
                    cause: format!("cannot be used: {}", e.kind),
                })?;
        options.app_name = Some(app_name.to_owned());
        // An acknowledged write is a kept promise (the outbox, "stored, then answered"): written
        // to the journal on a majority of the replica set before the server answers. A
        // connection string that sets its own write concern (`w=`, `journal=`) keeps it.
        if options.write_concern.is_none() {
            options.write_concern = Some(
                WriteConcern::builder()
                    .w(Acknowledgment::Majority)
                    .journal(true)
                    .build(),
            );
        }
        // Fail a single operation fast when the server is gone, so callers can retry or park
        // the work instead of hanging for the driver's 30 s default.
        options.server_selection_timeout = Some(Duration::from_secs(5));
        options.connect_timeout = Some(Duration::from_secs(2));
        let client =
            Client::with_options(options.clone()).map_err(|e| StartupError::Misconfigured {
                setting: "MONGODB_URI",
                cause: format!("cannot be used: {}", e.kind),
            })?;
        // Probe with a short-lived client whose server selection gives up after 2 s, so each
        // attempt ends with the driver's real error (e.g. connection refused) well inside `limit`.
        let mut probe_options = options.clone();
        probe_options.server_selection_timeout = Some(Duration::from_secs(2));
        let probe =
            Client::with_options(probe_options).map_err(|e| StartupError::Misconfigured {
                setting: "MONGODB_URI",
                cause: format!("cannot be used: {}", e.kind),
            })?;
        retry_for(limit, MONGODB, || {
            let probe = probe.clone();
            async move { ping(&probe).await.map_err(|e| e.kind.to_string()) }
        })
        .await?;
        probe.shutdown().await;
        Ok(Self {
            client,
            template,
            indexed: Arc::default(),
            expiring: Arc::default(),
        })
    }

    /// Ensures `expiry`'s TTL index in the tenant database `db`, once per process: creates
    /// it, or — when the index exists with another `expireAfterSeconds` (the setting changed)
    /// — retunes it with `collMod`. Call it where the collection is written.
    pub async fn ensure_expiry(&self, db: &Database, expiry: Expiry) -> mongodb::error::Result<()> {
        let key = (db.name().to_owned(), expiry.collection, expiry.field);
        let known = self
            .expiring
            .lock()
            .map(|set| set.contains(&key))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        let index = IndexModel::builder()
            .keys(doc! { expiry.field: 1 })
            .options(
                IndexOptions::builder()
                    .expire_after(Duration::from_secs(expiry.ttl.as_secs().max(1)))
                    .build(),
            )
            .build();
        let created = db
            .collection::<mongodb::bson::Document>(expiry.collection)
            .create_index(index)
            .await;
        match created {
            Ok(_) => {}
            Err(e) if is_index_conflict(&e) => {
                db.run_command(doc! {
                    "collMod": expiry.collection,
                    "index": { "keyPattern": { expiry.field: 1 }, "expireAfterSeconds": expiry.seconds() },
                })
                .await?;
                tracing::info!(database = db.name(), collection = expiry.collection, field = expiry.field, ttl = ?expiry.ttl, "TTL index retuned");
            }
            Err(e) => return Err(e),
        }
        if let Ok(mut set) = self.expiring.lock() {
            set.insert(key);
        }
        Ok(())
    }

    /// The tenant's database, with its indexes ensured (once per process and tenant).
    pub async fn connection_for(
        &self,
        subaccount: &SubaccountId,
    ) -> mongodb::error::Result<Database> {
        let db = self
            .client
            .database(&self.template.database_for(subaccount));
        let known = self
            .indexed
            .lock()
            .map(|set| set.contains(subaccount))
            .unwrap_or(false);
        if !known {
            ensure_indexes(&db).await?;
            if let Ok(mut set) = self.indexed.lock() {
                set.insert(subaccount.clone());
            }
        }
        Ok(db)
    }

    /// The tenant's database without ensuring its indexes: for every read (a read creates
    /// nothing: creating an index creates the database, so a read of an unknown subaccount
    /// through [`Self::connection_for`] would leave an empty tenant database behind), and for
    /// services that only update documents that already exist (whoever created them ensured
    /// the indexes), so a worker meeting thousands of tenants does not issue three
    /// `createIndexes` for each.
    pub fn existing(&self, subaccount: &SubaccountId) -> Database {
        self.client
            .database(&self.template.database_for(subaccount))
    }

    /// Every subaccount that has a database on the server, found by database name.
    pub async fn tenants(&self) -> mongodb::error::Result<Vec<SubaccountId>> {
        let names = self.client.list_database_names().await?;
        Ok(names
            .iter()
            .filter_map(|name| self.template.subaccount_of(name))
            .collect())
    }

    /// The driver client, for readiness checks and administrative work.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn is_index_conflict(err: &mongodb::error::Error) -> bool {
    matches!(err.kind.as_ref(), mongodb::error::ErrorKind::Command(c)
        if c.code == INDEX_OPTIONS_CONFLICT || c.code == INDEX_KEY_SPECS_CONFLICT)
}

/// Whether a write failed because a unique index already holds its key: a single write, a
/// command, or any write of an `insert_many`. Some MongoDB-wire servers report it in a shape
/// the driver does not type; their message still carries the server's `E11000`.
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|w| w.code == DUPLICATE_KEY)),
        _ => {
            let text = error.to_string();
            text.contains("E11000") || text.contains("duplicate key")
        }
    }
}

/// Round-trips a `ping` to the server.
pub async fn ping(client: &Client) -> mongodb::error::Result<()> {
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .map(|_| ())
}

/// The indexes a tenant database needs: the uniqueness the documents promise.
pub async fn ensure_indexes(db: &Database) -> mongodb::error::Result<()> {
    let unique = |keys| {
        IndexModel::builder()
            .keys(keys)
            .options(IndexOptions::builder().unique(true).build())
            .build()
    };
    db.collection::<mongodb::bson::Document>(connector_subaccount::COLLECTION)
        .create_index(unique(doc! { "subaccountId": 1, "connectorId": 1 }))
        .await?;
    db.collection::<mongodb::bson::Document>(google_auth::COLLECTION)
        .create_index(unique(doc! { "subaccountId": 1, "googleEmail": 1 }))
        .await?;
    // One account per place under the cap: what makes MAX_GOOGLE_ACCOUNTS exact.
    db.collection::<mongodb::bson::Document>(google_auth::COLLECTION)
        .create_index(
            IndexModel::builder()
                .keys(doc! { "subaccountId": 1, google_auth::SLOT_FIELD: 1 })
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .partial_filter_expression(
                            doc! { google_auth::SLOT_FIELD: { "$exists": true } },
                        )
                        .build(),
                )
                .build(),
        )
        .await?;
    db.collection::<mongodb::bson::Document>(calendar::COLLECTION)
        .create_index(unique(
            doc! { "subaccountId": 1, "googleEmail": 1, "provider": 1 },
        ))
        .await?;
    let plain = |keys| IndexModel::builder().keys(keys).build();
    db.collection::<mongodb::bson::Document>(webhook::ENDPOINTS_COLLECTION)
        .create_index(plain(doc! { "subaccountId": 1 }))
        .await?;
    // One endpoint per place under the cap: what makes WEBHOOK_MAX_ENDPOINTS exact.
    db.collection::<mongodb::bson::Document>(webhook::ENDPOINTS_COLLECTION)
        .create_index(
            IndexModel::builder()
                .keys(doc! { "subaccountId": 1, webhook::ENDPOINT_SLOT_FIELD: 1 })
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .partial_filter_expression(
                            doc! { webhook::ENDPOINT_SLOT_FIELD: { "$exists": true } },
                        )
                        .build(),
                )
                .build(),
        )
        .await?;
    db.collection::<mongodb::bson::Document>(webhook::DELIVERIES_COLLECTION)
        .create_index(plain(doc! { "endpointId": 1, "attemptedAt": -1 }))
        .await?;
    Ok(())
}
