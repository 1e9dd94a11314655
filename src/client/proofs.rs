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

/// The layer's DPoP setting: a key to sign proofs with, or none.
#[derive(Clone, Default)]
pub(crate) struct Proofs {
    #[cfg(feature = "dpop")]
    dpop: Option<Dpop>,
}

#[cfg(feature = "dpop")]
#[derive(Clone)]
struct Dpop {
    key: super::dpop::DpopKey,
    /// The scheme and authority of requests that carry only a path (tonic's, inside a
    /// channel that adds its origin further down).
    origin: Option<(http::uri::Scheme, http::uri::Authority)>,
}

/// What an answer says, with DPoP in mind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Anything but a rejection: the answer stands.
    Accepted,
    /// The token was rejected: refresh, then replay.
    Rejected,
    /// The proof lacked the server's current nonce (`use_dpop_nonce`): send again, at once,
    /// with the nonce the answer carried. Not a rejection of the token.
    Nonce,
}

impl Proofs {
    /// Whether requests carry proofs.
    #[inline]
    pub(crate) fn is_on(&self) -> bool {
        #[cfg(feature = "dpop")]
        return self.dpop.is_some();
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
        if let Some(dpop) = &self.dpop
            && !tokens.bearer_only
        {
            let (method, uri) = request;
            let uri = uri.map(|uri| dpop.absolute(uri));
            let uri = uri
                .as_deref()
                .ok_or_else(|| Error::proof(super::dpop::ProofError::RelativeUri))?;
            let proof = dpop
                .key
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
        if let (Some(dpop), Some(uri)) = (&self.dpop, uri) {
            dpop.key.remember_nonce(&dpop.absolute(uri), headers);
        }
        let _ = (uri, headers);
    }

    /// Whether an answer is a `use_dpop_nonce` challenge: a 401, or a gRPC
    /// `UNAUTHENTICATED`, whose `WWW-Authenticate` says `error="use_dpop_nonce"`.
    pub(crate) fn is_nonce_challenge(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        self.is_on()
            && is_unauthenticated(status, headers)
            && headers
                .get_all(http::header::WWW_AUTHENTICATE)
                .iter()
                .any(|v| says_error(v.as_bytes(), b"use_dpop_nonce"))
    }
}

#[cfg(feature = "dpop")]
impl Proofs {
    pub(crate) fn new(key: super::dpop::DpopKey) -> Self {
        Self {
            dpop: Some(Dpop { key, origin: None }),
        }
    }

    /// Requests that carry only a path are taken to go to `origin`'s scheme and authority.
    pub(crate) fn with_origin(mut self, origin: Uri) -> Self {
        if let Some(dpop) = &mut self.dpop {
            dpop.origin = origin.scheme().cloned().zip(origin.authority().cloned());
        }
        self
    }
}

#[cfg(feature = "dpop")]
impl Dpop {
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
    fn only_a_use_dpop_nonce_challenge_is_one() {
        let proofs = Proofs::new(crate::client::dpop::DpopKey::generate().unwrap());
        let nonce = (
            "www-authenticate",
            r#"DPoP error="use_dpop_nonce", algs="ES256""#,
        );
        for ((status, headers), challenge) in [
            (head(401, &[nonce]), true),
            (
                head(401, &[("www-authenticate", "Bearer realm=\"api\""), nonce]),
                true,
            ),
            (head(200, &[("grpc-status", "16"), nonce]), true),
            (head(200, &[("grpc-status", "7"), nonce]), false),
            (head(400, &[nonce]), false),
            (
                head(
                    401,
                    &[("www-authenticate", r#"DPoP error="invalid_token""#)],
                ),
                false,
            ),
            (
                head(
                    401,
                    &[("www-authenticate", r#"DPoP error="use_dpop_nonce_x""#)],
                ),
                false,
            ),
            (head(401, &[("dpop-nonce", "n")]), false),
        ] {
            assert_eq!(
                proofs.is_nonce_challenge(status, &headers),
                challenge,
                "{status} {headers:?}"
            );
        }
        // Without a key, nothing is a nonce challenge.
        let (status, headers) = head(401, &[nonce]);
        assert!(!Proofs::default().is_nonce_challenge(status, &headers));
    }
}
