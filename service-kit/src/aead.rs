//! A rotating AES-256-GCM keyring for small secrets stored in MongoDB, configured by a pair of
//! settings (`<NAME>_KEYS` = `keyId:base64key,...`, `<NAME>_KEY_ID` = the key new writes use).
//!
//! The one AES-GCM core of the system, under the oauth-worker's token vault
//! (`oauth-worker/src/vault.rs`) and the webhook signing secrets ([`crate::webhook`]): a fresh
//! random 96-bit nonce per encryption, the key id stored beside the ciphertext so older keys
//! still decrypt after a rotation, and associated data that binds a ciphertext to its record (a
//! purpose tag and the record's identifying fields, each length-prefixed), so a ciphertext
//! copied to another record does not decrypt. Key material never prints and is wiped when
//! dropped.

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
use zeroize::{Zeroize, Zeroizing};

use crate::config::Env;

const KEY_BYTES: usize = 32;
/// Length of the stored nonce.
pub const NONCE_BYTES: usize = 12;
/// Length of the authentication tag that ends every ciphertext.
pub const TAG_BYTES: usize = 16;
const KEY_ID_MAX: usize = 64;
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
    /// Expanded AES keys by key id; wiped on drop (aes-gcm's `zeroize` feature).
    ciphers: HashMap<String, Aes256Gcm>,
    /// The key ids in the order configured.
    key_ids: Vec<String>,
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
        let dev = parse(settings.default_keys, settings.keys_setting).keys;
        let ParsedKeys {
            keys,
            seen_ids,
            mut problems,
        } = parse(&raw, settings.keys_setting);
        if !is_valid_key_id(&current) {
            // Not quoted: a mistyped value here may be a key.
            problems.push((settings.key_id_setting, format!("must be {KEY_ID_RULE}")));
        } else if !seen_ids.contains(&current) {
            problems.push((
                settings.key_id_setting,
                format!(
                    "must be the id of one of the keys listed in {}",
                    settings.keys_setting
                ),
            ));
        }
        if problems.is_empty() {
            let uses_dev_key = keys
                .iter()
                .any(|(_, key)| dev.iter().any(|(_, d)| **d == **key));
            Self::build(keys, &current, settings.purpose, uses_dev_key)
        } else {
            for (setting, reason) in problems {
                env.problem(setting, reason);
            }
            Self::build(dev, settings.default_key_id, settings.purpose, true)
        }
    }

    fn build(
        keys: Vec<ParsedKey>,
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
                key_ids: keys.into_iter().map(|(id, _)| id).collect(),
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

    /// The id of the key that encrypts new writes.
    pub fn current_key_id(&self) -> &str {
        &self.inner.current
    }

    /// The ids of every key that may decrypt, in the order configured.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.inner.key_ids.iter().map(String::as_str)
    }

    /// Whether `sealed` is encrypted with the current key; when not, the caller re-encrypts it
    /// on its next write so the old key can be retired.
    pub fn is_current(&self, sealed: &EncryptedToken) -> bool {
        sealed.key_id == self.inner.current
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
            // Only a well-formed id is worth naming; anything else is just garbage.
            return Err(if is_valid_key_id(&sealed.key_id) {
                OpenError::UnknownKey {
                    key_id: sealed.key_id.clone(),
                }
            } else {
                OpenError::Invalid
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

    /// [`open`](Self::open) for a secret that is text (as every secret sealed from a `&str`).
    pub fn open_string(
        &self,
        sealed: &EncryptedToken,
        binding: &[&str],
    ) -> Result<Zeroizing<String>, OpenError> {
        let mut bytes = self.open(sealed, binding)?;
        match String::from_utf8(std::mem::take(&mut *bytes)) {
            Ok(text) => Ok(Zeroizing::new(text)),
            Err(e) => {
                // Authentic yet not UTF-8: not something this system wrote.
                e.into_bytes().zeroize();
                Err(OpenError::Invalid)
            }
        }
    }

    /// The purpose tag and each field, each preceded by its length (u64, big-endian), so no
    /// two different bindings encode alike.
    fn associated_data(&self, binding: &[&str]) -> Vec<u8> {
        let fields = std::iter::once(&self.inner.purpose).chain(binding);
        let mut aad = Vec::with_capacity(fields.clone().map(|f| 8 + f.len()).sum());
        for field in fields {
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

/// What a `<NAME>_KEYS` value holds.
struct ParsedKeys {
    keys: Vec<ParsedKey>,
    /// Every well-formed id listed, even of entries whose key is bad, so a wrong key does not
    /// also fail the current-id check.
    seen_ids: Vec<String>,
    problems: Vec<(&'static str, String)>,
}

/// Parses `keyId:base64key,...` (the value of `setting`). Entries are named by position in
/// problems: an entry's text may be a key.
fn parse(raw: &str, setting: &'static str) -> ParsedKeys {
    let mut keys: Vec<ParsedKey> = Vec::new();
    let mut seen_ids: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    let mut problem = |reason: String| problems.push((setting, reason));
    let entries = raw
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty());
    let mut count = 0;
    for (index, entry) in entries.enumerate() {
        count += 1;
        let n = index + 1;
        let Some((id, encoded)) = entry.split_once(':') else {
            problem(format!("entry {n} is not of the form `keyId:base64key`"));
            continue;
        };
        let (id, encoded) = (id.trim(), encoded.trim());
        let id_ok = is_valid_key_id(id);
        if !id_ok {
            problem(format!("entry {n}: the key id must be {KEY_ID_RULE}"));
        } else if seen_ids.iter().any(|seen| seen == id) {
            problem(format!("key id `{id}` is listed more than once"));
        } else {
            seen_ids.push(id.to_owned());
        }
        // Decoded into a wiped buffer; the decoder's own error is not quoted (it names the
        // offending character).
        let Ok(bytes) = KEY_BASE64.decode(encoded).map(Zeroizing::new) else {
            problem(format!("entry {n}: the key is not valid standard base64"));
            continue;
        };
        match <[u8; KEY_BYTES]>::try_from(bytes.as_slice()) {
            Ok(key) if id_ok => keys.push((id.to_owned(), Zeroizing::new(key))),
            Ok(_) => {}
            Err(_) => problem(format!(
                "entry {n}: the key must be exactly {KEY_BYTES} bytes; it has {}",
                bytes.len()
            )),
        }
    }
    if count == 0 {
        problem("must list at least one `keyId:base64key` entry".to_owned());
    }
    ParsedKeys {
        keys,
        seen_ids,
        problems,
    }
}

fn is_valid_key_id(id: &str) -> bool {
    (1..=KEY_ID_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
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

    #[test]
    fn associated_data_is_the_purpose_and_fields_length_prefixed() {
        let ring = keyring(&[]).expect("defaults");
        let mut expected = Vec::new();
        for field in ["test/v1", "ab", ""] {
            expected.extend_from_slice(&(field.len() as u64).to_be_bytes());
            expected.extend_from_slice(field.as_bytes());
        }
        assert_eq!(ring.associated_data(&["ab", ""]), expected);
        assert_ne!(
            ring.associated_data(&["ab", "c"]),
            ring.associated_data(&["a", "bc"])
        );
    }

    #[test]
    fn rotation_and_key_ids() {
        const KEY_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
        let old = keyring(&[("TEST_KEYS", &format!("b:{KEY_A}")), ("TEST_KEY_ID", "b")])
            .expect("valid")
            .seal(b"s3cret", &["r"]);
        let ring = keyring(&[
            ("TEST_KEYS", &format!("b:{KEY_A}, a:{KEY_B}")),
            ("TEST_KEY_ID", "a"),
        ])
        .expect("valid");
        assert!(ring.uses_dev_key(), "KEY_B is the test default");
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(ring.current_key_id(), "a");
        assert!(!ring.is_current(&old));
        assert_eq!(
            ring.open_string(&old, &["r"]).expect("opens").as_str(),
            "s3cret"
        );
        let clone = ring.clone();
        assert!(Arc::ptr_eq(&ring.inner, &clone.inner));
        let mut unknown = old.clone();
        unknown.key_id = "zz".to_owned();
        assert_eq!(
            ring.open(&unknown, &["r"]),
            Err(OpenError::UnknownKey {
                key_id: "zz".to_owned()
            })
        );
        unknown.key_id = "bad id!".to_owned();
        assert_eq!(ring.open(&unknown, &["r"]), Err(OpenError::Invalid));
    }
}
