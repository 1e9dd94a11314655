//! Silent token refresh for tower: a server layer that verifies JWT access tokens, an issuer
//! of short-lived access tokens and rotating refresh tokens, and a client layer that refreshes
//! exactly once while holding concurrent requests, then replays them.
//!
//! The crate has three roles, one module each, plus the key material two of them share:
//!
//! - [`server`] (the resource server): [`JwtAuthLayer`](server::JwtAuthLayer) verifies access
//!   tokens in any tower stack (axum, tonic, hyper) and answers failures per RFC 6750, or with
//!   gRPC statuses.
//! - [`issuer`] (the authorization server): [`TokenIssuer`](issuer::TokenIssuer) mints access
//!   tokens and rotating refresh tokens on a [`RefreshStore`](issuer::store::RefreshStore),
//!   and serves the refresh and revocation endpoints.
//! - [`client`]: [`RefreshLayer`](client::RefreshLayer) attaches the access token to every
//!   request of a [`Session`](client::Session) and refreshes it silently.
//! - [`keys`]: verification and signing keys, JWK and JWKS (static or remote), and the crypto
//!   backends.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `server` | yes | the verification layer, and [`keys`] |
//! | `issuer` | yes | access-token minting, rotating refresh tokens, the endpoints, `MemoryStore` |
//! | `client` | yes | the refreshing client layer |
//! | `aws-lc-rs` | yes | crypto through aws-lc-rs, keys parsed once |
//! | `rust-crypto` | no | pure-Rust crypto through jsonwebtoken's RustCrypto backend |
//! | `axum` | no | the [`Claims`](server::Claims) extractor |
//! | `jwks` | no | keys fetched from a remote JWKS URL and kept current (its TLS client uses aws-lc-rs) |
//! | `redis` | no | `RedisStore`: refresh-token families shared by several instances |
//!
//! A verify-only build (`default-features = false, features = ["server", "aws-lc-rs"]`)
//! compiles no issuance or client code; a client-only build (`features = ["client"]`)
//! compiles no verification code. The server roles need one crypto backend; a build with
//! neither fails with a message that says so. With both (as `--all-features` does),
//! `aws-lc-rs` is used.

#![cfg_attr(docsrs, feature(doc_cfg))]

/// A type-erased error, as hooks, refreshers and stores return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "issuer")]
pub mod issuer;
#[cfg(feature = "server")]
pub mod keys;
#[cfg(feature = "server")]
pub mod server;

#[cfg(feature = "server")]
mod clock;
#[cfg(any(feature = "server", feature = "client"))]
mod metrics;
#[cfg(feature = "server")]
pub use clock::Clock;
#[cfg(feature = "server")]
mod http_util;
#[cfg(feature = "server")]
mod tower_util;

/// The README's examples, compiled as doctests.
#[cfg(all(
    doctest,
    feature = "axum",
    feature = "client",
    feature = "server",
    feature = "issuer"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
