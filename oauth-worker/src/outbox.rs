//! Events that must not be lost are stored before they are published, and removed once
//! JetStream acknowledges them:
//!
//! - connection-succeeded is written into the account's `googleauths` document together with
//!   the tokens (`pendingEvent`, one single-document write);
//! - connection-failed (including reauth-required) has no such document (nothing was stored,
//!   or only a status changes), so it is written to the tenant's `outbox` collection first
//!   ([`Outbox::publish_durably`]), before the callback answers or the token RPC replies;
//! - auth-link-issued (the email job) is published directly, and only when JetStream cannot
//!   take it at that moment (a stream electing a leader after a node died) is it written to the
//!   `outbox` collection ([`Outbox::keep`]), so the link's `emailSent: true` still holds.
//!
//! When JetStream is unreachable at that moment the [`Relay`] keeps trying, and at start-up
//! (and every [`SCAN_EVERY`]) it scans every tenant for entries a crash left behind. The event
//! id is the `Nats-Msg-Id`, so publishing an entry twice stores it once.

use std::collections::BTreeSet;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bson::{Document, doc};
use schemas::documents::google_auth::PendingEvent;
use schemas::documents::outbox::{COLLECTION as OUTBOX, OutboxEntry};
use schemas::events::{AuthLinkIssued, ConnectionFailed, ConnectionSucceeded};
use schemas::{Envelope, Event, RawEnvelope, StreamEvent, SubaccountId};
use service_kit::Infrastructure;
use service_kit::nats::{RawEvent, publish_event, publish_raw};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::token_store::TokenStore;

/// How often tenants with unpublished entries are retried.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How often every tenant is scanned for entries left by a crash.
pub const SCAN_EVERY: Duration = Duration::from_secs(300);
/// How long a publish may wait for JetStream before the relay takes over.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Outbox {
    infra: Infrastructure,
    store: TokenStore,
    retry: mpsc::UnboundedSender<SubaccountId>,
}

/// Where an entry waits until JetStream has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// `pendingEvent` of the account's `googleauths` document.
    WithTokens,
    /// A document of its own in the tenant's `outbox` collection.
    Alone,
}

/// Publishes what [`Outbox`] could not, until it can.
#[derive(Debug)]
pub struct Relay {
    outbox: Outbox,
    retry: mpsc::UnboundedReceiver<SubaccountId>,
}

impl Outbox {
    pub fn new(infra: Infrastructure, store: TokenStore) -> (Self, Relay) {
        let (retry, receiver) = mpsc::unbounded_channel();
        let outbox = Self {
            infra,
            store,
            retry,
        };
        (
            outbox.clone(),
            Relay {
                outbox,
                retry: receiver,
            },
        )
    }

    /// The outbox entry for `event`, to be written with the tokens.
    pub fn entry<E: Event + serde::Serialize>(event: &Envelope<E>) -> PendingEvent {
        PendingEvent {
            event_id: event.id.to_string(),
            event_type: E::TYPE.to_owned(),
            envelope: String::from_utf8(event.to_bytes()).expect("serde_json always writes UTF-8"),
        }
    }

    /// Publishes an entry stored with the tokens now and clears it; on failure hands the
    /// tenant to the relay. True when JetStream has it.
    pub async fn publish_now(&self, subaccount: &SubaccountId, entry: &PendingEvent) -> bool {
        self.publish_stored(Kept::WithTokens, subaccount, entry)
            .await
    }

    /// Stores `event` in the tenant's `outbox` collection, then publishes it in the
    /// background (the relay takes over when JetStream is unreachable). Returns once the
    /// event is stored, so a crash after that cannot lose it. Only if MongoDB cannot store it
    /// either is it published with in-process retries alone (and lost if this process stops
    /// before JetStream is back), which is logged.
    pub async fn publish_durably<E>(&self, event: Envelope<E>)
    where
        E: StreamEvent + serde::Serialize + Send + Sync + 'static,
    {
        let entry = Self::entry(&event);
        let subaccount = event.subaccount_id.clone();
        if let Err(error) = self.store_alone(&subaccount, &entry).await {
            tracing::error!(%error, event_id = %event.id, event_type = E::TYPE,
                "event not stored in the outbox; publishing it with in-process retries only");
            self.publish_detached(event);
            return;
        }
        let outbox = self.clone();
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                outbox
                    .publish_stored(Kept::Alone, &subaccount, &entry)
                    .await;
            },
            span,
        ));
    }

    /// Keeps an event that could not be published just now in the tenant's `outbox` collection
    /// and hands the tenant to the relay, which publishes it once JetStream takes it. `Ok` once
    /// stored: a crash after that cannot lose it.
    pub async fn keep<E: Event + serde::Serialize>(
        &self,
        event: &Envelope<E>,
    ) -> Result<(), mongodb::error::Error> {
        self.store_alone(&event.subaccount_id, &Self::entry(event))
            .await?;
        let _ = self.retry.send(event.subaccount_id.clone());
        Ok(())
    }

    /// Writes an entry to the `outbox` collection; storing the same event twice keeps one.
    async fn store_alone(
        &self,
        subaccount: &SubaccountId,
        entry: &PendingEvent,
    ) -> Result<(), mongodb::error::Error> {
        let stored = OutboxEntry {
            event_id: entry.event_id.clone(),
            event_type: entry.event_type.clone(),
            envelope: entry.envelope.clone(),
            created_at: bson::DateTime::now(),
        };
        let mut fields = bson::to_document(&stored).map_err(mongodb::error::Error::custom)?;
        fields.remove("_id");
        self.infra
            .mongo
            .connection_for(subaccount)
            .await?
            .collection::<Document>(OUTBOX)
            .update_one(
                doc! { "_id": &entry.event_id },
                doc! { "$setOnInsert": fields },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Every entry of a tenant's `outbox` collection. `existing`: the relay scans every
    /// tenant and must not create databases or collections in the ones that have none.
    async fn stored_alone(
        &self,
        subaccount: &SubaccountId,
    ) -> Result<Vec<PendingEvent>, mongodb::error::Error> {
        use futures::TryStreamExt;
        let entries: Vec<OutboxEntry> = self
            .infra
            .mongo
            .existing(subaccount)
            .collection::<OutboxEntry>(OUTBOX)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(entries
            .into_iter()
            .map(|e| PendingEvent {
                event_id: e.event_id,
                event_type: e.event_type,
                envelope: e.envelope,
            })
            .collect())
    }

    /// Publishes a stored entry now and clears it; on failure hands the tenant to the relay.
    async fn publish_stored(
        &self,
        kept: Kept,
        subaccount: &SubaccountId,
        entry: &PendingEvent,
    ) -> bool {
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.publish_entry(kept, subaccount, entry))
            .await
        {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::warn!(%error, event_id = %entry.event_id, "event kept in the outbox; the relay will publish it");
                let _ = self.retry.send(subaccount.clone());
                false
            }
            Err(_) => {
                tracing::warn!(event_id = %entry.event_id, "JetStream did not answer in time; the relay will publish the event");
                let _ = self.retry.send(subaccount.clone());
                false
            }
        }
    }

    async fn publish_entry(
        &self,
        kept: Kept,
        subaccount: &SubaccountId,
        entry: &PendingEvent,
    ) -> Result<(), String> {
        let raw = RawEnvelope::decode_raw(entry.envelope.as_bytes()).map_err(|e| e.to_string())?;
        let namespace = &self.infra.namespace;
        let (event_type, subject) = match raw.event_type.as_str() {
            ConnectionSucceeded::TYPE => (
                ConnectionSucceeded::TYPE,
                namespace.event::<ConnectionSucceeded>(subaccount),
            ),
            ConnectionFailed::TYPE => (
                ConnectionFailed::TYPE,
                namespace.event::<ConnectionFailed>(subaccount),
            ),
            AuthLinkIssued::TYPE => (
                AuthLinkIssued::TYPE,
                namespace.event::<AuthLinkIssued>(subaccount),
            ),
            other => return Err(format!("outbox entry of unknown type {other}")),
        };
        let ack = publish_raw(
            &self.infra.jetstream,
            subject,
            RawEvent {
                event_type,
                event_id: raw.id,
                correlation_id: raw.correlation_id,
                bytes: entry.envelope.as_bytes().to_vec(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        if ack.duplicate {
            tracing::info!(event_id = %entry.event_id, "outbox entry was already published");
        }
        let cleared = match kept {
            Kept::WithTokens => self
                .store
                .clear_pending(subaccount, &entry.event_id)
                .await
                .map_err(|e| e.to_string()),
            Kept::Alone => self
                .infra
                .mongo
                .existing(subaccount)
                .collection::<Document>(OUTBOX)
                .delete_one(doc! { "_id": &entry.event_id })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        cleared.map_err(|e| format!("published, but the outbox entry is not cleared yet: {e}"))
    }

    /// Publishes an event with in-process retries only (a few minutes); logged if it still
    /// cannot be published. The fallback of [`Self::publish_durably`] when MongoDB cannot
    /// store the event.
    fn publish_detached<E: StreamEvent + serde::Serialize + Send + Sync + 'static>(
        &self,
        event: Envelope<E>,
    ) {
        let infra = self.infra.clone();
        // In the caller's span: the event carries its trace context and the logs its ids.
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let attempt = || publish_event(&infra.jetstream, &infra.namespace, &event);
                let published = attempt
                    .retry(
                        ExponentialBuilder::default()
                            .with_min_delay(Duration::from_millis(500))
                            .with_max_delay(Duration::from_secs(30))
                            .with_max_times(12)
                            .with_jitter(),
                    )
                    .await;
                if let Err(error) = published {
                    tracing::error!(%error, event_id = %event.id, event_type = E::TYPE, "event could not be published");
                }
            },
            span,
        ));
    }

    /// Publishes every entry of one tenant; false if any is still pending.
    async fn flush(&self, subaccount: &SubaccountId) -> bool {
        let with_tokens = match self.store.pending(subaccount).await {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%error, %subaccount, "cannot read the outbox");
                return false;
            }
        };
        let alone = match self.stored_alone(subaccount).await {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%error, %subaccount, "cannot read the outbox collection");
                return false;
            }
        };
        let entries = with_tokens
            .into_iter()
            .map(|e| (Kept::WithTokens, e))
            .chain(alone.into_iter().map(|e| (Kept::Alone, e)));
        let mut all = true;
        for (kept, entry) in entries {
            if let Err(error) = self.publish_entry(kept, subaccount, &entry).await {
                tracing::debug!(%error, event_id = %entry.event_id, "outbox entry still pending");
                all = false;
            } else {
                tracing::info!(event_id = %entry.event_id, %subaccount, "outbox entry published by the relay");
            }
        }
        all
    }
}

impl Relay {
    /// Runs until `shutdown`: scans every tenant at start and every [`SCAN_EVERY`], and
    /// retries tenants with pending entries every [`RETRY_EVERY`].
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut waiting: BTreeSet<SubaccountId> = BTreeSet::new();
        let mut scan = tokio::time::interval(SCAN_EVERY);
        let mut retry = tokio::time::interval(RETRY_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(subaccount) = self.retry.recv() => { waiting.insert(subaccount); }
                _ = scan.tick() => {
                    match self.outbox.infra.mongo.tenants().await {
                        Ok(tenants) => waiting.extend(tenants),
                        Err(error) => tracing::warn!(%error, "outbox scan cannot list tenant databases"),
                    }
                }
                _ = retry.tick(), if !waiting.is_empty() => {
                    let mut still = BTreeSet::new();
                    for subaccount in std::mem::take(&mut waiting) {
                        if !self.outbox.flush(&subaccount).await {
                            still.insert(subaccount);
                        }
                    }
                    waiting = still;
                }
            }
        }
        if !waiting.is_empty() {
            tracing::warn!(
                tenants = waiting.len(),
                "stopping with unpublished outbox entries; the next start publishes them"
            );
        }
    }
}
