//! Carries out disconnect-requested: for each account concerned, revoke its token at the
//! provider (a token the provider already considers invalid counts as revoked), announce
//! connection-disconnected, then delete the stored tokens and the cached access token and mark
//! the calendar entry inactive; finally mark the operation done.
//!
//! A revocation the provider refuses for good (`invalid_client`, any 4xx but a rate limit)
//! does not keep the account connected: the user asked to disconnect, so the grant is deleted
//! here all the same, and the refusal is reported — `revocation: "refused"` in the event, in
//! the operation's `revocations`, and `revocations_failed_total{reason}`.
//!
//! Idempotent: an account already gone is skipped, so disconnecting twice is harmless, and a
//! redelivery after a partial run finishes the rest. The event's id and `disconnectedAt` derive
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
use sha2::{Digest, Sha256};

use crate::provider::{Provider, Revocation};
use crate::token_store::{TokenStore, TokenStoreError};

#[derive(Debug)]
pub struct DisconnectHandler {
    pub infra: Infrastructure,
    pub tokens: TokenStore,
    pub provider: Provider,
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
                tracing::info!(accounts = done.len(), %operation, "disconnected");
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
                    &[],
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
    ) -> Result<Vec<AccountRevocation>, HandlerError> {
        let subaccount = &event.subaccount_id;
        let emails = match &event.payload.google_email {
            Some(email) => vec![schemas::google_account_key(email)],
            None => self.tokens.accounts(subaccount).await.map_err(storage)?,
        };
        let mut done = Vec::new();
        for email in emails {
            let Some(stored) = self
                .tokens
                .load(subaccount, &email)
                .await
                .map_err(storage)?
            else {
                continue; // already disconnected
            };
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
            let announced = disconnected_event(event, &email, outcome);
            service_kit::nats::publish_event(
                &self.infra.jetstream,
                &self.infra.namespace,
                &announced,
            )
            .await
            .map_err(|e| HandlerError::Retryable(format!("announcing the disconnect: {e}")))?;
            self.tokens
                .delete(subaccount, &email)
                .await
                .map_err(storage)?;
            let mut redis = self.infra.redis.clone();
            if let Err(e) = redis
                .del::<_, ()>(self.infra.keys.access_token(subaccount, &email))
                .await
            {
                tracing::warn!(error = %e, "cached access token not deleted; it expires on its own and is revoked anyway");
            }
            crate::calendars::deactivate(&self.infra, subaccount, &email)
                .await
                .map_err(|e| HandlerError::Retryable(format!("MongoDB: {e}")))?;
            done.push(AccountRevocation {
                google_email: email,
                outcome,
                error: refusal,
            });
        }
        Ok(done)
    }

    async fn finish(
        &self,
        subaccount: &SubaccountId,
        operation: &str,
        status: OperationStatus,
        done: &[AccountRevocation],
        error: Option<&str>,
    ) {
        let disconnected: Vec<&str> = done.iter().map(|d| d.google_email.as_str()).collect();
        let written = async {
            let db = self.infra.mongo.connection_for(subaccount).await?;
            let mut set = doc! {
                "status": bson::to_bson(&status).unwrap_or_default(),
                "updatedAt": DateTime::now(),
                "disconnected": disconnected,
                "revocations": bson::to_bson(done).unwrap_or_default(),
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
    revocation: RevocationOutcome,
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
    let digest = Sha256::new()
        .chain_update(b"gcal-connector/disconnected/v1\0")
        .chain_update(operation.as_bytes())
        .chain_update([0])
        .chain_update(email.as_bytes())
        .finalize();
    let mut random = [0_u8; 10];
    random.copy_from_slice(&digest[..10]);
    let mut event = Envelope::new(
        request.subaccount_id.clone(),
        request.correlation_id,
        ConnectionDisconnected {
            google_email: email.to_owned(),
            disconnected_at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            operation_id: Some(operation.clone()),
            revocation: Some(revocation),
        },
    );
    event.id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    event.occurred_at = at;
    event
}
