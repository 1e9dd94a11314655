//! The server side: verify bearer tokens in any tower stack.
//!
//! [`JwtAuthLayer`] is to JWT bearer tokens what tower-http's `ValidateRequestHeaderLayer` is
//! to a fixed header: it lets a request through or answers for it. Where tower-http answers
//! every failure with a bare 401, this layer answers as RFC 6750 says (a `WWW-Authenticate`
//! challenge whose `error_description` tells an expired token from a bad one, so clients know
//! when to refresh), answers gRPC requests with a trailers-only `UNAUTHENTICATED`, and hands
//! the verified, typed [`Claims`] to the inner service.
//!
//! Per request: extract the token ([`Rejection::InvalidRequest`] for duplicated or malformed
//! credentials), look it up in a bounded cache of verified tokens, otherwise verify it (keys
//! chosen by `kid`, each bound to one algorithm; `typ`, `exp`, `nbf`, `iat`, `iss`, `aud` and
//! `crit` checked), ask the revocation hook, check required scopes, and insert the claims.
//!
//! The issuing half: [`TokenIssuer`] mints access tokens ([`AccessTokenIssuer`], with a
//! [`SigningKey`]) and opaque, rotating refresh tokens kept in a [`RefreshStore`]
//! ([`MemoryStore`], or `RedisStore` with the `redis` feature), and serves the RFC 6749 refresh
//! endpoint and the RFC 7009 revocation endpoint as tower services. Its
//! [`revocation`](TokenIssuer::revocation) hook makes this layer refuse a revoked session's
//! access tokens from the next request on.
//!
//! The verified-token cache is keyed by the whole token. An entry weighs its token length
//! plus its decoded payload length plus 192 bytes, and the total weight never exceeds the
//! capacity (8 MiB by default), which bounds the cache's memory. An entry is dropped at the
//! token's `exp` and whenever the key set changes.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use serde::Deserialize;
//! use tower_jwt_refresh::server::{Algorithm, Claims, JwtAuthLayer, Key};
//!
//! #[derive(Clone, Deserialize)]
//! struct User {
//!     name: String,
//! }
//!
//! # fn main() -> Result<(), tower_jwt_refresh::server::KeyError> {
//! let key = Key::hmac(Algorithm::HS256, b"an example secret of at least 32 bytes!")?;
//! let app: Router = Router::new()
//!     .route("/hello", get(|user: Claims<User>| async move { format!("hello {}", user.name) }))
//!     .layer(JwtAuthLayer::<User>::with_claims(key).audience("api"));
//! # Ok(()) }
//! ```

mod access;
mod auth;
mod body;
mod cache;
mod claims;
mod crypto;
mod endpoint;
mod error;
mod extract;
mod form;
mod future;
mod issuer;
#[cfg(feature = "jwks")]
mod jwks;
mod keys;
mod layer;
mod memory_store;
#[cfg(feature = "redis")]
mod redis_store;
mod refresh_token;
mod revoke;
mod service;
mod sign;
mod source;
mod store;
mod verify;

pub use access::{AccessToken, AccessTokenIssuer, IssueError};
pub use auth::unix_time;
pub use body::AuthBody;
#[cfg(feature = "axum")]
pub use claims::MissingClaims;
pub use claims::{Claims, RegisteredClaims};
pub use crypto::install_crypto_provider;
pub use endpoint::{RefreshEndpoint, RevocationEndpoint};
pub use error::{Rejection, RequestError, TokenError};
pub use form::{FormFuture, FormToken, FormTokenLayer};
pub use future::ResponseFuture;
pub use issuer::{GrantError, RefreshError, StoreRevocation, TokenIssuer, TokenPair};
pub use jsonwebtoken::Algorithm;
#[cfg(feature = "jwks")]
pub use jwks::{JwksError, RemoteJwks, RemoteJwksBuilder};
pub use keys::{Key, KeyError, KeySet};
pub use layer::JwtAuthLayer;
pub use memory_store::MemoryStore;
#[cfg(feature = "redis")]
pub use redis_store::RedisStore;
pub use revoke::{BoxError, Revocation, RevocationCheck, TokenStatus};
pub use service::JwtAuth;
pub use sign::SigningKey;
pub use source::KeySource;
pub use store::{
    FamilyInfo, NewFamily, REUSE_HISTORY, RefreshStore, Rotation, RotationOutcome, StoreError,
};
