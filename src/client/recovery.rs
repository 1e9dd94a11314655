//! The slow paths of [`ResponseFuture`](super::ResponseFuture): refreshing before sending,
//! and recovering from a rejection by refreshing and replaying.
//!
//! Both run as one boxed future, since they are rare. Every replay drives the service it
//! goes through to readiness again, and a request waiting for a refresh holds no capacity of
//! the inner service but the one ready instance it was called with.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderMap, Request, Response, StatusCode};
use tower::ServiceExt;
use tower_service::Service;

use super::config::{Config, Shared};
use super::error::Error;
use super::replay::ReplayPolicy;
use super::round::{self, Copies, Sender};
use crate::BoxError;

/// What a request keeps for a replay: its head (without `Authorization`, which every send
/// sets anew), the kept body, and where to get a service to send it through.
pub(crate) struct Kept<S, K> {
    parts: Parts,
    body: K,
    spare: Spare<S>,
}

/// A clone of the inner service that replays are cloned from, shared by every request of one
/// [`Refresh`](super::Refresh): keeping a request costs a reference count, and the service is
/// cloned only when a replay actually happens.
pub(crate) struct Spare<S>(Arc<Mutex<S>>);

impl<S> Clone for Spare<S> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<S: Clone> Spare<S> {
    pub(crate) fn new(service: S) -> Self {
        Self(Arc::new(Mutex::new(service)))
    }

    /// A service of its own for one replay, not yet ready.
    pub(crate) fn service(&self) -> S {
        // Only `clone` runs under the lock; a clone that panicked poisoned nothing we rely on.
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<S, K> Kept<S, K> {
    /// Splits `request` (not yet carrying `Authorization`) into the one to send now and, if
    /// `policy` keeps its body, what a replay needs. A request without headers or extensions
    /// costs no allocation here; a `Clone` body costs its clone.
    pub(crate) fn split<B, P>(
        policy: &P,
        request: Request<B>,
        spare: &Spare<S>,
    ) -> (Request<B>, Option<Self>)
    where
        P: ReplayPolicy<B, Kept = K>,
    {
        let (parts, body) = request.into_parts();
        let (body, kept) = policy.keep(body);
        let kept = kept.map(|body| Self {
            parts: parts.clone(),
            body,
            spare: spare.clone(),
        });
        (Request::from_parts(parts, body), kept)
    }
}

/// Sends `Request<B>` through a tower service: drives it to readiness, then reads the token.
struct Tower<S, B, ResBody>(S, PhantomData<fn(B) -> ResBody>);

impl<S, B, ResBody> Tower<S, B, ResBody> {
    fn new(service: S) -> Self {
        Self(service, PhantomData)
    }
}

impl<S, B, ResBody> Sender for Tower<S, B, ResBody>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send,
{
    type Request = Request<B>;
    type Response = Response<ResBody>;
    type Error = Error;

    async fn send(
        &mut self,
        config: &Config,
        epoch: u64,
        mut request: Request<B>,
    ) -> Result<(Response<ResBody>, u64), Error> {
        let ready = self.0.ready().await.map_err(Error::inner)?;
        let (authorization, generation) = config.authorization(epoch)?;
        request.headers_mut().insert(AUTHORIZATION, authorization);
        let response = ready.call(request).await.map_err(Error::inner)?;
        Ok((response, generation))
    }

    fn head(response: &Response<ResBody>) -> (StatusCode, &HeaderMap) {
        (response.status(), response.headers())
    }
}

/// A kept head and body, rebuilt into a request with the layer's replay policy.
struct Rebuild<'a, P: ReplayPolicy<B>, B> {
    policy: &'a P,
    parts: Parts,
    body: Option<P::Kept>,
}

impl<P: ReplayPolicy<B>, B> Copies for Rebuild<'_, P, B> {
    type Request = Request<B>;

    fn next(&mut self, again: bool) -> Option<Request<B>> {
        let body = self.policy.rebuild(self.body.take()?)?;
        let body = if again {
            let (send, keep) = self.policy.keep(body);
            self.body = keep;
            send
        } else {
            body
        };
        Some(Request::from_parts(self.parts.clone(), body))
    }
}

/// After a rejection of a request sent through `Refresh`: see [`round::recover`]. Replays go
/// through a clone of the inner service made from the kept spare.
pub(crate) async fn recover<S, B, ResBody, P>(
    shared: Arc<Shared<P>>,
    kept: Option<Kept<S, P::Kept>>,
    seen: (u64, u64),
    rejected: Response<ResBody>,
) -> Result<Response<ResBody>, Error>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send,
    P: ReplayPolicy<B>,
{
    let (config, policy) = (&shared.config, &shared.policy);
    let kept = kept.map(|Kept { parts, body, spare }| {
        let body = Some(body);
        (
            Rebuild {
                policy,
                parts,
                body,
            },
            move || Tower::new(spare.service()),
        )
    });
    round::recover(config, kept, seen, rejected).await
}

/// The token is about to expire: see [`round::refresh_first`].
pub(crate) async fn refresh_first<S, B, ResBody, P>(
    shared: Arc<Shared<P>>,
    service: S,
    request: Request<B>,
    seen: u64,
    epoch: u64,
) -> Result<Response<ResBody>, Error>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send,
    P: ReplayPolicy<B>,
{
    let (config, policy) = (&shared.config, &shared.policy);
    let spare = Spare::new(service.clone());
    let keep = |request| {
        let (request, kept) = Kept::split(policy, request, &spare);
        let copies = kept.map(|Kept { parts, body, .. }| Rebuild {
            policy,
            parts,
            body: Some(body),
        });
        (request, copies)
    };
    let replays = |_| Tower::new(spare.service());
    round::refresh_first(
        config,
        Tower::new(service),
        request,
        keep,
        replays,
        (seen, epoch),
    )
    .await
}
