//! Signature verification with keys prepared once, at construction.
//!
//! jsonwebtoken's `crypto::verify` builds a boxed verifier and re-reads the key on every call.
//! With the default `aws-lc-rs` backend this module parses each key once (an HMAC key schedule,
//! or a parsed public key) so a request pays only for the signature check itself. With
//! `rust-crypto` it delegates to jsonwebtoken's own verifier.

use jsonwebtoken::Algorithm;

#[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
compile_error!(
    "tower-jwt-refresh needs a crypto backend: enable the `aws-lc-rs` (default) or the \
     `rust-crypto` feature"
);

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
        #[cfg(feature = "aws-lc-rs")]
        let provider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
        #[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
        let provider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
        // An application that installed its own provider first keeps it.
        let _ = provider.install_default();
    });
}

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

/// A key prepared for one algorithm.
pub(crate) struct PreparedKey {
    #[cfg(feature = "aws-lc-rs")]
    inner: aws::Prepared,
    #[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
    inner: jsonwebtoken::DecodingKey,
    alg: Algorithm,
}

impl PreparedKey {
    /// Prepares `material` for `alg`, failing when the two do not belong together or the
    /// material is malformed.
    pub(crate) fn new(alg: Algorithm, material: KeyMaterial<'_>) -> Result<Self, &'static str> {
        install_crypto_provider();
        check_family(alg, &material)?;
        #[cfg(feature = "aws-lc-rs")]
        let inner = aws::Prepared::new(alg, &material)?;
        #[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
        let inner = rc::decoding_key(alg, &material)?;
        Ok(Self { inner, alg })
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Verifies `signature` (already base64url-decoded) over `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        #[cfg(feature = "aws-lc-rs")]
        {
            self.inner.verify(message, signature)
        }
        #[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
        {
            rc::verify(&self.inner, self.alg, message, signature)
        }
    }
}

fn check_family(alg: Algorithm, material: &KeyMaterial<'_>) -> Result<(), &'static str> {
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
        Err("key type does not match the algorithm")
    }
}

/// DER-encodes an RFC 8017 `RSAPublicKey` from its components.
#[cfg_attr(not(feature = "aws-lc-rs"), allow(dead_code))]
pub(crate) fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn integer(out: &mut Vec<u8>, bytes: &[u8]) {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let bytes = &bytes[start..];
        let pad = bytes.first().is_none_or(|&b| b & 0x80 != 0);
        out.push(0x02);
        length(out, bytes.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(bytes);
    }
    fn length(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes
                .iter()
                .position(|&b| b != 0)
                .unwrap_or(bytes.len() - 1);
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut out = Vec::with_capacity(body.len() + 6);
    out.push(0x30);
    length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// The modulus and exponent of a DER `RSAPublicKey` (RFC 8017), the form jsonwebtoken reads
/// RSA PEM files into.
#[cfg_attr(feature = "aws-lc-rs", allow(dead_code))]
pub(crate) fn rsa_public_key_components(der: &[u8]) -> Option<(&[u8], &[u8])> {
    /// One tag-length-value: its tag, its contents, and what follows it.
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[count..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    let (0x30, body, []) = tlv(der)? else {
        return None;
    };
    let (0x02, n, rest) = tlv(body)? else {
        return None;
    };
    let (0x02, e, []) = tlv(rest)? else {
        return None;
    };
    Some((n, e))
}

#[cfg(feature = "aws-lc-rs")]
pub(crate) use aws::hmac_key;

#[cfg(feature = "aws-lc-rs")]
mod aws {
    use super::KeyMaterial;
    use aws_lc_rs::{hmac, signature};
    use jsonwebtoken::Algorithm;

    /// The HMAC key schedule for `alg` (HS256, HS384 or HS512); signing and verifying share it.
    pub(crate) fn hmac_key(alg: Algorithm, secret: &[u8]) -> hmac::Key {
        let hmac_alg = match alg {
            Algorithm::HS256 => hmac::HMAC_SHA256,
            Algorithm::HS384 => hmac::HMAC_SHA384,
            _ => hmac::HMAC_SHA512,
        };
        hmac::Key::new(hmac_alg, secret)
    }

    // One per key, behind an `Arc`: an inline HMAC key schedule saves an indirection.
    #[allow(clippy::large_enum_variant)]
    pub(super) enum Prepared {
        Hmac(hmac::Key),
        Public(signature::ParsedPublicKey),
    }

    impl Prepared {
        pub(super) fn new(
            alg: Algorithm,
            material: &KeyMaterial<'_>,
        ) -> Result<Self, &'static str> {
            if let KeyMaterial::Secret(secret) = material {
                return Ok(Self::Hmac(hmac_key(alg, secret)));
            }
            let params: &'static dyn signature::VerificationAlgorithm = match alg {
                Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
                Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
                Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
                Algorithm::EdDSA => &signature::ED25519,
                _ => return Err("unsupported algorithm"),
            };
            let der;
            let bytes: &[u8] = match material {
                KeyMaterial::RsaComponents { n, e } => {
                    der = super::rsa_public_key_der(n, e);
                    &der
                }
                KeyMaterial::RsaDer(b) | KeyMaterial::Ec(b) | KeyMaterial::Ed25519(b) => b,
                KeyMaterial::Secret(_) => unreachable!("handled above"),
            };
            signature::ParsedPublicKey::new(params, bytes)
                .map(Self::Public)
                .map_err(|_| "malformed public key")
        }

        pub(super) fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
            match self {
                // `hmac::verify` compares in constant time.
                Self::Hmac(key) => hmac::verify(key, message, sig).is_ok(),
                Self::Public(key) => key.verify_sig(message, sig).is_ok(),
            }
        }
    }
}

#[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
mod rc {
    use super::KeyMaterial;
    use base64::Engine as _;
    use jsonwebtoken::{Algorithm, DecodingKey};

    /// Builds the jsonwebtoken key and makes it fail here, not at first use: jsonwebtoken's
    /// RustCrypto verifiers parse EC and Ed25519 keys when built (probed below), parse RSA
    /// keys only inside `verify` (so their shape is checked here), and slice Ed25519 keys
    /// without a length check (so the length is enforced here).
    pub(super) fn decoding_key(
        alg: Algorithm,
        material: &KeyMaterial<'_>,
    ) -> Result<DecodingKey, &'static str> {
        const MALFORMED: &str = "malformed public key";
        let significant = |b: &[u8]| b.len() - b.iter().take_while(|&&x| x == 0).count();
        // The `rsa` crate refuses moduli over 4096 bits when verifying; say so now.
        let rsa = |n: &[u8], e: &[u8]| match significant(n) {
            256..=512 if significant(e) > 0 => Ok(DecodingKey::from_rsa_raw_components(n, e)),
            513.. => Err("rsa keys over 4096 bits need the aws-lc-rs backend"),
            _ => Err(MALFORMED),
        };
        let key = match material {
            KeyMaterial::Secret(s) => return Ok(DecodingKey::from_secret(s)),
            KeyMaterial::RsaComponents { n, e } => return rsa(n, e),
            KeyMaterial::RsaDer(d) => {
                let (n, e) = super::rsa_public_key_components(d).ok_or(MALFORMED)?;
                return rsa(n, e);
            }
            KeyMaterial::Ec(d) => DecodingKey::from_ec_der(d),
            KeyMaterial::Ed25519(d) if d.len() == 32 => DecodingKey::from_ed_der(d),
            KeyMaterial::Ed25519(_) => return Err(MALFORMED),
        };
        // A well-formed key answers "no" to a bogus signature; a malformed one errors.
        jsonwebtoken::crypto::verify("AA", b"probe", &key, alg).map_err(|_| MALFORMED)?;
        Ok(key)
    }

    pub(super) fn verify(key: &DecodingKey, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig);
        jsonwebtoken::crypto::verify(&sig, message, key, alg).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_integer_padding_and_long_lengths() {
        // 0x80 needs a leading zero; leading zeros in the input are stripped.
        let der = rsa_public_key_der(&[0, 0, 0x80], &[1, 0, 1]);
        assert_eq!(der, [0x30, 9, 0x02, 2, 0, 0x80, 0x02, 3, 1, 0, 1]);
        let n = vec![0x7f; 256];
        let der = rsa_public_key_der(&n, &[3]);
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x07]);
        assert_eq!(&der[4..8], &[0x02, 0x82, 0x01, 0x00]);
    }

    #[test]
    fn rsa_public_key_components_round_trip_and_refuse_garbage() {
        let n = vec![0xc5; 256];
        let der = rsa_public_key_der(&n, &[1, 0, 1]);
        let (got_n, got_e) = rsa_public_key_components(&der).unwrap();
        assert_eq!((&got_n[1..], got_e), (&n[..], &[1, 0, 1][..]));
        let truncated = &der[..der.len() - 1];
        let huge_length = [0x30, 0x84, 0xff, 0xff, 0xff, 0xff];
        for bad in [truncated, &huge_length[..], &[][..], &[0x30][..]] {
            assert!(rsa_public_key_components(bad).is_none());
        }
    }

    #[test]
    fn family_mismatch_is_refused() {
        assert!(PreparedKey::new(Algorithm::RS256, KeyMaterial::Secret(&[0; 32])).is_err());
        assert!(PreparedKey::new(Algorithm::HS256, KeyMaterial::Ec(&[4; 65])).is_err());
        assert!(PreparedKey::new(Algorithm::ES256, KeyMaterial::Ec(&[4; 10])).is_err());
    }
}
