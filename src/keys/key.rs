//! [`Key`]: one verification key, bound to one algorithm; and [`KeyError`].

use std::fmt;
#[cfg(feature = "server")]
use std::sync::Arc;

#[cfg(feature = "server")]
use jsonwebtoken::Algorithm;

use crate::BoxError;
#[cfg(feature = "server")]
use crate::keys::backend::{KeyMaterial, PreparedKey, Refusal};
#[cfg(feature = "server")]
use crate::keys::jwk::RawJwk;

/// The most keys one [`KeySet`](crate::keys::KeySet) holds.
pub(crate) const MAX_KEYS: usize = 100;

/// Why a key or key set could not be loaded, or a key could not sign.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// An HMAC secret shorter than its hash output (RFC 7518 §3.2).
    ShortSecret {
        /// The secret's length in bytes.
        len: usize,
        /// The shortest secret the algorithm accepts.
        min: usize,
    },
    /// The algorithm cannot be used with this kind of key, or is not a JWS signature algorithm
    /// this crate supports.
    Unsupported(&'static str),
    /// The key material is malformed.
    Malformed(&'static str),
    /// A JWK whose `use` or `key_ops` forbid signature verification.
    NotForVerification,
    /// A JWK without `alg` whose key type does not pin one (RSA can be RS* or PS*).
    MissingAlgorithm,
    /// Two keys in one set share a `kid`.
    DuplicateKid,
    /// A set or JWKS document with more than
    /// [`KeySet::MAX_KEYS`](crate::keys::KeySet::MAX_KEYS) keys.
    TooManyKeys,
    /// A JWKS document holding no key this crate can verify with.
    NoUsableKey,
    /// A JSON document (JWK or JWKS) could not be parsed.
    Json(serde_json::Error),
    /// A PEM document could not be read.
    Pem(jsonwebtoken::errors::Error),
    /// The crypto backend failed to sign with a key it had accepted.
    Signing(BoxError),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShortSecret { len, min } => write!(
                f,
                "hmac secret is {len} bytes, shorter than the {min} bytes its algorithm needs"
            ),
            Self::Unsupported(what) => write!(f, "unsupported key: {what}"),
            Self::Malformed(what) => write!(f, "malformed key: {what}"),
            Self::NotForVerification => f.write_str("jwk `use` or `key_ops` forbid verification"),
            Self::MissingAlgorithm => f.write_str("jwk has no `alg` and its key type needs one"),
            Self::DuplicateKid => f.write_str("two keys share one `kid`"),
            Self::TooManyKeys => write!(f, "more than {} keys in one set", MAX_KEYS),
            Self::NoUsableKey => f.write_str("jwks holds no usable signing key"),
            Self::Json(_) => f.write_str("invalid jwk json"),
            Self::Pem(_) => f.write_str("invalid pem key"),
            Self::Signing(_) => f.write_str("signing failed"),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Json(e) => Some(e),
            Self::Pem(e) => Some(e),
            Self::Signing(e) => Some(&**e),
            _ => None,
        }
    }
}

#[cfg(feature = "server")]
impl From<Refusal> for KeyError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unsupported(what) => Self::Unsupported(what),
            Refusal::Malformed => Self::Malformed("public key rejected by the crypto backend"),
        }
    }
}

/// One verification key, bound to exactly one algorithm.
///
/// The key is parsed once, here; verification never re-reads it. `Debug` shows the `kid` and
/// algorithm, never the material.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::keys::{Algorithm, Key};
///
/// let key = Key::hmac(Algorithm::HS256, b"an example secret of at least 32 bytes!")?
///     .with_kid("2026-11");
/// assert_eq!(key.kid(), Some("2026-11"));
/// # Ok::<_, tower_jwt_refresh::keys::KeyError>(())
/// ```
#[cfg(feature = "server")]
#[derive(Clone)]
pub struct Key {
    kid: Option<Arc<str>>,
    prepared: Arc<PreparedKey>,
}

#[cfg(feature = "server")]
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.prepared.algorithm())
            .finish_non_exhaustive()
    }
}

/// What [`Key::hmac`] and [`Key::hmac_allow_short`] say to a non-HMAC algorithm.
#[cfg(feature = "server")]
const NOT_HMAC: KeyError = KeyError::Unsupported("hmac secrets need HS256, HS384 or HS512");

#[cfg(feature = "server")]
impl Key {
    /// An HMAC secret for `HS256`, `HS384` or `HS512`.
    ///
    /// Refuses secrets shorter than the hash output (32, 48 or 64 bytes), as RFC 7518 §3.2
    /// requires. Use [`Key::hmac_allow_short`] only for legacy secrets you cannot replace.
    pub fn hmac(alg: Algorithm, secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let secret = secret.as_ref();
        let min = match alg {
            Algorithm::HS256 => 32,
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => return Err(NOT_HMAC),
        };
        if secret.len() < min {
            return Err(KeyError::ShortSecret {
                len: secret.len(),
                min,
            });
        }
        Self::prepare(alg, KeyMaterial::Secret(secret))
    }

    /// An HMAC secret of any non-empty length: an explicit opt-in for legacy deployments.
    ///
    /// A short secret can be brute-forced offline from any one token. Prefer [`Key::hmac`].
    pub fn hmac_allow_short(alg: Algorithm, secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(KeyError::ShortSecret { len: 0, min: 1 });
        }
        if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(NOT_HMAC);
        }
        Self::prepare(alg, KeyMaterial::Secret(secret))
    }

    /// A PEM public key (RSA, EC or Ed25519) for `alg`.
    ///
    /// The PEM kind must fit the algorithm: RSA for `RS*`/`PS*`, EC for `ES256`/`ES384`,
    /// Ed25519 for `EdDSA`.
    pub fn from_pem(alg: Algorithm, pem: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        use jsonwebtoken::DecodingKey;
        let pem = pem.as_ref();
        let family = PemFamily::of(alg)?;
        let decoded = match family {
            PemFamily::Rsa => DecodingKey::from_rsa_pem(pem),
            PemFamily::Ec => DecodingKey::from_ec_pem(pem),
            PemFamily::Ed25519 => DecodingKey::from_ed_pem(pem),
        }
        .map_err(KeyError::Pem)?;
        let bytes = decoded.try_get_as_bytes().map_err(KeyError::Pem)?;
        let material = match family {
            PemFamily::Rsa => KeyMaterial::RsaDer(bytes),
            PemFamily::Ec => KeyMaterial::Ec(bytes),
            PemFamily::Ed25519 => KeyMaterial::Ed25519(bytes),
        };
        Self::prepare(alg, material)
    }

    /// One JWK (RFC 7517), as JSON.
    ///
    /// The key's `alg` binds it; without `alg`, EC and OKP keys take the algorithm their curve
    /// implies and RSA keys are refused ([`KeyError::MissingAlgorithm`]). A JWK whose `use` is
    /// not `sig`, or whose `key_ops` lack `verify`, is refused.
    pub fn from_jwk(json: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let jwk: RawJwk = serde_json::from_slice(json.as_ref()).map_err(KeyError::Json)?;
        jwk.into_key()
    }

    /// Names this key, so that tokens select it by their `kid` header.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(Arc::from(kid.into()));
        self
    }

    /// This key's `kid`, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Whether this is an HMAC secret.
    pub fn is_symmetric(&self) -> bool {
        matches!(
            self.algorithm(),
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        )
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.prepared.algorithm()
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.prepared.verify(message, signature)
    }

    /// Prepares `material` for `alg` with the crypto backend.
    pub(crate) fn prepare(alg: Algorithm, material: KeyMaterial<'_>) -> Result<Self, KeyError> {
        let prepared = PreparedKey::new(alg, material)?;
        Ok(Self {
            kid: None,
            prepared: Arc::new(prepared),
        })
    }
}

/// The kind of PEM key an asymmetric algorithm takes.
#[cfg(feature = "server")]
#[derive(Clone, Copy)]
pub(crate) enum PemFamily {
    Rsa,
    Ec,
    Ed25519,
}

#[cfg(feature = "server")]
impl PemFamily {
    pub(crate) fn of(alg: Algorithm) -> Result<Self, KeyError> {
        use Algorithm::*;
        match alg {
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Ok(Self::Rsa),
            ES256 | ES384 => Ok(Self::Ec),
            EdDSA => Ok(Self::Ed25519),
            _ => Err(KeyError::Unsupported(
                "pem keys are for RS*, PS*, ES* and EdDSA",
            )),
        }
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use super::*;

    #[test]
    fn short_hmac_secrets_need_the_opt_in() {
        let err = Key::hmac(Algorithm::HS256, [0u8; 31]).unwrap_err();
        assert!(
            matches!(err, KeyError::ShortSecret { len: 31, min: 32 }),
            "{err}"
        );
        assert!(matches!(
            Key::hmac(Algorithm::HS512, [0u8; 63]),
            Err(KeyError::ShortSecret { min: 64, .. })
        ));
        assert!(Key::hmac_allow_short(Algorithm::HS256, b"secret").is_ok());
        assert!(Key::hmac_allow_short(Algorithm::HS256, b"").is_err());
        assert!(Key::hmac(Algorithm::RS256, [0u8; 32]).is_err());
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = Key::hmac(Algorithm::HS256, [0x41u8; 32])
            .unwrap()
            .with_kid("k1");
        let shown = format!("{key:?}");
        assert!(shown.contains("k1") && shown.contains("HS256"), "{shown}");
        assert!(!shown.contains("AAAA") && !shown.contains("65"), "{shown}");
    }
}
