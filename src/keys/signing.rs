//! Signing keys for the tokens this crate issues, parsed once.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;

use crate::keys::key::{Key, KeyError, PemFamily};

/// A private key (or HMAC secret) that signs access tokens, bound to one algorithm.
///
/// Parsed once at construction; `Debug` never shows the material. Its
/// [`verification_key`](Self::verification_key) is what a [`JwtAuthLayer`](crate::server::JwtAuthLayer)
/// verifies those tokens with.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::keys::{Algorithm, SigningKey};
///
/// let signing = SigningKey::hmac(Algorithm::HS256, [42u8; 32])?.with_kid("2026-11");
/// let verifying = signing.verification_key();
/// assert_eq!((verifying.kid(), verifying.algorithm()), (Some("2026-11"), Algorithm::HS256));
/// # Ok::<_, tower_jwt_refresh::keys::KeyError>(())
/// ```
#[derive(Clone)]
pub struct SigningKey {
    signer: Arc<backend::Signer>,
    public: Key,
    kid: Option<Arc<str>>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.public.algorithm())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// An HMAC secret for `HS256`, `HS384` or `HS512`, at least as long as the hash output.
    pub fn hmac(alg: Algorithm, secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let secret = secret.as_ref();
        let public = Key::hmac(alg, secret)?;
        let signer = backend::Signer::hmac(alg, secret);
        Ok(Self {
            signer: Arc::new(signer),
            public,
            kid: None,
        })
    }

    /// A PEM private key for `alg`: RSA (PKCS#1 or PKCS#8) for `RS*`/`PS*`, PKCS#8 EC for
    /// `ES256`/`ES384`, PKCS#8 Ed25519 for `EdDSA`.
    pub fn from_pem(alg: Algorithm, pem: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        use jsonwebtoken::EncodingKey;
        crate::keys::backend::install_crypto_provider();
        let pem = pem.as_ref();
        let key = match PemFamily::of(alg)? {
            PemFamily::Rsa => EncodingKey::from_rsa_pem(pem),
            PemFamily::Ec => EncodingKey::from_ec_pem(pem),
            PemFamily::Ed25519 => EncodingKey::from_ed_pem(pem),
        }
        .map_err(KeyError::Pem)?;
        let (signer, public) = backend::Signer::private(alg, key)?;
        Ok(Self {
            signer: Arc::new(signer),
            public,
            kid: None,
        })
    }

    /// Names this key; issued tokens carry the `kid` in their header.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        let kid: Arc<str> = Arc::from(kid.into());
        self.public = self.public.with_kid(&*kid);
        self.kid = Some(kid);
        self
    }

    /// The key that verifies this key's signatures, with the same `kid` and algorithm.
    pub fn verification_key(&self) -> Key {
        self.public.clone()
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// This key's `kid`, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Signs `header.payload` (already base64url-encoded and joined), returning the compact
    /// JWS.
    pub(crate) fn sign_jws(&self, signing_input: String) -> Result<String, KeyError> {
        let signature = self
            .signer
            .sign(self.algorithm(), signing_input.as_bytes())?;
        let mut jws = signing_input;
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jws);
        Ok(jws)
    }
}

#[cfg(feature = "aws-lc-rs")]
mod backend {
    use aws_lc_rs::hmac;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
    use jsonwebtoken::{Algorithm, EncodingKey};

    use crate::keys::backend::KeyMaterial;
    use crate::keys::{Key, KeyError};

    // One per key, behind an `Arc`: an inline HMAC key schedule saves an indirection.
    #[allow(clippy::large_enum_variant)]
    pub(super) enum Signer {
        Hmac(hmac::Key),
        Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
        Ecdsa(EcdsaKeyPair),
        Ed25519(Ed25519KeyPair),
    }

    impl Signer {
        pub(super) fn hmac(alg: Algorithm, secret: &[u8]) -> Self {
            Self::Hmac(crate::keys::backend::hmac_key(alg, secret))
        }

        pub(super) fn private(alg: Algorithm, key: EncodingKey) -> Result<(Self, Key), KeyError> {
            let der = key.as_bytes();
            let malformed = |_| KeyError::Malformed("private key rejected by the crypto backend");
            let (signer, public) = match alg {
                Algorithm::ES256 | Algorithm::ES384 => {
                    let signing = if alg == Algorithm::ES256 {
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING
                    } else {
                        &signature::ECDSA_P384_SHA384_FIXED_SIGNING
                    };
                    let pair = EcdsaKeyPair::from_pkcs8(signing, der).map_err(malformed)?;
                    let public = Key::prepare(alg, KeyMaterial::Ec(pair.public_key().as_ref()))?;
                    (Self::Ecdsa(pair), public)
                }
                Algorithm::EdDSA => {
                    let pair =
                        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(malformed)?;
                    let public =
                        Key::prepare(alg, KeyMaterial::Ed25519(pair.public_key().as_ref()))?;
                    (Self::Ed25519(pair), public)
                }
                _ => {
                    let pair = RsaKeyPair::from_der(der)
                        .or_else(|_| RsaKeyPair::from_pkcs8(der))
                        .map_err(malformed)?;
                    let encoding: &'static dyn signature::RsaEncoding = match alg {
                        Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
                        Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                        Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                        Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                        Algorithm::PS384 => &signature::RSA_PSS_SHA384,
                        _ => &signature::RSA_PSS_SHA512,
                    };
                    let public =
                        Key::prepare(alg, KeyMaterial::RsaDer(pair.public_key().as_ref()))?;
                    (Self::Rsa(pair, encoding), public)
                }
            };
            Ok((signer, public))
        }

        pub(super) fn sign(&self, _alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
            let failed = |_| KeyError::Malformed("signing failed");
            Ok(match self {
                Self::Hmac(key) => hmac::sign(key, message).as_ref().to_vec(),
                Self::Ecdsa(pair) => pair
                    .sign(&SystemRandom::new(), message)
                    .map_err(failed)?
                    .as_ref()
                    .to_vec(),
                Self::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
                Self::Rsa(pair, encoding) => {
                    let mut out = vec![0; pair.public_modulus_len()];
                    pair.sign(*encoding, &SystemRandom::new(), message, &mut out)
                        .map_err(failed)?;
                    out
                }
            })
        }
    }
}

#[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
mod backend {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey};

    use crate::keys::{Key, KeyError};

    pub(super) struct Signer(EncodingKey);

    impl Signer {
        pub(super) fn hmac(_alg: Algorithm, secret: &[u8]) -> Self {
            Self(EncodingKey::from_secret(secret))
        }

        pub(super) fn private(alg: Algorithm, key: EncodingKey) -> Result<(Self, Key), KeyError> {
            // jsonwebtoken derives the public JWK from the private key.
            let jwk = Jwk::from_encoding_key(&key, alg).map_err(KeyError::Pem)?;
            let mut json = serde_json::to_value(&jwk).map_err(KeyError::Json)?;
            json["alg"] = serde_json::Value::String(format!("{alg:?}"));
            let public = Key::from_jwk(json.to_string())?;
            // Sign once now, so a key the backend cannot use fails here, not in a request.
            jsonwebtoken::crypto::sign(b"probe", &key, alg).map_err(KeyError::Pem)?;
            Ok((Self(key), public))
        }

        pub(super) fn sign(&self, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
            let b64 = jsonwebtoken::crypto::sign(message, &self.0, alg).map_err(KeyError::Pem)?;
            URL_SAFE_NO_PAD
                .decode(b64)
                .map_err(|_| KeyError::Malformed("signing failed"))
        }
    }
}
