//! [`RevocationEndpoint`]: a refresh token in, its family ended (RFC 7009).

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tower_service::Service;

use super::params::read_params;
use super::{EndpointFuture, Limits, OAuthError, json_response};
use crate::issuer::store::RefreshStore;
use crate::issuer::token_issuer::TokenIssuer;

/// The RFC 7009 revocation endpoint: `token=<refresh token>` ends its family. It answers 200
/// for unknown tokens too, as RFC 7009 requires (and for access tokens, which expire on their
/// own). Built by [`TokenIssuer::revocation_endpoint`].
pub struct RevocationEndpoint<S> {
    issuer: TokenIssuer<S>,
    limits: Limits,
}

endpoint_common!(RevocationEndpoint);

impl<S: RefreshStore> TokenIssuer<S> {
    /// The RFC 7009 revocation endpoint for this issuer.
    #[must_use]
    pub fn revocation_endpoint(&self) -> RevocationEndpoint<S> {
        RevocationEndpoint {
            issuer: self.clone(),
            limits: Limits::default(),
        }
    }
}

impl<S, B> Service<Request<B>> for RevocationEndpoint<S>
where
    S: RefreshStore,
    B: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> EndpointFuture {
        let (issuer, limits) = (self.issuer.clone(), self.limits);
        Box::pin(async move {
            let outcome = async {
                let params = read_params(req, limits).await?;
                let token = params
                    .token
                    .ok_or(OAuthError::invalid_request("token is missing"))?;
                issuer.revoke(&token).await.map_err(|error| {
                    tracing::warn!(%error, "revocation failed");
                    OAuthError::unavailable()
                })?;
                Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}")))
            };
            Ok(outcome.await.unwrap_or_else(OAuthError::into_response))
        })
    }
}
