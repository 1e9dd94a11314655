//! The slow paths of [`ResponseFuture`](super::ResponseFuture): refreshing before sending,
//! and recovering from a rejection by refreshing and replaying.
//!
//! Both run as one boxed future, since they are rare. Every replay drives the service it
//! goes through to readiness again, and a request waiting for a refresh holds no capacity of
//! the inner service but the one ready instance it was called with.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use http::{HeaderMap, Request, Response, StatusCode};
use tower::ServiceExt;
use tower_service::Service;

use super::config::{Config, Shared};
use super::error::Error;
use super::proofs::Verdict;
use super::replay::{Head, ReplayPolicy};
use super::round::{self, Copies, Sender};
use crate::BoxError;

/// What a request keeps for a replay: its head (without `Authorization`, which every send
/// sets anew) and the kept body.
pub(crate) struct Kept<K> {
    head: Head,
    body: K,
}

/// What every request of one [`Refresh`](super::Refresh) and its clones holds for a recovery,
/// for one reference count: the layer's configuration, and a clone of the inner service that
/// replays are cloned from, only when a replay actually happens.
///
/// Made with the service, so that clones made before its first request (one per request, as
/// servers and `oneshot` callers make them) share it rather than each allocating its own.
pub(crate) struct Spare<S, P> {
    pub(crate) shared: Arc<Shared<P>>,
    /// A clone of the service the first request went through.
    service: OnceLock<Mutex<S>>,
}

impl<S, P> Spare<S, P> {
    pub(crate) fn new(shared: Arc<Shared<P>>) -> Self {
        Self {
            shared,
            service: OnceLock::new(),
        }
    }
}

impl<S: Clone, P> Spare<S, P> {
    pub(crate) fn with_service(shared: Arc<Shared<P>>, service: S) -> Self {
        Self {
            shared,
            service: OnceLock::from(Mutex::new(service)),
        }
    }

    /// Keeps a clone of `service` for replays, unless one is kept already: at every request,
    /// before its future is made.
    pub(crate) fn keep(&self, service: &S) {
        self.service.get_or_init(|| Mutex::new(service.clone()));
    }

    /// A service of its own for one replay, not yet ready.
    pub(crate) fn service(&self) -> S {
        let kept = self
            .service
            .get()
            .expect("a spare service is kept at every request");
        // Only `clone` runs under the lock; a clone that panicked poisoned nothing we rely on.
        kept.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl<K> Kept<K> {
    /// Splits `request` (not yet carrying `Authorization`) into the one to send now and, if
    /// `policy` keeps its body, what a replay needs. The head costs one allocation; a `Clone`
    /// body costs its clone.
    pub(crate) fn split<B, P>(policy: &P, request: Request<B>) -> (Request<B>, Option<Self>)
    where
        P: ReplayPolicy<B, Kept = K>,
    {
        let (parts, body) = request.into_parts();
        let (body, kept) = policy.keep(body);
        let request = Request::from_parts(parts, body);
        let kept = kept.map(|body| Self {
            head: Head::of(&request),
            body,
        });
        (request, kept)
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
        let (tokens, generation) = config.current(epoch)?;
        let uri = config.attach_request(&tokens.0, &mut request)?;
        let response = ready.call(request).await.map_err(Error::inner)?;
        if uri.is_some() {
            config.remember(uri.as_deref(), response.headers());
        }
        Ok((response, generation))
    }

    fn head(response: &Response<ResBody>) -> (StatusCode, &HeaderMap) {
        (response.status(), response.headers())
    }
}

/// A kept head and body, rebuilt into a request with the layer's replay policy.
struct Rebuild<'a, P: ReplayPolicy<B>, B> {
    policy: &'a P,
    head: Head,
    body: Option<P::Kept>,
}

impl<'a, P: ReplayPolicy<B>, B> Rebuild<'a, P, B> {
    fn new(policy: &'a P, Kept { head, body }: Kept<P::Kept>) -> Self {
        let body = Some(body);
        Self { policy, head, body }
    }
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
        self.head.request(body)
    }
}

/// After a rejection of a request sent through `Refresh`: see [`round::recover`]. Replays go
/// through a clone of the kept spare service.
pub(crate) async fn recover<S, B, ResBody, P>(
    spare: Arc<Spare<S, P>>,
    kept: Option<Kept<P::Kept>>,
    seen: (u64, u64),
    rejected: Response<ResBody>,
    verdict: Verdict,
) -> Result<Response<ResBody>, Error>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send,
    P: ReplayPolicy<B>,
{
    let (config, policy) = (&spare.shared.config, &spare.shared.policy);
    let kept = kept.map(|kept| {
        let sender = || Tower::new(spare.service());
        (Rebuild::new(policy, kept), sender)
    });
    round::recover(config, kept, seen, rejected, verdict).await
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
    let spare = Spare::with_service(Arc::clone(&shared), service.clone());
    let keep = |request| {
        let (request, kept) = Kept::split(policy, request);
        (request, kept.map(|kept| Rebuild::new(policy, kept)))
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
