//! Token verification: structure, header, signature, then claims.
//!
//! jsonwebtoken's `decode` leaves several checks to the caller; this module makes them itself:
//! an explicit `typ`, `iss`/`aud` present and of the right JSON type, `exp` required and
//! strictly in the future, `crit` refused, duplicate members refused, and numeric dates that
//! must be plain non-negative numbers. Nothing in the payload is parsed before the signature
//! verifies.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::keys::key::{KeySet, Selection, parse_alg};
use crate::server::claims::{Claims, RegisteredClaims};
use crate::server::rejection::TokenError;

/// The latest numeric date accepted: 9999-12-31T23:59:59Z. Anything later (such as `1e300`) is
/// refused as malformed rather than read as "never expires".
const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// Largest decoded signature: RSA-8192.
const MAX_SIGNATURE: usize = 1024;

/// Claim checks, as configured on the layer.
#[derive(Debug, Clone)]
pub(crate) struct Validation {
    /// Accepted `iss` values; empty means `iss` is not checked.
    pub(crate) issuers: Vec<Box<str>>,
    /// Accepted `aud` values; empty means `aud` is not checked.
    pub(crate) audiences: Vec<Box<str>>,
    /// Accepted `typ` values, without an `application/` prefix, lower-case.
    pub(crate) types: Vec<Box<str>>,
    /// More claims that must be present.
    pub(crate) required: Vec<Box<str>>,
    /// Seconds of clock skew allowed for `exp`, `nbf` and `iat`.
    pub(crate) leeway: u64,
    /// Longest token accepted, in bytes.
    pub(crate) max_len: usize,
}

impl Default for Validation {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            audiences: Vec::new(),
            types: vec!["at+jwt".into()],
            required: Vec::new(),
            leeway: 30,
            max_len: 8 * 1024,
        }
    }
}

/// A token that passed every check.
pub(crate) struct Verified<C> {
    pub(crate) claims: Claims<C>,
    /// Decoded payload size, which bounds the heap the claims hold.
    pub(crate) payload_len: usize,
}

/// The three segments of a compact JWS, checked to be base64url.
struct Segments<'t> {
    header: &'t str,
    payload: &'t str,
    signature: &'t str,
    /// `header.payload`, the signed bytes.
    signing_input: &'t str,
}

fn split(token: &str) -> Result<Segments<'_>, TokenError> {
    let mut parts = token.splitn(4, '.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    // RFC 7515 allows an empty payload; the claims layer refuses it as not an object.
    if header.is_empty() {
        return Err(TokenError::Malformed);
    }
    if signature.is_empty() {
        return Err(TokenError::Signature);
    }
    if !(canonical_base64url(header) && canonical_base64url(payload)) {
        return Err(TokenError::Malformed);
    }
    if !signature
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(TokenError::Malformed);
    }
    // A signature of impossible length (truncated, say) simply does not verify.
    if !canonical_base64url(signature) {
        return Err(TokenError::Signature);
    }
    let signing_input = &token[..header.len() + 1 + payload.len()];
    Ok(Segments {
        header,
        payload,
        signature,
        signing_input,
    })
}

/// Whether `s` is canonical unpadded base64url: only the url-safe alphabet, no length that
/// leaves a lone 6-bit group, and zero bits past the last whole byte. The payload is checked
/// here too, although the signature layer never decodes it, so that the two layers agree on
/// what a well-formed token is.
fn canonical_base64url(s: &str) -> bool {
    fn value(b: u8) -> Option<u8> {
        match b {
            b'A'..=b'Z' => Some(b - b'A'),
            b'a'..=b'z' => Some(b - b'a' + 26),
            b'0'..=b'9' => Some(b - b'0' + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if !bytes.iter().all(|&b| value(b).is_some()) {
        return false;
    }
    let unused_bits_mask = match bytes.len() % 4 {
        0 => return true,
        1 => return false,
        2 => 0x0f,
        _ => 0x03,
    };
    bytes
        .last()
        .and_then(|&b| value(b))
        .is_some_and(|v| v & unused_bits_mask == 0)
}

/// Decodes base64url into `buf` (no padding, canonical trailing bits).
fn decode_into<'b>(segment: &str, buf: &'b mut [u8]) -> Result<&'b [u8], TokenError> {
    // A segment whose decoded size exceeds the buffer is refused before decoding.
    if segment.len() * 3 / 4 > buf.len() {
        return Err(TokenError::Malformed);
    }
    let n = URL_SAFE_NO_PAD
        .decode_slice(segment, buf)
        .map_err(|_| TokenError::Malformed)?;
    Ok(&buf[..n])
}

fn decode_vec(segment: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)
}

/// Parses a JSON object into `T`.
///
/// Derived struct deserializers also accept a JSON array, filling fields by position (so
/// `[1]` would read as `{"exp":1}`); a JOSE header and a claims set must be objects, so
/// anything else is refused first. `Err(None)` means "not an object".
fn parse_object<'a, T: Deserialize<'a>>(
    json: &'a [u8],
) -> Result<T, Option<serde_json::error::Category>> {
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(None);
    }
    serde_json::from_slice(json).map_err(|e| Some(e.classify()))
}

/// The JOSE header members this crate reads.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Str<'a>,
    #[serde(default, borrow)]
    typ: Present<Str<'a>>,
    #[serde(default, borrow)]
    kid: Present<Str<'a>>,
    // Refused when present at all: crit (RFC 7515 §4.1.11: we understand no extension),
    // embedded or remote keys (a token must not choose its own key), and RFC 7797's b64.
    #[serde(default)]
    crit: Present<IgnoredAny>,
    #[serde(default)]
    jwk: Present<IgnoredAny>,
    #[serde(default)]
    jku: Present<IgnoredAny>,
    #[serde(default)]
    x5u: Present<IgnoredAny>,
    #[serde(default)]
    x5c: Present<IgnoredAny>,
    #[serde(default)]
    b64: Present<IgnoredAny>,
}

/// What the signature layer found: the header's `typ` and the payload segment.
pub(crate) struct Jws<'t> {
    typ: Option<Cow<'t, str>>,
    payload: &'t str,
}

/// Checks a compact JWS up to and including its signature. No claims are read.
pub(crate) fn verify_jws<'t>(token: &'t str, keys: &KeySet) -> Result<Jws<'t>, TokenError> {
    let segments = split(token)?;
    let mut header_buf = [0u8; 1024];
    let header_json = decode_into(segments.header, &mut header_buf)?;
    let header: Header<'_> = parse_object(header_json).map_err(|_| TokenError::Malformed)?;
    if header.crit.0.is_some()
        || header.jwk.0.is_some()
        || header.jku.0.is_some()
        || header.x5u.0.is_some()
        || header.x5c.0.is_some()
        || header.b64.0.is_some()
    {
        return Err(TokenError::Header);
    }
    let kid = header.kid.0.as_ref().map(|k| &*k.0);
    if kid == Some("") {
        return Err(TokenError::Header);
    }
    let alg = parse_alg(&header.alg.0).ok_or(TokenError::Algorithm)?;
    let candidates = match keys.select(kid, alg) {
        Selection::Keys(keys) => keys,
        Selection::UnknownKid => return Err(TokenError::UnknownKey),
        Selection::WrongAlgorithm => return Err(TokenError::Algorithm),
    };
    let mut sig_buf = [0u8; MAX_SIGNATURE];
    let signature =
        decode_into(segments.signature, &mut sig_buf).map_err(|_| TokenError::Signature)?;
    let message = segments.signing_input.as_bytes();
    if !candidates.iter().any(|key| key.verify(message, signature)) {
        return Err(TokenError::Signature);
    }
    // The header borrows from a stack buffer; keep only what the claims layer needs.
    let typ = header.typ.0.map(|t| Cow::Owned(t.0.into_owned()));
    Ok(Jws {
        typ,
        payload: segments.payload,
    })
}

impl KeySet {
    /// Checks the signature layer of a compact JWS only: structure, base64url, the header
    /// (`alg`, `kid`, refused parameters) and the signature with the selected key. No `typ`
    /// or claim is checked and the payload need not be JSON; for access tokens use
    /// [`JwtAuthLayer::verify`](crate::server::JwtAuthLayer::verify).
    pub fn verify_signature(&self, token: &str) -> Result<(), TokenError> {
        verify_jws(token, self).map(|_| ())
    }
}

impl Validation {
    /// Fully verifies `token` at Unix time `now`.
    pub(crate) fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        keys: &KeySet,
        now: u64,
    ) -> Result<Verified<C>, TokenError> {
        if token.len() > self.max_len {
            return Err(TokenError::TooLarge);
        }
        let jws = verify_jws(token, keys)?;
        if !self.type_accepted(jws.typ.as_deref()) {
            return Err(TokenError::Type);
        }
        let payload = decode_vec(jws.payload)?;
        let raw: RawClaims<'_> = parse_object(&payload).map_err(|e| match e {
            Some(serde_json::error::Category::Data) => TokenError::Claims,
            _ => TokenError::Malformed,
        })?;
        let registered = self.check(raw, now)?;
        if !self.required.is_empty() {
            self.check_required(&payload, &registered)?;
        }
        let custom: C = serde_json::from_slice(&payload).map_err(|_| TokenError::Claims)?;
        Ok(Verified {
            claims: Claims::new(registered, custom),
            payload_len: payload.len(),
        })
    }

    fn type_accepted(&self, typ: Option<&str>) -> bool {
        if self.types.is_empty() {
            return true;
        }
        let Some(typ) = typ else { return false };
        // RFC 7515 §4.1.9: media types compare case-insensitively; `application/` may be
        // omitted.
        let typ = match typ.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
            _ => typ,
        };
        self.types.iter().any(|t| t.eq_ignore_ascii_case(typ))
    }

    fn check(&self, raw: RawClaims<'_>, now: u64) -> Result<RegisteredClaims, TokenError> {
        let exp = raw.exp.0.ok_or(TokenError::MissingClaim)?.0;
        // `exp` must be strictly in the future, allowing `leeway` seconds of skew.
        if exp.saturating_add(self.leeway) <= now {
            return Err(TokenError::Expired);
        }
        let horizon = now.saturating_add(self.leeway);
        let nbf = raw.nbf.0.map(|d| d.0);
        let iat = raw.iat.0.map(|d| d.0);
        if nbf.is_some_and(|nbf| nbf > horizon) || iat.is_some_and(|iat| iat > horizon) {
            return Err(TokenError::NotYetValid);
        }
        let iss = raw.iss.0.map(|s| s.0);
        if !self.issuers.is_empty() {
            let iss = iss.as_deref().ok_or(TokenError::Issuer)?;
            if !self.issuers.iter().any(|i| **i == *iss) {
                return Err(TokenError::Issuer);
            }
        }
        let aud = raw.aud.0.map_or_else(Vec::new, |a| a.0);
        if !self.audiences.is_empty()
            && !aud
                .iter()
                .any(|a| self.audiences.iter().any(|ours| **ours == **a))
        {
            return Err(TokenError::Audience);
        }
        let scope = match (raw.scope.0, raw.scp.0) {
            (Some(scope), _) => Some(scope.0.into_owned()),
            (None, Some(scp)) => Some(scp.0),
            (None, None) => None,
        };
        Ok(RegisteredClaims {
            sub: raw.sub.0.map(|s| s.0.into_owned()),
            iss: iss.map(Cow::into_owned),
            aud: aud.into_iter().map(Cow::into_owned).collect(),
            exp,
            nbf,
            iat,
            jti: raw.jti.0.map(|s| s.0.into_owned()),
            sid: raw.sid.0.map(|s| s.0.into_owned()),
            scope,
        })
    }

    fn check_required(
        &self,
        payload: &[u8],
        registered: &RegisteredClaims,
    ) -> Result<(), TokenError> {
        let names = ClaimNames::from_payload(payload)?;
        let present = |name: &str| match name {
            "sub" => registered.sub.is_some(),
            "iss" => registered.iss.is_some(),
            "aud" => !registered.aud.is_empty(),
            "jti" => registered.jti.is_some(),
            "sid" => registered.sid.is_some(),
            "nbf" => registered.nbf.is_some(),
            "iat" => registered.iat.is_some(),
            "exp" => true,
            other => names.0.iter().any(|n| n == other),
        };
        if self.required.iter().all(|name| present(name)) {
            Ok(())
        } else {
            Err(TokenError::MissingClaim)
        }
    }
}

/// The registered claims, each strictly typed: `null` is a type error, not an absence.
#[derive(Deserialize)]
struct RawClaims<'a> {
    #[serde(default)]
    exp: Present<NumericDate>,
    #[serde(default)]
    nbf: Present<NumericDate>,
    #[serde(default)]
    iat: Present<NumericDate>,
    #[serde(default, borrow)]
    iss: Present<Str<'a>>,
    #[serde(default, borrow)]
    sub: Present<Str<'a>>,
    #[serde(default, borrow)]
    aud: Present<Audience<'a>>,
    #[serde(default, borrow)]
    jti: Present<Str<'a>>,
    #[serde(default, borrow)]
    sid: Present<Str<'a>>,
    #[serde(default, borrow)]
    scope: Present<Str<'a>>,
    #[serde(default)]
    scp: Present<Scopes>,
}

/// A member that may be absent, but whose `null` is refused (unlike `Option`).
struct Present<T>(Option<T>);

impl<T> Default for Present<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Present<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|v| Self(Some(v)))
    }
}

/// A JSON string, borrowed from the input when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// An RFC 7519 NumericDate: a non-negative number no later than year 9999, read as whole
/// seconds (fractions are dropped).
struct NumericDate(u64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NumericDate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative number of seconds no later than year 9999")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumericDate, E> {
                if v <= MAX_NUMERIC_DATE {
                    Ok(NumericDate(v))
                } else {
                    Err(E::custom("date out of range"))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumericDate, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("negative date"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumericDate, E> {
                if v.is_finite() && (0.0..=MAX_NUMERIC_DATE as f64).contains(&v) {
                    Ok(NumericDate(v as u64))
                } else {
                    Err(E::custom("date out of range"))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `aud`: one string or an array of strings.
struct Audience<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Audience<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Audience<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Audience<'a>, E> {
                Ok(Audience(vec![Cow::Borrowed(v)]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Audience<'a>, E> {
                Ok(Audience(vec![Cow::Owned(v.to_owned())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Audience<'a>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(16));
                while let Some(s) = seq.next_element::<Str<'a>>()? {
                    out.push(s.0);
                }
                Ok(Audience(out))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// `scp`: an array of strings (or one string), joined with spaces.
struct Scopes(String);

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scopes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scopes, E> {
                Ok(Scopes(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scopes, A::Error> {
                let mut out = String::new();
                while let Some(s) = seq.next_element::<Str<'de>>()? {
                    // One scope per element: a space inside one would smuggle in another.
                    if s.0.is_empty() || s.0.contains(' ') {
                        return Err(de::Error::custom("a scope holds a space or is empty"));
                    }
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(&s.0);
                }
                Ok(Scopes(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The member names of a claims object, for `require_claims` beyond the registered ones.
struct ClaimNames(Vec<String>);

impl ClaimNames {
    fn from_payload(payload: &[u8]) -> Result<Self, TokenError> {
        serde_json::from_slice(payload).map_err(|_| TokenError::Claims)
    }
}

impl<'de> Deserialize<'de> for ClaimNames {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClaimNames;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClaimNames, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = map.next_key::<Str<'de>>()? {
                    // `null` counts as absent for a required claim.
                    if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                        names.push(name.0.into_owned());
                    }
                }
                Ok(ClaimNames(names))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Algorithm, Key};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn keys() -> KeySet {
        Key::hmac(Algorithm::HS256, SECRET).unwrap().into()
    }

    fn sign(header: serde_json::Value, claims: serde_json::Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        hs256(&format!("{h}.{p}"))
    }

    fn hs256(input: &str) -> String {
        crate::keys::install_crypto_provider();
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{input}.{sig}")
    }

    fn at() -> serde_json::Value {
        json!({"alg": "HS256", "typ": "at+jwt"})
    }

    fn verify(v: &Validation, token: &str) -> Result<RegisteredClaims, TokenError> {
        v.verify::<IgnoredAny>(token, &keys(), NOW)
            .map(|ok| ok.claims.registered().clone())
    }

    #[test]
    fn accepts_a_well_formed_token() {
        let t = sign(
            at(),
            json!({"sub": "a", "exp": NOW + 60, "scp": ["x", "y"], "aud": "api"}),
        );
        let c = verify(&Validation::default(), &t).unwrap();
        assert_eq!(c.sub.as_deref(), Some("a"));
        assert_eq!(c.scope.as_deref(), Some("x y"));
        assert_eq!(c.aud, ["api"]);
    }

    #[test]
    fn a_scope_array_element_cannot_hold_two_scopes() {
        for scp in [json!(["read admin"]), json!(["read", ""])] {
            let t = sign(at(), json!({"exp": NOW + 60, "scp": scp}));
            assert_eq!(verify(&Validation::default(), &t), Err(TokenError::Claims));
        }
    }

    #[test]
    fn exp_is_strict_with_and_without_leeway() {
        let strict = Validation {
            leeway: 0,
            ..Validation::default()
        };
        let t = sign(at(), json!({"exp": NOW}));
        assert_eq!(verify(&strict, &t), Err(TokenError::Expired));
        let t = sign(at(), json!({"exp": NOW + 1}));
        assert!(verify(&strict, &t).is_ok());
        let t = sign(at(), json!({"exp": NOW - 29}));
        assert!(verify(&Validation::default(), &t).is_ok());
        let t = sign(at(), json!({"exp": NOW - 30}));
        assert_eq!(verify(&Validation::default(), &t), Err(TokenError::Expired));
    }

    #[test]
    fn numeric_dates_must_be_plain_numbers() {
        for bad in [
            json!("1900000000"),
            json!(null),
            json!(-1),
            json!(1e300),
            json!(true),
        ] {
            for claim in ["exp", "nbf", "iat"] {
                let mut claims = json!({"exp": NOW + 60});
                claims[claim] = bad.clone();
                let t = sign(at(), claims);
                assert_eq!(
                    verify(&Validation::default(), &t),
                    Err(TokenError::Claims),
                    "{claim}={bad}"
                );
            }
        }
        let t = sign(at(), json!({"exp": (NOW + 60) as f64 + 0.5}));
        assert!(verify(&Validation::default(), &t).is_ok());
    }

    #[test]
    fn duplicate_members_are_refused() {
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"at+jwt"}"#);
        let p = URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{},"exp":{}}}"#, NOW - 100, NOW + 100));
        let t = hs256(&format!("{h}.{p}"));
        assert_eq!(verify(&Validation::default(), &t), Err(TokenError::Claims));
    }

    #[test]
    fn typ_matching_follows_rfc_7515() {
        let v = Validation::default();
        for ok in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            let t = sign(json!({"alg": "HS256", "typ": ok}), json!({"exp": NOW + 60}));
            assert!(verify(&v, &t).is_ok(), "{ok}");
        }
        for bad in [
            json!("JWT"),
            json!("id_token+jwt"),
            json!("application/"),
            json!(1),
        ] {
            let t = sign(
                json!({"alg": "HS256", "typ": bad}),
                json!({"exp": NOW + 60}),
            );
            assert!(verify(&v, &t).is_err(), "{bad}");
        }
        let t = sign(json!({"alg": "HS256"}), json!({"exp": NOW + 60}));
        assert_eq!(verify(&v, &t), Err(TokenError::Type));
    }

    #[test]
    fn issuer_and_audience_types_and_values() {
        let v = Validation {
            issuers: vec!["https://issuer".into()],
            audiences: vec!["api".into()],
            ..Validation::default()
        };
        let ok = json!({"exp": NOW + 60, "iss": "https://issuer", "aud": ["other", "api"]});
        assert!(verify(&v, &sign(at(), ok)).is_ok());
        let cases = [
            (json!({"exp": NOW + 60, "aud": "api"}), TokenError::Issuer),
            (
                json!({"exp": NOW + 60, "iss": 1, "aud": "api"}),
                TokenError::Claims,
            ),
            (
                json!({"exp": NOW + 60, "iss": ["https://issuer"], "aud": "api"}),
                TokenError::Claims,
            ),
            (
                json!({"exp": NOW + 60, "iss": "https://evil", "aud": "api"}),
                TokenError::Issuer,
            ),
            (
                json!({"exp": NOW + 60, "iss": "https://issuer"}),
                TokenError::Audience,
            ),
            (
                json!({"exp": NOW + 60, "iss": "https://issuer", "aud": []}),
                TokenError::Audience,
            ),
            (
                json!({"exp": NOW + 60, "iss": "https://issuer", "aud": [1]}),
                TokenError::Claims,
            ),
            (
                json!({"exp": NOW + 60, "iss": "https://issuer", "aud": 7}),
                TokenError::Claims,
            ),
        ];
        for (claims, want) in cases {
            assert_eq!(
                verify(&v, &sign(at(), claims.clone())),
                Err(want),
                "{claims}"
            );
        }
    }

    #[test]
    fn required_claims_cover_registered_and_custom_names() {
        let v = Validation {
            required: vec!["sub".into(), "tenant".into()],
            ..Validation::default()
        };
        let ok = json!({"exp": NOW + 60, "sub": "a", "tenant": "t"});
        assert!(verify(&v, &sign(at(), ok)).is_ok());
        let no_sub = json!({"exp": NOW + 60, "tenant": "t"});
        assert_eq!(
            verify(&v, &sign(at(), no_sub)),
            Err(TokenError::MissingClaim)
        );
        let null_tenant = json!({"exp": NOW + 60, "sub": "a", "tenant": null});
        assert_eq!(
            verify(&v, &sign(at(), null_tenant)),
            Err(TokenError::MissingClaim)
        );
    }

    #[test]
    fn base64url_must_be_canonical() {
        assert!(canonical_base64url(""));
        assert!(canonical_base64url("AA"));
        assert!(canonical_base64url("AAA"));
        assert!(canonical_base64url("Zm9v"));
        assert!(!canonical_base64url("A"));
        assert!(!canonical_base64url("AB"));
        assert!(!canonical_base64url("AAB"));
        assert!(!canonical_base64url("AA=="));
        assert!(!canonical_base64url("A+/A"));
    }

    #[test]
    fn an_empty_payload_passes_the_signature_layer_but_not_the_claims_layer() {
        let t = hs256(&format!("{}.", URL_SAFE_NO_PAD.encode(at().to_string())));
        assert!(keys().verify_signature(&t).is_ok());
        assert_eq!(
            verify(&Validation::default(), &t),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn structure_errors() {
        let v = Validation::default();
        let good = sign(at(), json!({"exp": NOW + 60}));
        let (h, rest) = good.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        let cases = [
            (String::new(), TokenError::Malformed),
            (h.to_owned(), TokenError::Malformed),
            (format!("{h}.{p}"), TokenError::Malformed),
            (format!("{h}.{p}.{s}.{s}"), TokenError::Malformed),
            (format!("{h}.{p}.{s}.{s}.{s}"), TokenError::Malformed),
            (format!("{h}.{p}."), TokenError::Signature),
            (format!("{h}=.{p}.{s}"), TokenError::Malformed),
            (format!("{h}.{p}.{s}="), TokenError::Malformed),
            (format!("{h}.{p}+.{s}"), TokenError::Malformed),
            (
                format!("{h}.{p}.{}", &s[..s.len() - 4]),
                TokenError::Signature,
            ),
        ];
        for (token, want) in cases {
            assert_eq!(verify(&v, &token), Err(want), "{token}");
        }
        let long = "a".repeat(v.max_len + 1);
        assert_eq!(verify(&v, &long), Err(TokenError::TooLarge));
    }
}
