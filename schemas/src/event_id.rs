//! Event ids derived from what an event records, for events that may be produced twice (a
//! redelivered request, a retried callback, a report sent again): the same facts always yield
//! the same id, which is also the `Nats-Msg-Id`, so JetStream keeps one; different facts never
//! share one.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A UUIDv7 whose timestamp is `millis` (when the recorded fact happened) and whose random bits
/// are the first 10 bytes of SHA-256 of `recipe`, a NUL, then `parts` separated by NULs. The
/// recipe names the kind of event and its version (`gcal-connector/disconnected/v1`), so two
/// kinds never collide. An id changes only when the recipe does: the recipes in use are
/// checked against their earlier, hand-written forms below.
pub fn derived_event_id(recipe: &str, parts: &[&[u8]], millis: u64) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(recipe.as_bytes());
    hash.update([0]);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash.update([0]);
        }
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut random = [0_u8; 10];
    random.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids of events already published must not change: each recipe as it was written
    /// before this function, byte for byte.
    fn by_hand(prefix: &[u8], body: &[&[u8]], millis: u64) -> Uuid {
        let mut hash = Sha256::new().chain_update(prefix);
        for piece in body {
            hash.update(piece);
        }
        let digest = hash.finalize();
        let mut random = [0_u8; 10];
        random.copy_from_slice(&digest[..10]);
        uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
    }

    #[test]
    fn the_recipes_in_use_keep_their_ids() {
        let millis = 1_760_000_000_123;
        // The callback's events: type, NUL, state.
        assert_eq!(
            derived_event_id(
                "gcal-connector/callback-event/v1",
                &[b"connection-succeeded", b"state-abc"],
                millis
            ),
            by_hand(
                b"gcal-connector/callback-event/v1\0",
                &[b"connection-succeeded", &[0], b"state-abc"],
                millis
            )
        );
        // The disconnect's events: operation, NUL, Google account.
        assert_eq!(
            derived_event_id(
                "gcal-connector/disconnected/v1",
                &[b"op-1", b"a@example.com"],
                millis
            ),
            by_hand(
                b"gcal-connector/disconnected/v1\0",
                &[b"op-1", &[0], b"a@example.com"],
                millis
            )
        );
        // The metadata update's: every part followed by a NUL (an empty last part).
        assert_eq!(
            derived_event_id(
                "gcal-connector/metadata-update/v1",
                &[
                    b"sub",
                    b"cal",
                    b"u@example.com",
                    b"g@example.com",
                    b"2025-10-05",
                    b""
                ],
                millis
            ),
            by_hand(
                b"gcal-connector/metadata-update/v1\0",
                &[
                    b"sub",
                    &[0],
                    b"cal",
                    &[0],
                    b"u@example.com",
                    &[0],
                    b"g@example.com",
                    &[0],
                    b"2025-10-05",
                    &[0]
                ],
                millis
            )
        );
    }

    #[test]
    fn ids_are_v7_at_the_given_time_and_differ_with_any_part() {
        let id = derived_event_id("r/v1", &[b"a", b"b"], 1_700_000_000_000);
        assert_eq!(id.get_version_num(), 7);
        let (secs, _) = id.get_timestamp().expect("v7").to_unix();
        assert_eq!(secs, 1_700_000_000);
        for other in [
            derived_event_id("r/v2", &[b"a", b"b"], 1_700_000_000_000),
            derived_event_id("r/v1", &[b"a", b"c"], 1_700_000_000_000),
            // The separator keeps ("ab", "") apart from ("a", "b").
            derived_event_id("r/v1", &[b"ab", b""], 1_700_000_000_000),
        ] {
            assert_ne!(id, other);
        }
        assert_eq!(
            id,
            derived_event_id("r/v1", &[b"a", b"b"], 1_700_000_000_000)
        );
    }
}
