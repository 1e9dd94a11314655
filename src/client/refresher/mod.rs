//! [`Refresher`]: trades a refresh token for new tokens.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use tower::ServiceExt;

use crate::BoxError;

/// What a refresh returns.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefreshedTokens {
    /// The new access token.
    pub access_token: String,
    /// The new refresh token, when the server rotates them; `None` keeps the current one.
    pub refresh_token: Option<String>,
    /// The access token's lifetime, when the server says; otherwise it is read from the JWT's
    /// `exp`.
    pub expires_in: Option<Duration>,
}

impl RefreshedTokens {
    /// New tokens with only an access token.
    pub fn new(access_token: impl Into<String>) -> Self {
        Self {
            access_token: access_token.into(),
            refresh_token: None,
            expires_in: None,
        }
    }

    /// Adds the rotated refresh token.
    #[must_use]
    pub fn refresh_token(mut self, token: impl Into<String>) -> Self {
        self.refresh_token = Some(token.into());
        self
    }

    /// Adds the access token's lifetime.
    #[must_use]
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_in = Some(lifetime);
        self
    }
}

impl fmt::Debug for RefreshedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshedTokens")
            .field("access_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Why a refresh failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RefreshFailure {
    /// The refresh token was refused for good (`invalid_grant`, 400, 401): the session expires.
    Permanent(BoxError),
    /// Anything that may pass (network, 5xx, timeout): the next request may try again.
    Transient(BoxError),
}

impl RefreshFailure {
    /// A permanent failure.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::Permanent(error.into())
    }

    /// A transient failure.
    pub fn transient(error: impl Into<BoxError>) -> Self {
        Self::Transient(error.into())
    }
}

/// Trades a refresh token for new tokens.
///
/// Implement it for a custom endpoint, or use [`refresher_fn`] for a closure or
/// [`OAuthRefresher`] for an RFC 6749 endpoint. It runs in a task of its own, once per refresh
/// however many requests wait for it.
pub trait Refresher: Send + Sync + 'static {
    /// Refreshes with `refresh_token`.
    fn refresh(
        &self,
        refresh_token: &str,
    ) -> impl Future<Output = Result<RefreshedTokens, RefreshFailure>> + Send;
}

pub(crate) type RefreshFuture =
    Pin<Box<dyn Future<Output = Result<RefreshedTokens, RefreshFailure>> + Send>>;

/// A [`Refresher`] behind a pointer, for the layer to hold without a type parameter.
pub(crate) trait DynRefresher: Send + Sync {
    fn refresh_owned(self: Arc<Self>, refresh_token: String) -> RefreshFuture;
}

impl<R: Refresher> DynRefresher for R {
    fn refresh_owned(self: Arc<Self>, refresh_token: String) -> RefreshFuture {
        Box::pin(async move { self.refresh(&refresh_token).await })
    }
}

/// A [`Refresher`] from an async closure taking the refresh token.
///
/// # Example
///
/// The original write-up's endpoint, `GET /refresh?token=…` answering
/// `{accessToken, refreshToken}`, over a hyper-util client:
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Empty};
/// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
/// use tower_jwt_refresh::client::{RefreshFailure, RefreshedTokens, refresher_fn};
///
/// let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
/// let refresher = refresher_fn(move |token: String| {
///     let http = http.clone();
///     async move {
///         let uri = format!("http://127.0.0.1:3000/refresh?token={token}").parse().unwrap();
///         let res = http.get(uri).await.map_err(RefreshFailure::transient)?;
///         if !res.status().is_success() {
///             return Err(RefreshFailure::permanent(format!("refresh answered {}", res.status())));
///         }
///         let body = res.into_body().collect().await.map_err(RefreshFailure::transient)?;
///         let json: serde_json::Value = serde_json::from_slice(&body.to_bytes())
///             .map_err(RefreshFailure::transient)?;
///         let (Some(access), Some(refresh)) = (json["accessToken"].as_str(), json["refreshToken"].as_str())
///         else { return Err(RefreshFailure::transient("unexpected refresh response")) };
///         Ok(RefreshedTokens::new(access).refresh_token(refresh))
///     }
/// });
/// # let _ = refresher;
/// ```
pub fn refresher_fn<F, Fut>(f: F) -> RefresherFn<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<RefreshedTokens, RefreshFailure>> + Send + 'static,
{
    RefresherFn(f)
}

/// The [`Refresher`] of [`refresher_fn`].
#[derive(Clone)]
pub struct RefresherFn<F>(F);

impl<F> fmt::Debug for RefresherFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefresherFn")
    }
}

impl<F, Fut> Refresher for RefresherFn<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<RefreshedTokens, RefreshFailure>> + Send + 'static,
{
    fn refresh(
        &self,
        refresh_token: &str,
    ) -> impl Future<Output = Result<RefreshedTokens, RefreshFailure>> + Send {
        (self.0)(refresh_token.to_owned())
    }
}

/// An RFC 6749 §6 refresh over any tower HTTP service: `POST` with
/// `grant_type=refresh_token`, an RFC 6749 §5.1 response back.
///
/// An `invalid_grant` answer is permanent (the session expires); any other refusal, and
/// every transport error, is transient. A 200 that cannot be read is permanent, since the
/// server has consumed the refresh token. Response bodies over 64 KiB are refused.
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
        }
    }

    /// Sends `client_id` with each refresh, as public clients do.
    #[must_use]
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }
}

/// The RFC 6749 §5.1 fields read.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<Seconds>,
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

const MAX_RESPONSE: usize = 64 * 1024;

impl<S, B> Refresher for OAuthRefresher<S>
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async fn refresh(&self, refresh_token: &str) -> Result<RefreshedTokens, RefreshFailure> {
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
        let response = self
            .client
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| RefreshFailure::Transient(e.into()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(RefreshFailure::Transient)?
            .to_bytes();
        match status {
            StatusCode::OK => {
                // The server has consumed the refresh token: an answer we cannot read leaves
                // nothing to retry with, so the session is over.
                let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
                    RefreshFailure::permanent(format!("unreadable token response: {e}"))
                })?;
                Ok(RefreshedTokens {
                    access_token: parsed.access_token,
                    refresh_token: parsed.refresh_token,
                    expires_in: parsed.expires_in.as_ref().and_then(Seconds::duration),
                })
            }
            _ => {
                let code = serde_json::from_slice::<ErrorResponse>(&body)
                    .map(|e| e.error)
                    .ok();
                let message = format!(
                    "refresh answered {status} ({})",
                    code.as_deref().unwrap_or("no error code")
                );
                // Only `invalid_grant` says the refresh token itself is dead; anything else (a
                // misconfigured client, a proxy, a 5xx) may pass and must not end sessions.
                if code.as_deref() == Some("invalid_grant") {
                    Err(RefreshFailure::permanent(message))
                } else {
                    Err(RefreshFailure::transient(message))
                }
            }
        }
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

    #[test]
    fn debug_redacts_tokens() {
        let t = RefreshedTokens::new("secret-access").refresh_token("secret-refresh");
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
