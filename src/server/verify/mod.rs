//! Token verification: structure, header, signature, then claims.
//!
//! jsonwebtoken's `decode` leaves several checks to the caller; this module makes them itself:
//! an explicit `typ`, `iss`/`aud` present and of the right JSON type, `exp` required and
//! strictly in the future, `crit` refused, duplicate members refused, and numeric dates that
//! must be plain non-negative numbers. Nothing in the payload is parsed before the signature
//! verifies.
//!
//! `jws` checks the signature layer, `claims` the claims; `serde` holds the strict visitors
//! both read with.

use ::serde::de::DeserializeOwned;

use crate::keys::KeySet;
use crate::server::claims::Claims;
use crate::server::rejection::TokenError;

mod claims;
mod jws;
mod serde;

use jws::{decode_vec, parse_object, verify_jws};
use serde::RawClaims;

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
    /// Refuses a token longer than the cap, before anything hashes or decodes it.
    pub(crate) fn check_len(&self, token: &str) -> Result<(), TokenError> {
        if token.len() > self.max_len {
            Err(TokenError::TooLarge)
        } else {
            Ok(())
        }
    }

    /// Fully verifies `token`, which passed [`check_len`](Self::check_len), at Unix time
    /// `now`.
    pub(crate) fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        keys: &KeySet,
        now: u64,
    ) -> Result<Verified<C>, TokenError> {
        let jws = verify_jws(token, keys)?;
        if !self.type_accepted(jws.typ.as_deref()) {
            return Err(TokenError::Type);
        }
        let payload = decode_vec(jws.payload)?;
        let mut raw: RawClaims<'_> = parse_object(&payload).map_err(|e| match e {
            Some(serde_json::error::Category::Data) => TokenError::Claims,
            _ => TokenError::Malformed,
        })?;
        let others = std::mem::take(&mut raw.others);
        let registered = self.check(raw, now)?;
        if !self.required.is_empty() {
            self.check_required(&others, &registered)?;
        }
        let custom: C = serde_json::from_slice(&payload).map_err(|_| TokenError::Claims)?;
        Ok(Verified {
            claims: Claims::new(registered, custom),
            payload_len: payload.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use ::serde::de::IgnoredAny;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    use super::*;
    use crate::keys::{Algorithm, Key};
    use crate::server::claims::RegisteredClaims;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    pub(super) const NOW: u64 = 1_800_000_000;

    pub(super) fn keys() -> KeySet {
        Key::hmac(Algorithm::HS256, SECRET).unwrap().into()
    }

    pub(super) fn sign(header: serde_json::Value, claims: serde_json::Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        hs256(&format!("{h}.{p}"))
    }

    pub(super) fn hs256(input: &str) -> String {
        crate::keys::install_crypto_provider();
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{input}.{sig}")
    }

    pub(super) fn at() -> serde_json::Value {
        json!({"alg": "HS256", "typ": "at+jwt"})
    }

    /// Verifies as the layer does: the length cap, then every check.
    pub(super) fn verify(v: &Validation, token: &str) -> Result<RegisteredClaims, TokenError> {
        v.check_len(token)?;
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
