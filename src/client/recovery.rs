//! The slow paths of [`ResponseFuture`](super::ResponseFuture): refreshing before sending,
//! and recovering from a rejection by refreshing and replaying.
//!
//! Both run as one boxed future, since they are rare. Every replay drives the service it
//! goes through to readiness again, and a request waiting for a refresh holds no capacity of
//! the inner service but the one ready instance it was called with.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;

use super::config::{Config, Shared};
use super::error::Error;
use super::replay::{Head, ReplayPolicy};
use super::session::{Joined, Session};
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

/// Waits until the session holds tokens newer than generation `seen`: at once if it does,
/// else by joining or starting the refresh.
async fn refresh_after(config: &Config, seen: u64) -> Result<(), Error> {
    match config.session.join(seen, &config.settings)? {
        Joined::Newer => Ok(()),
        Joined::Wait(waiter) => config.session.wait(waiter, &config.settings).await,
    }
}

/// Drives `service` to readiness, then sends `request` through it with the session's
/// current token, read only once the service is ready (the wait may outlive a refresh), if
/// the session is still in identity `epoch`. Returns the tokens' generation with the answer.
async fn send<S, B>(
    service: &mut S,
    config: &Config,
    epoch: u64,
    mut request: Request<B>,
) -> Result<(S::Response, u64), Error>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    let ready = service.ready().await.map_err(Error::inner)?;
    let (authorization, generation) = config.authorization(epoch)?;
    request.headers_mut().insert(AUTHORIZATION, authorization);
    let response = ready.call(request).await.map_err(Error::inner)?;
    Ok((response, generation))
}

/// The body to send; when another replay may follow (`again`), a copy of it goes into `kept`
/// first.
fn keep_again<B, P: ReplayPolicy<B>>(
    policy: &P,
    body: B,
    kept: &mut Option<P::Kept>,
    again: bool,
) -> B {
    if !again {
        return body;
    }
    let (send, keep) = policy.keep(body);
    *kept = keep;
    send
}

/// After a rejection: get newer tokens (a stale rejection needs no refresh), then replay, at
/// most `max_replays` times. Without a kept body, the refresh still happens and the rejection
/// is returned, so the next request succeeds.
pub(crate) async fn recover<S, B, ResBody, P>(
    spare: Arc<Spare<S, P>>,
    kept: Option<Kept<P::Kept>>,
    (mut seen, epoch): (u64, u64),
    mut rejected: Response<ResBody>,
) -> Result<Response<ResBody>, Error>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<B>,
{
    let (config, policy) = (&spare.shared.config, &spare.shared.policy);
    let Some(Kept { head, body }) = kept else {
        refresh_after(config, seen).await?;
        return Ok(rejected);
    };
    let mut body = Some(body);
    let mut service = None;
    for replay in 0..config.max_replays {
        let stale = config.session.load().generation > seen;
        let last = replay + 1 == config.max_replays;
        let request = body
            .take()
            .and_then(|kept| policy.rebuild(kept))
            .map(|next| keep_again(policy, next, &mut body, !last))
            .and_then(|next| head.request(next));
        let Some(request) = request else {
            // Nothing to replay: still refresh, so the next request succeeds.
            refresh_after(config, seen).await?;
            return Ok(rejected);
        };
        // The rejection will not be returned: let its connection go before waiting.
        drop(rejected);
        refresh_after(config, seen).await?;
        config.session.count_replay(stale);
        tracing::debug!(stale, "replaying a rejected request");
        let service = service.get_or_insert_with(|| spare.service());
        let (response, generation) = send(service, config, epoch, request).await?;
        seen = generation;
        if !config.rejection.matches(&response) {
            return Ok(response);
        }
        rejected = response;
    }
    if config.max_replays == 0 {
        refresh_after(config, seen).await?;
    }
    Ok(rejected)
}

/// The token is about to expire: refresh first, then send. If the refresh fails but the
/// token is still valid, send with it anyway.
pub(crate) async fn refresh_first<S, B, ResBody, P>(
    shared: Arc<Shared<P>>,
    mut service: S,
    request: Request<B>,
    seen: u64,
    epoch: u64,
) -> Result<Response<ResBody>, Error>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<B>,
{
    let config = &shared.config;
    if let Err(error) = refresh_after(config, seen).await {
        let still_valid = still_valid(&config.session);
        if matches!(error, Error::SessionExpired | Error::NotAuthenticated) || !still_valid {
            return Err(error);
        }
        tracing::debug!(%error, "early refresh failed; sending with the current token");
    }
    let (request, kept) = if config.max_replays > 0 {
        Kept::split(&shared.policy, request)
    } else {
        (request, None)
    };
    let (response, generation) = send(&mut service, config, epoch, request).await?;
    if !config.rejection.matches(&response) {
        return Ok(response);
    }
    let spare = Arc::new(Spare::with_service(Arc::clone(&shared), service));
    recover(spare, kept, (generation, epoch), response).await
}

/// Whether the session's access token may still be sent: not expired, and its expiry (when
/// known) still ahead.
fn still_valid(session: &Session) -> bool {
    let state = session.load();
    !state.expired
        && state
            .tokens
            .as_ref()
            .is_some_and(|t| t.0.expires_at.is_none_or(|at| Instant::now() < at))
}
