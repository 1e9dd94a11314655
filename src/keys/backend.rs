//! What both crypto backends share: the key material they are given, the prepared key that
//! dispatches to the chosen one, and the process-wide jsonwebtoken provider.
//!
//! jsonwebtoken's `crypto::verify` builds a boxed verifier and re-reads the key on every call.
//! With the default `aws-lc-rs` backend (`aws_lc`) each key is parsed once (an
//! HMAC key schedule, or a parsed public key) so a request pays only for the signature check
//! itself. With `rust-crypto` (`rust_crypto`) jsonwebtoken's own
//! verifier does the work. With both features on, `aws-lc-rs` is used.

#[cfg(feature = "server")]
use jsonwebtoken::Algorithm;

#[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
compile_error!(
    "tower-jwt-refresh needs a crypto backend: enable the `aws-lc-rs` (default) or the \
     `rust-crypto` feature"
);

#[cfg(feature = "aws-lc-rs")]
use crate::keys::aws_lc as chosen;
#[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
use crate::keys::rust_crypto as chosen;

/// The chosen backend's signer, for [`SigningKey`](crate::keys::SigningKey).
#[cfg(any(feature = "issuer", all(feature = "client", feature = "dpop")))]
pub(crate) use chosen::Signer;

/// Installs this crate's crypto backend as jsonwebtoken's process-wide provider.
///
/// jsonwebtoken panics at its first use when both or neither of its backend features are on,
/// which Cargo's feature unification can cause behind your back (`--all-features` turns both
/// on). Every constructor of this crate that leads to crypto calls this, so the choice is made
/// at construction, never inside a request. Call it yourself before using jsonwebtoken directly
/// if your program might do so before building any key of this crate. With both features on,
/// `aws-lc-rs` is chosen; a provider installed earlier by the application is kept.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An application that installed its own provider first keeps it.
        let _ = chosen::PROVIDER.install_default();
    });
}

#[cfg(feature = "server")]
/// Raw public key material, as read from PEM or JWK.
pub(crate) enum KeyMaterial<'a> {
    /// An HMAC secret.
    Secret(&'a [u8]),
    /// An RSA public key as DER (`RSAPublicKey` or `SubjectPublicKeyInfo`).
    RsaDer(&'a [u8]),
    /// An RSA public key as big-endian modulus and exponent.
    RsaComponents { n: &'a [u8], e: &'a [u8] },
    /// An uncompressed EC point (`0x04 || x || y`) or `SubjectPublicKeyInfo`.
    Ec(&'a [u8]),
    /// A raw 32-byte Ed25519 public key or `SubjectPublicKeyInfo`.
    Ed25519(&'a [u8]),
}

#[cfg(feature = "server")]
/// Why a backend would not prepare a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The key and algorithm do not belong together, or the backend cannot use them.
    Unsupported(&'static str),
    /// The key material does not parse.
    Malformed,
}

#[cfg(feature = "server")]
/// A key prepared for one algorithm by the chosen backend.
pub(crate) struct PreparedKey {
    inner: chosen::Verifier,
    alg: Algorithm,
}

#[cfg(feature = "server")]
impl PreparedKey {
    /// Prepares `material` for `alg`, failing when the two do not belong together or the
    /// material is malformed.
    pub(crate) fn new(alg: Algorithm, material: KeyMaterial<'_>) -> Result<Self, Refusal> {
        install_crypto_provider();
        check_family(alg, &material)?;
        let inner = chosen::Verifier::new(alg, &material)?;
        Ok(Self { inner, alg })
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Verifies `signature` (already base64url-decoded) over `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.inner.verify(self.alg, message, signature)
    }
}

#[cfg(feature = "server")]
fn check_family(alg: Algorithm, material: &KeyMaterial<'_>) -> Result<(), Refusal> {
    use Algorithm::*;
    let ok = match material {
        KeyMaterial::Secret(_) => matches!(alg, HS256 | HS384 | HS512),
        KeyMaterial::RsaDer(_) | KeyMaterial::RsaComponents { .. } => {
            matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
        }
        KeyMaterial::Ec(_) => matches!(alg, ES256 | ES384),
        KeyMaterial::Ed25519(_) => matches!(alg, EdDSA),
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::Unsupported(
            "key type does not match the algorithm",
        ))
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use super::*;

    #[test]
    fn family_mismatch_is_refused() {
        let unsupported =
            |r: Result<PreparedKey, Refusal>| matches!(r, Err(Refusal::Unsupported(_)));
        assert!(unsupported(PreparedKey::new(
            Algorithm::RS256,
            KeyMaterial::Secret(&[0; 32])
        )));
        assert!(unsupported(PreparedKey::new(
            Algorithm::HS256,
            KeyMaterial::Ec(&[4; 65])
        )));
        assert!(matches!(
            PreparedKey::new(Algorithm::ES256, KeyMaterial::Ec(&[4; 10])),
            Err(Refusal::Malformed)
        ));
    }
}
