//! [`Refresher`]: trades a refresh token for new tokens.
//!
//! Two come with the crate: [`refresher_fn`] wraps an async closure, for any endpoint;
//! [`OAuthRefresher`] speaks RFC 6749 §6 over any tower HTTP service.

mod closure;
mod oauth;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use self::closure::{RefresherFn, refresher_fn};
pub use self::oauth::OAuthRefresher;
use crate::BoxError;
use crate::client::session::Tokens;

/// Why a refresh failed.
///
/// Only a [`Permanent`](Self::Permanent) failure expires the session. [`OAuthRefresher`]
/// reports one for an `invalid_grant` answer only; every other refusal (another 400 or 401
/// error code, a 5xx) and every transport error is transient.
#[derive(Debug)]
#[non_exhaustive]
pub enum RefreshFailure {
    /// The refresh token was refused for good (`invalid_grant`): the session expires.
    Permanent(BoxError),
    /// Anything that may pass (network, 5xx, timeout): a later request tries again, after a
    /// backoff (1 s, doubling up to 30 s, reset by a success).
    Transient(BoxError),
    /// A transient failure with the server's hint (`Retry-After`) of when to try again: no
    /// refresh starts before it has passed (at most 5 minutes), or before the backoff has.
    /// Build it with [`retry_after`](Self::retry_after).
    RetryAfter(BoxError, Duration),
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

    /// A transient failure that asks for no retry within `after` (a `Retry-After` header);
    /// a permanent failure stays as it is.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_jwt_refresh::client::RefreshFailure;
    ///
    /// let failure = RefreshFailure::transient("token endpoint answered 503")
    ///     .retry_after(Duration::from_secs(30));
    /// assert!(matches!(failure, RefreshFailure::RetryAfter(_, after) if after.as_secs() == 30));
    /// ```
    #[must_use]
    pub fn retry_after(self, after: Duration) -> Self {
        match self {
            Self::Transient(error) | Self::RetryAfter(error, _) => Self::RetryAfter(error, after),
            permanent @ Self::Permanent(_) => permanent,
        }
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
    ) -> impl Future<Output = Result<Tokens, RefreshFailure>> + Send;
}

pub(crate) type RefreshFuture =
    Pin<Box<dyn Future<Output = Result<Tokens, RefreshFailure>> + Send>>;

/// A [`Refresher`] behind a pointer, for the layer to hold without a type parameter.
pub(crate) trait DynRefresher: Send + Sync {
    fn refresh_owned(self: Arc<Self>, refresh_token: String) -> RefreshFuture;
}

impl<R: Refresher> DynRefresher for R {
    fn refresh_owned(self: Arc<Self>, refresh_token: String) -> RefreshFuture {
        Box::pin(async move { self.refresh(&refresh_token).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_tokens() {
        let t = Tokens::new("secret-access", "secret-refresh");
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
