//! [`OAuthRefresher`]: the RFC 6749 §6 refresh over any tower HTTP service.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use tower::ServiceExt;

use super::{RefreshFailure, Refresher, Tokens};
use crate::BoxError;

/// An RFC 6749 §6 refresh over any tower HTTP service: `POST` with
/// `grant_type=refresh_token`, an RFC 6749 §5.1 response back.
///
/// Any 2xx answer is a success (NestJS, for one, answers `POST` with 201 Created). An
/// `invalid_grant` answer is permanent (the session expires); any other refusal, and every
/// transport error, is transient. A 2xx that cannot be read is permanent, since the server has
/// consumed the refresh token. Response bodies over 64 KiB are refused.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
/// use tower_jwt_refresh::client::OAuthRefresher;
///
/// let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// let refresher = OAuthRefresher::new(http, "http://127.0.0.1:3000/oauth/token".parse().unwrap())
///     .client_id("my-app");
/// # let _ = refresher;
/// ```
#[derive(Clone)]
pub struct OAuthRefresher<S> {
    client: S,
    token_url: Uri,
    client_id: Option<String>,
    #[cfg(feature = "dpop")]
    dpop: Option<crate::client::dpop::DpopKey>,
}

impl<S> fmt::Debug for OAuthRefresher<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthRefresher")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl<S> OAuthRefresher<S> {
    /// Refreshes at `token_url` through `client`.
    pub fn new(client: S, token_url: Uri) -> Self {
        Self {
            client,
            token_url,
            client_id: None,
            #[cfg(feature = "dpop")]
            dpop: None,
        }
    }

    /// Sends each refresh with a DPoP proof signed by `key` (RFC 9449 §5), so the server
    /// binds the new tokens to it; a refresh token bound to a key is refused without a proof
    /// from it. The token endpoint's `DPoP-Nonce` is remembered in the key; a
    /// `use_dpop_nonce` refusal is answered by one more request with the new nonce, which
    /// the server has not counted as a use of the refresh token.
    ///
    /// Give the [`RefreshLayer`](crate::client::RefreshLayer) the same key
    /// ([`RefreshLayer::dpop`](crate::client::RefreshLayer::dpop)).
    #[cfg(feature = "dpop")]
    #[must_use]
    pub fn dpop(mut self, key: crate::client::dpop::DpopKey) -> Self {
        self.dpop = Some(key);
        self
    }

    /// Sends `client_id` with each refresh, as public clients do.
    #[must_use]
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// The form `POST` that trades `refresh_token`, with a DPoP proof when there is a key.
    fn request(&self, refresh_token: &str) -> Result<Request<Full<Bytes>>, RefreshFailure> {
        let mut form = form_urlencoded(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ]);
        if let Some(id) = &self.client_id {
            form.push('&');
            form.push_str(&form_urlencoded(&[("client_id", id)]));
        }
        let mut request = Request::new(Full::new(Bytes::from(form)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.token_url.clone();
        let headers = request.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        #[cfg(feature = "dpop")]
        if let Some(key) = &self.dpop {
            let proof = key
                .proof(&Method::POST, &self.token_url)
                .sign()
                .map_err(RefreshFailure::transient)?;
            let proof = HeaderValue::try_from(proof).map_err(RefreshFailure::transient)?;
            headers.insert("dpop", proof);
        }
        Ok(request)
    }

    /// Remembers the token endpoint's DPoP nonce; whether the answer carried one.
    fn remember_nonce(&self, headers: &http::HeaderMap) -> bool {
        #[cfg(feature = "dpop")]
        if let Some(key) = &self.dpop {
            return key.remember_nonce(&self.token_url, headers);
        }
        let _ = headers;
        false
    }
}

impl<S, B> Refresher for OAuthRefresher<S>
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async fn refresh(&self, refresh_token: &str) -> Result<Tokens, RefreshFailure> {
        let mut nonce_retried = false;
        loop {
            let response = self
                .client
                .clone()
                .oneshot(self.request(refresh_token)?)
                .await
                .map_err(|e| RefreshFailure::Transient(e.into()))?;
            let status = response.status();
            let retry_after = retry_after(response.headers());
            let new_nonce = self.remember_nonce(response.headers());
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(RefreshFailure::Transient)?
                .to_bytes();
            if status.is_success() {
                return read_tokens(&body);
            }
            let code = error_code(&body);
            // RFC 9449 §8: the proof lacked the server's nonce, which came with the refusal.
            if code.as_deref() == Some("use_dpop_nonce") && new_nonce && !nonce_retried {
                nonce_retried = true;
                continue;
            }
            let refusal = read_refusal(status, code);
            return Err(match (refusal, retry_after) {
                (refusal @ RefreshFailure::Transient(_), Some(after)) => refusal.retry_after(after),
                (refusal, _) => refusal,
            });
        }
    }
}

/// A `Retry-After` given in seconds (RFC 9110 §10.2.3), as a token endpoint answering 503
/// sends it. The HTTP-date form is not read: the backoff's own delay applies then.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let seconds = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    seconds.trim().parse::<u64>().ok().map(Duration::from_secs)
}

const MAX_RESPONSE: usize = 64 * 1024;

/// The RFC 6749 §5.1 fields read.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<Seconds>,
    token_type: Option<String>,
}

/// `expires_in`: a number (some servers send `3599.0`), or a string of one. A value that is
/// not a positive number leaves the lifetime unknown rather than failing the response: the
/// server has rotated already.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(f64),
    Text(String),
    Other(serde::de::IgnoredAny),
}

impl Seconds {
    fn duration(&self) -> Option<Duration> {
        let seconds = match self {
            Self::Number(n) => *n,
            Self::Text(s) => s.trim().parse().ok()?,
            Self::Other(_) => return None,
        };
        (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds.min(1e9)))
    }
}

/// The RFC 6749 §5.2 error code of a refusal.
#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

/// The tokens of a 2xx answer.
fn read_tokens(body: &[u8]) -> Result<Tokens, RefreshFailure> {
    // The server has consumed the refresh token: an answer we cannot read leaves nothing to
    // retry with, so the session is over.
    let parsed: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| RefreshFailure::permanent(format!("unreadable token response: {e}")))?;
    Ok(Tokens {
        access_token: parsed.access_token,
        refresh_token: parsed.refresh_token,
        expires_in: parsed.expires_in.as_ref().and_then(Seconds::duration),
        token_type: parsed.token_type,
    })
}

/// The RFC 6749 §5.2 error code of a refusal's body, if it has one.
fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorResponse>(body)
        .map(|e| e.error)
        .ok()
}

/// The failure a refusal with error `code` stands for.
fn read_refusal(status: StatusCode, code: Option<String>) -> RefreshFailure {
    let message = format!(
        "refresh answered {status} ({})",
        code.as_deref().unwrap_or("no error code")
    );
    // Only `invalid_grant` says the refresh token itself is dead; anything else (a
    // misconfigured client, a proxy, a 5xx) may pass and must not end sessions.
    if code.as_deref() == Some("invalid_grant") {
        RefreshFailure::permanent(message)
    } else {
        RefreshFailure::transient(message)
    }
}

/// `application/x-www-form-urlencoded` pairs.
fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    const SAFE: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, SAFE),
                utf8_percent_encode(v, SAFE)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes_everything_but_unreserved() {
        assert_eq!(
            form_urlencoded(&[("a", "b c+d/e=f&g.h~i")]),
            "a=b%20c%2Bd%2Fe%3Df%26g.h~i"
        );
    }

    /// A token endpoint that answers every refresh with `status` and `body`.
    fn answering(status: u16, body: &'static str) -> impl Refresher {
        let endpoint = tower::service_fn(move |_: Request<Full<Bytes>>| async move {
            let response = Response::builder()
                .status(status)
                .body(Full::new(Bytes::from_static(body.as_bytes())))?;
            Ok::<_, http::Error>(response)
        });
        OAuthRefresher::new(endpoint, Uri::from_static("http://auth.test/token"))
    }

    #[tokio::test]
    async fn any_2xx_answer_is_a_success() {
        const TOKENS: &str = r#"{"access_token":"a2","refresh_token":"r2","expires_in":60}"#;
        // NestJS answers every POST with 201 Created unless told otherwise.
        for status in [200, 201, 203] {
            let tokens = answering(status, TOKENS).refresh("r1").await;
            let tokens = tokens.unwrap_or_else(|e| panic!("{status}: {e:?}"));
            assert_eq!(
                (
                    tokens.access_token.as_str(),
                    tokens.refresh_token.as_deref()
                ),
                ("a2", Some("r2")),
                "{status}"
            );
        }
        // A 2xx without tokens: the server has consumed the refresh token, nothing to retry.
        let empty = answering(204, "").refresh("r1").await;
        assert!(
            matches!(empty, Err(RefreshFailure::Permanent(_))),
            "{empty:?}"
        );
        // Not a success: a redirect is not followed, and may pass.
        let moved = answering(302, TOKENS).refresh("r1").await;
        assert!(
            matches!(moved, Err(RefreshFailure::Transient(_))),
            "{moved:?}"
        );
    }

    #[tokio::test]
    async fn a_503_with_retry_after_carries_its_hint_and_invalid_grant_stays_permanent() {
        let endpoint = |status: u16, retry: &'static str, body: &'static str| {
            let endpoint = tower::service_fn(move |_: Request<Full<Bytes>>| async move {
                Response::builder()
                    .status(status)
                    .header("retry-after", retry)
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
            });
            OAuthRefresher::new(endpoint, Uri::from_static("http://auth.test/token"))
        };
        let busy = r#"{"error":"temporarily_unavailable"}"#;
        let unavailable = endpoint(503, "7", busy).refresh("r1").await;
        assert!(
            matches!(unavailable, Err(RefreshFailure::RetryAfter(_, d)) if d == Duration::from_secs(7)),
            "{unavailable:?}"
        );
        // An HTTP-date (not read) leaves a plain transient failure.
        let dated = endpoint(503, "Wed, 21 Oct 2015 07:28:00 GMT", busy)
            .refresh("r1")
            .await;
        assert!(
            matches!(dated, Err(RefreshFailure::Transient(_))),
            "{dated:?}"
        );
        // A dead refresh token is dead whatever the header says.
        let refused = endpoint(400, "7", r#"{"error":"invalid_grant"}"#)
            .refresh("r1")
            .await;
        assert!(
            matches!(refused, Err(RefreshFailure::Permanent(_))),
            "{refused:?}"
        );
    }

    #[cfg(feature = "dpop")]
    #[tokio::test]
    async fn a_token_endpoint_asking_for_nonces_again_and_again_gets_two_requests() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let endpoint = tower::service_fn(move |req: Request<Full<Bytes>>| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                assert!(
                    req.headers().contains_key("dpop"),
                    "every refresh carries a proof"
                );
                let body = r#"{"error":"use_dpop_nonce"}"#;
                let response = Response::builder()
                    .status(400)
                    .header("dpop-nonce", format!("nonce-{n}"))
                    .body(Full::new(Bytes::from_static(body.as_bytes())))?;
                Ok::<_, http::Error>(response)
            }
        });
        let key = crate::client::dpop::DpopKey::generate().unwrap();
        let refresher = OAuthRefresher::new(endpoint, Uri::from_static("http://auth.test/token"))
            .dpop(key.clone());
        let refused = refresher.refresh("r1").await;
        assert!(
            matches!(refused, Err(RefreshFailure::Transient(_))),
            "{refused:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one retry, not a loop");
        let origin = Uri::from_static("http://auth.test");
        assert_eq!(key.nonce(&origin).as_deref(), Some("nonce-1"));
    }

    #[test]
    fn expires_in_is_read_leniently() {
        let read = |json: &str| {
            serde_json::from_str::<TokenResponse>(&format!(
                r#"{{"access_token":"a","expires_in":{json}}}"#
            ))
            .unwrap()
            .expires_in
            .and_then(|s| s.duration())
        };
        assert_eq!(read("3599"), Some(Duration::from_secs(3599)));
        assert_eq!(read("3599.0"), Some(Duration::from_secs(3599)));
        assert_eq!(read(r#""60""#), Some(Duration::from_secs(60)));
        for unknown in ["0", "-1", "null", r#""soon""#, "{}"] {
            assert_eq!(read(unknown), None, "{unknown}");
        }
    }
}
