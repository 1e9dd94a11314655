//! [`ResponseFuture`], and the slow paths: refreshing first, and recovering from a rejection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderValue, Method, Request, Response, Uri, Version};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;

use super::error::Error;
use super::layer::Shared;
use super::replay::ReplayPolicy;
use super::session::Joined;
use crate::BoxError;

/// What a replay needs of the request besides its body.
pub(crate) struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
}

impl Template {
    pub(crate) fn of(parts: &Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions: parts.extensions.clone(),
        }
    }

    fn build<B>(&self, body: B, authorization: HeaderValue) -> Request<B> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        *request.extensions_mut() = self.extensions.clone();
        request.headers_mut().insert(AUTHORIZATION, authorization);
        request
    }
}

/// What a request keeps for a replay: the request without its body, the kept body, and a
/// service to send it through.
pub(crate) struct Kept<S, K> {
    pub(crate) template: Template,
    pub(crate) body: K,
    pub(crate) service: S,
}

type SlowFuture<R> = Pin<Box<dyn Future<Output = Result<R, Error>> + Send>>;

pin_project! {
    /// The response future of [`Refresh`](super::Refresh).
    ///
    /// With a valid token it is the inner service's future plus one check of the response;
    /// a refresh, a wait or a replay moves into a boxed future, since those are rare.
    pub struct ResponseFuture<S, B, P>
    where
        S: Service<Request<B>>,
        P: ReplayPolicy<B>,
    {
        #[pin]
        state: State<S, B, P>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, P>
    where
        S: Service<Request<B>>,
        P: ReplayPolicy<B>,
    {
        First {
            #[pin]
            future: S::Future,
            kept: Option<Kept<S, P::Kept>>,
            shared: Option<Arc<Shared<P>>>,
            generation: u64,
        },
        PassThrough {
            #[pin]
            future: S::Future,
        },
        Slow {
            future: SlowFuture<S::Response>,
        },
        Failed {
            error: Option<Error>,
        },
    }
}

impl<S, B, P> ResponseFuture<S, B, P>
where
    S: Service<Request<B>>,
    P: ReplayPolicy<B>,
{
    pub(crate) fn first(
        future: S::Future,
        kept: Option<Kept<S, P::Kept>>,
        shared: Arc<Shared<P>>,
        generation: u64,
    ) -> Self {
        Self {
            state: State::First {
                future,
                kept,
                shared: Some(shared),
                generation,
            },
        }
    }

    pub(crate) fn pass_through(future: S::Future) -> Self {
        Self {
            state: State::PassThrough { future },
        }
    }

    pub(crate) fn slow(future: SlowFuture<S::Response>) -> Self {
        Self {
            state: State::Slow { future },
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<S, B, ResBody, P> Future for ResponseFuture<S, B, P>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    ResBody: Send + 'static,
    P: ReplayPolicy<B>,
{
    type Output = Result<Response<ResBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::First {
                    future,
                    kept,
                    shared,
                    generation,
                } => {
                    let response = ready!(future.poll(cx)).map_err(Error::inner)?;
                    let shared = shared.take().expect("polled after completion");
                    if !shared.rejects(&response) {
                        return Poll::Ready(Ok(response));
                    }
                    let recovery = recover(shared, kept.take(), *generation, response);
                    State::Slow {
                        future: Box::pin(recovery),
                    }
                }
                StateProj::PassThrough { future } => {
                    return future.poll(cx).map_err(Error::inner);
                }
                StateProj::Slow { future } => return future.as_mut().poll(cx),
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().expect("polled after completion")));
                }
            };
            this.state.set(next);
        }
    }
}

impl<S, B, P> fmt::Debug for ResponseFuture<S, B, P>
where
    S: Service<Request<B>>,
    P: ReplayPolicy<B>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::First { .. } => "first",
            State::PassThrough { .. } => "pass-through",
            State::Slow { .. } => "slow",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// Waits until the session holds tokens newer than generation `seen`: at once if it does,
/// else by joining or starting the refresh.
async fn refresh_after<P>(shared: &Shared<P>, seen: u64) -> Result<(), Error> {
    match shared.session.join(seen, &shared.settings)? {
        Joined::Newer => Ok(()),
        Joined::Wait(waiter) => shared.session.wait(waiter, &shared.settings).await,
    }
}

/// After a rejection: get newer tokens (a stale rejection needs no refresh), then replay, at
/// most `max_replays` times. Without a kept body, the refresh still happens and the rejection
/// is returned, so the next request succeeds.
async fn recover<S, B, ResBody, P>(
    shared: Arc<Shared<P>>,
    kept: Option<Kept<S, P::Kept>>,
    mut seen: u64,
    mut rejected: Response<ResBody>,
) -> Result<Response<ResBody>, Error>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<B>,
{
    let Some(Kept {
        template,
        body,
        mut service,
    }) = kept
    else {
        refresh_after(&shared, seen).await?;
        return Ok(rejected);
    };
    let mut body = Some(body);
    for replay in 0..shared.max_replays {
        let stale = shared.session.load().generation > seen;
        let Some(next_body) = body.take().and_then(|kept| shared.policy.rebuild(kept)) else {
            // Nothing to replay: still refresh, so the next request succeeds.
            refresh_after(&shared, seen).await?;
            return Ok(rejected);
        };
        // The rejection will not be returned: let its connection go before waiting.
        drop(rejected);
        refresh_after(&shared, seen).await?;
        let header = {
            let state = shared.session.load();
            if state.expired {
                return Err(Error::SessionExpired);
            }
            let Some(tokens) = &state.tokens else {
                return Err(Error::NotAuthenticated);
            };
            seen = state.generation;
            tokens.0.header(shared.raw_authorization).clone()
        };
        let next_body = if replay + 1 < shared.max_replays {
            let (send, keep) = shared.policy.keep(next_body);
            body = keep;
            send
        } else {
            next_body
        };
        shared.session.count_replay(stale);
        tracing::debug!(stale, "replaying a rejected request");
        let service = service.ready().await.map_err(Error::inner)?;
        let response = service
            .call(template.build(next_body, header))
            .await
            .map_err(Error::inner)?;
        if !shared.rejects(&response) {
            return Ok(response);
        }
        rejected = response;
    }
    if shared.max_replays == 0 {
        refresh_after(&shared, seen).await?;
    }
    Ok(rejected)
}

/// The token is about to expire: refresh first, then send. If the refresh fails but the
/// token is still valid, send with it anyway.
pub(crate) async fn proactive<S, B, ResBody, P>(
    shared: Arc<Shared<P>>,
    mut service: S,
    mut request: Request<B>,
    seen: u64,
) -> Result<Response<ResBody>, Error>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<B>,
{
    if let Err(error) = refresh_after(&shared, seen).await {
        let still_valid = {
            let state = shared.session.load();
            !state.expired
                && state
                    .tokens
                    .as_ref()
                    .is_some_and(|t| t.0.expires_at.is_none_or(|at| Instant::now() < at))
        };
        if matches!(error, Error::SessionExpired | Error::NotAuthenticated) || !still_valid {
            return Err(error);
        }
        tracing::debug!(%error, "early refresh failed; sending with the current token");
    }
    let generation = {
        let state = shared.session.load();
        if state.expired {
            return Err(Error::SessionExpired);
        }
        let Some(tokens) = &state.tokens else {
            return Err(Error::NotAuthenticated);
        };
        request.headers_mut().insert(
            AUTHORIZATION,
            tokens.0.header(shared.raw_authorization).clone(),
        );
        state.generation
    };
    let (parts, body) = request.into_parts();
    let (body, kept) = shared.policy.keep(body);
    let kept = kept.map(|body| Kept {
        template: Template::of(&parts),
        body,
        service: service.clone(),
    });
    let ready = service.ready().await.map_err(Error::inner)?;
    let response = ready
        .call(Request::from_parts(parts, body))
        .await
        .map_err(Error::inner)?;
    if !shared.rejects(&response) {
        return Ok(response);
    }
    recover(shared, kept, generation, response).await
}
