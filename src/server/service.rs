//! [`JwtAuth`]: the service that lets verified requests through.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use serde::de::{DeserializeOwned, IgnoredAny};
use tower_service::Service;

use crate::server::body::AuthBody;
use crate::server::decision::{Auth, Outcome};
use crate::server::future::ResponseFuture;
use crate::server::layer::JwtAuthLayer;
use crate::tower_util::take_ready;

/// Verifies the request's bearer token before calling the inner service.
///
/// Built by [`JwtAuthLayer`]. Refusals are responses (`type Error = S::Error`), so an
/// `Infallible` stack stays `Infallible`.
pub struct JwtAuth<S, C = IgnoredAny> {
    inner: S,
    auth: Arc<Auth<C>>,
    _claims: PhantomData<fn() -> C>,
}

impl<S: Clone, C> Clone for JwtAuth<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            auth: Arc::clone(&self.auth),
            _claims: PhantomData,
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for JwtAuth<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("inner", &self.inner)
            .field("auth", &self.auth)
            .finish()
    }
}

impl<S, C> JwtAuth<S, C> {
    pub(crate) fn from_parts(inner: S, auth: Arc<Auth<C>>) -> Self {
        Self {
            inner,
            auth,
            _claims: PhantomData,
        }
    }

    /// Wraps `inner` with the configuration of `layer`.
    pub fn new(inner: S, layer: &JwtAuthLayer<C>) -> Self {
        tower_layer::Layer::layer(layer, inner)
    }

    /// The configuration as a layer, for wrapping another service the same way.
    pub fn layer(&self) -> JwtAuthLayer<C> {
        JwtAuthLayer::from_auth(Arc::clone(&self.auth))
    }

    crate::tower_util::define_inner_service_accessors!();
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for JwtAuth<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    C: DeserializeOwned + Send + Sync + 'static,
{
    type Response = Response<AuthBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.auth.authenticate(&req) {
            // The hot path, kept direct: the request moves once, into the inner service.
            Outcome::Pass(claims) => {
                self.auth.metrics.passed(claims.is_some());
                if let Some(claims) = claims {
                    req.extensions_mut().insert(claims);
                }
                match self.auth.success_nonce(&req) {
                    None => ResponseFuture::inner(self.inner.call(req)),
                    nonce => ResponseFuture::inner_with_nonce(self.inner.call(req), nonce),
                }
            }
            Outcome::Reject(rejection) => {
                ResponseFuture::decided(Err(rejection), req, &mut self.inner, &self.auth)
            }
            Outcome::Pending(check) => {
                let inner = take_ready(&mut self.inner);
                ResponseFuture::pending(check, req, inner, Arc::clone(&self.auth))
            }
        }
    }
}
