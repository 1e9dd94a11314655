//! DPoP (RFC 9449) on the client: a [`DpopKey`] that proves possession of its private key by
//! signing one proof per request.
//!
//! A bearer token works for whoever holds it. A DPoP-bound token (its `cnf.jkt` names the
//! client's key) works only together with a fresh proof, a small JWT signed with that key and
//! tied to one request: its method (`htm`), its URI without query or fragment (`htu`), the time
//! (`iat`), a unique `jti`, and, when an access token goes along, that token's hash (`ath`).
//! The resource server checks the proof
//! ([`DpopVerifier`](crate::server::dpop::DpopVerifier) with the `server` feature), so a stolen
//! token alone is useless.
//!
//! Keys are ES256 (the default) or EdDSA, generated from the operating system's random
//! generator or loaded from PKCS#8. Signing goes through the crate's crypto backend
//! (`aws-lc-rs` or `rust-crypto`), as the issuer's [`SigningKey`](crate::keys::SigningKey)
//! does; the proof's header (with the public key) is encoded once, when the key is built.
//!
//! # Example
//!
//! ```
//! use http::{Method, Uri};
//! use tower_jwt_refresh::client::dpop::DpopKey;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = DpopKey::generate()?;
//! let uri: Uri = "https://api.example.com/orders?page=2".parse()?;
//! let proof = key
//!     .proof(&Method::GET, &uri)
//!     .access_token("an access token")
//!     .sign()?;
//! // Send it as the `DPoP` header, with `Authorization: DPoP <access token>`.
//! assert_eq!(proof.split('.').count(), 3);
//! # Ok(()) }
//! ```

mod key;
pub(crate) mod nonces;
mod proof;

pub use key::DpopKey;
pub use proof::{Proof, ProofError};
