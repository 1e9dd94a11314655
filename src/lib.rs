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
//! | `redis` | no | `RedisStore`: refresh-token families shared by several instances (and, with `dpop`, a shared DPoP replay store) |
//! | `dpop` | yes | DPoP (RFC 9449): proof verification, replay stores and nonces with `server`; bound sessions with `issuer`; a `DpopKey` that signs proofs, and `RefreshLayer::dpop` that sends them with every request, with `client` |
//! | `metrics` | no | counters and histograms through the [`metrics`](https://docs.rs/metrics) facade (below) |
//!
//! A verify-only build (`default-features = false, features = ["server", "aws-lc-rs"]`)
//! compiles no issuance or client code; a client-only build (`features = ["client"]`)
//! compiles no verification code. DPoP follows the roles: `server` and `dpop` verify proofs,
//! `client` and `dpop` sign them (and need a crypto backend). The server roles need one
//! crypto backend; a build with
//! neither fails with a message that says so. With both (as `--all-features` does),
//! `aws-lc-rs` is used.
//!
//! # Metrics
//!
//! With the `metrics` feature, the server layer, the issuer, the remote JWKS and the client
//! session record the instruments below through the `metrics` facade; attach the exporter of
//! your choice (Prometheus, OpenTelemetry, …) by installing its recorder. Install it **before**
//! building the [`JwtAuthLayer`](server::JwtAuthLayer), the [`TokenIssuer`](issuer::TokenIssuer)
//! and the [`Session`](client::Session)s: each binds its instruments to the recorder installed
//! when it is built, so that an event is one increment on a handle, with no lookup by name.
//! With no recorder installed an event is a null check; without the feature, nothing is
//! compiled in.
//!
//! Names follow OpenTelemetry's conventions (dot-separated, no unit in the name, attribute
//! values from fixed sets). Counts are described as `metrics::Unit::Count`, with the
//! OpenTelemetry annotation given here; durations as `metrics::Unit::Seconds`.
//!
//! | name | kind | unit | attributes | what it counts |
//! |---|---|---|---|---|
//! | `tower_jwt_refresh.server.requests` | counter | `{request}` | `outcome`: `verified`, `anonymous`, `rejected`; with `rejected` only, `reason`: `missing_token`, `invalid_request`, `insufficient_scope`, `revocation_unavailable`, `expired`, `too_large`, `malformed`, `algorithm`, `unknown_key`, `invalid_signature`, `header`, `type`, `not_yet_valid`, `issuer`, `audience`, `missing_claim`, `claims`, `revoked` | requests `JwtAuth` let through or refused (`anonymous`: no token, in optional mode) |
//! | `tower_jwt_refresh.server.cache.lookups` | counter | `{lookup}` | `result`: `hit`, `miss` | lookups in the verified-token cache |
//! | `tower_jwt_refresh.server.revocation.checks` | counter | `{check}` | `outcome`: `active`, `revoked`, `error`, `timeout`, `overloaded` | deny-list checks (`overloaded`: too many pending, not started) |
//! | `tower_jwt_refresh.server.jwks.fetches` | counter | `{fetch}` | `result`: `ok`, `error` | remote JWKS fetches: the first, the periodic ones, refetches |
//! | `tower_jwt_refresh.server.jwks.refetches` | counter | `{refetch}` | | refetches started by a token with an unknown `kid` |
//! | `tower_jwt_refresh.issuer.issued` | counter | `{session}` | | sessions started (`TokenIssuer::issue`) |
//! | `tower_jwt_refresh.issuer.rotations` | counter | `{rotation}` | `outcome`: `rotated`, `grace_retry`, `reused`, `expired`, `revoked`, `unknown`, `error` | rotations that reached the store; `reused`: reuse detected, session revoked |
//! | `tower_jwt_refresh.issuer.revocations` | counter | `{session}` | | sessions ended by `revoke` or `revoke_session` |
//! | `tower_jwt_refresh.issuer.store.errors` | counter | `{error}` | `operation`: `create`, `rotate`, `revoke` | store operations that failed |
//! | `tower_jwt_refresh.issuer.store.duration` | histogram | `s` | `operation`: `create`, `rotate`, `revoke` | store operation latency |
//! | `tower_jwt_refresh.client.refreshes` | counter | `{refresh}` | `outcome`: `success`, `expired`, `failed` | refreshes that ran (`expired`: the refresh token was refused) |
//! | `tower_jwt_refresh.client.refresh.duration` | histogram | `s` | `outcome`, as above | refresh latency |
//! | `tower_jwt_refresh.client.waits` | counter | `{request}` | | requests held until a refresh ended |
//! | `tower_jwt_refresh.client.wait.duration` | histogram | `s` | | how long each held request waited |
//! | `tower_jwt_refresh.client.replays` | counter | `{request}` | `stale`: `false`, `true` | requests sent again after a rejection; `stale`: at once, their token already replaced |
//! | `tower_jwt_refresh.client.dpop_nonce_retries` | counter | `{request}` | | requests sent once more with a server's new DPoP nonce (`use_dpop_nonce`); not replays |
//! | `tower_jwt_refresh.client.session.expiries` | counter | `{session}` | | sessions expired (`on_session_expired`) |

#![cfg_attr(docsrs, feature(doc_cfg))]

/// A type-erased error, as hooks, refreshers and stores return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "issuer")]
pub mod issuer;
#[cfg(any(feature = "server", all(feature = "client", feature = "dpop")))]
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
    feature = "issuer",
    feature = "dpop"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
