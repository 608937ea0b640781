//! A rotating AES-256-GCM keyring for small secrets stored in MongoDB, configured by a pair of
//! settings (`<NAME>_KEYS` = `keyId:base64key,...`, `<NAME>_KEY_ID` = the key new writes use).
//!
//! The same design as the oauth-worker's token vault (`oauth-worker/src/vault.rs`), for other
//! secrets (today: webhook signing secrets): a fresh random 96-bit nonce per encryption, the
//! key id stored beside the ciphertext so older keys still decrypt after a rotation, and
//! associated data that binds a ciphertext to its record (a purpose tag and the record's
//! identifying fields, each length-prefixed), so a ciphertext copied to another record does not
//! decrypt. Key material never prints and is wiped when dropped.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, Generate, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use bson::Binary;
use bson::spec::BinarySubtype;
use schemas::documents::google_auth::EncryptedToken;
use zeroize::Zeroizing;

use crate::config::Env;

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
const KEY_ID_RULE: &str = "1 to 64 characters of A-Z, a-z, 0-9, `_` and `-`";

/// Standard base64, padded or not (`openssl rand -base64 32` pads, some tools don't).
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The two settings of one keyring and their built-in (public, development) default.
#[derive(Debug, Clone, Copy)]
pub struct KeyringSettings {
    pub keys_setting: &'static str,
    pub key_id_setting: &'static str,
    /// `dev:<base64>`: a public key, so the system runs with no configuration.
    pub default_keys: &'static str,
    pub default_key_id: &'static str,
    pub keys_description: &'static str,
    pub key_id_description: &'static str,
    /// Names the format of the associated data; ciphertexts of one purpose never open as
    /// another's.
    pub purpose: &'static str,
}

/// Why a stored secret could not be decrypted. Says nothing about the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("secret was encrypted with key `{key_id}`, which is not configured")]
    UnknownKey { key_id: String },
    #[error("encrypted secret is invalid")]
    Invalid,
}

/// Encrypts and decrypts with the configured keys. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

struct Inner {
    ciphers: HashMap<String, Aes256Gcm>,
    current: String,
    purpose: &'static str,
    uses_dev_key: bool,
}

impl Keyring {
    /// Reads the two settings; every problem is recorded in `env` by setting name without
    /// quoting key material, and the default stands in until `env.finish()` reports them.
    pub fn from_env(env: &mut Env, settings: &KeyringSettings) -> Self {
        let raw: Zeroizing<String> = Zeroizing::new(env.value(
            settings.keys_setting,
            settings.default_keys,
            settings.keys_description,
        ));
        let current: String = env.value(
            settings.key_id_setting,
            settings.default_key_id,
            settings.key_id_description,
        );
        let dev = parse(settings.default_keys).unwrap_or_default();
        match parse(&raw) {
            Err(problems) => {
                for problem in problems {
                    env.problem(settings.keys_setting, problem);
                }
                Self::build(dev, settings.default_key_id, settings.purpose, true)
            }
            Ok(keys) if !keys.iter().any(|(id, _)| *id == current) => {
                // Not quoted: a mistyped value here may be a key.
                env.problem(
                    settings.key_id_setting,
                    format!(
                        "must be the id of one of the keys listed in {} ({KEY_ID_RULE})",
                        settings.keys_setting
                    ),
                );
                Self::build(dev, settings.default_key_id, settings.purpose, true)
            }
            Ok(keys) => {
                let uses_dev_key = keys
                    .iter()
                    .any(|(_, key)| dev.iter().any(|(_, d)| **d == **key));
                Self::build(keys, &current, settings.purpose, uses_dev_key)
            }
        }
    }

    fn build(
        keys: Vec<(String, Zeroizing<[u8; KEY_BYTES]>)>,
        current: &str,
        purpose: &'static str,
        uses_dev_key: bool,
    ) -> Self {
        let ciphers = keys
            .iter()
            .map(|(id, key)| (id.clone(), Aes256Gcm::new((&**key).into())))
            .collect();
        Self {
            inner: Arc::new(Inner {
                ciphers,
                current: current.to_owned(),
                purpose,
                uses_dev_key,
            }),
        }
    }

    /// Whether a configured key is the public development default (the caller warns).
    pub fn uses_dev_key(&self) -> bool {
        self.inner.uses_dev_key
    }

    /// Encrypts `plaintext` with the current key, bound to `binding` (the record's fields).
    ///
    /// # Panics
    /// If the operating system's random number generator fails: better to stop than to
    /// encrypt with a predictable nonce.
    pub fn seal(&self, plaintext: &[u8], binding: &[&str]) -> EncryptedToken {
        let cipher = self
            .inner
            .ciphers
            .get(&self.inner.current)
            .expect("the current key is always configured (from_env guarantees it)");
        let nonce = <[u8; NONCE_BYTES]>::generate();
        let aad = self.associated_data(binding);
        let ciphertext = cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM accepts any short secret");
        EncryptedToken {
            key_id: self.inner.current.clone(),
            nonce: generic_binary(nonce.to_vec()),
            ciphertext: generic_binary(ciphertext),
        }
    }

    /// Decrypts what [`seal`](Self::seal) wrote under any configured key, if it belongs to
    /// `binding`.
    pub fn open(
        &self,
        sealed: &EncryptedToken,
        binding: &[&str],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let Some(cipher) = self.inner.ciphers.get(&sealed.key_id) else {
            return Err(OpenError::UnknownKey {
                key_id: sealed.key_id.chars().take(64).collect(),
            });
        };
        let nonce = <&[u8; NONCE_BYTES]>::try_from(sealed.nonce.bytes.as_slice())
            .map_err(|_| OpenError::Invalid)?;
        if sealed.ciphertext.bytes.len() < TAG_BYTES {
            return Err(OpenError::Invalid);
        }
        let aad = self.associated_data(binding);
        cipher
            .decrypt(
                nonce.into(),
                Payload {
                    msg: &sealed.ciphertext.bytes,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenError::Invalid)
    }

    /// The purpose tag and each field, each preceded by its length (u64, big-endian), so no
    /// two different bindings encode alike.
    fn associated_data(&self, binding: &[&str]) -> Vec<u8> {
        let mut aad = Vec::new();
        for field in std::iter::once(&self.inner.purpose).chain(binding) {
            aad.extend_from_slice(&(field.len() as u64).to_be_bytes());
            aad.extend_from_slice(field.as_bytes());
        }
        aad
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key_ids: Vec<&str> = self.inner.ciphers.keys().map(String::as_str).collect();
        key_ids.sort_unstable();
        f.debug_struct("Keyring")
            .field("purpose", &self.inner.purpose)
            .field("key_ids", &key_ids)
            .field("current", &self.inner.current)
            .finish()
    }
}

type ParsedKey = (String, Zeroizing<[u8; KEY_BYTES]>);

/// Parses `keyId:base64key,...`; problems name entries by position, never quoting them.
fn parse(raw: &str) -> Result<Vec<ParsedKey>, Vec<String>> {
    let mut keys: Vec<ParsedKey> = Vec::new();
    let mut problems = Vec::new();
    for (index, entry) in raw
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
    {
        let n = index + 1;
        let Some((id, encoded)) = entry.split_once(':') else {
            problems.push(format!("entry {n} is not of the form `keyId:base64key`"));
            continue;
        };
        let id = id.trim();
        let valid_id = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_id {
            problems.push(format!("entry {n}: the key id must be {KEY_ID_RULE}"));
            continue;
        }
        if keys.iter().any(|(seen, _)| seen == id) {
            problems.push(format!("key id `{id}` is listed more than once"));
            continue;
        }
        let Ok(bytes) = KEY_BASE64.decode(encoded.trim()).map(Zeroizing::new) else {
            problems.push(format!("entry {n}: the key is not valid standard base64"));
            continue;
        };
        match <[u8; KEY_BYTES]>::try_from(bytes.as_slice()) {
            Ok(key) => keys.push((id.to_owned(), Zeroizing::new(key))),
            Err(_) => problems.push(format!(
                "entry {n}: the key must be exactly {KEY_BYTES} bytes; it has {}",
                bytes.len()
            )),
        }
    }
    if keys.is_empty() && problems.is_empty() {
        problems.push("must list at least one `keyId:base64key` entry".to_owned());
    }
    if problems.is_empty() {
        Ok(keys)
    } else {
        Err(problems)
    }
}

fn generic_binary(bytes: Vec<u8>) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="; // 32 × 'A'
    const SETTINGS: KeyringSettings = KeyringSettings {
        keys_setting: "TEST_KEYS",
        key_id_setting: "TEST_KEY_ID",
        default_keys: "dev:QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=",
        default_key_id: "dev",
        keys_description: "keys",
        key_id_description: "key id",
        purpose: "test/v1",
    };

    fn keyring(pairs: &[(&str, &str)]) -> Result<Keyring, crate::config::ConfigError> {
        let mut env = Env::from_pairs(pairs.iter().copied());
        let keyring = Keyring::from_env(&mut env, &SETTINGS);
        env.finish().map(|()| keyring)
    }

    #[test]
    fn seals_and_opens_bound_to_the_record() {
        let ring =
            keyring(&[("TEST_KEYS", &format!("a:{KEY_A}")), ("TEST_KEY_ID", "a")]).expect("valid");
        assert!(!ring.uses_dev_key());
        let sealed = ring.seal(b"s3cret", &["sub", "endpoint-1"]);
        assert_eq!(sealed.key_id, "a");
        assert_eq!(
            ring.open(&sealed, &["sub", "endpoint-1"])
                .expect("opens")
                .as_slice(),
            b"s3cret"
        );
        assert_eq!(
            ring.open(&sealed, &["sub", "endpoint-2"]),
            Err(OpenError::Invalid)
        );
        assert_eq!(
            ring.open(&sealed, &["sube", "ndpoint-1"]),
            Err(OpenError::Invalid)
        );
        assert!(!format!("{ring:?}").contains(KEY_A));
    }

    #[test]
    fn defaults_are_the_dev_key_and_problems_never_quote_keys() {
        assert!(keyring(&[]).expect("defaults").uses_dev_key());
        let err = keyring(&[("TEST_KEYS", "a:bm90LWEta2V5"), ("TEST_KEY_ID", "a")])
            .expect_err("short key");
        assert!(err.to_string().contains("TEST_KEYS"), "{err}");
        assert!(!err.to_string().contains("bm90LWEta2V5"), "{err}");
        let err = keyring(&[("TEST_KEYS", &format!("a:{KEY_A}")), ("TEST_KEY_ID", "b")])
            .expect_err("unknown id");
        assert!(err.to_string().contains("TEST_KEY_ID"), "{err}");
    }
}
