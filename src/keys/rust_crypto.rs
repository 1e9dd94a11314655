//! The RustCrypto backend (feature `rust-crypto`, without `aws-lc-rs`): jsonwebtoken's own
//! verifiers and signers, with every key checked at construction.

#[cfg(feature = "server")]
use base64::Engine as _;
#[cfg(feature = "server")]
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::CryptoProvider;
#[cfg(feature = "server")]
use jsonwebtoken::{Algorithm, DecodingKey};

#[cfg(feature = "server")]
use crate::keys::backend::{KeyMaterial, Refusal};
#[cfg(feature = "server")]
use crate::keys::der::rsa_public_key_components;

/// jsonwebtoken's provider for this backend.
pub(crate) static PROVIDER: &CryptoProvider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;

#[cfg(feature = "server")]
/// A verification key: jsonwebtoken's, made to fail here rather than at first use.
pub(crate) struct Verifier(DecodingKey);

#[cfg(feature = "server")]
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

#[cfg(feature = "server")]
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

#[cfg(any(feature = "issuer", all(feature = "client", feature = "dpop")))]
pub(crate) use signer::Signer;

#[cfg(any(feature = "issuer", all(feature = "client", feature = "dpop")))]
mod signer {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    #[cfg(any(feature = "issuer", all(feature = "client", feature = "dpop")))]
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey};

    #[cfg(feature = "issuer")]
    use crate::keys::Key;
    use crate::keys::KeyError;
    #[cfg(all(feature = "client", feature = "dpop"))]
    use crate::keys::{PublicJwk, jwk::RawJwk};

    /// 32 bytes from the operating system's random generator.
    #[cfg(all(feature = "client", feature = "dpop"))]
    fn random() -> Result<[u8; 32], KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|_| KeyError::Signing("the system random generator failed".into()))?;
        Ok(bytes)
    }

    /// A uniformly random P-256 private scalar: in `[1, n - 1]`, by rejection (a draw fails
    /// with probability below 2^-32).
    #[cfg(all(feature = "client", feature = "dpop"))]
    fn random_p256_scalar() -> Result<[u8; 32], KeyError> {
        /// The order of the P-256 group, big-endian.
        const N: [u8; 32] = [
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2,
            0xfc, 0x63, 0x25, 0x51,
        ];
        loop {
            let d = random()?;
            // Big-endian arrays of equal length compare as the integers they hold.
            if d < N && d != [0; 32] {
                return Ok(d);
            }
        }
    }

    /// PKCS#8 (RFC 5208, RFC 5915, RFC 8410) documents for a raw private key, as
    /// jsonwebtoken's RustCrypto signers read them.
    #[cfg(all(feature = "client", feature = "dpop"))]
    pub(super) mod pkcs8 {
        /// A P-256 private scalar: `PrivateKeyInfo` around an RFC 5915 `ECPrivateKey` (the
        /// optional public key left out; it is derived).
        pub(crate) fn p256(d: [u8; 32]) -> Vec<u8> {
            let mut der = vec![
                0x30, 0x41, // PrivateKeyInfo
                0x02, 0x01, 0x00, // version 0
                0x30, 0x13, // AlgorithmIdentifier
                0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // id-ecPublicKey
                0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // prime256v1
                0x04, 0x27, // privateKey OCTET STRING
                0x30, 0x25, // ECPrivateKey
                0x02, 0x01, 0x01, // version 1
                0x04, 0x20, // privateKey
            ];
            der.extend_from_slice(&d);
            der
        }

        /// An Ed25519 seed: RFC 8410's `OneAsymmetricKey` version 1.
        pub(crate) fn ed25519(seed: [u8; 32]) -> Vec<u8> {
            let mut der = vec![
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20,
            ];
            der.extend_from_slice(&seed);
            der
        }
    }

    /// A signing key: jsonwebtoken's, probed once at construction.
    pub(crate) struct Signer(EncodingKey);

    impl Signer {
        #[cfg(feature = "issuer")]
        pub(crate) fn hmac(_alg: Algorithm, secret: &[u8]) -> Self {
            Self(EncodingKey::from_secret(secret))
        }

        /// The signer for a PKCS#8 private key (PKCS#1 too for RSA), signing once now so
        /// that a key the backend cannot use fails here, not in a request.
        pub(crate) fn parse(alg: Algorithm, key: EncodingKey) -> Result<Self, KeyError> {
            jsonwebtoken::crypto::sign(b"probe", &key, alg).map_err(KeyError::Pem)?;
            Ok(Self(key))
        }

        /// The signer for a private key, and the key that verifies its signatures.
        #[cfg(feature = "issuer")]
        pub(crate) fn private(alg: Algorithm, key: EncodingKey) -> Result<(Self, Key), KeyError> {
            // jsonwebtoken derives the public JWK from the private key.
            let jwk = Jwk::from_encoding_key(&key, alg).map_err(KeyError::Pem)?;
            let mut json = serde_json::to_value(&jwk).map_err(KeyError::Json)?;
            json["alg"] = serde_json::Value::String(format!("{alg:?}"));
            let public = Key::from_jwk(json.to_string())?;
            Ok((Self::parse(alg, key)?, public))
        }

        /// A fresh key pair for `alg` (ES256 or EdDSA): 32 bytes from the operating system's
        /// random generator, wrapped in PKCS#8.
        #[cfg(all(feature = "client", feature = "dpop"))]
        pub(crate) fn generate(alg: Algorithm) -> Result<Self, KeyError> {
            let der = match alg {
                Algorithm::ES256 => pkcs8::p256(random_p256_scalar()?),
                Algorithm::EdDSA => pkcs8::ed25519(random()?),
                _ => return Err(KeyError::Unsupported("generated keys are ES256 or EdDSA")),
            };
            let key = match alg {
                Algorithm::ES256 => EncodingKey::from_ec_der(&der),
                _ => EncodingKey::from_ed_der(&der),
            };
            Self::parse(alg, key)
        }

        /// The public half of an EC or Ed25519 key, as a JWK.
        #[cfg(all(feature = "client", feature = "dpop"))]
        pub(crate) fn public_jwk(&self, alg: Algorithm) -> Result<PublicJwk, KeyError> {
            let jwk = Jwk::from_encoding_key(&self.0, alg).map_err(KeyError::Pem)?;
            let json = serde_json::to_vec(&jwk).map_err(KeyError::Json)?;
            let raw: RawJwk = serde_json::from_slice(&json).map_err(KeyError::Json)?;
            raw.public_jwk()
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
