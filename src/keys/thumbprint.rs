//! RFC 7638 JWK thumbprints, and [`PublicJwk`]: a public key reduced to the members a
//! thumbprint covers.
//!
//! DPoP (RFC 9449) binds tokens to a key by its thumbprint (`cnf.jkt`): the client's proofs
//! carry the key, the server hashes it, the issuer writes the hash into the tokens it binds.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
#[cfg(feature = "server")]
use jsonwebtoken::Algorithm;
use sha2::{Digest, Sha256};

#[cfg(feature = "server")]
use crate::keys::backend::KeyMaterial;
use crate::keys::jwk::RawJwk;
#[cfg(feature = "server")]
use crate::keys::key::Key;
use crate::keys::key::KeyError;

/// The RFC 7638 thumbprint of a public JWK: the base64url SHA-256 of its required members,
/// in lexicographic order, without whitespace. This is the `jkt` of DPoP (RFC 9449 §6).
///
/// Only EC (P-256, P-384), OKP (Ed25519) and RSA keys have one here: those are the keys a DPoP
/// proof may carry. Members beyond the required ones (`kid`, `alg`, and private members
/// such as `d`) do not change it, as RFC 7638 §3.2 requires.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::keys::Thumbprint;
///
/// // RFC 7638 §3.1's example key.
/// let jwk = r#"{"kty":"RSA","e":"AQAB","alg":"RS256","kid":"2011-04-29","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}"#;
/// let jkt = Thumbprint::of_jwk(jwk)?;
/// assert_eq!(jkt.as_str(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
/// assert!(jkt.matches("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"));
/// # Ok::<_, tower_jwt_refresh::keys::KeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Thumbprint(String);

impl Thumbprint {
    /// The thumbprint of one JWK, given as JSON. Fails for key types other than EC, OKP and
    /// RSA, unsupported curves, and members that are missing or not canonical base64url.
    pub fn of_jwk(json: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let jwk: RawJwk = serde_json::from_slice(json.as_ref()).map_err(KeyError::Json)?;
        Ok(jwk.public_jwk()?.thumbprint())
    }

    /// The thumbprint, base64url without padding (43 characters).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `jkt` (for example an access token's `cnf.jkt`) names this key.
    ///
    /// Thumbprints are not secrets, so this is a plain comparison.
    pub fn matches(&self, jkt: &str) -> bool {
        self.0 == jkt
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Thumbprint").field(&self.0).finish()
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Thumbprint {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The `ath` of a DPoP proof (RFC 9449 §4.2): the base64url SHA-256 of the access token's
/// ASCII bytes.
pub(crate) fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// An elliptic curve a [`PublicJwk`] may be on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
        }
    }

    /// The length of one coordinate.
    pub(crate) fn size(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }
}

/// A public key as the members RFC 7638 hashes, decoded. Encoding it again gives the canonical
/// JWK: coordinates of their curve's length, RSA integers without leading zeros.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicJwk {
    Ec { crv: Curve, x: Vec<u8>, y: Vec<u8> },
    Ed25519 { x: Vec<u8> },
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl PublicJwk {
    #[cfg(all(feature = "aws-lc-rs", feature = "client"))]
    /// An EC key from its uncompressed point (`0x04 || x || y`).
    pub(crate) fn ec_point(crv: Curve, point: &[u8]) -> Result<Self, KeyError> {
        let size = crv.size();
        match point.split_first() {
            Some((4, xy)) if xy.len() == 2 * size => Ok(Self::Ec {
                crv,
                x: xy[..size].to_vec(),
                y: xy[size..].to_vec(),
            }),
            _ => Err(KeyError::Malformed(
                "ec public key is not an uncompressed point",
            )),
        }
    }

    /// Checks lengths and leading zeros, so that encoding again gives back the input.
    pub(crate) fn checked(self) -> Result<Self, KeyError> {
        let ok = match &self {
            Self::Ec { crv, x, y } => x.len() == crv.size() && y.len() == crv.size(),
            Self::Ed25519 { x } => x.len() == 32,
            Self::Rsa { n, e } => {
                let minimal = |b: &[u8]| b.first().is_some_and(|&first| first != 0);
                minimal(n) && minimal(e)
            }
        };
        if ok {
            Ok(self)
        } else {
            Err(KeyError::Malformed(
                "jwk members have the wrong length or leading zeros",
            ))
        }
    }

    /// The RFC 7638 canonical JSON: the required members in lexicographic order.
    pub(crate) fn canonical_json(&self) -> String {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match self {
            Self::Ec { crv, x, y } => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                crv.name(),
                b64(x),
                b64(y)
            ),
            Self::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x)),
            Self::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n)),
        }
    }

    /// The RFC 7638 thumbprint (SHA-256).
    pub(crate) fn thumbprint(&self) -> Thumbprint {
        let digest = Sha256::digest(self.canonical_json().as_bytes());
        Thumbprint(URL_SAFE_NO_PAD.encode(digest))
    }

    /// The public key of a JWK given as a JSON object (the `jwk` header of a DPoP proof) and
    /// its verification key for `alg`. The JWK's own `use` and `key_ops`, when present, must
    /// allow signatures (its `alg` is the caller's to compare).
    #[cfg(feature = "server")]
    pub(crate) fn parse_for(
        jwk: serde_json::Map<String, serde_json::Value>,
        alg: Algorithm,
    ) -> Result<(Self, Key), KeyError> {
        let raw: RawJwk =
            serde_json::from_value(serde_json::Value::Object(jwk)).map_err(KeyError::Json)?;
        raw.check_use()?;
        let public = raw.public_jwk()?;
        let key = public.key(alg)?;
        Ok((public, key))
    }

    #[cfg(feature = "server")]
    /// The verification key for `alg`, which must fit the key type (and the curve).
    pub(crate) fn key(&self, alg: Algorithm) -> Result<Key, KeyError> {
        let mismatch = KeyError::Unsupported("key type does not match the algorithm");
        match self {
            Self::Ec { crv, x, y } => {
                let want = match alg {
                    Algorithm::ES256 => Curve::P256,
                    Algorithm::ES384 => Curve::P384,
                    _ => return Err(mismatch),
                };
                if *crv != want {
                    return Err(KeyError::Unsupported("jwk curve does not match its alg"));
                }
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                Key::prepare(alg, KeyMaterial::Ec(&point))
            }
            Self::Ed25519 { x } => Key::prepare(alg, KeyMaterial::Ed25519(x)),
            Self::Rsa { n, e } => Key::prepare(alg, KeyMaterial::RsaComponents { n, e }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7638_example() {
        // RFC 7638 §3.1, with its `alg` and `kid`, which the thumbprint ignores.
        let jwk = r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#;
        let jkt = Thumbprint::of_jwk(jwk).unwrap();
        assert_eq!(jkt.as_str(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        // §3.1's canonical form: the required members, ordered, no whitespace.
        let raw: RawJwk = serde_json::from_str(jwk).unwrap();
        let canonical = raw.public_jwk().unwrap().canonical_json();
        assert!(canonical.starts_with(r#"{"e":"AQAB","kty":"RSA","n":"0vx7agoebGcQSuuP"#));
    }

    #[test]
    fn rfc_9449_examples() {
        // RFC 9449 §4.1 (Figure 4) and §6.1 (Figure 13): the EC key and its thumbprint.
        let jwk = r#"{"kty":"EC","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA","crv":"P-256"}"#;
        let jkt = Thumbprint::of_jwk(jwk).unwrap();
        assert_eq!(jkt.as_str(), "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
        // RFC 9449 §7.1 (Figure 15) binds an access token to this jkt, of an Ed25519 key
        // whose JWK the RFC does not print; RFC 8037 §A.3 has an OKP thumbprint.
        let okp = r#"{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}"#;
        assert_eq!(
            Thumbprint::of_jwk(okp).unwrap().as_str(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn private_members_do_not_change_the_thumbprint() {
        let public = r#"{"kty":"EC","crv":"P-256","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"}"#;
        let with_d = public.replace('}', r#","d":"AAAA","kid":"x","alg":"ES256"}"#);
        assert_eq!(
            Thumbprint::of_jwk(public).unwrap(),
            Thumbprint::of_jwk(with_d).unwrap()
        );
    }

    #[test]
    fn keys_without_a_thumbprint_here_are_refused() {
        let cases = [
            r#"{"kty":"oct","k":"AAAA"}"#,
            r#"{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}"#,
            r#"{"kty":"OKP","crv":"X25519","x":"AAAA"}"#,
            r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#,
            r#"{"kty":"EC","crv":"P-256","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs"}"#,
            r#"{"kty":"RSA","n":"AKBC","e":"AQAB"}"#,
            r#"{"kty":"RSA","n":"oEI","e":"AQAB="}"#,
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURp"}"#,
            r#"[]"#,
        ];
        for jwk in cases {
            assert!(Thumbprint::of_jwk(jwk).is_err(), "{jwk}");
        }
    }

    #[test]
    #[cfg(all(feature = "aws-lc-rs", feature = "client"))]
    fn ec_points_split_into_coordinates() {
        let mut point = vec![4];
        point.extend([1; 32]);
        point.extend([2; 32]);
        let jwk = PublicJwk::ec_point(Curve::P256, &point).unwrap();
        assert_eq!(
            jwk,
            PublicJwk::Ec {
                crv: Curve::P256,
                x: vec![1; 32],
                y: vec![2; 32]
            }
        );
        assert!(PublicJwk::ec_point(Curve::P384, &point).is_err());
        assert!(PublicJwk::ec_point(Curve::P256, &point[1..]).is_err());
    }
}
