//! The response futures: [`ResponseFuture`] of [`JwtAuth`](super::JwtAuth), and [`FormFuture`]
//! of [`FormToken`](super::FormToken).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

pub use crate::server::form::FormFuture;

use crate::server::body::AuthBody;
use crate::server::decision::{Auth, PendingCheck, Verdict};
use crate::server::rejection::{NonceSource, Rejection, is_grpc};

pin_project! {
    /// The response future of [`JwtAuth`](super::JwtAuth).
    ///
    /// On the common path it is the inner service's future with no extra allocation. Only a
    /// check that needs I/O (an asynchronous deny-list hook, or a key refetch) holds the
    /// request and the ready inner service until it resolves.
    pub struct ResponseFuture<S, ReqBody, C>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, C>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, C>
    where
        S: Service<Request<ReqBody>>,
    {
        Inner {
            #[pin]
            future: S::Future,
        },
        // A DPoP request that passed, on a layer that requires nonces: the answer carries
        // the current one.
        InnerWithNonce {
            #[pin]
            future: S::Future,
            nonce: Option<NonceSource>,
        },
        Rejected {
            rejection: Rejection,
            grpc: bool,
            auth: Arc<Auth<C>>,
        },
        Checking {
            check: PendingCheck<C>,
            // Boxed: this path allocates anyway, and the common futures stay small.
            parked: Option<Box<(Request<ReqBody>, S)>>,
            auth: Arc<Auth<C>>,
        },
    }
}

impl<S, ReqBody, C> ResponseFuture<S, ReqBody, C>
where
    S: Service<Request<ReqBody>>,
    C: Send + Sync + 'static,
{
    /// The inner service's answer to a request that passed.
    pub(crate) fn inner(future: S::Future) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    /// The inner service's answer to a DPoP request that passed, with the current nonce.
    pub(crate) fn inner_with_nonce(future: S::Future, nonce: Option<NonceSource>) -> Self {
        Self {
            state: State::InnerWithNonce { future, nonce },
        }
    }

    /// A request whose verdict is known: into `service` with its claims, or to its rejection.
    pub(crate) fn decided(
        verdict: Verdict<C>,
        request: Request<ReqBody>,
        service: &mut S,
        auth: &Arc<Auth<C>>,
    ) -> Self {
        Self {
            state: State::decided(verdict, request, service, auth),
        }
    }

    /// A request whose verdict needs I/O; it holds the request and the ready `service`.
    pub(crate) fn pending(
        check: PendingCheck<C>,
        request: Request<ReqBody>,
        service: S,
        auth: Arc<Auth<C>>,
    ) -> Self {
        let parked = Some(Box::new((request, service)));
        Self {
            state: State::Checking {
                check,
                parked,
                auth,
            },
        }
    }
}

impl<S, ReqBody, C> State<S, ReqBody, C>
where
    S: Service<Request<ReqBody>>,
    C: Send + Sync + 'static,
{
    fn decided(
        verdict: Verdict<C>,
        mut request: Request<ReqBody>,
        service: &mut S,
        auth: &Arc<Auth<C>>,
    ) -> Self {
        auth.metrics.verdict(&verdict);
        match verdict {
            Ok(claims) => {
                if let Some(claims) = claims {
                    request.extensions_mut().insert(claims);
                }
                match auth.success_nonce(&request) {
                    None => State::Inner {
                        future: service.call(request),
                    },
                    nonce => State::InnerWithNonce {
                        future: service.call(request),
                        nonce,
                    },
                }
            }
            Err(rejection) => {
                tracing::debug!(%rejection, "bearer token refused");
                State::Rejected {
                    rejection,
                    grpc: is_grpc(request.method(), request.headers()),
                    auth: Arc::clone(auth),
                }
            }
        }
    }
}

impl<S, ReqBody, ResBody, C> Future for ResponseFuture<S, ReqBody, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: Send + Sync + 'static,
{
    type Output = Result<Response<AuthBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Inner { future } => {
                    return future.poll(cx).map_ok(|res| res.map(AuthBody::inner));
                }
                StateProj::InnerWithNonce { future, nonce } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(nonce) = nonce.take().and_then(|source| source())
                        && let Ok(nonce) = HeaderValue::try_from(nonce)
                    {
                        response.headers_mut().insert("dpop-nonce", nonce);
                    }
                    return Poll::Ready(Ok(response.map(AuthBody::inner)));
                }
                StateProj::Rejected {
                    rejection,
                    grpc,
                    auth,
                } => {
                    return Poll::Ready(Ok(auth.responder.respond(*rejection, *grpc)));
                }
                StateProj::Checking {
                    check,
                    parked,
                    auth,
                } => {
                    let verdict = ready!(check.as_mut().poll(cx));
                    let (request, mut service) = *parked.take().expect("polled after completion");
                    State::decided(verdict, request, &mut service, auth)
                }
            };
            this.state.set(next);
        }
    }
}

impl<S, ReqBody, C> fmt::Debug for ResponseFuture<S, ReqBody, C>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Inner { .. } | State::InnerWithNonce { .. } => "inner",
            State::Rejected { .. } => "rejected",
            State::Checking { .. } => "checking",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
