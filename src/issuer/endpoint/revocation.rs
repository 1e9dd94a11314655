//! [`RevocationEndpoint`]: a refresh token in, its family ended (RFC 7009).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::params::Params;
use super::{Limits, OAuthError, json_response};
use crate::issuer::store::RefreshStore;
use crate::issuer::token_issuer::TokenIssuer;

/// The RFC 7009 revocation endpoint: `token=<refresh token>` ends its family. It answers 200
/// for unknown tokens too, as RFC 7009 requires (and for access tokens, which expire on their
/// own). Built by [`TokenIssuer::revocation_endpoint`].
pub struct RevocationEndpoint<S> {
    issuer: TokenIssuer<S>,
    limits: Limits,
    /// Never set: revocation takes no proofs.
    dpop: super::Dpop,
}

endpoint_common!(
    RevocationEndpoint,
    revocation_endpoint,
    "The RFC 7009 revocation endpoint for this issuer."
);

impl<S: RefreshStore> RevocationEndpoint<S> {
    async fn handle(
        issuer: TokenIssuer<S>,
        _: super::Proof,
        params: Params,
    ) -> Result<Response<Full<Bytes>>, OAuthError> {
        let token = params
            .token
            .ok_or(OAuthError::invalid_request("token is missing"))?;
        issuer.revoke(&token).await.map_err(|error| {
            tracing::warn!(%error, "revocation failed");
            OAuthError::unavailable()
        })?;
        Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}")))
    }
}
