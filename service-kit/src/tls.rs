//! One TLS crypto provider for the whole process.
//!
//! Our clients (NATS, MongoDB, Redis, reqwest, lettre) use rustls with *ring*. When anything in
//! the build also enables rustls' *aws-lc-rs* backend (the e2e crate's SMTP sink does), rustls
//! can no longer pick a default by itself and the first TLS connection panics. Installing ring
//! explicitly, before any connection, removes the ambiguity.

/// Makes ring the process's rustls provider. Idempotent; the first call wins.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}
