//! The conditional writes to `connectorsubaccount.metadata`, in the tenant's database.
//!
//! `metadata.connections` lists every Google account of the subaccount, keyed by
//! `googleEmail`; the spec's top-level fields describe one of them (see
//! [`described_account`]). Each event is one update of one document, so events of different
//! accounts never lose each other's changes: the filter decides whether the event is news for
//! its account, an update pipeline rewrites that account's entry and recomputes the top-level
//! fields from the list.
//!
//! Idempotent and ordered per account, with the account's own ISO 8601 times (milliseconds and
//! `Z`, so strings compare in time order) as versions:
//! - connection-succeeded replaces the account's entry with exactly `{calendarId, userEmail,
//!   googleEmail, connectedAt, isConnected: true}`, unless the entry records a connection,
//!   reauth or disconnect at or after the event's `connectedAt`: a redelivered or replayed event
//!   matches nothing, an older one arriving after a newer one changes nothing.
//! - connection-failed with `reauth_required` sets the account's `isConnected: false`, `reason`
//!   and `reauthRequiredAt` (the event's time), if its connection is older than the failure and
//!   no later reauth or disconnect is recorded. Other failures (a denied or abandoned attempt)
//!   leave working connections alone.
//! - connection-disconnected sets the account's `isConnected: false` and `disconnectedAt`, if
//!   no connection or disconnect at or after it is recorded. An account not listed yet (its
//!   connection-succeeded is still on its way, say parked and replayed later) gets an entry with
//!   just `googleEmail`, `isConnected: false` and `disconnectedAt`, so that late event cannot
//!   bring it back.
//!
//! Documents written before several accounts were supported have the spec's fields but no
//! `connections`; the first event turns those fields into the list's first entry.
//!
//! An account is keyed by [`schemas::google_account_key`] (trimmed, lower-case), the key the
//! oauth-worker stores tokens under and disconnect looks up. Every event's email is normalized
//! here, so an event published before the deprecated metadata endpoint normalized (still in the
//! stream, or parked and replayed) writes the same key. Entries such an event already stored
//! (`GoogleUser@Gmail.com`) are matched case-insensitively and rewritten under the normalized key
//! by the next event of their account; two spellings of one account become one entry. No
//! migration at start-up: the match covers every tenant at once, costs nothing when there is
//! nothing to fix, and cannot race the workers' own writes.

use bson::{Bson, Document, doc};
use mongodb::Collection;
use schemas::documents::connector_subaccount::{COLLECTION, GOOGLE_CALENDAR_CONNECTOR_ID};
use schemas::events::{
    ConnectionDisconnected, ConnectionFailed, ConnectionSucceeded, FailureReason,
};
use schemas::{Envelope, SubaccountId, google_account_key};
use service_kit::mongo::TenantDatabases;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The metadata changed.
    Written,
    /// Nothing to do: a duplicate, an older event, or a failure that does not concern the
    /// stored connection.
    Unchanged,
    /// The subaccount has no `google-calendar` connector.
    ConnectorMissing,
}

/// `2025-10-05T12:00:00.000Z`, the format of `connectedAt`.
fn iso_millis(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Only updates: the connector exists (or the event waits for it), created by the api or the
/// platform, which ensured the indexes.
fn collection(tenants: &TenantDatabases, subaccount: &SubaccountId) -> Collection<Document> {
    tenants.existing(subaccount).collection(COLLECTION)
}

fn connector(subaccount: &SubaccountId) -> Document {
    doc! { "subaccountId": subaccount.as_str(), "connectorId": GOOGLE_CALENDAR_CONNECTOR_ID }
}

/// `field` is absent, or holds a time before `at` (ISO strings compare in time order).
fn absent_or_before(field: &str, at: &str) -> Document {
    doc! { "$or": [ { field: { "$exists": false } }, { field: { "$lt": at } } ] }
}

/// Unchanged, or missing: told apart by whether the connector exists at all.
async fn nothing_matched(
    connectors: &Collection<Document>,
    subaccount: &SubaccountId,
) -> mongodb::error::Result<Applied> {
    let exists = connectors
        .find_one(connector(subaccount))
        .projection(doc! { "_id": 1 })
        .await?
        .is_some();
    Ok(if exists {
        Applied::Unchanged
    } else {
        Applied::ConnectorMissing
    })
}

pub async fn apply_succeeded(
    tenants: &TenantDatabases,
    event: &Envelope<ConnectionSucceeded>,
) -> mongodb::error::Result<Applied> {
    succeeded_write(event).run(tenants).await
}

/// connection-succeeded's write, also issued verbatim by the drain benchmark's floor.
pub fn succeeded_write(event: &Envelope<ConnectionSucceeded>) -> Write {
    let p = &event.payload;
    let at = p.connected_at.as_str();
    let email = google_account_key(&p.google_email);
    let email = email.as_str();
    let entry = doc! {
        "calendarId": &p.calendar_id,
        "userEmail": &p.user_email,
        "googleEmail": email,
        "connectedAt": at,
        "isConnected": true,
    };
    let newer_recorded = doc! { "$or": [
        { "connectedAt": { "$gte": at } },
        { "reauthRequiredAt": { "$gte": at } },
        { "disconnectedAt": { "$gte": at } },
    ] };
    let entry = Bson::Document(doc! { "$literal": entry });
    Write::new(
        &event.subaccount_id,
        doc! { "$nor": [recorded(email, newer_recorded)] },
        upsert_entry(email, entry.clone(), Some(entry)),
    )
}

pub async fn apply_failed(
    tenants: &TenantDatabases,
    event: &Envelope<ConnectionFailed>,
) -> mongodb::error::Result<Applied> {
    let (FailureReason::ReauthRequired, Some(email)) =
        (event.payload.reason, event.payload.google_email.as_deref())
    else {
        return Ok(Applied::Unchanged);
    };
    let email = google_account_key(email);
    let email = email.as_str();
    let at = iso_millis(event.occurred_at);
    let older_connection = doc! {
        "connectedAt": { "$lt": &at },
        "$and": [
            absent_or_before("reauthRequiredAt", &at),
            absent_or_before("disconnectedAt", &at),
        ],
    };
    let marked = doc! { "$mergeObjects": [
        "$$entry",
        {
            "googleEmail": { "$literal": email },
            "isConnected": false,
            "reason": "reauth_required",
            "reauthRequiredAt": { "$literal": &at },
        },
    ] };
    Write::new(
        &event.subaccount_id,
        recorded(email, older_connection),
        upsert_entry(email, Bson::Document(marked), None),
    )
    .run(tenants)
    .await
}

pub async fn apply_disconnected(
    tenants: &TenantDatabases,
    event: &Envelope<ConnectionDisconnected>,
) -> mongodb::error::Result<Applied> {
    let at = event.payload.disconnected_at.as_str();
    let email = google_account_key(&event.payload.google_email);
    let email = email.as_str();
    let newer_recorded = doc! { "$or": [
        { "connectedAt": { "$gte": at } },
        { "disconnectedAt": { "$gte": at } },
    ] };
    let marked = doc! { "$mergeObjects": [
        "$$entry",
        {
            "googleEmail": { "$literal": email },
            "isConnected": false,
            "disconnectedAt": { "$literal": at },
        },
    ] };
    let tombstone = doc! { "$literal": {
        "googleEmail": email,
        "isConnected": false,
        "disconnectedAt": at,
    } };
    Write::new(
        &event.subaccount_id,
        doc! { "$nor": [recorded(email, newer_recorded)] },
        upsert_entry(
            email,
            Bson::Document(marked),
            Some(Bson::Document(tombstone)),
        ),
    )
    .run(tenants)
    .await
}

/// One event's update of one connector document: `filter` decides whether the event applies
/// (the connector, and a condition on the account's entry), `pipeline` computes the new list of
/// accounts and from it the top-level fields.
#[derive(Debug, Clone)]
pub struct Write {
    pub subaccount: SubaccountId,
    pub filter: Document,
    pub pipeline: Vec<Document>,
}

impl Write {
    fn new(subaccount: &SubaccountId, condition: Document, connections: Document) -> Self {
        let mut filter = connector(subaccount);
        filter.extend(condition);
        let pipeline = vec![
            doc! { "$set": { "metadata.connections": connections } },
            doc! { "$set": { "metadata": described_account(), "updatedAt": bson::DateTime::now() } },
        ];
        Self {
            subaccount: subaccount.clone(),
            filter,
            pipeline,
        }
    }

    async fn run(self, tenants: &TenantDatabases) -> mongodb::error::Result<Applied> {
        let connectors = collection(tenants, &self.subaccount);
        let result = connectors.update_one(self.filter, self.pipeline).await?;
        if result.matched_count > 0 {
            return Ok(Applied::Written);
        }
        nothing_matched(&connectors, &self.subaccount).await
    }
}

/// A filter: the account's entry matches `condition`. Documents without `connections` (written
/// before several accounts) are read through their top-level fields. The entry's email is
/// compared ignoring case (see the module docs).
fn recorded(email: &str, condition: Document) -> Document {
    let mut listed = doc! { "googleEmail": same_account(email) };
    listed.extend(condition.clone());
    let mut legacy = doc! {
        "metadata.connections": { "$exists": false },
        "metadata.googleEmail": same_account(email),
    };
    for (field, value) in prefixed(condition) {
        legacy.insert(field, value);
    }
    doc! { "$or": [
        { "metadata.connections": { "$elemMatch": listed } },
        legacy,
    ] }
}

/// A query condition: a stored `googleEmail` that is `key` (normalized) in any case. Every
/// ASCII punctuation character is escaped, so the address is matched literally.
fn same_account(key: &str) -> Document {
    let mut pattern = String::with_capacity(key.len() * 2 + 2);
    pattern.push('^');
    for c in key.chars() {
        if c.is_ascii() && !c.is_ascii_alphanumeric() {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('$');
    doc! { "$regex": pattern, "$options": "i" }
}

/// The same conditions on `metadata.<field>` instead of an array element's `<field>`.
fn prefixed(condition: Document) -> Document {
    condition
        .into_iter()
        .map(|(key, value)| {
            if key.starts_with('$') {
                let value = match value {
                    Bson::Array(parts) => Bson::Array(
                        parts
                            .into_iter()
                            .map(|part| match part {
                                Bson::Document(d) => Bson::Document(prefixed(d)),
                                other => other,
                            })
                            .collect(),
                    ),
                    other => other,
                };
                (key, value)
            } else {
                (format!("metadata.{key}"), value)
            }
        })
        .collect()
}

/// The stored list, or for an older document its top-level account as the only entry.
fn current_connections() -> Bson {
    Bson::Document(doc! { "$ifNull": [
        "$metadata.connections",
        { "$cond": [
            { "$eq": [{ "$type": "$metadata.googleEmail" }, "string"] },
            ["$metadata"],
            [],
        ] },
    ] })
}

/// The new list: the account's entry replaced by `replace` (an expression over `$$entry` that
/// writes the normalized `googleEmail`), or, when the account is not listed, `insert` appended
/// (if given). Entries are the account's whatever the case of their `googleEmail`; when one
/// account has two (written before emails were normalized), the first is replaced and the
/// others dropped.
fn upsert_entry(email: &str, replace: Bson, insert: Option<Bson>) -> Document {
    // In an aggregation expression a string starting with `$` is a field path; an email's local
    // part may start with one.
    let email = doc! { "$literal": email };
    let is_account = |entry: &str| doc! { "$eq": [{ "$toLower": entry }, &email] };
    let kept_emails =
        doc! { "$map": { "input": "$$value", "as": "kept", "in": "$$kept.googleEmail" } };
    let replaced = doc! { "$reduce": {
        "input": "$$list",
        "initialValue": [],
        "in": { "$cond": [
            is_account("$$this.googleEmail"),
            { "$cond": [
                { "$in": [&email, kept_emails] },
                "$$value",
                { "$concatArrays": ["$$value", [{ "$let": { "vars": { "entry": "$$this" }, "in": replace } }]] },
            ] },
            { "$concatArrays": ["$$value", ["$$this"]] },
        ] },
    } };
    let not_listed = match insert {
        Some(entry) => Bson::Document(doc! { "$concatArrays": ["$$list", [entry]] }),
        None => Bson::String("$$list".into()),
    };
    let emails = doc! { "$map": {
        "input": "$$list",
        "as": "entry",
        "in": { "$toLower": "$$entry.googleEmail" },
    } };
    doc! { "$let": {
        "vars": { "list": current_connections() },
        "in": { "$cond": [{ "$in": [email, emails] }, replaced, not_listed] },
    } }
}

/// The top-level fields: the most recently connected account that is still connected; when
/// none is, the most recently connected one (with `isConnected: false` and why); when no
/// account was ever connected, just `isConnected: false`. Then `connections`.
fn described_account() -> Document {
    let connected = doc! { "$filter": {
        "input": "$$list",
        "as": "entry",
        "cond": { "$eq": ["$$entry.isConnected", true] },
    } };
    let ever_connected = doc! { "$filter": {
        "input": "$$list",
        "as": "entry",
        "cond": { "$eq": [{ "$type": "$$entry.connectedAt" }, "string"] },
    } };
    let candidates = doc! { "$cond": [
        { "$gt": [{ "$size": "$$connected" }, 0] },
        "$$connected",
        ever_connected,
    ] };
    let latest = doc! { "$reduce": {
        "input": candidates,
        "initialValue": Bson::Null,
        "in": { "$cond": [
            { "$or": [
                { "$eq": ["$$value", Bson::Null] },
                { "$gt": ["$$this.connectedAt", "$$value.connectedAt"] },
            ] },
            "$$this",
            "$$value",
        ] },
    } };
    doc! { "$let": {
        "vars": { "list": "$metadata.connections" },
        "in": { "$let": {
            "vars": { "connected": connected },
            "in": { "$let": {
                "vars": { "latest": latest },
                "in": { "$mergeObjects": [
                    { "$ifNull": ["$$latest", { "isConnected": false }] },
                    { "connections": "$$list" },
                ] },
            } },
        } },
    } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_matched_literally_in_any_case() {
        let condition = same_account("first.last+tag@gmail.com");
        assert_eq!(
            condition.get_str("$regex"),
            Ok(r"^first\.last\+tag\@gmail\.com$")
        );
        assert_eq!(condition.get_str("$options"), Ok("i"));
    }
}
