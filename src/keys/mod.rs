//! Key material: verification keys ([`Key`], [`KeySet`]), JWK and JWKS parsing, signing keys
//! ([`SigningKey`]), the remote JWKS ([`RemoteJwks`], feature `jwks`), and the crypto backends.
//!
//! The server verifies with these keys and the issuer signs with them; neither role reaches
//! into the other. Every key is bound to one algorithm when it is built, and a key that cannot
//! be used fails in its constructor, never in a request.
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

pub(crate) mod backend;
pub(crate) mod key;
#[cfg(feature = "jwks")]
pub(crate) mod remote;
#[cfg(feature = "issuer")]
pub(crate) mod signing;
pub(crate) mod source;

pub use backend::install_crypto_provider;
pub use jsonwebtoken::Algorithm;
pub use key::{Key, KeyError, KeySet};
#[cfg(feature = "jwks")]
pub use remote::{JwksError, RemoteJwks, RemoteJwksBuilder};
#[cfg(feature = "issuer")]
pub use signing::SigningKey;
pub use source::KeySource;
