//! The token vault: Google access and refresh tokens are stored (MongoDB) and cached (Redis)
//! only as AES-256-GCM ciphertext. The cryptography is service-kit's [`Keyring`]; this module
//! holds what is specific to tokens: the settings, the binding and the Redis text form.
//!
//! - Every encryption draws a fresh random 96-bit nonce from the operating system's CSPRNG.
//! - The associated data binds a ciphertext to its record: a purpose tag, the subaccount id, the
//!   Google email and whether it is the access or the refresh token. A ciphertext copied to
//!   another record, or swapped between the access and refresh fields, does not decrypt.
//! - Keys rotate: `TOKEN_ENCRYPTION_KEYS` lists every key that may still decrypt, and
//!   `TOKEN_ENCRYPTION_KEY_ID` names the one that encrypts new writes. A token written under an
//!   older key still decrypts; [`TokenVault::is_current`] tells the caller to re-encrypt it on
//!   its next write, after which the old key can be removed.
//!
//! Key material and plaintext tokens never print: `Debug` shows key ids and `<redacted>`, and
//! both are wiped from memory when dropped.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bson::Binary;
use bson::spec::BinarySubtype;
use schemas::documents::google_auth::EncryptedToken;
use service_kit::aead::{Keyring, KeyringSettings, OpenError};
use service_kit::config::Env;
use zeroize::Zeroizing;

/// The key used when `TOKEN_ENCRYPTION_KEYS` is not set, so the system runs with no
/// configuration. It is public (it is in this file): anyone can decrypt tokens encrypted with
/// it. A worker using it logs a warning at start-up; replace it in any real deployment.
/// (The 32 ASCII bytes `gcal-connector-DEV-ONLY-not-safe`.)
pub const DEV_KEY_BASE64: &str = "Z2NhbC1jb25uZWN0b3ItREVWLU9OTFktbm90LXNhZmU=";

/// The id of [`DEV_KEY_BASE64`].
pub const DEV_KEY_ID: &str = "dev";

const KEYS_SETTING: &str = "TOKEN_ENCRYPTION_KEYS";
const KEY_ID_SETTING: &str = "TOKEN_ENCRYPTION_KEY_ID";
const DEFAULT_KEYS: &str = "dev:Z2NhbC1jb25uZWN0b3ItREVWLU9OTFktbm90LXNhZmU=";

/// Names the format of the associated data; a new format gets a new tag, so ciphertexts of one
/// can never be taken for the other.
const AAD_PURPOSE: &str = "gcal-connector/google-token/v1";

const SETTINGS: KeyringSettings = KeyringSettings {
    keys_setting: KEYS_SETTING,
    key_id_setting: KEY_ID_SETTING,
    default_keys: DEFAULT_KEYS,
    default_key_id: DEV_KEY_ID,
    keys_description: "Comma-separated `keyId:base64key` entries (each key 32 random bytes in \
                       standard base64, e.g. `openssl rand -base64 32`; ids of A-Z a-z 0-9 _ -) \
                       that encrypt and decrypt stored Google tokens. Keep retired keys listed \
                       until no token uses them. The default is a public development key: set \
                       your own.",
    key_id_description: "Id of the key in TOKEN_ENCRYPTION_KEYS that encrypts new tokens (the \
                         others only decrypt).",
    purpose: AAD_PURPOSE,
};

/// The keys the vault may decrypt with, and which of them encrypts new writes.
#[derive(Clone)]
pub struct VaultConfig {
    keyring: Keyring,
}

impl VaultConfig {
    /// Reads `TOKEN_ENCRYPTION_KEYS` and `TOKEN_ENCRYPTION_KEY_ID`. Every problem is recorded
    /// in `env` by setting name, never quoting key material; until `env.finish()` reports
    /// them, the development key stands in.
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            keyring: Keyring::from_env(env, &SETTINGS),
        }
    }

    /// Whether any configured key is the public development key (under any id): tokens
    /// encrypted with it are readable by anyone, so the worker warns at start-up.
    pub fn uses_dev_key(&self) -> bool {
        self.keyring.uses_dev_key()
    }

    /// The id of the key that encrypts new writes.
    pub fn current_key_id(&self) -> &str {
        self.keyring.current_key_id()
    }

    /// The ids of every key that may decrypt, in the order configured.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keyring.key_ids()
    }
}

impl fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultConfig")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .field("current", &self.current_key_id())
            .finish()
    }
}

/// Which of an account's two tokens a ciphertext holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Refresh => "refresh",
        }
    }
}

/// The record a token belongs to. Encrypting and decrypting must be given the same binding,
/// with the values exactly as stored in the `googleauths` document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBinding<'a> {
    pub subaccount_id: &'a str,
    pub google_email: &'a str,
    pub kind: TokenKind,
}

impl<'a> TokenBinding<'a> {
    pub fn new(subaccount_id: &'a str, google_email: &'a str, kind: TokenKind) -> Self {
        Self {
            subaccount_id,
            google_email,
            kind,
        }
    }

    /// The fields the keyring binds a ciphertext to, after its purpose tag ([`AAD_PURPOSE`]),
    /// each preceded by its length.
    fn fields(&self) -> [&str; 3] {
        [self.subaccount_id, self.google_email, self.kind.as_str()]
    }
}

/// A decrypted token. Never printed; wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(Zeroizing<String>);

impl SecretToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

/// Why a stored token could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// Encrypted with a key that is no longer (or not yet) in `TOKEN_ENCRYPTION_KEYS`.
    #[error("token was encrypted with key `{key_id}`, which is not configured")]
    UnknownKey { key_id: String },
    /// Malformed, tampered with, or belonging to another record. Deliberately says no more.
    #[error("encrypted token is invalid")]
    Invalid,
}

impl From<OpenError> for VaultError {
    fn from(error: OpenError) -> Self {
        match error {
            OpenError::UnknownKey { key_id } => Self::UnknownKey { key_id },
            OpenError::Invalid => Self::Invalid,
        }
    }
}

/// Encrypts and decrypts tokens. Cheap to clone (the key schedules are shared).
#[derive(Clone)]
pub struct TokenVault {
    keyring: Keyring,
}

impl TokenVault {
    pub fn new(config: &VaultConfig) -> Self {
        Self {
            keyring: config.keyring.clone(),
        }
    }

    /// Encrypts with the current key and a fresh random nonce.
    ///
    /// # Panics
    /// If the operating system's random number generator fails, which a running Linux system
    /// does not do: better to stop than to encrypt with a predictable nonce.
    pub fn encrypt(&self, plaintext: &str, binding: &TokenBinding) -> EncryptedToken {
        self.keyring.seal(plaintext.as_bytes(), &binding.fields())
    }

    /// Decrypts a token written under any configured key, if it belongs to `binding`.
    pub fn decrypt(
        &self,
        token: &EncryptedToken,
        binding: &TokenBinding,
    ) -> Result<SecretToken, VaultError> {
        let token = self.keyring.open_string(token, &binding.fields())?;
        Ok(SecretToken(token))
    }

    /// Whether `token` is encrypted with the current key; when not, the caller re-encrypts it
    /// on its next write so the old key can be retired.
    pub fn is_current(&self, token: &EncryptedToken) -> bool {
        self.keyring.is_current(token)
    }

    /// [`encrypt`](Self::encrypt) in a compact text form for Redis:
    /// `keyId.base64url(nonce).base64url(ciphertext)` (no padding).
    ///
    /// # Panics
    /// As [`encrypt`](Self::encrypt).
    pub fn encrypt_to_string(&self, plaintext: &str, binding: &TokenBinding) -> String {
        let sealed = self.encrypt(plaintext, binding);
        format!(
            "{}.{}.{}",
            sealed.key_id,
            URL_SAFE_NO_PAD.encode(&sealed.nonce.bytes),
            URL_SAFE_NO_PAD.encode(&sealed.ciphertext.bytes)
        )
    }

    /// Reads the text form of [`encrypt_to_string`](Self::encrypt_to_string).
    pub fn decrypt_from_str(
        &self,
        sealed: &str,
        binding: &TokenBinding,
    ) -> Result<SecretToken, VaultError> {
        let mut parts = sealed.split('.');
        let (Some(key_id), Some(nonce), Some(ciphertext), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VaultError::Invalid);
        };
        let binary = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map(|bytes| Binary {
                    subtype: BinarySubtype::Generic,
                    bytes,
                })
                .map_err(|_| VaultError::Invalid)
        };
        let token = EncryptedToken {
            key_id: key_id.to_owned(),
            nonce: binary(nonce)?,
            ciphertext: binary(ciphertext)?,
        };
        self.decrypt(&token, binding)
    }
}

impl fmt::Debug for TokenVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key_ids: Vec<&str> = self.keyring.key_ids().collect();
        key_ids.sort_unstable();
        f.debug_struct("TokenVault")
            .field("key_ids", &key_ids)
            .field("current", &self.keyring.current_key_id())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose;
    use service_kit::aead::{NONCE_BYTES, TAG_BYTES};

    use super::*;

    const KEY_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="; // 32 × 'A'
    const KEY_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI="; // 32 × 'B'
    const SUBACCOUNT: &str = "68cf05f060d294db17c0685e";
    const EMAIL: &str = "ada@example.com";
    const TOKEN: &str = "ya29.a0AfH6SMBx-very-secret-access-token";

    fn config(pairs: &[(&str, &str)]) -> Result<VaultConfig, service_kit::config::ConfigError> {
        let mut env = Env::from_pairs(pairs.iter().copied());
        let config = VaultConfig::from_env(&mut env);
        env.finish().map(|()| config)
    }

    fn vault(keys: &str, current: &str) -> TokenVault {
        let config = config(&[(KEYS_SETTING, keys), (KEY_ID_SETTING, current)])
            .expect("valid vault settings");
        TokenVault::new(&config)
    }

    fn access() -> TokenBinding<'static> {
        TokenBinding::new(SUBACCOUNT, EMAIL, TokenKind::Access)
    }

    /// The problems reported, asserting none of them quotes `secret`.
    fn problems(pairs: &[(&str, &str)], secret: &str) -> Vec<(String, String)> {
        let err = config(pairs).expect_err("invalid settings");
        assert!(!err.to_string().contains(secret), "{err}");
        err.problems
            .into_iter()
            .map(|p| (p.setting, p.reason))
            .collect()
    }

    #[test]
    fn defaults_use_the_public_dev_key() {
        let config = config(&[]).expect("defaults are valid");
        assert!(config.uses_dev_key());
        assert_eq!(config.current_key_id(), "dev");
        assert_eq!(
            general_purpose::STANDARD
                .decode(DEV_KEY_BASE64)
                .expect("base64"),
            b"gcal-connector-DEV-ONLY-not-safe"
        );
        assert!(DEFAULT_KEYS.ends_with(DEV_KEY_BASE64));
        let own = config_with_a();
        assert!(!own.uses_dev_key());
    }

    fn config_with_a() -> VaultConfig {
        config(&[(KEYS_SETTING, &format!("a:{KEY_A}")), (KEY_ID_SETTING, "a")]).expect("valid")
    }

    #[test]
    fn dev_key_under_another_id_still_counts_as_dev() {
        let config = config(&[
            (KEYS_SETTING, &format!("a:{KEY_A},old:{DEV_KEY_BASE64}")),
            (KEY_ID_SETTING, "a"),
        ])
        .expect("valid");
        assert!(config.uses_dev_key());
    }

    #[test]
    fn round_trip() {
        let vault = vault(&format!("a:{KEY_A}"), "a");
        let sealed = vault.encrypt(TOKEN, &access());
        assert_eq!(sealed.key_id, "a");
        assert_eq!(sealed.nonce.bytes.len(), NONCE_BYTES);
        assert_eq!(sealed.ciphertext.bytes.len(), TOKEN.len() + TAG_BYTES);
        let opened = vault.decrypt(&sealed, &access()).expect("decrypts");
        assert_eq!(opened.expose(), TOKEN);
        assert!(vault.is_current(&sealed));
        // The empty string and non-ASCII survive too.
        for plaintext in ["", "tökén-✓"] {
            let sealed = vault.encrypt(plaintext, &access());
            assert_eq!(
                vault
                    .decrypt(&sealed, &access())
                    .expect("decrypts")
                    .expose(),
                plaintext
            );
        }
    }

    #[test]
    fn each_encryption_differs_and_hides_the_plaintext() {
        let vault = vault(&format!("a:{KEY_A}"), "a");
        let first = vault.encrypt(TOKEN, &access());
        let second = vault.encrypt(TOKEN, &access());
        assert_ne!(first.nonce, second.nonce);
        assert_ne!(first.ciphertext, second.ciphertext);
        for sealed in [&first, &second] {
            let bytes = &sealed.ciphertext.bytes;
            assert!(
                !bytes
                    .windows(8)
                    .any(|w| TOKEN.as_bytes().windows(8).any(|t| t == w)),
                "ciphertext contains a run of the plaintext"
            );
        }
        let text = vault.encrypt_to_string(TOKEN, &access());
        assert_ne!(text, vault.encrypt_to_string(TOKEN, &access()));
        assert!(!text.contains("secret") && !text.contains("ya29"), "{text}");
    }

    #[test]
    fn a_ciphertext_only_decrypts_for_its_own_record_and_kind() {
        let vault = vault(&format!("a:{KEY_A}"), "a");
        let sealed = vault.encrypt(TOKEN, &access());
        let wrong = [
            TokenBinding::new("68cf05f060d294db17c0685f", EMAIL, TokenKind::Access),
            TokenBinding::new(SUBACCOUNT, "bob@example.com", TokenKind::Access),
            TokenBinding::new(SUBACCOUNT, EMAIL, TokenKind::Refresh),
            // Field boundaries matter: moving a character between fields changes the binding.
            TokenBinding::new(
                "68cf05f060d294db17c0685ea",
                "da@example.com",
                TokenKind::Access,
            ),
        ];
        for binding in wrong {
            assert_eq!(
                vault
                    .decrypt(&sealed, &binding)
                    .map(|s| s.expose().to_owned()),
                Err(VaultError::Invalid),
                "{binding:?}"
            );
        }
        let refresh = vault.encrypt(
            TOKEN,
            &TokenBinding::new(SUBACCOUNT, EMAIL, TokenKind::Refresh),
        );
        assert_eq!(
            vault.decrypt(&refresh, &access()).map(|_| ()),
            Err(VaultError::Invalid)
        );
    }

    /// Records written before the vault moved onto service-kit's keyring (by the code of
    /// commit e5ec148, with its own AES-GCM) still decrypt: same key id field, nonce and
    /// ciphertext layout, and associated data.
    #[test]
    fn decrypts_what_the_previous_implementation_wrote() {
        fn stored(key_id: &str, nonce: &[u8], ciphertext: &[u8]) -> EncryptedToken {
            let binary = |bytes: &[u8]| Binary {
                subtype: BinarySubtype::Generic,
                bytes: bytes.to_vec(),
            };
            EncryptedToken {
                key_id: key_id.to_owned(),
                nonce: binary(nonce),
                ciphertext: binary(ciphertext),
            }
        }
        const REFRESH: &str = "1//0refresh-token-value";
        let refresh = TokenBinding::new(SUBACCOUNT, EMAIL, TokenKind::Refresh);
        let vault = vault(&format!("a:{KEY_A},dev:{DEV_KEY_BASE64}"), "a");

        let access_token = stored(
            "a",
            &[12, 149, 202, 250, 242, 186, 15, 122, 253, 40, 101, 150],
            &[
                217, 103, 140, 162, 77, 147, 154, 94, 184, 117, 196, 110, 247, 216, 125, 98, 143,
                98, 219, 4, 112, 157, 230, 27, 244, 27, 201, 62, 8, 29, 233, 220, 9, 160, 218, 206,
                30, 112, 43, 232, 114, 27, 44, 66, 136, 251, 216, 80, 9, 62, 134, 6, 38, 215, 67,
                59,
            ],
        );
        let opened = vault.decrypt(&access_token, &access()).expect("decrypts");
        assert_eq!(opened.expose(), TOKEN);
        assert!(vault.is_current(&access_token));

        let cached = "a.ODf0b3v9yaNz_aVj.89IZoxxPxrJNbW4HJGqXXlpC4JB4og_DiWmMgawoRwJKs6NM_FP9";
        let opened = vault.decrypt_from_str(cached, &refresh).expect("decrypts");
        assert_eq!(opened.expose(), REFRESH);

        // Under the public development key, as a deployment without settings wrote.
        let dev_token = stored(
            "dev",
            &[90, 177, 64, 95, 249, 131, 94, 64, 138, 117, 137, 80],
            &[
                43, 200, 29, 146, 129, 46, 224, 67, 235, 217, 105, 86, 42, 159, 107, 143, 181, 207,
                94, 62, 156, 34, 38, 8, 119, 163, 80, 47, 87, 38, 37, 49, 107, 145, 104, 180, 215,
                254, 58,
            ],
        );
        let defaults = TokenVault::new(&config(&[]).expect("defaults"));
        for vault in [&vault, &defaults] {
            let opened = vault.decrypt(&dev_token, &refresh).expect("decrypts");
            assert_eq!(opened.expose(), REFRESH);
            // Still bound to its record and kind.
            assert_eq!(
                vault.decrypt(&dev_token, &access()).map(|_| ()),
                Err(VaultError::Invalid)
            );
        }
        assert!(!vault.is_current(&dev_token));
    }

    #[test]
    fn tampering_is_detected() {
        let vault = vault(&format!("a:{KEY_A}"), "a");
        let sealed = vault.encrypt(TOKEN, &access());
        let mut cases = Vec::new();
        for i in [0, sealed.ciphertext.bytes.len() - 1] {
            let mut t = sealed.clone();
            t.ciphertext.bytes[i] ^= 0x01; // a ciphertext bit, then a tag bit
            cases.push(t);
        }
        let mut t = sealed.clone();
        t.nonce.bytes[0] ^= 0x80;
        cases.push(t);
        let mut t = sealed.clone();
        t.nonce.bytes.pop(); // 88-bit nonce
        cases.push(t);
        let mut t = sealed.clone();
        t.nonce.bytes.push(0); // 104-bit nonce
        cases.push(t);
        let mut t = sealed.clone();
        t.ciphertext.bytes.truncate(TAG_BYTES - 1);
        cases.push(t);
        let mut t = sealed.clone();
        t.ciphertext.bytes.truncate(t.ciphertext.bytes.len() - 1);
        cases.push(t);
        let mut t = sealed.clone();
        t.ciphertext.bytes.clear();
        cases.push(t);
        for tampered in cases {
            assert_eq!(
                vault.decrypt(&tampered, &access()).map(|_| ()),
                Err(VaultError::Invalid)
            );
        }
        assert!(
            vault.decrypt(&sealed, &access()).is_ok(),
            "the original still decrypts"
        );
    }

    #[test]
    fn rotation_keeps_old_tokens_readable_and_flags_them_for_re_encryption() {
        let before = vault(&format!("a:{KEY_A}"), "a");
        let old = before.encrypt(TOKEN, &access());

        let after = vault(&format!("a:{KEY_A}, b:{KEY_B}"), "b");
        assert!(!after.is_current(&old));
        let opened = after
            .decrypt(&old, &access())
            .expect("old key still decrypts");
        assert_eq!(opened.expose(), TOKEN);
        let renewed = after.encrypt(opened.expose(), &access());
        assert_eq!(renewed.key_id, "b");
        assert!(after.is_current(&renewed));
        assert_eq!(
            after
                .decrypt(&renewed, &access())
                .expect("decrypts")
                .expose(),
            TOKEN
        );

        let retired = vault(&format!("b:{KEY_B}"), "b");
        assert_eq!(
            retired.decrypt(&old, &access()).map(|_| ()),
            Err(VaultError::UnknownKey {
                key_id: "a".to_owned()
            })
        );
        assert!(retired.decrypt(&renewed, &access()).is_ok());
        // The same id with a different key: authentication fails, without saying why.
        let replaced = vault(&format!("a:{KEY_B}"), "a");
        assert_eq!(
            replaced.decrypt(&old, &access()).map(|_| ()),
            Err(VaultError::Invalid)
        );
    }

    #[test]
    fn text_form_round_trips() {
        let vault = vault(&format!("a:{KEY_A},b:{KEY_B}"), "b");
        let text = vault.encrypt_to_string(TOKEN, &access());
        let parts: Vec<&str> = text.split('.').collect();
        assert_eq!(parts.len(), 3, "{text}");
        assert_eq!(parts[0], "b");
        assert!(!text.contains('=') && !text.contains('+') && !text.contains('/'));
        let opened = vault.decrypt_from_str(&text, &access()).expect("decrypts");
        assert_eq!(opened.expose(), TOKEN);

        // Readable after rotation, and bound like the stored form.
        let rotated = self::vault(&format!("b:{KEY_B},c:{KEY_A}"), "c");
        assert_eq!(
            rotated
                .decrypt_from_str(&text, &access())
                .expect("decrypts")
                .expose(),
            TOKEN
        );
        let refresh = TokenBinding::new(SUBACCOUNT, EMAIL, TokenKind::Refresh);
        assert_eq!(
            vault.decrypt_from_str(&text, &refresh).map(|_| ()),
            Err(VaultError::Invalid)
        );
    }

    #[test]
    fn text_form_rejects_garbage() {
        let vault = vault(&format!("a:{KEY_A}"), "a");
        let good = vault.encrypt_to_string(TOKEN, &access());
        let (_, rest) = good.split_once('.').expect("dotted");
        let flipped = {
            let mut chars: Vec<char> = good.chars().collect();
            let last = chars.len() - 1;
            chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
            chars.into_iter().collect::<String>()
        };
        for garbage in [
            String::new(),
            "a".to_owned(),
            "a..".to_owned(),
            "a.AAAA".to_owned(),
            format!("{good}.extra"),
            format!("{good}="),
            good.replace('.', ","),
            format!("a.{}", rest.replace('.', "!.")),
            format!("bad id!.{rest}"),
            flipped,
            "a.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        ] {
            assert_eq!(
                vault.decrypt_from_str(&garbage, &access()).map(|_| ()),
                Err(VaultError::Invalid),
                "{garbage:?}"
            );
        }
        assert_eq!(
            vault
                .decrypt_from_str(&format!("zz.{rest}"), &access())
                .map(|_| ()),
            Err(VaultError::UnknownKey {
                key_id: "zz".to_owned()
            })
        );
    }

    #[test]
    fn bad_base64_is_reported_without_the_key() {
        let secret = "not*base64*at*all*sEcReT";
        let p = problems(
            &[
                (KEYS_SETTING, &format!("a:{secret}")),
                (KEY_ID_SETTING, "a"),
            ],
            secret,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, KEYS_SETTING);
        assert!(p[0].1.contains("base64"), "{p:?}");
    }

    #[test]
    fn wrong_key_length_is_reported_without_the_key() {
        let short = "c2hvcnQtc2VjcmV0LWtleQ=="; // 16 bytes
        let p = problems(
            &[(KEYS_SETTING, &format!("a:{short}")), (KEY_ID_SETTING, "a")],
            short,
        );
        assert_eq!(
            p,
            [(
                KEYS_SETTING.to_owned(),
                "entry 1: the key must be exactly 32 bytes; it has 16".to_owned()
            )]
        );
        // One byte too many fails alike.
        let long = general_purpose::STANDARD.encode([7u8; 33]);
        let p = problems(
            &[(KEYS_SETTING, &format!("a:{long}")), (KEY_ID_SETTING, "a")],
            &long,
        );
        assert!(p[0].1.contains("exactly 32 bytes"), "{p:?}");
    }

    #[test]
    fn duplicate_ids_are_reported() {
        let p = problems(
            &[
                (KEYS_SETTING, &format!("a:{KEY_A},a:{KEY_B}")),
                (KEY_ID_SETTING, "a"),
            ],
            KEY_B,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, KEYS_SETTING);
        assert!(p[0].1.contains("`a` is listed more than once"), "{p:?}");
        assert!(!p[0].1.contains(KEY_A), "{p:?}");
    }

    #[test]
    fn current_id_must_be_listed() {
        let p = problems(&[(KEYS_SETTING, &format!("a:{KEY_A}"))], KEY_A);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, KEY_ID_SETTING, "the default `dev` is not listed");
        let p = problems(
            &[(KEYS_SETTING, &format!("a:{KEY_A}")), (KEY_ID_SETTING, "b")],
            KEY_A,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, KEY_ID_SETTING);
        // A key pasted into the id setting is refused without being quoted.
        let p = problems(
            &[
                (KEYS_SETTING, &format!("a:{KEY_A}")),
                (KEY_ID_SETTING, KEY_B),
            ],
            KEY_B,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, KEY_ID_SETTING);
    }

    #[test]
    fn bad_id_characters_are_reported_without_quoting_the_entry() {
        for bad in ["a.b", "with space", "é", &"x".repeat(65)] {
            let p = problems(
                &[
                    (KEYS_SETTING, &format!("{bad}:{KEY_A}")),
                    (KEY_ID_SETTING, "dev"),
                ],
                KEY_A,
            );
            assert!(!p.iter().any(|(_, r)| r.contains(bad)), "{p:?}");
            assert!(
                p.iter()
                    .any(|(s, r)| s == KEYS_SETTING && r.contains("key id must be")),
                "{bad}: {p:?}"
            );
        }
        // An entry with no id at all, e.g. a bare key.
        let p = problems(&[(KEYS_SETTING, KEY_A), (KEY_ID_SETTING, "a")], KEY_A);
        assert!(
            p.iter()
                .any(|(s, r)| s == KEYS_SETTING && r.contains("entry 1 is not of the form")),
            "{p:?}"
        );
        assert!(
            config(&[
                (KEYS_SETTING, &format!("{}:{KEY_A}", "x".repeat(64))),
                (KEY_ID_SETTING, &"x".repeat(64))
            ])
            .is_ok()
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let bad_b64 = "%%%%sEcReT%%%%";
        let p = problems(
            &[
                (
                    KEYS_SETTING,
                    &format!("a:{KEY_A}, b:{bad_b64}, a:{KEY_B}, c d:{KEY_A}, ,"),
                ),
                (KEY_ID_SETTING, "zz"),
            ],
            bad_b64,
        );
        let text = format!("{p:?}");
        assert_eq!(p.len(), 4, "{text}");
        assert!(!text.contains(KEY_A) && !text.contains(KEY_B), "{text}");
        assert_eq!(
            p.iter().filter(|(s, _)| s == KEYS_SETTING).count(),
            3,
            "{text}"
        );
        assert_eq!(
            p.iter().filter(|(s, _)| s == KEY_ID_SETTING).count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn a_bad_key_does_not_also_fail_the_current_id() {
        let p = problems(&[(KEYS_SETTING, "a:QUFB"), (KEY_ID_SETTING, "a")], "QUFB");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, KEYS_SETTING);
    }

    #[test]
    fn debug_never_shows_keys_or_tokens() {
        let config = config(&[
            (KEYS_SETTING, &format!("a:{KEY_A},b:{KEY_B}")),
            (KEY_ID_SETTING, "b"),
        ])
        .expect("valid");
        let vault = TokenVault::new(&config);
        let secret = vault
            .decrypt(&vault.encrypt(TOKEN, &access()), &access())
            .expect("decrypts");
        let key_a_bytes = [b'A'; 32];
        let printed = [
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{vault:?}"),
            format!("{vault:#?}"),
            format!("{secret:?}"),
        ];
        for text in &printed {
            for needle in [
                KEY_A,
                KEY_B,
                "AAAAAAAA",
                "65, 65, 65",
                "41414141",
                &format!("{key_a_bytes:?}"),
                DEV_KEY_BASE64,
                "gcal-connector-DEV",
                TOKEN,
                "ya29",
            ] {
                assert!(!text.contains(needle), "{text} contains {needle}");
            }
        }
        assert_eq!(
            printed[0],
            r#"VaultConfig { key_ids: ["a", "b"], current: "b" }"#
        );
        assert_eq!(
            printed[2],
            r#"TokenVault { key_ids: ["a", "b"], current: "b" }"#
        );
        assert_eq!(printed[4], "SecretToken(<redacted>)");
    }

    #[test]
    fn errors_say_nothing_about_the_data() {
        assert_eq!(
            VaultError::Invalid.to_string(),
            "encrypted token is invalid"
        );
        let unknown = VaultError::UnknownKey {
            key_id: "old".to_owned(),
        };
        assert_eq!(
            unknown.to_string(),
            "token was encrypted with key `old`, which is not configured"
        );
    }

    #[test]
    fn clones_share_keys() {
        let vault = vault(&format!("a:{KEY_A}"), "a");
        let clone = vault.clone();
        let sealed = vault.encrypt(TOKEN, &access());
        assert_eq!(
            clone
                .decrypt(&sealed, &access())
                .expect("decrypts")
                .expose(),
            TOKEN
        );
    }
}
