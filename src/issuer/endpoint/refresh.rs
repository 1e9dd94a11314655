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
/// - 500 `server_error` when the access token cannot be minted.
///
/// Every `invalid_grant` carries the same description: a token's family id is public, so the
/// answer must not tell a revoked session from a forged token. The reason is logged at debug
/// level.
///
/// Client authentication (for confidential clients) is not performed; put it in front.
pub struct RefreshEndpoint<S> {
    issuer: TokenIssuer<S>,
    limits: Limits,
}

endpoint_common!(
    RefreshEndpoint,
    refresh_endpoint,
    "The refresh endpoint for this issuer."
);

impl<S: RefreshStore> RefreshEndpoint<S> {
    async fn handle(
        issuer: TokenIssuer<S>,
        params: Params,
    ) -> Result<Response<Full<Bytes>>, OAuthError> {
        respond(issuer.rotate(&refresh_token(params)?).await)
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
