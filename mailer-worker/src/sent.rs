//! The mailer's own bookkeeping: which auth-link events have been emailed (or are being
//! emailed right now), so a redelivered, replayed or re-published event is not emailed twice.
//!
//! One document per event, in the tenant's database, keyed by the event id:
//!
//! ```text
//! { _id: "<event id>", status: "sending" | "sent", userEmail, correlationId, claimedAt, sentAt }
//! ```
//!
//! A delivery first *claims* the event (inserts it as `sending`; `_id` is unique, so only one
//! delivery can), sends, then marks it `sent`. A second delivery of the same event that arrives
//! meanwhile — a re-publish under a new message id, or a redelivery after a lost ack — finds the
//! claim and backs off instead of sending a second copy. A claim older than its lease belongs to
//! a delivery that died mid-send; the next delivery takes it over, so nothing is lost.
//!
//! SMTP cannot do better than at-least-once: a mailer killed after the server's `250` and
//! before `mark_sent` leaves a claim whose email did go out, and the takeover sends it again.
//! The copy carries the same `Message-ID` (it derives from the event id, see `email.rs`), so a
//! receiving system that de-duplicates by Message-ID shows one mail; the chaos run counts such
//! copies as "resent", apart from duplicates (two events for one link), which must not happen.

use std::time::Duration;

use mongodb::bson::{self, Document, doc};
use mongodb::{Collection, Database};
use schemas::Envelope;
use schemas::events::AuthLinkIssued;
use service_kit::mongo::Expiry;

/// The collection, in each tenant database, of auth-link emails sent or being sent.
pub const COLLECTION: &str = "mailersentauthlinks";

const SENDING: &str = "sending";
const SENT: &str = "sent";

/// What [`SentLinks::claim`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This delivery may send; [`SentLinks::mark_sent`] or [`SentLinks::release`] it after.
    Claimed(Token),
    /// The email went out before: send nothing.
    AlreadySent,
    /// Another delivery is sending it right now: check again later.
    InProgress,
}

/// Proof of one claim: its time stamp, so a release never removes somebody else's claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Token(bson::DateTime);

/// The record of sent auth-link emails of one tenant.
#[derive(Debug, Clone)]
pub struct SentLinks {
    collection: Collection<Document>,
}

impl SentLinks {
    /// The TTL index of the record: a claim is deleted `ttl` after `claimedAt` (set by every
    /// claim and take-over). Long enough that any delivery or replay of the event finds it:
    /// an event stays replayable for `EVENTS_MAX_AGE` after it was published, and it is
    /// claimed after that, so `ttl >= EVENTS_MAX_AGE` covers the whole replay window. After
    /// that the link has long expired too, and an expired link is never emailed.
    pub fn expiry(ttl: Duration) -> Expiry {
        Expiry {
            collection: COLLECTION,
            field: "claimedAt",
            ttl,
        }
    }

    pub fn new(db: &Database) -> Self {
        Self {
            collection: db.collection(COLLECTION),
        }
    }

    /// Claims the right to send the email for `event`. A `sending` claim older than `lease`
    /// is taken over (its delivery died or hung).
    pub async fn claim(
        &self,
        event: &Envelope<AuthLinkIssued>,
        lease: Duration,
    ) -> mongodb::error::Result<Claim> {
        let id = event.id.to_string();
        let now = bson::DateTime::now();
        let fresh = doc! {
            "_id": &id,
            "status": SENDING,
            "userEmail": event.payload.user_email.as_str(),
            "correlationId": event.correlation_id.to_string(),
            "claimedAt": now,
        };
        match self.collection.insert_one(fresh).await {
            Ok(_) => return Ok(Claim::Claimed(Token(now))),
            Err(e) if service_kit::mongo::is_duplicate_key(&e) => {}
            Err(e) => return Err(e),
        }
        let Some(existing) = self.collection.find_one(doc! { "_id": &id }).await? else {
            // Released between our insert and this read: the next delivery claims it.
            return Ok(Claim::InProgress);
        };
        // A record without a status is a sent one (the status is written with every claim).
        if existing.get_str("status").map_or(true, |s| s == SENT) {
            return Ok(Claim::AlreadySent);
        }
        let claimed_at = existing.get_datetime("claimedAt").ok().copied();
        let expired = claimed_at.is_none_or(|at| {
            let age = now.timestamp_millis() - at.timestamp_millis();
            age >= i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
        });
        if !expired {
            return Ok(Claim::InProgress);
        }
        // Take over the stale claim, unless another delivery just did (compare and set).
        let taken = self
            .collection
            .update_one(
                doc! { "_id": &id, "status": SENDING, "claimedAt": claimed_at },
                doc! { "$set": { "claimedAt": now } },
            )
            .await?;
        Ok(if taken.modified_count == 1 {
            tracing::warn!(
                "taking over a stale send claim; if that delivery's email went out, this sends a second copy"
            );
            Claim::Claimed(Token(now))
        } else {
            Claim::InProgress
        })
    }

    /// Records that the email went out.
    pub async fn mark_sent(&self, event: &Envelope<AuthLinkIssued>) -> mongodb::error::Result<()> {
        self.collection
            .update_one(
                doc! { "_id": event.id.to_string() },
                doc! { "$set": { "status": SENT, "sentAt": bson::DateTime::now() } },
            )
            .await
            .map(|_| ())
    }

    /// Gives the claim up after a failed send, so the next delivery can claim at once.
    pub async fn release(
        &self,
        event: &Envelope<AuthLinkIssued>,
        token: &Token,
    ) -> mongodb::error::Result<()> {
        self.collection
            .delete_one(doc! {
                "_id": event.id.to_string(),
                "status": SENDING,
                "claimedAt": token.0,
            })
            .await
            .map(|_| ())
    }
}
