//! [`FormFuture`]: reads a form body up to its limit, then calls the inner service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Request;
use http::request::Parts;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::server::body::AuthBody;
use crate::server::form::{FormAccessToken, find_access_token};
use crate::server::rejection::RequestError;

pin_project! {
    /// The response future of [`FormToken`](super::FormToken).
    pub struct FormFuture<S, B>
    where
        S: Service<Request<AuthBody<B>>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<AuthBody<B>>>,
    {
        Collecting {
            body: Option<Pin<Box<B>>>,
            buf: Vec<u8>,
            limit: usize,
            #[pin]
            deadline: Sleep,
            parts: Option<Parts>,
            service: Option<S>,
        },
        Inner {
            #[pin]
            future: S::Future,
        },
    }
}

impl<S, B> FormFuture<S, B>
where
    S: Service<Request<AuthBody<B>>>,
{
    /// The inner service's future, for a request that is not read here.
    pub(crate) fn inner(future: S::Future) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    /// Reads `body` (for at most `deadline`, up to `limit` bytes), then calls `service`.
    pub(crate) fn collecting(
        parts: Parts,
        body: B,
        limit: usize,
        deadline: Sleep,
        service: S,
    ) -> Self {
        Self {
            state: State::Collecting {
                // Boxed so it can be polled here and handed on afterwards; only on this path.
                body: Some(Box::pin(body)),
                buf: Vec::new(),
                limit,
                deadline,
                parts: Some(parts),
                service: Some(service),
            },
        }
    }
}

impl<S, B> Future for FormFuture<S, B>
where
    S: Service<Request<AuthBody<B>>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Inner { future } => return future.poll(cx),
                StateProj::Collecting {
                    body,
                    buf,
                    limit,
                    deadline,
                    parts,
                    service,
                } => {
                    let stream = body.as_mut().expect("polled after completion");
                    let complete = ready!(poll_collect(stream.as_mut(), buf, *limit, deadline, cx));
                    let found = if complete {
                        find_access_token(buf)
                    } else {
                        Some(FormAccessToken::Invalid(RequestError::FormBody))
                    };
                    let parts = parts.take().expect("polled after completion");
                    let mut service = service.take().expect("polled after completion");
                    let rest = body.take().expect("polled after completion");
                    let read = Bytes::from(std::mem::take(buf));
                    State::Inner {
                        future: service.call(reassemble(parts, found, read, rest)),
                    }
                }
            };
            this.state.set(next);
        }
    }
}

/// Reads `body` into `buf`: `true` once it ends, `false` once it fails, overruns `limit`, or
/// outlasts `deadline`.
fn poll_collect<B: Body<Data = Bytes>>(
    mut body: Pin<&mut B>,
    buf: &mut Vec<u8>,
    limit: usize,
    mut deadline: Pin<&mut Sleep>,
    cx: &mut Context<'_>,
) -> Poll<bool> {
    loop {
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        match ready!(body.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    buf.extend_from_slice(&data);
                    if buf.len() > limit {
                        return Poll::Ready(false);
                    }
                }
                // Trailers end a form body.
                Err(_) => return Poll::Ready(true),
            },
            Some(Err(_)) => return Poll::Ready(false),
            None => return Poll::Ready(true),
        }
    }
}

/// The request again, marked with what was `found`: what was read, then whatever the
/// stream still holds, so nothing is lost.
fn reassemble<B>(
    mut parts: Parts,
    found: Option<FormAccessToken>,
    read: Bytes,
    rest: Pin<Box<B>>,
) -> Request<AuthBody<B>> {
    if let Some(found) = found {
        parts.extensions.insert(found);
    }
    Request::from_parts(parts, AuthBody::prefixed(read, rest))
}

impl<S, B> fmt::Debug for FormFuture<S, B>
where
    S: Service<Request<AuthBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FormFuture").finish_non_exhaustive()
    }
}
