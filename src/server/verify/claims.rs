//! The claim checks: `typ`, then `exp`, `nbf`, `iat`, `iss`, `aud`, the scopes, and the
//! claims a layer requires.

use std::borrow::Cow;

use crate::server::claims::RegisteredClaims;
use crate::server::rejection::TokenError;
use crate::server::verify::Validation;
use crate::server::verify::serde::RawClaims;

impl Validation {
    /// Whether the header's `typ` is accepted.
    pub(super) fn type_accepted(&self, typ: Option<&str>) -> bool {
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

    /// Checks the registered claims at Unix time `now`, and hands them on owned.
    pub(super) fn check(
        &self,
        raw: RawClaims<'_>,
        now: u64,
    ) -> Result<RegisteredClaims, TokenError> {
        let exp = raw.exp.0.ok_or(TokenError::MissingClaim)?.0;
        let nbf = raw.nbf.0.map(|d| d.0);
        let iat = raw.iat.0.map(|d| d.0);
        self.check_times(now, exp, nbf, iat)?;
        let iss = raw.iss.0.map(|s| s.0);
        self.check_issuer(iss.as_deref())?;
        let aud = raw.aud.0.map_or_else(Vec::new, |a| a.0);
        self.check_audience(&aud)?;
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
            cnf_jkt: raw.cnf.0.and_then(|c| c.jkt).map(Cow::into_owned),
        })
    }

    fn check_times(
        &self,
        now: u64,
        exp: u64,
        nbf: Option<u64>,
        iat: Option<u64>,
    ) -> Result<(), TokenError> {
        // `exp` must be strictly in the future, allowing `leeway` seconds of skew.
        if exp.saturating_add(self.leeway) <= now {
            return Err(TokenError::Expired);
        }
        let horizon = now.saturating_add(self.leeway);
        if nbf.is_some_and(|nbf| nbf > horizon) || iat.is_some_and(|iat| iat > horizon) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }

    fn check_issuer(&self, iss: Option<&str>) -> Result<(), TokenError> {
        if self.issuers.is_empty() {
            return Ok(());
        }
        let iss = iss.ok_or(TokenError::Issuer)?;
        if self.issuers.iter().any(|i| **i == *iss) {
            Ok(())
        } else {
            Err(TokenError::Issuer)
        }
    }

    fn check_audience(&self, aud: &[Cow<'_, str>]) -> Result<(), TokenError> {
        if self.audiences.is_empty()
            || aud
                .iter()
                .any(|a| self.audiences.iter().any(|ours| **ours == **a))
        {
            Ok(())
        } else {
            Err(TokenError::Audience)
        }
    }

    /// Checks that every claim the layer requires is present (and not `null`).
    pub(super) fn check_required(
        &self,
        others: &[Cow<'_, str>],
        registered: &RegisteredClaims,
    ) -> Result<(), TokenError> {
        let present = |name: &str| match name {
            "sub" => registered.sub.is_some(),
            "iss" => registered.iss.is_some(),
            "aud" => !registered.aud.is_empty(),
            "jti" => registered.jti.is_some(),
            "sid" => registered.sid.is_some(),
            "nbf" => registered.nbf.is_some(),
            "iat" => registered.iat.is_some(),
            "exp" => true,
            other => others.iter().any(|n| n == other),
        };
        if self.required.iter().all(|name| present(name)) {
            Ok(())
        } else {
            Err(TokenError::MissingClaim)
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    use super::*;
    use crate::server::verify::tests::{NOW, at, hs256, keys, sign, verify};

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
    fn duplicate_custom_members_are_refused_however_spelled() {
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"at+jwt"}"#);
        let exp = NOW + 100;
        let many: String = (0..40).map(|i| format!(r#""c{i}":{i},"#)).collect();
        for payload in [
            format!(r#"{{"exp":{exp},"role":"user","role":"admin"}}"#),
            format!(r#"{{"exp":{exp},"role":"user","r\u006fle":"admin"}}"#),
            format!(r#"{{"exp":{exp},"role":null,"role":"admin"}}"#),
            format!(r#"{{{many}"exp":{exp},"c3":"again"}}"#),
        ] {
            let t = hs256(&format!("{h}.{}", URL_SAFE_NO_PAD.encode(&payload)));
            let verified = Validation::default().verify::<serde_json::Value>(&t, &keys(), NOW);
            assert_eq!(verified.err(), Some(TokenError::Claims), "{payload}");
        }
        // Distinct names, many of them, still pass.
        let t = hs256(&format!(
            "{h}.{}",
            URL_SAFE_NO_PAD.encode(format!(r#"{{{many}"exp":{exp}}}"#))
        ));
        assert!(
            Validation::default()
                .verify::<serde_json::Value>(&t, &keys(), NOW)
                .is_ok()
        );
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
}
