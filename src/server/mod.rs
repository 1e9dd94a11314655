//! The resource server: verify access tokens in any tower stack.
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
//! `crit` checked), ask the deny-list hook, check required scopes, and insert the claims.
//!
//! The issuer ([`crate::issuer`]) mints the tokens this layer accepts, and its deny-list hook
//! makes this layer refuse a revoked session's access tokens from the next request on.
//!
//! The verified-token cache is keyed by the whole token. An entry weighs its token length
//! plus its decoded payload length plus 192 bytes, and the total weight never exceeds the
//! capacity (8 MiB by default), which bounds the cache's memory. An entry is dropped at the
//! token's `exp` and whenever the key set changes. A hit reads a coarse clock that is never
//! early, so a token's last second or two is verified in full.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use serde::Deserialize;
//! use tower_jwt_refresh::keys::{Algorithm, Key};
//! use tower_jwt_refresh::server::{Claims, JwtAuthLayer};
//!
//! #[derive(Clone, Deserialize)]
//! struct User {
//!     name: String,
//! }
//!
//! # fn main() -> Result<(), tower_jwt_refresh::keys::KeyError> {
//! let key = Key::hmac(Algorithm::HS256, b"an example secret of at least 32 bytes!")?;
//! let app: Router = Router::new()
//!     .route("/hello", get(|user: Claims<User>| async move { format!("hello {}", user.name) }))
//!     .layer(JwtAuthLayer::<User>::with_claims(key).audience("api"));
//! # Ok(()) }
//! ```

mod body;
mod cache;
mod claims;
mod decision;
mod deny_list;
#[cfg(feature = "dpop")]
pub mod dpop;
mod form;
pub mod future;
mod layer;
mod rejection;
mod service;
mod sources;
mod verify;

pub use body::AuthBody;
#[cfg(feature = "axum")]
pub use claims::MissingClaims;
pub use claims::{Claims, RegisteredClaims};
pub use deny_list::{DenyCheck, DenyList, TokenStatus};
pub use form::{FormToken, FormTokenLayer};
pub use layer::JwtAuthLayer;
pub use rejection::{DpopProofError, Rejection, RequestError, TokenError};
pub use service::JwtAuth;
