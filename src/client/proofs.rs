//! DPoP on the requests a [`RefreshLayer`](super::RefreshLayer) sends: with a key
//! ([`RefreshLayer::dpop`](super::RefreshLayer::dpop)), every request goes out as
//! `Authorization: DPoP <token>` with a fresh proof, the servers' nonces are remembered, and
//! a `use_dpop_nonce` challenge is told apart from a rejected token.
//!
//! Without the `dpop` feature, or without a key, requests carry the token alone (`Bearer`,
//! or the bare token) and nothing here costs more than a branch.

use http::header::AUTHORIZATION;
use http::{HeaderMap, Method, StatusCode, Uri};

use super::error::Error;
use super::rejection::{is_unauthenticated, says_error};
use super::session::TokenState;

/// The layer's DPoP setting: a key to sign proofs with, or none, and the origin of
/// requests that carry only a path.
#[derive(Clone, Default)]
pub(crate) struct Proofs {
    #[cfg(feature = "dpop")]
    key: Option<super::dpop::DpopKey>,
    /// The scheme and authority of requests that carry only a path (tonic's, inside a
    /// channel that adds its origin further down).
    #[cfg(feature = "dpop")]
    origin: Option<(http::uri::Scheme, http::uri::Authority)>,
}

/// What an answer says, with DPoP in mind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Anything but a rejected token: the answer stands. A refused proof
    /// (`invalid_dpop_proof`) is one: the token passed, so a refresh would not help.
    Accepted,
    /// The token was rejected: refresh, then replay.
    Rejected,
    /// The proof lacked the server's current nonce (`use_dpop_nonce`): send again, at once,
    /// with the nonce the answer carried. Not a rejection of the token.
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    Nonce,
}

impl Proofs {
    /// Whether requests carry proofs.
    #[inline]
    pub(crate) fn is_on(&self) -> bool {
        #[cfg(feature = "dpop")]
        return self.key.is_some();
        #[cfg(not(feature = "dpop"))]
        false
    }

    /// Sets the request's credentials from `tokens`: `Authorization` (and, with DPoP, a
    /// fresh `DPoP` proof for `method` and `uri`, carrying the token's hash and the origin's
    /// latest nonce). `uri` is needed with DPoP only.
    pub(crate) fn attach(
        &self,
        tokens: &TokenState,
        raw: bool,
        request: (&Method, Option<&Uri>),
        headers: &mut HeaderMap,
    ) -> Result<(), Error> {
        #[cfg(feature = "dpop")]
        if let Some(key) = &self.key
            && !tokens.bearer_only
        {
            let (method, uri) = request;
            let uri = uri.map(|uri| self.absolute(uri));
            let uri = uri
                .as_deref()
                .ok_or_else(|| Error::proof(super::dpop::ProofError::RelativeUri))?;
            let proof = key
                .proof(method, uri)
                .access_token(tokens.access_token())
                .sign()
                .map_err(Error::proof)?;
            // Base64url and dots: always a valid header value, taken without a copy.
            let proof = http::HeaderValue::from_maybe_shared(bytes::Bytes::from(proof))
                .map_err(Error::proof)?;
            headers.insert(AUTHORIZATION, tokens.dpop_header().clone());
            headers.insert("dpop", proof);
            return Ok(());
        }
        let _ = request;
        headers.insert(AUTHORIZATION, tokens.header(raw).clone());
        Ok(())
    }

    /// Remembers the `DPoP-Nonce` of an answer from `uri`.
    pub(crate) fn remember(&self, uri: Option<&Uri>, headers: &HeaderMap) {
        #[cfg(feature = "dpop")]
        if let (Some(key), Some(uri)) = (&self.key, uri) {
            key.remember_nonce(&self.absolute(uri), headers);
        }
        let _ = (uri, headers);
    }

    /// What a 401, or a gRPC `UNAUTHENTICATED`, says about DPoP, from its `WWW-Authenticate`:
    /// `use_dpop_nonce` with a usable `DPoP-Nonce` is a nonce challenge (without one, a
    /// resend would be refused alike: the answer stands); `invalid_dpop_proof` stands too.
    /// `None` for anything else, which the rejection rule judges.
    pub(crate) fn dpop_verdict(&self, status: StatusCode, headers: &HeaderMap) -> Option<Verdict> {
        if !self.is_on() || !is_unauthenticated(status, headers) {
            return None;
        }
        let says = |code: &[u8]| {
            headers
                .get_all(http::header::WWW_AUTHENTICATE)
                .iter()
                .any(|v| says_error(v.as_bytes(), code))
        };
        if says(b"use_dpop_nonce") {
            #[cfg(feature = "dpop")]
            if super::dpop::nonces::nonce_in(headers).is_some() {
                return Some(Verdict::Nonce);
            }
            return Some(Verdict::Accepted);
        }
        says(b"invalid_dpop_proof").then_some(Verdict::Accepted)
    }
}

#[cfg(feature = "dpop")]
impl Proofs {
    /// Proofs signed by `key`, keeping the origin set for path-only requests.
    pub(crate) fn with_key(mut self, key: super::dpop::DpopKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Requests that carry only a path are taken to go to `origin`'s scheme and authority.
    ///
    /// # Panics
    ///
    /// If `origin` has no scheme or no authority: a set-up mistake.
    pub(crate) fn with_origin(mut self, origin: Uri) -> Self {
        let (Some(scheme), Some(authority)) = (origin.scheme(), origin.authority()) else {
            panic!(
                "a dpop origin needs a scheme and an authority, as in https://api.example.com; got {origin}"
            );
        };
        self.origin = Some((scheme.clone(), authority.clone()));
        self
    }

    /// `uri`, with the configured origin if it has none.
    fn absolute<'a>(&self, uri: &'a Uri) -> std::borrow::Cow<'a, Uri> {
        use std::borrow::Cow;
        match &self.origin {
            Some((scheme, authority)) if uri.authority().is_none() => {
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(scheme.clone());
                parts.authority = Some(authority.clone());
                parts.path_and_query = uri.path_and_query().cloned();
                if parts.path_and_query.is_none() {
                    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
                }
                Uri::from_parts(parts).map_or(Cow::Borrowed(uri), Cow::Owned)
            }
            _ => Cow::Borrowed(uri),
        }
    }
}

#[cfg(all(test, feature = "dpop"))]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn head(status: u16, headers: &[(&'static str, &'static str)]) -> (StatusCode, HeaderMap) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        (StatusCode::from_u16(status).unwrap(), map)
    }

    #[test]
    fn nonce_challenges_and_refused_proofs_are_told_from_rejected_tokens() {
        let key = crate::client::dpop::DpopKey::generate().unwrap();
        let proofs = Proofs::default().with_key(key);
        let nonce = (
            "www-authenticate",
            r#"DPoP error="use_dpop_nonce", algs="ES256""#,
        );
        let fresh = ("dpop-nonce", "n-1");
        let refused = ("www-authenticate", r#"DPoP error="invalid_dpop_proof""#);
        for ((status, headers), verdict) in [
            (head(401, &[nonce, fresh]), Some(Verdict::Nonce)),
            (
                head(
                    401,
                    &[("www-authenticate", "Bearer realm=\"api\""), nonce, fresh],
                ),
                Some(Verdict::Nonce),
            ),
            (
                head(200, &[("grpc-status", "16"), nonce, fresh]),
                Some(Verdict::Nonce),
            ),
            // No usable nonce to send again with: the answer stands.
            (head(401, &[nonce]), Some(Verdict::Accepted)),
            (
                head(401, &[nonce, ("dpop-nonce", "a b")]),
                Some(Verdict::Accepted),
            ),
            // The proof was refused, not the token: no refresh would help.
            (head(401, &[refused]), Some(Verdict::Accepted)),
            (
                head(200, &[("grpc-status", "16"), refused]),
                Some(Verdict::Accepted),
            ),
            // The rejection rule judges the rest.
            (head(200, &[("grpc-status", "7"), nonce, fresh]), None),
            (head(400, &[nonce, fresh]), None),
            (
                head(
                    401,
                    &[("www-authenticate", r#"DPoP error="invalid_token""#)],
                ),
                None,
            ),
            (
                head(
                    401,
                    &[
                        ("www-authenticate", r#"DPoP error="use_dpop_nonce_x""#),
                        fresh,
                    ],
                ),
                None,
            ),
            (head(401, &[fresh]), None),
        ] {
            assert_eq!(
                proofs.dpop_verdict(status, &headers),
                verdict,
                "{status} {headers:?}"
            );
        }
        // Without a key, nothing is about DPoP.
        let (status, headers) = head(401, &[nonce, fresh]);
        assert_eq!(Proofs::default().dpop_verdict(status, &headers), None);
    }

    #[test]
    fn the_origin_and_the_key_are_set_in_any_order() {
        let key = crate::client::dpop::DpopKey::generate().unwrap();
        let origin = Uri::from_static("https://grpc.example.com");
        let path = Uri::from_static("/greeter.Greeter/SayHello");
        for proofs in [
            Proofs::default()
                .with_origin(origin.clone())
                .with_key(key.clone()),
            Proofs::default()
                .with_key(key.clone())
                .with_origin(origin.clone()),
        ] {
            assert_eq!(
                proofs.absolute(&path).to_string(),
                "https://grpc.example.com/greeter.Greeter/SayHello"
            );
        }
    }

    #[test]
    #[should_panic(expected = "a dpop origin needs a scheme and an authority")]
    fn an_origin_without_a_scheme_is_a_set_up_mistake() {
        let _ = Proofs::default().with_origin(Uri::from_static("grpc.example.com"));
    }
}
