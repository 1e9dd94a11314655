//! [`FormTokenLayer`]: reads the `access_token` form parameter (RFC 6750 §2.2).
//!
//! Reading a form parameter means buffering the body, which [`JwtAuth`](crate::server::JwtAuth)
//! never does. This separate layer, placed in front of a layer built with
//! [`JwtAuthLayer::token_from_form`](crate::server::JwtAuthLayer::token_from_form), buffers `application/x-www-form-urlencoded`
//! bodies of non-GET requests up to a limit, finds `access_token`, and passes the whole body on
//! unchanged. Other requests pass straight through.

use crate::http_util::{form_decode, pairs};
use crate::server::rejection::RequestError;

mod future;
mod layer;
mod service;

pub use future::FormFuture;
pub use layer::FormTokenLayer;
pub use service::FormToken;

/// What [`FormToken`] found, for [`JwtAuth`](crate::server::JwtAuth) to read.
#[derive(Debug, Clone)]
pub(crate) enum FormAccessToken {
    Token(String),
    Invalid(RequestError),
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
    use crate::server::body::AuthBody;
    use bytes::Bytes;
    use http::Request;
    use http::header::CONTENT_TYPE;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use std::time::Duration;
    use tower::{ServiceExt, service_fn};
    use tower_layer::Layer;

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
