//! The aws-lc-rs backend (feature `aws-lc-rs`, the default): keys parsed once, verifying and
//! signing.

#[cfg(feature = "server")]
use aws_lc_rs::{hmac, signature};
#[cfg(feature = "server")]
use jsonwebtoken::Algorithm;
use jsonwebtoken::crypto::CryptoProvider;

#[cfg(feature = "server")]
use crate::keys::backend::{KeyMaterial, Refusal};
#[cfg(feature = "server")]
use crate::keys::der::rsa_public_key_der;

/// jsonwebtoken's provider for this backend.
pub(crate) static PROVIDER: &CryptoProvider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;

#[cfg(feature = "server")]
/// The HMAC key schedule for `alg` (HS256, HS384 or HS512); signing and verifying share it.
fn hmac_key(alg: Algorithm, secret: &[u8]) -> hmac::Key {
    let hmac_alg = match alg {
        Algorithm::HS256 => hmac::HMAC_SHA256,
        Algorithm::HS384 => hmac::HMAC_SHA384,
        _ => hmac::HMAC_SHA512,
    };
    hmac::Key::new(hmac_alg, secret)
}

#[cfg(feature = "server")]
/// A verification key, parsed once.
// One per key, behind an `Arc`: an inline HMAC key schedule saves an indirection.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Verifier {
    Hmac(hmac::Key),
    Public(signature::ParsedPublicKey),
}

#[cfg(feature = "server")]
impl Verifier {
    pub(crate) fn new(alg: Algorithm, material: &KeyMaterial<'_>) -> Result<Self, Refusal> {
        if let KeyMaterial::Secret(secret) = material {
            return Ok(Self::Hmac(hmac_key(alg, secret)));
        }
        let params = verification_algorithm(alg)?;
        let der;
        let bytes: &[u8] = match material {
            KeyMaterial::RsaComponents { n, e } => {
                der = rsa_public_key_der(n, e);
                &der
            }
            KeyMaterial::RsaDer(b) | KeyMaterial::Ec(b) | KeyMaterial::Ed25519(b) => b,
            KeyMaterial::Secret(_) => unreachable!("handled above"),
        };
        signature::ParsedPublicKey::new(params, bytes)
            .map(Self::Public)
            .map_err(|_| Refusal::Malformed)
    }

    pub(crate) fn verify(&self, _alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        match self {
            // `hmac::verify` compares in constant time.
            Self::Hmac(key) => hmac::verify(key, message, sig).is_ok(),
            Self::Public(key) => key.verify_sig(message, sig).is_ok(),
        }
    }
}

#[cfg(feature = "server")]
fn verification_algorithm(
    alg: Algorithm,
) -> Result<&'static dyn signature::VerificationAlgorithm, Refusal> {
    Ok(match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &signature::ED25519,
        _ => return Err(Refusal::Unsupported("unsupported algorithm")),
    })
}

#[cfg(any(feature = "issuer", all(feature = "client", feature = "dpop")))]
pub(crate) use signer::Signer;

#[cfg(any(feature = "issuer", all(feature = "client", feature = "dpop")))]
mod signer {
    #[cfg(feature = "issuer")]
    use aws_lc_rs::hmac;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
    use jsonwebtoken::{Algorithm, EncodingKey};

    #[cfg(feature = "issuer")]
    use crate::keys::Key;
    use crate::keys::KeyError;
    #[cfg(feature = "issuer")]
    use crate::keys::backend::KeyMaterial;
    #[cfg(all(feature = "client", feature = "dpop"))]
    use crate::keys::{PublicJwk, thumbprint::Curve};

    /// A signing key, parsed once.
    // One per key, behind an `Arc`: an inline HMAC key schedule saves an indirection.
    #[allow(clippy::large_enum_variant)]
    pub(crate) enum Signer {
        #[cfg(feature = "issuer")]
        Hmac(hmac::Key),
        Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
        Ecdsa(EcdsaKeyPair),
        Ed25519(Ed25519KeyPair),
    }

    fn malformed(_: impl Sized) -> KeyError {
        KeyError::Malformed("private key rejected by the crypto backend")
    }

    impl Signer {
        #[cfg(feature = "issuer")]
        pub(crate) fn hmac(alg: Algorithm, secret: &[u8]) -> Self {
            Self::Hmac(super::hmac_key(alg, secret))
        }

        /// The signer for a PKCS#8 private key (PKCS#1 too for RSA).
        pub(crate) fn parse(alg: Algorithm, key: EncodingKey) -> Result<Self, KeyError> {
            let der = key.as_bytes();
            Ok(match alg {
                Algorithm::ES256 | Algorithm::ES384 => {
                    let signing = if alg == Algorithm::ES256 {
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING
                    } else {
                        &signature::ECDSA_P384_SHA384_FIXED_SIGNING
                    };
                    Self::Ecdsa(EcdsaKeyPair::from_pkcs8(signing, der).map_err(malformed)?)
                }
                Algorithm::EdDSA => Self::Ed25519(
                    Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(malformed)?,
                ),
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
                    Self::Rsa(pair, encoding)
                }
            })
        }

        /// The signer for a private key, and the key that verifies its signatures.
        #[cfg(feature = "issuer")]
        pub(crate) fn private(alg: Algorithm, key: EncodingKey) -> Result<(Self, Key), KeyError> {
            let signer = Self::parse(alg, key)?;
            let public = match &signer {
                Self::Ecdsa(pair) => KeyMaterial::Ec(pair.public_key().as_ref()),
                Self::Ed25519(pair) => KeyMaterial::Ed25519(pair.public_key().as_ref()),
                Self::Rsa(pair, _) => KeyMaterial::RsaDer(pair.public_key().as_ref()),
                Self::Hmac(_) => unreachable!("parse makes no hmac signer"),
            };
            let public = Key::prepare(alg, public)?;
            Ok((signer, public))
        }

        /// A fresh key pair for `alg` (ES256 or EdDSA), from the system's random generator.
        #[cfg(all(feature = "client", feature = "dpop"))]
        pub(crate) fn generate(alg: Algorithm) -> Result<Self, KeyError> {
            match alg {
                Algorithm::ES256 => {
                    EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                        .map(Self::Ecdsa)
                        .map_err(|e| KeyError::Signing(Box::new(e)))
                }
                Algorithm::EdDSA => Ed25519KeyPair::generate()
                    .map(Self::Ed25519)
                    .map_err(|e| KeyError::Signing(Box::new(e))),
                _ => Err(KeyError::Unsupported("generated keys are ES256 or EdDSA")),
            }
        }

        /// The public half of an EC (`alg` ES256 or ES384) or Ed25519 key, as a JWK.
        #[cfg(all(feature = "client", feature = "dpop"))]
        pub(crate) fn public_jwk(&self, alg: Algorithm) -> Result<PublicJwk, KeyError> {
            match self {
                Self::Ecdsa(pair) => {
                    let curve = if alg == Algorithm::ES384 {
                        Curve::P384
                    } else {
                        Curve::P256
                    };
                    PublicJwk::ec_point(curve, pair.public_key().as_ref())
                }
                Self::Ed25519(pair) => Ok(PublicJwk::Ed25519 {
                    x: pair.public_key().as_ref().to_vec(),
                }),
                _ => Err(KeyError::Unsupported("public jwk of an hmac or rsa signer")),
            }
        }

        pub(crate) fn sign(&self, _alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
            let failed = |e: aws_lc_rs::error::Unspecified| KeyError::Signing(Box::new(e));
            Ok(match self {
                #[cfg(feature = "issuer")]
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
