//! [`FormTokenLayer`]: reads the `access_token` form parameter (RFC 6750 §2.2).
//!
//! Reading a form parameter means buffering the body, which [`JwtAuth`](crate::server::JwtAuth)
//! never does. This separate layer, placed in front of a layer built with
//! [`JwtAuthLayer::form`](crate::server::JwtAuthLayer::form), buffers `application/x-www-form-urlencoded`
//! bodies of non-GET requests up to a limit, finds `access_token`, and passes the whole body on
//! unchanged. Other requests pass straight through.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::http_util::{declares_more_than, form_decode, has_media_type, pairs};
use crate::server::body::AuthBody;
use crate::server::rejection::RequestError;

/// What [`FormToken`] found, for [`JwtAuth`](crate::server::JwtAuth) to read.
#[derive(Debug, Clone)]
pub(crate) enum FormAccessToken {
    Token(String),
    Invalid(RequestError),
}

/// Layers [`FormToken`]. The default body limit is 64 KiB, and the default read timeout 10 s.
///
/// # Example
///
/// ```
/// use axum::{Router, routing::post};
/// use tower::ServiceBuilder;
/// use tower_jwt_refresh::keys::{Algorithm, Key};
/// use tower_jwt_refresh::server::{FormTokenLayer, JwtAuthLayer};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = Key::hmac(Algorithm::HS256, [7u8; 32])?;
/// let app: Router = Router::new().route("/submit", post(|| async { "ok" })).layer(
///     ServiceBuilder::new()
///         .layer(FormTokenLayer::new())
///         .layer(JwtAuthLayer::new(key).form()),
/// );
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FormTokenLayer {
    limit: usize,
    read_timeout: Duration,
}

impl Default for FormTokenLayer {
    fn default() -> Self {
        Self {
            limit: 64 * 1024,
            read_timeout: Duration::from_secs(10),
        }
    }
}

impl FormTokenLayer {
    /// A layer buffering form bodies of up to 64 KiB, for at most 10 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest form body searched, in bytes; a larger one counts as unreadable.
    #[must_use]
    pub fn limit(mut self, bytes: usize) -> Self {
        self.limit = bytes;
        self
    }

    /// How long reading a form body may take before it counts as unreadable.
    #[must_use]
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }
}

impl<S> Layer<S> for FormTokenLayer {
    type Service = FormToken<S>;

    fn layer(&self, inner: S) -> FormToken<S> {
        FormToken {
            inner,
            config: *self,
        }
    }
}

/// Finds the `access_token` form parameter; see [`FormTokenLayer`].
#[derive(Debug, Clone)]
pub struct FormToken<S> {
    inner: S,
    config: FormTokenLayer,
}

impl<S> FormToken<S> {
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

fn is_form<B>(req: &Request<B>) -> bool {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return false;
    }
    has_media_type(req.headers(), "application/x-www-form-urlencoded")
}

impl<S, B> Service<Request<B>> for FormToken<S>
where
    S: Service<Request<AuthBody<B>>> + Clone,
    B: Body<Data = Bytes>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = FormFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if !is_form(&req) {
            return FormFuture::inner(self.inner.call(req.map(AuthBody::inner)));
        }
        if declares_more_than(req.headers(), self.config.limit) {
            // Marked without reading, so the body is passed on untouched.
            req.extensions_mut()
                .insert(FormAccessToken::Invalid(RequestError::FormBody));
            return FormFuture::inner(self.inner.call(req.map(AuthBody::inner)));
        }
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        FormFuture {
            state: State::Collecting {
                // Boxed so it can be polled here and handed on afterwards; only on this path.
                body: Some(Box::pin(body)),
                buf: Vec::new(),
                limit: self.config.limit,
                deadline: tokio::time::sleep(self.config.read_timeout),
                parts: Some(parts),
                service: Some(service),
            },
        }
    }
}

pin_project! {
    /// The response future of [`FormToken`].
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
            deadline: tokio::time::Sleep,
            parts: Option<http::request::Parts>,
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
    fn inner(future: S::Future) -> Self {
        Self {
            state: State::Inner { future },
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
                    mut deadline,
                    parts,
                    service,
                } => {
                    let stream = body.as_mut().expect("polled after completion");
                    let complete = loop {
                        if deadline.as_mut().poll(cx).is_ready() {
                            break false;
                        }
                        match ready!(stream.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => match frame.into_data() {
                                Ok(data) => {
                                    buf.extend_from_slice(&data);
                                    if buf.len() > *limit {
                                        break false;
                                    }
                                }
                                // Trailers end a form body.
                                Err(_) => break true,
                            },
                            Some(Err(_)) => break false,
                            None => break true,
                        }
                    };
                    let mut parts = parts.take().expect("polled after completion");
                    let mut service = service.take().expect("polled after completion");
                    let rest = body.take().expect("polled after completion");
                    let read = Bytes::from(std::mem::take(buf));
                    let found = if complete {
                        find_access_token(&read)
                    } else {
                        Some(FormAccessToken::Invalid(RequestError::FormBody))
                    };
                    if let Some(found) = found {
                        parts.extensions.insert(found);
                    }
                    // What was read, then whatever the stream still holds: nothing is lost.
                    let request = Request::from_parts(parts, AuthBody::prefixed(read, rest));
                    State::Inner {
                        future: service.call(request),
                    }
                }
            };
            this.state.set(next);
        }
    }
}

impl<S, B> fmt::Debug for FormFuture<S, B>
where
    S: Service<Request<AuthBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FormFuture").finish_non_exhaustive()
    }
}

/// The one `access_token` parameter of a form body.
fn find_access_token(body: &[u8]) -> Option<FormAccessToken> {
    let body = std::str::from_utf8(body).ok()?;
    let mut found = None;
    for (key, value) in pairs(body) {
        if key != "access_token" {
            continue;
        }
        if found.is_some() {
            return Some(FormAccessToken::Invalid(RequestError::MultipleCredentials));
        }
        found = Some(FormAccessToken::Token(form_decode(value).into_owned()));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CONTENT_TYPE;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    async fn run(req: Request<Full<Bytes>>) -> (Option<FormAccessToken>, Bytes) {
        let svc = FormTokenLayer::new().limit(32).layer(service_fn(
            |req: Request<AuthBody<Full<Bytes>>>| async move {
                let found = req.extensions().get::<FormAccessToken>().cloned();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                Ok::<_, Infallible>((found, body))
            },
        ));
        svc.oneshot(req).await.unwrap()
    }

    fn form(body: &'static str) -> Request<Full<Bytes>> {
        Request::post("/")
            .header(
                CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    #[tokio::test]
    async fn finds_the_token_and_keeps_the_body() {
        let (found, body) = run(form("a=1&access_token=t%2Bk")).await;
        assert!(matches!(found, Some(FormAccessToken::Token(t)) if t == "t+k"));
        assert_eq!(body, "a=1&access_token=t%2Bk");
    }

    #[tokio::test]
    async fn duplicates_and_oversized_bodies_are_marked() {
        let (found, _) = run(form("access_token=a&access_token=b")).await;
        assert!(matches!(
            found,
            Some(FormAccessToken::Invalid(RequestError::MultipleCredentials))
        ));
        // Over the 32-byte limit (no Content-Length): marked, and the body still arrives whole.
        let long = "access_token=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let chunked = Request::post("/")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(chunked(long).await)
            .unwrap();
        let svc = FormTokenLayer::new().limit(32).layer(service_fn(
            |req: Request<AuthBody<_>>| async move {
                let found = req.extensions().get::<FormAccessToken>().cloned();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                Ok::<_, Infallible>((found, body))
            },
        ));
        let (found, body) = svc.oneshot(chunked).await.unwrap();
        assert!(matches!(
            found,
            Some(FormAccessToken::Invalid(RequestError::FormBody))
        ));
        assert_eq!(body, long);
    }

    /// `s` as a body of 5-byte frames with no declared length.
    async fn chunked(s: &'static str) -> http_body_util::channel::Channel<Bytes, Infallible> {
        let (mut tx, body) = http_body_util::channel::Channel::new(64);
        for chunk in s.as_bytes().chunks(5) {
            tx.send_data(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        body
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out_and_is_still_passed_on() {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
        let req = Request::post("/")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .unwrap();
        tx.send_data(Bytes::from_static(b"a=1")).await.unwrap();
        let svc = FormTokenLayer::new()
            .read_timeout(Duration::from_secs(5))
            .layer(service_fn(|req: Request<AuthBody<_>>| async move {
                let found = req.extensions().get::<FormAccessToken>().cloned();
                Ok::<_, Infallible>((found, req.into_body()))
            }));
        // The client never finishes; paused time lets the timeout fire without waiting.
        let (found, rest) = svc.oneshot(req).await.unwrap();
        assert!(matches!(
            found,
            Some(FormAccessToken::Invalid(RequestError::FormBody))
        ));
        tx.send_data(Bytes::from_static(b"&b=2")).await.unwrap();
        drop(tx);
        assert_eq!(rest.collect().await.unwrap().to_bytes(), "a=1&b=2");
    }

    #[tokio::test]
    async fn other_requests_pass_untouched() {
        let json = Request::post("/")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(b"access_token=x")))
            .unwrap();
        let (found, body) = run(json).await;
        assert!(found.is_none());
        assert_eq!(body, "access_token=x");
        let get = Request::get("/")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(b"access_token=x")))
            .unwrap();
        assert!(run(get).await.0.is_none());
    }
}
