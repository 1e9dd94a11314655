//! [`Refresher`]: trades a refresh token for new tokens.
//!
//! Two come with the crate: [`refresher_fn`] wraps an async closure, for any endpoint;
//! [`OAuthRefresher`] speaks RFC 6749 §6 over any tower HTTP service.

mod closure;
mod oauth;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use self::closure::{RefresherFn, refresher_fn};
pub use self::oauth::OAuthRefresher;
use crate::BoxError;
use crate::client::session::Tokens;

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
