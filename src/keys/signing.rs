//! Signing keys for the tokens this crate issues, parsed once.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;

use crate::keys::backend::{Signer, install_crypto_provider};
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
    signer: Arc<Signer>,
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
        let signer = Signer::hmac(alg, secret);
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
        install_crypto_provider();
        let pem = pem.as_ref();
        let key = match PemFamily::of(alg)? {
            PemFamily::Rsa => EncodingKey::from_rsa_pem(pem),
            PemFamily::Ec => EncodingKey::from_ec_pem(pem),
            PemFamily::Ed25519 => EncodingKey::from_ed_pem(pem),
        }
        .map_err(KeyError::Pem)?;
        let (signer, public) = Signer::private(alg, key)?;
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
