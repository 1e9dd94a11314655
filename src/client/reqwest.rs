//! The client for reqwest: [`RefreshMiddleware`] for `reqwest-middleware`, and
//! [`ReqwestTransport`], which runs [`OAuthRefresher`](super::OAuthRefresher) over a reqwest
//! `Client`.
//!
//! The middleware is a thin adapter over the same core as [`RefreshLayer`]: the same
//! [`Session`](super::Session), single flight, prefetch and stale thresholds, stale-generation
//! rule, identity epoch, bounded waits, hooks and stats. It is built from a `RefreshLayer`, so
//! it takes the same settings, and a session shared by a tower client, a tonic channel and a
//! reqwest client refreshes once for all of them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Extensions, HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use reqwest_middleware::{Middleware, Next};

use super::config::{Config, Decision};
use super::error::Error;
use super::layer::RefreshLayer;
use super::proofs::Verdict;
use super::round::{self, Copies, Sender};

/// Sends each request with the session's access token; on a rejection, refreshes once for
/// every waiting request and replays: [`RefreshLayer`] for `reqwest-middleware`.
///
/// Replays use [`reqwest::Request::try_clone`]; a request that cannot be cloned (a streaming
/// body) is sent once and gets its 401 back after the refresh, as with `RefreshLayer`. The
/// layer's replay policy (`tee_bodies`, `no_replay`) does not apply; `max_replays` does.
///
/// With [`RefreshLayer::dpop`], reqwest's redirects happen below the middleware: a
/// redirected request keeps the proof made for its first URI, which the new target refuses
/// (`htu`), and a nonce is remembered for the origin that finally answered. Turn redirects
/// off (`redirect::Policy::none()`) for DPoP-protected APIs, or follow them above.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::client::{
///     OAuthRefresher, RefreshLayer, RefreshMiddleware, ReqwestTransport, Session,
/// };
///
/// let session = Session::new();
/// let http = reqwest::Client::new();
/// let refresher = OAuthRefresher::new(
///     ReqwestTransport::new(http.clone()),
///     "http://127.0.0.1:3000/oauth/token".parse().unwrap(),
/// );
/// let middleware = RefreshMiddleware::new(RefreshLayer::new(session.clone(), refresher));
/// let client = reqwest_middleware::ClientBuilder::new(http).with(middleware).build();
/// # let _ = client;
/// ```
#[derive(Clone)]
pub struct RefreshMiddleware {
    config: Arc<Config>,
}

impl fmt::Debug for RefreshMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshMiddleware")
            .field("session", &self.config.session)
            .finish_non_exhaustive()
    }
}

impl RefreshMiddleware {
    /// The middleware with `layer`'s session, refresher and settings.
    pub fn new<P: Clone>(layer: RefreshLayer<P>) -> Self {
        Self {
            config: Arc::new(layer.into_config()),
        }
    }

    async fn run(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let config = &*self.config;
        let mut sender = Reqwest { next, extensions };
        // Owned, not a guard: the arms await.
        let state = arc_swap::Guard::into_inner(config.session.load());
        let result = match config.decide(&state) {
            Decision::Fail(error) => Err(error.into()),
            Decision::PassThrough => {
                let Reqwest { next, extensions } = sender;
                return next.run(request, extensions).await;
            }
            Decision::RefreshFirst(seen) => {
                let keep = |request: reqwest::Request| {
                    let copy = request.try_clone().map(|copy| Copy(Some(copy)));
                    (request, copy)
                };
                round::refresh_first(config, sender, request, keep, |sender| sender, seen).await
            }
            Decision::Send { seen, keep, .. } => {
                let kept = keep.then(|| request.try_clone()).flatten();
                match sender.send(config, seen.1, request).await {
                    Ok((response, generation)) => {
                        let verdict = config.verdict(response.status(), response.headers());
                        if verdict == Verdict::Accepted {
                            return Ok(response);
                        }
                        let kept = kept.map(|copy| (Copy(Some(copy)), move || sender));
                        let seen = (generation, seen.1);
                        round::recover(config, kept, seen, response, verdict).await
                    }
                    Err(error) => Err(error),
                }
            }
        };
        result.map_err(|Failure(error)| error)
    }
}

impl Middleware for RefreshMiddleware {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        request: reqwest::Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> Pin<
        Box<
            dyn Future<Output = reqwest_middleware::Result<reqwest::Response>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.run(request, extensions, next))
    }
}

/// reqwest-middleware's error, which ours convert into.
struct Failure(reqwest_middleware::Error);

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self(reqwest_middleware::Error::middleware(error))
    }
}

impl From<reqwest_middleware::Error> for Failure {
    fn from(error: reqwest_middleware::Error) -> Self {
        Self(error)
    }
}

/// Sends down the rest of the middleware chain.
struct Reqwest<'a, 'e> {
    next: Next<'a>,
    extensions: &'e mut Extensions,
}

impl Sender for Reqwest<'_, '_> {
    type Request = reqwest::Request;
    type Response = reqwest::Response;
    type Error = Failure;

    async fn send(
        &mut self,
        config: &Config,
        epoch: u64,
        mut request: reqwest::Request,
    ) -> Result<(reqwest::Response, u64), Failure> {
        // The URI is read only for a DPoP proof.
        let uri = match config.proofs.is_on() {
            true => Some(
                request
                    .url()
                    .as_str()
                    .parse::<http::Uri>()
                    .map_err(Error::proof)?,
            ),
            false => None,
        };
        let method = request.method().clone();
        let (tokens, generation) = config.current(epoch)?;
        config.attach(&tokens.0, (&method, uri.as_ref()), request.headers_mut())?;
        let response = self.next.clone().run(request, self.extensions).await?;
        if uri.is_some() {
            // The nonce belongs to whoever answered: after redirects, not the first origin.
            let answered = response.url().as_str().parse::<http::Uri>().ok();
            config.remember(answered.as_ref(), response.headers());
        }
        Ok((response, generation))
    }

    fn head(response: &reqwest::Response) -> (StatusCode, &HeaderMap) {
        (response.status(), response.headers())
    }
}

/// A request kept for replays, cloned again for each one that may follow.
struct Copy(Option<reqwest::Request>);

impl Copies for Copy {
    type Request = reqwest::Request;

    fn next(&mut self, again: bool) -> Option<reqwest::Request> {
        let request = self.0.take()?;
        if again {
            self.0 = request.try_clone();
        }
        Some(request)
    }
}

/// A reqwest `Client` as the tower HTTP service [`OAuthRefresher`](super::OAuthRefresher)
/// sends refreshes through.
///
/// Give it the plain `reqwest::Client`, not a `ClientWithMiddleware` that refreshes tokens
/// itself.
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    /// Sends through `client`.
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }
}

impl tower_service::Service<http::Request<Full<Bytes>>> for ReqwestTransport {
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, reqwest::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), reqwest::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Full<Bytes>>) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // A `Full` body is one frame, ready at once.
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let request = reqwest::Request::try_from(http::Request::from_parts(parts, body))?;
            let response = client.execute(request).await?;
            Ok(http::Response::from(response))
        })
    }
}
