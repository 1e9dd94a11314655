//! [`Refresh`]: the service that attaches tokens and recovers from rejections.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use arc_swap::cache::Cache;
use http::{Request, Response};
use tower_service::Service;

use super::config::{Decision, Shared};
use super::error::Error;
use super::future::ResponseFuture;
use super::recovery::{Kept, Spare, refresh_first};
use super::replay::{CloneBodies, ReplayPolicy};
use super::session::{Session, State};
use crate::BoxError;

/// Sends each request with the session's access token; on a rejection, refreshes once for
/// every waiting request and replays. Built by [`RefreshLayer`](super::RefreshLayer).
pub struct Refresh<S, P = CloneBodies> {
    inner: S,
    /// What every request's future holds for a recovery, and replays are cloned from.
    spare: Arc<Spare<S, P>>,
    shared: Arc<Shared<P>>,
    /// The session's state as this service last read it: a request checks that it is still
    /// current with one plain atomic load, where a fresh read takes two atomic writes. An idle
    /// service holds on to the state it last saw (its tokens, until its next request or its
    /// drop), as a request in flight does.
    state: Cache<SessionState, Arc<State>>,
}

/// The session's state, as [`Cache`] reads it.
#[derive(Clone)]
struct SessionState(Session);

impl Deref for SessionState {
    type Target = ArcSwap<State>;

    fn deref(&self) -> &ArcSwap<State> {
        self.0.state()
    }
}

impl<S: Clone, P> Clone for Refresh<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            spare: Arc::clone(&self.spare),
            shared: Arc::clone(&self.shared),
            state: self.state.clone(),
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for Refresh<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresh")
            .field("inner", &self.inner)
            .field("session", &self.shared.config.session)
            .finish_non_exhaustive()
    }
}

impl<S, P> Refresh<S, P> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<P>>) -> Self {
        let state = Cache::new(SessionState(shared.config.session.clone()));
        Self {
            inner,
            spare: Arc::new(Spare::new(Arc::clone(&shared))),
            shared,
            state,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        // Replays go through clones of the service as it is after this change.
        self.spare = Arc::new(Spare::new(Arc::clone(&self.shared)));
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Gives back the capacity `poll_ready` reserved (a `ConcurrencyLimit` permit, a `Buffer`
/// slot) by dropping the ready instance, and returns an unready clone for the request to
/// drive to readiness after its wait: a waiting request holds no capacity that the refresh
/// (sharing the service, as `OAuthRefresher` over the same client does) may need.
fn release_ready<S: Clone>(service: &mut S) -> S {
    let fresh = service.clone();
    drop(std::mem::replace(service, fresh));
    service.clone()
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let state = self.state.load();
        let (seen, keep, tokens) = match shared.config.decide(state) {
            Decision::Send { seen, keep, tokens } => (seen, keep, tokens),
            Decision::Fail(error) => return ResponseFuture::failed(error),
            Decision::PassThrough => return ResponseFuture::pass_through(self.inner.call(req)),
            Decision::RefreshFirst((generation, epoch)) => {
                let service = release_ready(&mut self.inner);
                let slow = refresh_first(Arc::clone(shared), service, req, generation, epoch);
                return ResponseFuture::slow(Box::pin(slow));
            }
        };
        // The copy is taken before `Authorization` is set: a replay sets its own.
        let (mut req, kept) = if keep {
            Kept::split(&shared.policy, req)
        } else {
            (req, None)
        };
        let uri = match shared.config.attach_request(tokens, &mut req) {
            Ok(uri) => uri,
            Err(error) => return ResponseFuture::failed(error),
        };
        self.spare.keep(&self.inner);
        let spare = Arc::clone(&self.spare);
        let future = self.inner.call(req);
        ResponseFuture::first(future, kept, spare, seen, uri)
    }
}

#[cfg(test)]
mod tests {
    use http::header::AUTHORIZATION;
    use tower::{Layer, ServiceExt, service_fn};

    use super::*;
    use crate::client::{RefreshLayer, Tokens, refresher_fn};

    #[tokio::test]
    async fn clones_share_one_spare_and_see_a_login_made_after_them() {
        let session = Session::new();
        let refresher = refresher_fn(|_| async { Ok(Tokens::new("b", "r")) });
        let echo = service_fn(|request: Request<()>| async move {
            let authorization = request.headers().get(AUTHORIZATION).cloned();
            Ok::<_, std::convert::Infallible>(Response::new(authorization))
        });
        // Made while logged out, as a server makes one clone per request from a template.
        let template = RefreshLayer::new(session.clone(), refresher).layer(echo);
        let (one, two) = (template.clone(), template.clone());
        assert!(Arc::ptr_eq(&one.spare, &two.spare));
        session.login(Tokens::new("a", "r")).unwrap();
        let response = one.oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.into_body().unwrap(), "Bearer a");
        // The first request, through the other clone, kept the spare replays are cloned from.
        let _replays_go_through = two.spare.service();
    }
}
