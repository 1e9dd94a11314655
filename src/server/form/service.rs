//! [`FormToken`]: the service that finds the `access_token` form parameter.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request};
use http_body::Body;
use tower_service::Service;

use crate::http_util::{declares_more_than, has_media_type};
use crate::server::body::AuthBody;
use crate::server::form::{FormAccessToken, FormFuture, FormTokenLayer};
use crate::server::rejection::RequestError;
use crate::tower_util::take_ready;

/// Finds the `access_token` form parameter; see [`FormTokenLayer`].
#[derive(Debug, Clone)]
pub struct FormToken<S> {
    inner: S,
    config: FormTokenLayer,
}

impl<S> FormToken<S> {
    /// Wraps `inner` with the configuration of `layer`.
    pub fn new(inner: S, layer: FormTokenLayer) -> Self {
        Self {
            inner,
            config: layer,
        }
    }

    /// The configuration as a layer, for wrapping another service the same way.
    pub fn layer(&self) -> FormTokenLayer {
        self.config
    }

    crate::tower_util::define_inner_service_accessors!();
}

/// Whether the request may carry a form body: not `GET` or `HEAD`, and
/// `application/x-www-form-urlencoded`.
fn is_form<B>(req: &Request<B>) -> bool {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return false;
    }
    has_media_type(req.headers(), "application/x-www-form-urlencoded")
}

impl<S, B> Service<Request<B>> for FormToken<S>
where
    S: Service<Request<AuthBody<B>>> + Clone,
    B: Body<Data = Bytes>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = FormFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if !is_form(&req) {
            return FormFuture::inner(self.inner.call(req.map(AuthBody::inner)));
        }
        if declares_more_than(req.headers(), self.config.limit) {
            // Marked without reading, so the body is passed on untouched.
            req.extensions_mut()
                .insert(FormAccessToken::Invalid(RequestError::FormBody));
            return FormFuture::inner(self.inner.call(req.map(AuthBody::inner)));
        }
        let service = take_ready(&mut self.inner);
        let (parts, body) = req.into_parts();
        let deadline = tokio::time::sleep(self.config.read_timeout);
        FormFuture::collecting(parts, body, self.config.limit, deadline, service)
    }
}
