//! [`RefreshEndpoint`]: a refresh token in, a new token pair out (RFC 6749 §6).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::params::Params;
use super::{Limits, OAuthError, json_response};
use crate::issuer::error::RefreshError;
use crate::issuer::store::RefreshStore;
use crate::issuer::token_issuer::{IssuedTokens, TokenIssuer};

/// The refresh endpoint: `grant_type=refresh_token` (RFC 6749 §6) in, an RFC 6749 §5.1 token
/// response out. Built by [`TokenIssuer::refresh_endpoint`].
///
/// - 200 with the new pair;
/// - 400 `invalid_grant` for an expired, revoked, reused, unknown or malformed token (an
///   access token included);
/// - 400 `invalid_request` for a missing parameter, another content type, a body over 16 KiB
///   or one not read within 10 s; 400 `unsupported_grant_type`;
/// - 405 for methods other than `POST`;
/// - 503 `temporarily_unavailable` with `Retry-After` when the store cannot answer;
/// - 500 `server_error` when the access token cannot be minted;
/// - with [`dpop`](Self::dpop), for a request with a `DPoP` header: 400 `invalid_dpop_proof`
///   for a proof that fails a check, 400 `use_dpop_nonce` with a `DPoP-Nonce` header when the
///   verifier requires nonces, 503 when its replay store fails or takes longer than
///   [`replay_check_timeout`](Self::replay_check_timeout) (2 s).
///
/// With [`dpop`](Self::dpop), a request with a valid proof gets a pair bound to the proof's
/// key (`token_type: DPoP`, RFC 9449 §5); a refresh token bound to a key is refused
/// (`invalid_grant`) without a proof from that key, and nothing changes for its family. The
/// proof is checked once the body has been read, so a request refused for its body spends
/// nothing of it; with nonces, the answer carries the current one in `DPoP-Nonce`.
///
/// Every `invalid_grant` carries the same description: a token's family id is public, so the
/// answer must not tell a revoked session from a forged token. The reason is logged at debug
/// level.
///
/// Client authentication (for confidential clients) is not performed; put it in front.
pub struct RefreshEndpoint<S> {
    issuer: TokenIssuer<S>,
    limits: Limits,
    dpop: super::Dpop,
}

impl<S> RefreshEndpoint<S> {
    /// Verifies a request's `DPoP` header with `verifier` (RFC 9449 §5), when it has one. The
    /// proof's `htu` is the verifier's base URL with the request's path: give the verifier the
    /// URL the endpoint's clients use, without the path (`https://auth.example.com`).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_jwt_refresh::issuer::{AccessTokenIssuer, MemoryStore, TokenIssuer};
    /// use tower_jwt_refresh::keys::{Algorithm, SigningKey};
    /// use tower_jwt_refresh::server::dpop::DpopVerifier;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let key = SigningKey::hmac(Algorithm::HS256, [42u8; 32])?;
    /// let issuer = TokenIssuer::new(AccessTokenIssuer::new(key), MemoryStore::new());
    /// let endpoint = issuer
    ///     .refresh_endpoint()
    ///     .dpop(DpopVerifier::new("https://auth.example.com")?);
    /// # let _ = endpoint; Ok(()) }
    /// ```
    #[cfg(feature = "dpop")]
    #[must_use]
    pub fn dpop(mut self, verifier: crate::server::dpop::DpopVerifier) -> Self {
        self.dpop = super::Dpop(Some(verifier));
        self
    }

    /// How long a DPoP proof's replay check (the verifier's replay store) may take before
    /// the answer is 503, rotating nothing (default 2 s, as `JwtAuthLayer::io_timeout`).
    #[cfg(feature = "dpop")]
    #[must_use]
    pub fn replay_check_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.limits.replay_check_timeout = timeout;
        self
    }
}

endpoint_common!(
    RefreshEndpoint,
    refresh_endpoint,
    "The refresh endpoint for this issuer."
);

impl<S: RefreshStore> RefreshEndpoint<S> {
    async fn handle(
        issuer: TokenIssuer<S>,
        proof: super::Proof,
        params: Params,
    ) -> Result<Response<Full<Bytes>>, OAuthError> {
        let token = refresh_token(params)?;
        #[cfg(feature = "dpop")]
        if let Some(proof) = proof.0 {
            let (proof, nonce) = proof.verify().await?;
            let mut answer = respond(issuer.rotate_bound(&token, &proof).await)?;
            if let Some(nonce) = nonce {
                answer.headers_mut().insert("dpop-nonce", nonce);
            }
            return Ok(answer);
        }
        let _ = proof;
        respond(issuer.rotate(&token).await)
    }
}

/// The answer to a refused proof (RFC 9449 §5, §8).
#[cfg(feature = "dpop")]
pub(super) fn dpop_error(
    error: &crate::server::dpop::DpopError,
    verifier: &crate::server::dpop::DpopVerifier,
) -> OAuthError {
    use crate::server::dpop::DpopError;
    match error {
        DpopError::Store(store) => {
            tracing::warn!(error = %store, "dpop replay check failed");
            OAuthError::unavailable()
        }
        DpopError::UseNonce => {
            let mut answer = OAuthError::bad_request("use_dpop_nonce", error.description());
            answer.dpop_nonce = verifier
                .current_nonce()
                .and_then(|n| http::HeaderValue::try_from(n).ok());
            answer
        }
        _ => OAuthError::bad_request("invalid_dpop_proof", error.description()),
    }
}

/// The refresh token of a `grant_type=refresh_token` request.
fn refresh_token(params: Params) -> Result<String, OAuthError> {
    match params.grant_type.as_deref() {
        Some("refresh_token") => {}
        Some(_) => {
            return Err(OAuthError::bad_request(
                "unsupported_grant_type",
                "only grant_type=refresh_token is supported",
            ));
        }
        None => return Err(OAuthError::invalid_request("grant_type is missing")),
    }
    params
        .refresh_token
        .ok_or(OAuthError::invalid_request("refresh_token is missing"))
}

/// The answer to a rotation.
fn respond(
    rotated: Result<IssuedTokens, RefreshError>,
) -> Result<Response<Full<Bytes>>, OAuthError> {
    match rotated {
        Ok(pair) => {
            // Cannot fail (strings and a number); were it to, the rotation has happened, so
            // "try again" would be wrong.
            let body = serde_json::to_vec(&pair).map_err(|_| OAuthError::server_error())?;
            Ok(json_response(StatusCode::OK, Bytes::from(body)))
        }
        // One description for every reason: the family id in a token is public (it is the
        // access tokens' `sid`), so the answer must not tell a revoked session from a forgery.
        Err(RefreshError::InvalidGrant(reason)) => {
            tracing::debug!(reason = reason.description(), "refresh refused");
            Err(OAuthError::bad_request(
                "invalid_grant",
                "refresh token is invalid, expired or revoked",
            ))
        }
        Err(RefreshError::Unavailable(error)) => {
            tracing::warn!(%error, "refresh failed");
            Err(OAuthError::unavailable())
        }
        Err(error) => {
            tracing::error!(%error, "tokens could not be issued");
            Err(OAuthError::server_error())
        }
    }
}
