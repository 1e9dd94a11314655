//! One DPoP proof read strictly: its three segments, the header (`typ`, `alg`, `jwk`), the
//! signature under the header's key, and the claims. No request is compared here.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::keys::{KeyError, PublicJwk, parse_alg};
use crate::server::dpop::error::DpopError;

/// Members of a JWK that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The most members one JSON object of a proof may have.
const MAX_MEMBERS: usize = 64;

/// The latest `iat` accepted: 9999-12-31T23:59:59Z.
const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// A proof whose signature verified under its own `jwk`.
pub(crate) struct Proof {
    pub(crate) alg: Algorithm,
    pub(crate) jwk: PublicJwk,
    pub(crate) claims: Claims,
}

/// The claims RFC 9449 §4.2 defines, read with their types checked.
pub(crate) struct Claims {
    pub(crate) jti: String,
    pub(crate) htm: String,
    pub(crate) htu: String,
    pub(crate) iat: u64,
    pub(crate) ath: Option<String>,
    pub(crate) nonce: Option<String>,
}

/// Reads `proof` and checks its header and signature; `allowed` is the algorithm allow-list.
pub(crate) fn read(proof: &str, allowed: &[Algorithm]) -> Result<Proof, DpopError> {
    let mut parts = proof.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopError::Malformed);
    };
    let mut header = object(header)?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(DpopError::Type);
    }
    // RFC 7515 §4.1.11: we understand no extension.
    if header.contains_key("crit") || header.contains_key("b64") {
        return Err(DpopError::Malformed);
    }
    let alg_name = match header.remove("alg") {
        Some(Value::String(name)) => name,
        _ => return Err(DpopError::Algorithm),
    };
    let alg = algorithm(&alg_name)
        .filter(|alg| !is_symmetric(*alg) && allowed.contains(alg))
        .ok_or(DpopError::Algorithm)?;
    let Some(Value::Object(jwk)) = header.remove("jwk") else {
        return Err(DpopError::InvalidKey);
    };
    if jwk.get("kty").and_then(Value::as_str) == Some("oct")
        || PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m))
    {
        return Err(DpopError::PrivateKey);
    }
    // The key's own `alg`, if any, must be the proof's.
    if jwk
        .get("alg")
        .is_some_and(|own| own.as_str() != Some(&*alg_name))
    {
        return Err(DpopError::InvalidKey);
    }
    let (jwk, key) = PublicJwk::parse_for(jwk, alg).map_err(|e| match e {
        KeyError::Json(_) => DpopError::Malformed,
        _ => DpopError::InvalidKey,
    })?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| DpopError::Malformed)?;
    let signing_input = &proof[..header_len(proof)];
    if !key.verify(signing_input.as_bytes(), &signature) {
        return Err(DpopError::Signature);
    }
    let claims = claims(object(payload)?)?;
    Ok(Proof { alg, jwk, claims })
}

/// The length of `header.payload`, the signed bytes.
fn header_len(proof: &str) -> usize {
    proof.rfind('.').unwrap_or(proof.len())
}

/// A JWS `alg`: the names of RFC 7518 and RFC 8037, and RFC 9864's fully-specified
/// `Ed25519` (EdDSA on Ed25519, the one curve this crate's EdDSA verifies), which panva's
/// `dpop` package sends.
fn algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "Ed25519" => Some(Algorithm::EdDSA),
        name => parse_alg(name),
    }
}

fn is_symmetric(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// A base64url segment holding a JSON object with distinct members.
fn object(segment: &str) -> Result<Map<String, Value>, DpopError> {
    // The standard engine refuses padding and non-zero trailing bits: canonical only.
    let json = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| DpopError::Malformed)?;
    match serde_json::from_slice::<Strict>(&json) {
        Ok(Strict(Value::Object(map))) => Ok(map),
        _ => Err(DpopError::Malformed),
    }
}

/// The claims, typed: a claim of the wrong type is malformed, a missing one is named.
fn claims(mut map: Map<String, Value>) -> Result<Claims, DpopError> {
    let mut string = |name: &'static str| match map.remove(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(DpopError::Malformed),
    };
    let required = |value: Option<String>, name| value.ok_or(DpopError::MissingClaim(name));
    let jti = required(string("jti")?, "jti")?;
    let htm = required(string("htm")?, "htm")?;
    let htu = required(string("htu")?, "htu")?;
    let ath = string("ath")?;
    let nonce = string("nonce")?;
    if jti.is_empty() {
        return Err(DpopError::MissingClaim("jti"));
    }
    let iat = match map.get("iat") {
        None => return Err(DpopError::MissingClaim("iat")),
        Some(Value::Number(n)) => numeric_date(n).ok_or(DpopError::Malformed)?,
        Some(_) => return Err(DpopError::Malformed),
    };
    Ok(Claims {
        jti,
        htm,
        htu,
        iat,
        ath,
        nonce,
    })
}

/// A NumericDate: a non-negative number of seconds, fractions dropped, up to year 9999.
fn numeric_date(n: &Number) -> Option<u64> {
    let seconds = match n.as_u64() {
        Some(s) => s,
        None => {
            let f = n
                .as_f64()
                .filter(|f| *f >= 0.0 && *f <= MAX_NUMERIC_DATE as f64)?;
            f as u64
        }
    };
    (seconds <= MAX_NUMERIC_DATE).then_some(seconds)
}

/// A JSON value whose objects, at any depth, have distinct member names (compared after
/// unescaping) and at most [`MAX_MEMBERS`] members. serde_json's own recursion limit bounds
/// the depth.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.len() == MAX_MEMBERS {
                return Err(de::Error::custom("too many members"));
            }
            if members.contains_key(&name) {
                return Err(de::Error::custom("duplicate member"));
            }
            let Strict(value) = map.next_value()?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Map<String, Value>, DpopError> {
        object(&URL_SAFE_NO_PAD.encode(json))
    }

    #[test]
    fn objects_must_be_canonical_strict_json() {
        assert!(parse(r#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_ok());
        for bad in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"b":{"c":1,"c":1}}"#,
            r#"{"b":[{"c":1,"c":1}]}"#,
            r#"[1]"#,
            r#""x""#,
            r#"{"a":1"#,
            "",
        ] {
            assert!(matches!(parse(bad), Err(DpopError::Malformed)), "{bad}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            parse(&format!(r#"{{"a":{deep}}}"#)),
            Err(DpopError::Malformed)
        ));
        let wide: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!(r#""m{i}":0"#)).collect();
        assert!(matches!(
            parse(&format!("{{{}}}", wide.join(","))),
            Err(DpopError::Malformed)
        ));
        // Padding and non-canonical trailing bits.
        assert!(matches!(object("e30="), Err(DpopError::Malformed)));
        assert!(matches!(object("e31"), Err(DpopError::Malformed)));
        assert!(object("e30").is_ok());
    }

    #[test]
    fn numeric_dates() {
        let n = |v: Value| match v {
            Value::Number(n) => numeric_date(&n),
            _ => unreachable!(),
        };
        assert_eq!(n(serde_json::json!(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(n(serde_json::json!(1_700_000_000.9)), Some(1_700_000_000));
        assert_eq!(n(serde_json::json!(-1)), None);
        assert_eq!(n(serde_json::json!(1e300)), None);
        assert_eq!(n(serde_json::json!(MAX_NUMERIC_DATE + 1)), None);
    }
}
