//! Silent token refresh for tower: a server layer that verifies JWT bearer tokens and issues
//! rotating refresh tokens, and a client layer that refreshes exactly once while holding
//! concurrent requests, then replays them.
//!
//! - [`server`]: [`JwtAuthLayer`](server::JwtAuthLayer) verifies access tokens in any tower
//!   stack (axum, tonic, hyper) and answers failures per RFC 6750, or with gRPC statuses;
//!   [`TokenIssuer`](server::TokenIssuer) issues access tokens and rotating refresh tokens on
//!   a [`RefreshStore`](server::RefreshStore), and serves the refresh and revocation
//!   endpoints.
//! - [`client`]: [`RefreshLayer`](client::RefreshLayer) attaches the access token to every
//!   request of a [`Session`](client::Session) and refreshes it silently.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `server` | yes | the verification layer |
//! | `client` | yes | the refreshing client layer |
//! | `aws-lc-rs` | yes | crypto through aws-lc-rs, keys parsed once |
//! | `rust-crypto` | no | pure-Rust crypto through jsonwebtoken's RustCrypto backend |
//! | `axum` | no | the [`Claims`](server::Claims) extractor |
//! | `jwks` | no | keys fetched from a remote JWKS URL and kept current (its TLS client uses aws-lc-rs) |
//! | `redis` | no | `RedisStore`: refresh-token families shared by several instances |
//!
//! One crypto backend is required; a build with neither fails with a message that says so.
//! With both (as `--all-features` does), `aws-lc-rs` is used.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
pub mod server;

/// The README's examples, compiled as doctests.
#[cfg(all(doctest, feature = "axum", feature = "client", feature = "server"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
