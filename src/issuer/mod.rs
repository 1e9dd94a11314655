//! The authorization server: mint access tokens, rotate refresh tokens, serve the endpoints.
//!
//! [`TokenIssuer`] mints access tokens ([`AccessTokenIssuer`], signed with a
//! [`SigningKey`](crate::keys::SigningKey)) that [`JwtAuthLayer`](crate::server::JwtAuthLayer)
//! accepts, and opaque, rotating refresh tokens kept in a [`RefreshStore`](store::RefreshStore)
//! ([`MemoryStore`], or `RedisStore` with the `redis` feature). It serves the RFC 6749 §6
//! refresh endpoint ([`RefreshEndpoint`]) and the RFC 7009 revocation endpoint
//! ([`RevocationEndpoint`]) as tower services, and its
//! [`deny_list`](TokenIssuer::deny_list) hook makes the verification layer refuse a revoked
//! session's access tokens from the next request on.
//!
//! Every use of a refresh token rotates it; presenting a rotated-out token revokes its whole
//! family (RFC 9700 §4.14.2). The rotation itself happens atomically in the store:
//! [`store::RefreshStore::rotate`].
//!
//! A rotation whose reply is lost on the way back (a dropped connection, a client's timeout)
//! is not a logout: within the grace window ([`TokenIssuer::grace_period`], 30 s by default,
//! at most 60 s) a retry with the immediately previous token gets the same successor. The
//! default covers the client's default refresh timeout (10 s, `RefreshLayer::refresh_timeout`)
//! with margin, so the two sides' defaults agree.
//!
//! # Example
//!
//! ```
//! use tower_jwt_refresh::issuer::{AccessTokenIssuer, MemoryStore, TokenIssuer};
//! use tower_jwt_refresh::keys::{Algorithm, SigningKey};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let key = SigningKey::hmac(Algorithm::HS256, b"an example secret of at least 32 bytes!")?;
//! let access = AccessTokenIssuer::new(key).issuer("https://auth.example").audience("api");
//! let issuer = TokenIssuer::new(access, MemoryStore::new());
//! let tokens = issuer.issue("user-1", &serde_json::json!({ "role": "admin" })).await?;
//! let rotated = issuer.rotate(&tokens.refresh_token).await?;
//! # let _ = rotated; Ok(()) }
//! ```

mod access;
mod endpoint;
mod error;
mod refresh_token;
pub mod store;
mod token_issuer;
mod util;

pub use access::{AccessToken, AccessTokenIssuer};
pub use endpoint::{RefreshEndpoint, RevocationEndpoint};
pub use error::{GrantError, IssueError, RefreshError};
pub use store::MemoryStore;
#[cfg(feature = "redis")]
pub use store::{RedisStore, RevocationSubscriber};
pub use token_issuer::{IssuedTokens, StoreDenyList, TokenIssuer};
