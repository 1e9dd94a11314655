//! JWK and JWKS parsing (RFC 7517): the members this crate reads, each key bound to one
//! algorithm.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
#[cfg(feature = "server")]
use jsonwebtoken::Algorithm;
use serde::Deserialize;

#[cfg(feature = "server")]
use crate::keys::backend::KeyMaterial;
#[cfg(feature = "server")]
use crate::keys::key::Key;
use crate::keys::key::KeyError;
#[cfg(feature = "dpop")]
use crate::keys::thumbprint::{Curve, PublicJwk};

#[cfg(feature = "server")]
/// Parses a JWS `alg` header value. Case-sensitive, as RFC 7515 requires; `none` and anything
/// unknown give `None`.
pub(crate) fn parse_alg(alg: &str) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match alg {
        "HS256" => HS256,
        "HS384" => HS384,
        "HS512" => HS512,
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        _ => return None,
    })
}

/// The JWK members this crate reads; anything else is ignored. (A build without `server`
/// reads only the members of a public key, for thumbprints.)
#[derive(Deserialize)]
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) struct RawJwk {
    kty: String,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    kid: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

#[cfg(feature = "server")]
/// One entry of a JWKS document's `keys` array, read on its own: an entry this crate cannot
/// read does not make the others unreadable.
pub(crate) struct JwkEntry {
    /// The entry's `kid`, if it has a string one (for logs).
    pub(crate) kid: Option<String>,
    /// The entry's members, or why they could not be read.
    pub(crate) jwk: Result<RawJwk, KeyError>,
}

impl RawJwk {
    #[cfg(feature = "server")]
    /// The entries of a JWKS document (`{"keys":[…]}`), not yet checked. Fails only when the
    /// document itself is not a JWKS.
    pub(crate) fn parse_set(json: &[u8]) -> Result<Vec<JwkEntry>, KeyError> {
        #[derive(Deserialize)]
        struct Jwks {
            keys: Vec<serde_json::Value>,
        }
        let jwks: Jwks = serde_json::from_slice(json).map_err(KeyError::Json)?;
        let entries = jwks.keys.into_iter().map(|value| JwkEntry {
            kid: value.get("kid").and_then(|k| k.as_str()).map(str::to_owned),
            jwk: serde_json::from_value(value).map_err(KeyError::Json),
        });
        Ok(entries.collect())
    }

    /// The public key this JWK describes, as RFC 7638 reads it: EC (P-256, P-384), OKP
    /// (Ed25519) or RSA, other members ignored.
    #[cfg(feature = "dpop")]
    pub(crate) fn public_jwk(&self) -> Result<PublicJwk, KeyError> {
        let jwk = match (self.kty.as_str(), self.crv.as_deref()) {
            ("EC", Some(crv)) => PublicJwk::Ec {
                crv: match crv {
                    "P-256" => Curve::P256,
                    "P-384" => Curve::P384,
                    _ => return Err(KeyError::Unsupported("jwk key type or curve")),
                },
                x: decoded(&self.x, "jwk `x` is missing or not base64url")?,
                y: decoded(&self.y, "jwk `y` is missing or not base64url")?,
            },
            ("OKP", Some("Ed25519")) => PublicJwk::Ed25519 {
                x: decoded(&self.x, "jwk `x` is missing or not base64url")?,
            },
            ("RSA", _) => PublicJwk::Rsa {
                n: decoded(&self.n, "jwk `n` is missing or not base64url")?,
                e: decoded(&self.e, "jwk `e` is missing or not base64url")?,
            },
            _ => return Err(KeyError::Unsupported("jwk key type or curve")),
        };
        jwk.checked()
    }

    #[cfg(feature = "server")]
    /// Whether this is a symmetric (`kty: oct`) key.
    pub(crate) fn is_symmetric(&self) -> bool {
        self.kty == "oct"
    }

    #[cfg(feature = "server")]
    /// The verification key this JWK describes, bound to its algorithm and named by its `kid`.
    pub(crate) fn into_key(self) -> Result<Key, KeyError> {
        self.check_use()?;
        let alg = self.algorithm()?;
        let key = match self.kty.as_str() {
            "oct" => Key::hmac(
                alg,
                decoded(&self.k, "jwk `k` is missing or not base64url")?,
            )?,
            "RSA" => self.rsa(alg)?,
            "EC" => self.ec(alg)?,
            "OKP" => self.okp(alg)?,
            _ => return Err(KeyError::Unsupported("jwk key type")),
        };
        Ok(match self.kid {
            Some(kid) => key.with_kid(kid),
            None => key,
        })
    }

    #[cfg(feature = "server")]
    /// Refuses a key whose `use` or `key_ops` rule out verifying signatures.
    pub(crate) fn check_use(&self) -> Result<(), KeyError> {
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(KeyError::NotForVerification);
        }
        if let Some(ops) = &self.key_ops
            && !ops.iter().any(|op| op == "verify")
        {
            return Err(KeyError::NotForVerification);
        }
        Ok(())
    }

    #[cfg(feature = "server")]
    /// The key's `alg`, or the one its curve implies.
    fn algorithm(&self) -> Result<Algorithm, KeyError> {
        if let Some(alg) = self.alg.as_deref() {
            return parse_alg(alg)
                .ok_or(KeyError::Unsupported("jwk alg is not a supported jws alg"));
        }
        match (self.kty.as_str(), self.crv.as_deref()) {
            ("EC", Some("P-256")) => Ok(Algorithm::ES256),
            ("EC", Some("P-384")) => Ok(Algorithm::ES384),
            ("OKP", Some("Ed25519")) => Ok(Algorithm::EdDSA),
            ("RSA" | "oct", _) => Err(KeyError::MissingAlgorithm),
            _ => Err(KeyError::Unsupported("jwk key type or curve")),
        }
    }

    #[cfg(feature = "server")]
    fn rsa(&self, alg: Algorithm) -> Result<Key, KeyError> {
        let n = decoded(&self.n, "jwk `n` is missing or not base64url")?;
        let e = decoded(&self.e, "jwk `e` is missing or not base64url")?;
        Key::prepare(alg, KeyMaterial::RsaComponents { n: &n, e: &e })
    }

    #[cfg(feature = "server")]
    fn ec(&self, alg: Algorithm) -> Result<Key, KeyError> {
        let size = match (alg, self.crv.as_deref()) {
            (Algorithm::ES256, Some("P-256")) => 32,
            (Algorithm::ES384, Some("P-384")) => 48,
            (Algorithm::ES256 | Algorithm::ES384, _) => {
                return Err(KeyError::Unsupported("jwk curve does not match its alg"));
            }
            _ => return Err(KeyError::Unsupported("ec jwk with a non-ES alg")),
        };
        let x = decoded(&self.x, "jwk `x` is missing or not base64url")?;
        let y = decoded(&self.y, "jwk `y` is missing or not base64url")?;
        if x.len() != size || y.len() != size {
            return Err(KeyError::Malformed(
                "jwk ec coordinates have the wrong length",
            ));
        }
        let mut point = Vec::with_capacity(1 + 2 * size);
        point.push(4);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        Key::prepare(alg, KeyMaterial::Ec(&point))
    }

    #[cfg(feature = "server")]
    fn okp(&self, alg: Algorithm) -> Result<Key, KeyError> {
        if self.crv.as_deref() != Some("Ed25519") {
            return Err(KeyError::Unsupported("okp curve other than Ed25519"));
        }
        let x = decoded(&self.x, "jwk `x` is missing or not base64url")?;
        if x.len() != 32 {
            return Err(KeyError::Malformed("ed25519 jwk `x` must be 32 bytes"));
        }
        Key::prepare(alg, KeyMaterial::Ed25519(&x))
    }
}

/// A base64url member, decoded; `what` says which when it is missing or not base64url.
fn decoded(value: &Option<String>, what: &'static str) -> Result<Vec<u8>, KeyError> {
    let value = value.as_deref().ok_or(KeyError::Malformed(what))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| KeyError::Malformed(what))
}

#[cfg(all(test, feature = "server"))]
pub(crate) mod tests {
    use super::*;

    /// An HS-sized `oct` JWK with `extra` members appended.
    pub(crate) fn oct(extra: &str) -> String {
        format!(
            r#"{{"kty":"oct","k":"{}"{extra}}}"#,
            URL_SAFE_NO_PAD.encode([9u8; 32])
        )
    }

    #[test]
    fn jwk_use_and_key_ops_must_allow_verification() {
        assert!(Key::from_jwk(oct(r#","alg":"HS256","use":"sig""#)).is_ok());
        assert!(matches!(
            Key::from_jwk(oct(r#","alg":"HS256","use":"enc""#)),
            Err(KeyError::NotForVerification)
        ));
        assert!(matches!(
            Key::from_jwk(oct(r#","alg":"HS256","key_ops":["sign"]"#)),
            Err(KeyError::NotForVerification)
        ));
        assert!(Key::from_jwk(oct(r#","alg":"HS256","key_ops":["sign","verify"]"#)).is_ok());
    }

    #[test]
    fn jwk_alg_is_required_where_the_key_type_does_not_pin_it() {
        assert!(matches!(
            Key::from_jwk(oct("")),
            Err(KeyError::MissingAlgorithm)
        ));
        assert!(matches!(
            Key::from_jwk(oct(r#","alg":"none""#)),
            Err(KeyError::Unsupported(_))
        ));
        assert!(matches!(
            Key::from_jwk(oct(r#","alg":"RS256""#)),
            Err(KeyError::Unsupported(_))
        ));
    }
}
