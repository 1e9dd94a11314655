//! [`ResponseFuture`]: the hot path, a hand-written state machine over the inner future.
//!
//! With a valid token, a request's future is the inner service's future plus one check of the
//! response. Everything rarer (a refresh first, a wait, a replay) moves into one boxed future
//! from `recovery`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response, Uri};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::error::Error;
use super::proofs::Verdict;
use super::recovery::{Kept, Spare, recover};
use super::replay::ReplayPolicy;
use crate::BoxError;

/// A slow path: refreshing first, or recovering from a rejection.
pub(crate) type SlowFuture<R> = Pin<Box<dyn Future<Output = Result<R, Error>> + Send>>;

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
            kept: Option<Kept<P::Kept>>,
            spare: Option<Arc<Spare<S, P>>>,
            // The tokens' generation and identity epoch the request was sent with.
            seen: (u64, u64),
            // With DPoP, where the request went: its answer's nonce is remembered. Boxed, so
            // the future stays small without DPoP.
            uri: Option<Box<Uri>>,
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
        kept: Option<Kept<P::Kept>>,
        spare: Arc<Spare<S, P>>,
        seen: (u64, u64),
        uri: Option<Box<Uri>>,
    ) -> Self {
        Self {
            state: State::First {
                future,
                kept,
                spare: Some(spare),
                seen,
                uri,
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
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
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
                    spare,
                    seen,
                    uri,
                } => {
                    let response = ready!(future.poll(cx)).map_err(Error::inner)?;
                    let spare = spare.take().expect("polled after completion");
                    let config = &spare.shared.config;
                    if uri.is_some() {
                        config.remember(uri.as_deref(), response.headers());
                    }
                    let verdict = config.verdict(response.status(), response.headers());
                    if verdict == Verdict::Accepted {
                        return Poll::Ready(Ok(response));
                    }
                    let recovery = recover(spare, kept.take(), *seen, response, verdict);
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
