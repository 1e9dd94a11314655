//! [`Refresh`]: the service that attaches tokens and recovers from rejections.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower_service::Service;

use super::error::Error;
use super::future::{Kept, ResponseFuture, Template, proactive};
use super::layer::{Plan, Shared};
use super::replay::{CloneBodies, ReplayPolicy};
use crate::BoxError;

/// Sends each request with the session's access token; on a rejection, refreshes once for
/// every waiting request and replays. Built by [`RefreshLayer`](super::RefreshLayer).
pub struct Refresh<S, P = CloneBodies> {
    inner: S,
    shared: Arc<Shared<P>>,
}

impl<S: Clone, P> Clone for Refresh<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for Refresh<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresh")
            .field("inner", &self.inner)
            .field("session", &self.shared.session)
            .finish_non_exhaustive()
    }
}

impl<S, P> Refresh<S, P> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<P>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResBody, P> Service<Request<B>> for Refresh<S, P>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    ResBody: Send + 'static,
    P: ReplayPolicy<B>,
{
    type Response = Response<ResBody>;
    type Error = Error;
    type Future = ResponseFuture<S, B, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::inner)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let state = shared.session.load();
        let Some(tokens) = &state.tokens else {
            return if shared.pass_through {
                ResponseFuture::pass_through(self.inner.call(req))
            } else {
                ResponseFuture::failed(Error::NotAuthenticated)
            };
        };
        if state.expired {
            return ResponseFuture::failed(Error::SessionExpired);
        }
        let generation = state.generation;
        let keep = match shared.plan(&tokens.0) {
            Plan::Send { keep } => keep,
            Plan::Refresh => {
                // Refresh first, then send. The ready instance moves into the future (one unit
                // of capacity held while waiting, never two); `self` keeps a fresh clone.
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                return ResponseFuture::slow(Box::pin(proactive(
                    Arc::clone(shared),
                    service,
                    req,
                    generation,
                )));
            }
        };
        req.headers_mut().insert(
            AUTHORIZATION,
            tokens.0.header(shared.raw_authorization).clone(),
        );
        drop(state);
        if !keep {
            let future = self.inner.call(req);
            return ResponseFuture::first(future, None, Arc::clone(shared), generation);
        }
        let (parts, body) = req.into_parts();
        let (body, kept) = shared.policy.keep(body);
        let kept = kept.map(|kept| Kept {
            template: Template::of(&parts),
            body: kept,
            // Replays go through a clone, driven to readiness when needed.
            service: self.inner.clone(),
        });
        let future = self.inner.call(Request::from_parts(parts, body));
        ResponseFuture::first(future, kept, Arc::clone(shared), generation)
    }
}
