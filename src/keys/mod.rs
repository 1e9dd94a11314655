//! Key material: verification keys ([`Key`], [`KeySet`]), JWK and JWKS parsing, signing keys
//! ([`SigningKey`]), the remote JWKS ([`RemoteJwks`], feature `jwks`), RFC 7638 thumbprints
//! ([`Thumbprint`], feature `dpop`), and the crypto backends.
//!
//! The server verifies with these keys and the issuer signs with them; neither role reaches
//! into the other. With `dpop`, the client's DPoP keys sign through the same backends: a
//! client-only build compiles the signing half of this module, nothing that verifies. Every
//! key is bound to one algorithm when it is built, and a key that cannot be used fails in its
//! constructor, never in a request.
//!
//! Two crypto backends sit behind one interface: aws-lc-rs (feature `aws-lc-rs`, the default)
//! and jsonwebtoken's RustCrypto backend (feature `rust-crypto`). Each verifies and signs;
//! what they share, and the choice between them, is in one place.
//!
//! # Example
//!
//! ```
//! use tower_jwt_refresh::keys::{Algorithm, Key, KeySet, SigningKey};
//!
//! # fn main() -> Result<(), tower_jwt_refresh::keys::KeyError> {
//! let signing = SigningKey::hmac(Algorithm::HS256, b"an example secret of at least 32 bytes!")?;
//! let keys = KeySet::new().with_key(signing.verification_key())?;
//! # let _ = keys; Ok(()) }
//! ```

#[cfg(feature = "aws-lc-rs")]
mod aws_lc;
pub(crate) mod backend;
#[cfg(feature = "server")]
mod der;
mod jwk;
mod key;
#[cfg(feature = "jwks")]
mod remote;
#[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
mod rust_crypto;
#[cfg(feature = "server")]
mod set;
#[cfg(feature = "issuer")]
mod signing;
#[cfg(feature = "server")]
mod source;
#[cfg(feature = "dpop")]
mod thumbprint;

pub use backend::install_crypto_provider;
pub use jsonwebtoken::Algorithm;
#[cfg(feature = "server")]
pub use key::Key;
pub use key::KeyError;
#[cfg(feature = "jwks")]
pub use remote::{JwksError, RemoteJwks, RemoteJwksBuilder};
#[cfg(feature = "server")]
pub use set::KeySet;
#[cfg(feature = "issuer")]
pub use signing::SigningKey;
#[cfg(feature = "server")]
pub use source::KeySource;
#[cfg(feature = "dpop")]
pub use thumbprint::Thumbprint;
#[cfg(feature = "dpop")]
pub(crate) use thumbprint::{PublicJwk, access_token_hash};

#[cfg(feature = "server")]
pub(crate) use jwk::parse_alg;
#[cfg(feature = "server")]
pub(crate) use set::Selection;
