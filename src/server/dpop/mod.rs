//! DPoP (RFC 9449) on the server: verify the proof that comes with a sender-constrained
//! token, and learn which key made it.
//!
//! A bearer token works for whoever holds it; a DPoP-bound token (its `cnf.jkt` names a key)
//! works only with a fresh proof signed by that key. [`DpopVerifier`] runs every check of
//! RFC 9449 §4.3 on a request's `DPoP` header and answers the proof key's
//! [`Thumbprint`](crate::keys::Thumbprint), or a [`DpopError`] that says which check failed
//! and which OAuth error (`invalid_dpop_proof`, `use_dpop_nonce`) to answer with.
//!
//! Unlike an access token, a proof is single-use: its `jti` goes into a [`replay`] store,
//! in memory for one instance or in Redis (feature `redis`) for several, for as long as its
//! `iat` is within the verifier's window. Optional server nonces ([`DpopNonces`], RFC 9449
//! §8) bound a proof's lifetime by the server's clock rather than the client's.
//!
//! Where a token verifier (such as [`JwtAuthLayer`](crate::server::JwtAuthLayer)) trusts
//! nothing in a token's header to choose a key, a proof carries its own key by design: its
//! signature shows possession, and the binding to the token is the thumbprint comparison,
//! [`VerifiedProof::check_binding`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_jwt_refresh::keys::Algorithm;
//! use tower_jwt_refresh::server::dpop::replay::MemoryReplayStore;
//! use tower_jwt_refresh::server::dpop::{DpopNonces, DpopVerifier};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = DpopVerifier::new("https://api.example.com")?
//!     .algorithms([Algorithm::ES256, Algorithm::EdDSA])
//!     .max_age(Duration::from_secs(30))
//!     .replay_store(MemoryReplayStore::with_capacity(100_000))
//!     .nonces(DpopNonces::random()?);
//! assert!(verifier.current_nonce().is_some());
//! # Ok(()) }
//! ```

mod binding;
mod error;
pub mod future;
mod htu;
mod nonce;
mod proof;
pub mod replay;
mod verifier;

pub use binding::DpopMode;
pub(crate) use binding::DpopSettings;
pub use error::DpopError;
pub use nonce::DpopNonces;
pub use verifier::{DpopVerifier, InvalidBaseUrl, VerifiedProof};
