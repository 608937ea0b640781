//! Carries out disconnect-requested: for each account concerned, revoke its token at the
//! provider (a token the provider already considers invalid counts as revoked), delete the
//! stored tokens, then announce connection-disconnected, delete the cached access token and
//! mark the calendar entry inactive; finally mark the operation done.
//!
//! A revocation the provider refuses for good (`invalid_client`, any 4xx but a rate limit)
//! does not keep the account connected: the user asked to disconnect, so the grant is deleted
//! here all the same, and the refusal is reported — `revocation: "refused"` in the event, in
//! the operation's `revocations`, and `revocations_failed_total{reason}`.
//!
//! Fenced: only the connection generation the request names is ended (the api reads each
//! account's generation when the request is made). An account connected again since —
//! the request handled late, redelivered or replayed — keeps its new connection: it is not
//! revoked, announced or deleted, and the deletion itself is conditional on the generation.
//!
//! Idempotent: a named account already gone only has the steps after the deletion done again
//! (so a redelivery after a partial run finishes the rest), and disconnecting twice is
//! harmless. The event's id and `disconnectedAt` derive
//! from the operation, so a retry announces the same fact again, not a new one. A provider
//! that is down is retried by redelivery (`DISCONNECT_RETRY_DELAYS`, for hours with the
//! defaults); only the last attempt fails the operation.

use bson::{DateTime, doc};
use chrono::SecondsFormat;
use redis::AsyncCommands;
use schemas::documents::operation::{AccountRevocation, COLLECTION, OperationStatus};
use schemas::events::{ConnectionDisconnected, DisconnectRequested, RevocationOutcome};
use schemas::{Envelope, SubaccountId};
use service_kit::Infrastructure;
use service_kit::consumer::{Delivery, EventHandler, HandlerError};

use crate::provider::{Provider, Revocation};
use crate::token_store::{TokenStore, TokenStoreError};

#[derive(Debug)]
pub struct DisconnectHandler {
    pub infra: Infrastructure,
    pub tokens: TokenStore,
    pub provider: Provider,
    /// This replica's access tokens held in memory: a disconnected account's is forgotten.
    pub held: std::sync::Arc<crate::held_tokens::HeldTokens>,
}

impl EventHandler<DisconnectRequested> for DisconnectHandler {
    async fn handle(
        &self,
        event: Envelope<DisconnectRequested>,
        delivery: Delivery,
    ) -> Result<(), HandlerError> {
        let subaccount = &event.subaccount_id;
        let operation = &event.payload.operation_id;
        match self.disconnect(&event).await {
            Ok(done) => {
                tracing::info!(accounts = done.disconnected.len(), %operation, "disconnected");
                self.finish(subaccount, operation, OperationStatus::Done, &done, None)
                    .await;
                Ok(())
            }
            Err(HandlerError::Retryable(reason)) if !delivery.is_last_attempt() => {
                Err(HandlerError::Retryable(reason))
            }
            Err(HandlerError::Retryable(reason) | HandlerError::Permanent(reason)) => {
                self.finish(
                    subaccount,
                    operation,
                    OperationStatus::Failed,
                    &Done::default(),
                    Some(&reason),
                )
                .await;
                Err(HandlerError::Permanent(reason))
            }
        }
    }
}

impl DisconnectHandler {
    async fn disconnect(
        &self,
        event: &Envelope<DisconnectRequested>,
    ) -> Result<Done, HandlerError> {
        let subaccount = &event.subaccount_id;
        let targets: Vec<(String, Fence)> = match &event.payload.connections {
            Some(connections) => connections
                .iter()
                .map(|c| {
                    (
                        schemas::google_account_key(&c.google_email),
                        Fence::Generation(c.generation),
                    )
                })
                .collect(),
            // Published before generations existed.
            None => {
                let emails = match &event.payload.google_email {
                    Some(email) => vec![schemas::google_account_key(email)],
                    None => self.tokens.accounts(subaccount).await.map_err(storage)?,
                };
                let fence = Fence::ConnectedBy(bson::DateTime::from_chrono(event.occurred_at));
                emails.into_iter().map(|email| (email, fence)).collect()
            }
        };
        let named = event.payload.connections.is_some() || event.payload.google_email.is_some();
        let mut done = Done::default();
        for (email, fence) in targets {
            let Some(stored) = self
                .tokens
                .load(subaccount, &email)
                .await
                .map_err(storage)?
            else {
                // Gone. A named account was connected when the request was made, so either
                // this request deleted it before a crash or a redelivery (the steps after the
                // deletion are finished now; the same event id announces it once), or another
                // disconnect did (announcing it again says nothing new). What the provider
                // answered then is not known here.
                if named {
                    self.announce_and_clean_up(event, &email, None).await?;
                    done.disconnected.push(email);
                }
                continue;
            };
            let generation = stored.document.generation;
            if !fence.ends(&stored.document) {
                tracing::info!(account = %email, generation, ?fence,
                    "connected again since the disconnect was requested; the new connection stays");
                continue;
            }
            // Revoking the refresh token ends the whole grant (its access tokens too).
            let token = stored
                .refresh_token
                .as_ref()
                .unwrap_or(&stored.access_token);
            let (outcome, refusal) = match self.provider.revoke(token.expose()).await {
                Ok(Revocation::Revoked) => (RevocationOutcome::Revoked, None),
                Ok(Revocation::AlreadyInvalid) => (RevocationOutcome::AlreadyInvalid, None),
                Err(e) if e.is_transient() => {
                    return Err(HandlerError::Retryable(format!(
                        "revoking {email}'s token: {e}"
                    )));
                }
                Err(e) => {
                    // The user asked to disconnect: the grant goes here all the same.
                    tracing::warn!(error = %e, account = %email,
                        "the provider refused the revocation; disconnecting anyway");
                    metrics::counter!("revocations_failed_total", "reason" => e.code_label())
                        .increment(1);
                    (RevocationOutcome::Refused, Some(e.to_string()))
                }
            };
            // The fence: only the generation the request names is deleted. Announced after
            // the deletion, so a connection made meanwhile is never announced as ended.
            if !self
                .tokens
                .delete_generation(subaccount, &email, generation)
                .await
                .map_err(storage)?
            {
                // Connected again between the check above and the deletion: the new
                // connection's tokens, calendar entry and metadata stay.
                tracing::warn!(account = %email, generation,
                    "connected again while the disconnect was under way; the new connection stays");
                continue;
            }
            self.announce_and_clean_up(event, &email, Some(outcome))
                .await?;
            done.revocations.push(AccountRevocation {
                google_email: email.clone(),
                outcome,
                error: refusal,
            });
            done.disconnected.push(email);
        }
        Ok(done)
    }

    /// After an account's tokens are deleted: announce connection-disconnected (with what the
    /// provider answered to the revocation, when known), drop the cached access token (Redis, then
    /// this replica's memory; other replicas hold it at most `ACCESS_TOKEN_MEMORY_TTL`), mark the
    /// calendar entry inactive. Each step is idempotent.
    async fn announce_and_clean_up(
        &self,
        event: &Envelope<DisconnectRequested>,
        email: &str,
        revocation: Option<RevocationOutcome>,
    ) -> Result<(), HandlerError> {
        let subaccount = &event.subaccount_id;
        let announced = disconnected_event(event, email, revocation);
        service_kit::nats::publish_event(&self.infra.jetstream, &self.infra.namespace, &announced)
            .await
            .map_err(|e| HandlerError::Retryable(format!("announcing the disconnect: {e}")))?;
        let mut redis = self.infra.redis.clone();
        if let Err(e) = redis
            .del::<_, ()>(self.infra.keys.access_token(subaccount, email))
            .await
        {
            tracing::warn!(error = %e, "cached access token not deleted; it expires on its own and is revoked anyway");
        }
        // After the cache: a read that finds nothing there and in MongoDB answers not_connected.
        self.held.forget(subaccount, email);
        crate::calendars::deactivate(&self.infra, subaccount, email)
            .await
            .map_err(|e| HandlerError::Retryable(format!("MongoDB: {e}")))
    }

    async fn finish(
        &self,
        subaccount: &SubaccountId,
        operation: &str,
        status: OperationStatus,
        done: &Done,
        error: Option<&str>,
    ) {
        let disconnected = &done.disconnected;
        let written = async {
            let db = self.infra.mongo.connection_for(subaccount).await?;
            let mut set = doc! {
                "status": bson::to_bson(&status).unwrap_or_default(),
                "updatedAt": DateTime::now(),
                "disconnected": disconnected,
                "revocations": bson::to_bson(&done.revocations).unwrap_or_default(),
            };
            if let Some(error) = error {
                set.insert("error", error);
            }
            db.collection::<bson::Document>(COLLECTION)
                .update_one(doc! { "_id": operation }, doc! { "$set": set })
                .await
        }
        .await;
        if let Err(e) = written {
            tracing::error!(error = %e, %operation, "operation status not recorded");
        }
    }
}

/// What a disconnect did: the accounts it disconnected, and what the provider answered to
/// each revocation it sent (an account found already deleted, by this request before a crash
/// or by another, is disconnected with no revocation to report).
#[derive(Debug, Default)]
struct Done {
    disconnected: Vec<String>,
    revocations: Vec<AccountRevocation>,
}

/// Which connection of an account a request ends.
#[derive(Debug, Clone, Copy)]
enum Fence {
    /// The generation the account had when the request was made.
    Generation(i64),
    /// A request published before generations existed: any connection made no later than
    /// the request (or at an unknown time, i.e. before `connectedAt` was recorded). Clocks
    /// of the api and the oauth-worker hosts are compared here, so only a reconnect within
    /// their skew of the request could be taken for an earlier one.
    ConnectedBy(bson::DateTime),
}

impl Fence {
    fn ends(self, stored: &schemas::documents::GoogleAuth) -> bool {
        match self {
            Self::Generation(generation) => stored.generation == generation,
            Self::ConnectedBy(at) => stored.connected_at.is_none_or(|connected| connected <= at),
        }
    }
}

fn storage(error: TokenStoreError) -> HandlerError {
    match error {
        TokenStoreError::Mongo(e) => HandlerError::Retryable(format!("MongoDB: {e}")),
        other => HandlerError::Permanent(other.to_string()),
    }
}

/// The same operation and account always give the same event: its id and time come from the
/// operation id (a UUIDv7) and a hash of the account.
fn disconnected_event(
    request: &Envelope<DisconnectRequested>,
    email: &str,
    revocation: Option<RevocationOutcome>,
) -> Envelope<ConnectionDisconnected> {
    let operation = &request.payload.operation_id;
    let millis = uuid::Uuid::parse_str(operation)
        .ok()
        .and_then(|id| id.get_timestamp())
        .map(|ts| {
            let (secs, nanos) = ts.to_unix();
            secs * 1000 + u64::from(nanos) / 1_000_000
        })
        .unwrap_or_else(|| u64::try_from(request.occurred_at.timestamp_millis()).unwrap_or(0));
    let at = chrono::DateTime::from_timestamp_millis(i64::try_from(millis).unwrap_or(0))
        .unwrap_or(request.occurred_at);
    let mut event = Envelope::new(
        request.subaccount_id.clone(),
        request.correlation_id,
        ConnectionDisconnected {
            google_email: email.to_owned(),
            disconnected_at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            operation_id: Some(operation.clone()),
            revocation,
        },
    );
    event.id = schemas::derived_event_id(
        "gcal-connector/disconnected/v1",
        &[operation.as_bytes(), email.as_bytes()],
        millis,
    );
    event.occurred_at = at;
    event
}

#[cfg(test)]
mod tests {
    use bson::Binary;
    use bson::spec::BinarySubtype;
    use schemas::documents::google_auth::{AuthStatus, EncryptedToken, GoogleAuth};

    use super::*;

    fn stored(generation: i64, connected_at: Option<DateTime>) -> GoogleAuth {
        let binary = Binary {
            subtype: BinarySubtype::Generic,
            bytes: vec![0; 12],
        };
        let now = DateTime::now();
        GoogleAuth {
            id: bson::oid::ObjectId::new(),
            subaccount_id: "68cf05f060d294db17c0685e".into(),
            google_email: "a@example.com".into(),
            user_email: "u@example.com".into(),
            access_token: EncryptedToken {
                key_id: "a".into(),
                nonce: binary.clone(),
                ciphertext: binary,
            },
            refresh_token: None,
            expires_at: now,
            access_token_issued_at: None,
            no_refresh_token: false,
            scopes: vec![],
            status: AuthStatus::Active,
            token_version: 1,
            generation,
            connected_at,
            slot: None,
            created_at: now,
            updated_at: now,
            pending_event: None,
        }
    }

    #[test]
    fn a_request_ends_only_the_generation_it_names() {
        assert!(Fence::Generation(2).ends(&stored(2, None)));
        assert!(!Fence::Generation(1).ends(&stored(2, None)));
        // Stored before generations existed: generation 0.
        assert!(Fence::Generation(0).ends(&stored(0, None)));
        assert!(!Fence::Generation(0).ends(&stored(1, None)));
    }

    #[test]
    fn a_request_without_generations_ends_only_connections_made_before_it() {
        let request = DateTime::from_millis(1_000_000);
        let fence = Fence::ConnectedBy(request);
        assert!(fence.ends(&stored(1, Some(DateTime::from_millis(999_999)))));
        assert!(fence.ends(&stored(1, Some(request))));
        assert!(!fence.ends(&stored(2, Some(DateTime::from_millis(1_000_001)))));
        // Connected before `connectedAt` was recorded: before any such request.
        assert!(fence.ends(&stored(0, None)));
    }
}
