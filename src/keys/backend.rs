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
        if let KeyMaterial::Ed25519(bytes) = material
            && is_small_order_ed25519(bytes)
        {
            return Err(Refusal::Unsupported(
                "ed25519 public key of small order: any signature may verify under it",
            ));
        }
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

/// The encodings of Ed25519's eight points of small order, non-canonical ones (`y ≥ p`, or
/// a set sign bit on `x = 0`) included: under such a key, `R = identity, S = 0` verifies for
/// every message with a verifier that does not check the key, so the key proves nothing.
#[cfg(feature = "server")]
const SMALL_ORDER_ED25519: [[u8; 32]; 14] = {
    const fn point(low: [u8; 16], high: [u8; 16]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 16 {
            out[i] = low[i];
            out[16 + i] = high[i];
            i += 1;
        }
        out
    }
    const ZERO: [u8; 16] = [0; 16];
    const ONES: [u8; 16] = [0xff; 16];
    const fn last(mut half: [u8; 16], byte: u8) -> [u8; 16] {
        half[15] = byte;
        half
    }
    const fn first(mut half: [u8; 16], byte: u8) -> [u8; 16] {
        half[0] = byte;
        half
    }
    const A_LOW: [u8; 16] = [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0,
    ];
    const A_HIGH: [u8; 16] = [
        0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc,
        0x05,
    ];
    const B_LOW: [u8; 16] = [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f,
    ];
    const B_HIGH: [u8; 16] = [
        0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03,
        0x7a,
    ];
    [
        // y = 0 (order 4), either sign.
        point(ZERO, ZERO),
        point(ZERO, last(ZERO, 0x80)),
        // y = 1: the identity (order 1), either sign.
        point(first(ZERO, 0x01), ZERO),
        point(first(ZERO, 0x01), last(ZERO, 0x80)),
        // The points of order 8, either sign.
        point(A_LOW, A_HIGH),
        point(A_LOW, last(A_HIGH, 0x85)),
        point(B_LOW, B_HIGH),
        point(B_LOW, last(B_HIGH, 0xfa)),
        // y = p - 1 (order 2), either sign.
        point(first(ONES, 0xec), last(ONES, 0x7f)),
        point(first(ONES, 0xec), ONES),
        // y = p, that is 0, and y = p + 1, that is 1: non-canonical, either sign.
        point(first(ONES, 0xed), last(ONES, 0x7f)),
        point(first(ONES, 0xed), ONES),
        point(first(ONES, 0xee), last(ONES, 0x7f)),
        point(first(ONES, 0xee), ONES),
    ]
};

/// Whether an Ed25519 public key (32 raw bytes, or as the last 32 of its
/// `SubjectPublicKeyInfo`) is a point of small order.
#[cfg(feature = "server")]
fn is_small_order_ed25519(key: &[u8]) -> bool {
    const SPKI_PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let raw = match key.len() {
        32 => key,
        44 if key.starts_with(&SPKI_PREFIX) => &key[12..],
        _ => return false,
    };
    SMALL_ORDER_ED25519.iter().any(|point| point[..] == *raw)
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
    fn ed25519_keys_of_small_order_are_refused_in_every_encoding() {
        // The fourteen encodings, as hex: the blocklist must be exactly these.
        let expected = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000080",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000080",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        ];
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let listed: Vec<String> = SMALL_ORDER_ED25519.iter().map(|p| hex(p)).collect();
        assert_eq!(listed, expected);
        for point in &SMALL_ORDER_ED25519 {
            let refused = PreparedKey::new(Algorithm::EdDSA, KeyMaterial::Ed25519(point));
            assert!(
                matches!(refused, Err(Refusal::Unsupported(_))),
                "{}",
                hex(point)
            );
            let mut spki = vec![
                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
            ];
            spki.extend_from_slice(point);
            let refused = PreparedKey::new(Algorithm::EdDSA, KeyMaterial::Ed25519(&spki));
            assert!(
                matches!(refused, Err(Refusal::Unsupported(_))),
                "{}",
                hex(point)
            );
        }
        // An ordinary key (RFC 8037 §A.2's) is taken.
        let ordinary = [
            0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64,
            0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68,
            0xf7, 0x07, 0x51, 0x1a,
        ];
        assert!(PreparedKey::new(Algorithm::EdDSA, KeyMaterial::Ed25519(&ordinary)).is_ok());
    }

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
