//! [`refresher_fn`]: a [`Refresher`] from an async closure.

use std::fmt;
use std::future::Future;

use super::{RefreshFailure, Refresher, Tokens};

/// A [`Refresher`] from an async closure taking the refresh token.
///
/// # Example
///
/// The endpoint of the NestJS backend this crate's examples replace, `GET /refresh?token=…`
/// answering `{accessToken, refreshToken}`, over a hyper-util client:
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Empty};
/// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
/// use tower_jwt_refresh::client::{RefreshFailure, Tokens, refresher_fn};
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
///         Ok(Tokens::new(access, refresh))
///     }
/// });
/// # let _ = refresher;
/// ```
pub fn refresher_fn<F, Fut>(f: F) -> RefresherFn<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Tokens, RefreshFailure>> + Send + 'static,
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
    Fut: Future<Output = Result<Tokens, RefreshFailure>> + Send + 'static,
{
    fn refresh(
        &self,
        refresh_token: &str,
    ) -> impl Future<Output = Result<Tokens, RefreshFailure>> + Send {
        (self.0)(refresh_token.to_owned())
    }
}
