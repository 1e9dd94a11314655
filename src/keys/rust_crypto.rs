//! The RustCrypto backend (feature `rust-crypto`, without `aws-lc-rs`): jsonwebtoken's own
//! verifiers and signers, with every key checked at construction.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::keys::backend::{KeyMaterial, Refusal};
use crate::keys::der::rsa_public_key_components;

/// jsonwebtoken's provider for this backend.
pub(crate) static PROVIDER: &CryptoProvider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;

/// A verification key: jsonwebtoken's, made to fail here rather than at first use.
pub(crate) struct Verifier(DecodingKey);

impl Verifier {
    /// Builds the jsonwebtoken key and makes it fail here, not at first use: jsonwebtoken's
    /// RustCrypto verifiers parse EC and Ed25519 keys when built (probed below), parse RSA
    /// keys only inside `verify` (so their shape is checked here), and slice Ed25519 keys
    /// without a length check (so the length is enforced here).
    pub(crate) fn new(alg: Algorithm, material: &KeyMaterial<'_>) -> Result<Self, Refusal> {
        let key = match material {
            KeyMaterial::Secret(s) => return Ok(Self(DecodingKey::from_secret(s))),
            KeyMaterial::RsaComponents { n, e } => return rsa(n, e).map(Self),
            KeyMaterial::RsaDer(d) => {
                let (n, e) = rsa_public_key_components(d).ok_or(Refusal::Malformed)?;
                return rsa(n, e).map(Self);
            }
            KeyMaterial::Ec(d) => DecodingKey::from_ec_der(d),
            KeyMaterial::Ed25519(d) if d.len() == 32 => DecodingKey::from_ed_der(d),
            KeyMaterial::Ed25519(_) => return Err(Refusal::Malformed),
        };
        // A well-formed key answers "no" to a bogus signature; a malformed one errors.
        jsonwebtoken::crypto::verify("AA", b"probe", &key, alg).map_err(|_| Refusal::Malformed)?;
        Ok(Self(key))
    }

    pub(crate) fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        let sig = URL_SAFE_NO_PAD.encode(sig);
        jsonwebtoken::crypto::verify(&sig, message, &self.0, alg).unwrap_or(false)
    }
}

/// An RSA key from its components. The `rsa` crate refuses moduli over 4096 bits when
/// verifying; say so now.
fn rsa(n: &[u8], e: &[u8]) -> Result<DecodingKey, Refusal> {
    let significant = |b: &[u8]| b.len() - b.iter().take_while(|&&x| x == 0).count();
    match significant(n) {
        256..=512 if significant(e) > 0 => Ok(DecodingKey::from_rsa_raw_components(n, e)),
        513.. => Err(Refusal::Unsupported(
            "rsa keys over 4096 bits need the aws-lc-rs backend",
        )),
        _ => Err(Refusal::Malformed),
    }
}

#[cfg(feature = "issuer")]
pub(crate) use signer::Signer;

#[cfg(feature = "issuer")]
mod signer {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey};

    use crate::keys::{Key, KeyError};

    /// A signing key: jsonwebtoken's, probed once at construction.
    pub(crate) struct Signer(EncodingKey);

    impl Signer {
        pub(crate) fn hmac(_alg: Algorithm, secret: &[u8]) -> Self {
            Self(EncodingKey::from_secret(secret))
        }

        /// The signer for a private key, and the key that verifies its signatures.
        pub(crate) fn private(alg: Algorithm, key: EncodingKey) -> Result<(Self, Key), KeyError> {
            // jsonwebtoken derives the public JWK from the private key.
            let jwk = Jwk::from_encoding_key(&key, alg).map_err(KeyError::Pem)?;
            let mut json = serde_json::to_value(&jwk).map_err(KeyError::Json)?;
            json["alg"] = serde_json::Value::String(format!("{alg:?}"));
            let public = Key::from_jwk(json.to_string())?;
            // Sign once now, so a key the backend cannot use fails here, not in a request.
            jsonwebtoken::crypto::sign(b"probe", &key, alg).map_err(KeyError::Pem)?;
            Ok((Self(key), public))
        }

        pub(crate) fn sign(&self, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
            let b64 = jsonwebtoken::crypto::sign(message, &self.0, alg)
                .map_err(|e| KeyError::Signing(Box::new(e)))?;
            URL_SAFE_NO_PAD
                .decode(b64)
                .map_err(|e| KeyError::Signing(Box::new(e)))
        }
    }
}
