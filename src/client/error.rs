//! The client side's one error type.

use std::fmt;
use std::sync::Arc;

use crate::BoxError;

/// Why a request through [`Refresh`](super::Refresh) failed.
///
/// Cheap to clone: one refresh failure reaches every waiting request as the same value.
/// `Display` is lower-case; [`source`](std::error::Error::source) gives the cause.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The session holds no tokens: log in first.
    NotAuthenticated,
    /// The refresh token was refused for good (a [`RefreshFailure::Permanent`]; for
    /// [`OAuthRefresher`], an `invalid_grant` answer). Requests fail fast until the
    /// application logs in again.
    ///
    /// [`RefreshFailure::Permanent`]: super::RefreshFailure::Permanent
    /// [`OAuthRefresher`]: super::OAuthRefresher
    SessionExpired,
    /// The refresh failed for a reason that may pass (network, 5xx, timeout); its source says
    /// why (for [`OAuthRefresher`](super::OAuthRefresher), the status). Later requests try
    /// again after a backoff, or the server's `Retry-After`; until then, requests that need
    /// a refresh get this error at once.
    RefreshFailed(Arc<dyn std::error::Error + Send + Sync>),
    /// The request waited for a refresh longer than the wait timeout.
    WaitTimeout,
    /// Too many requests were already waiting for the refresh.
    Overloaded,
    /// More successful refreshes than the loop guard allows in its window: the server
    /// rejects every new token at once. Failed refreshes do not count (they back off and
    /// report [`RefreshFailed`](Self::RefreshFailed)). Requests fail fast until the window
    /// has passed.
    RefreshLoop,
    /// The application logged in or out after this request was made: it is not sent with
    /// another login's tokens (nor with none). Make the request again if it still applies.
    SessionChanged,
    /// A request had to wait for a refresh, or start one, where that cannot be done: on a
    /// thread outside any Tokio runtime (when the layer was built outside one too), or on a
    /// runtime built without timers (`enable_time`). A set-up mistake, reported here rather
    /// than as a panic.
    NoRuntime,
    /// A DPoP proof could not be made for the request (with
    /// [`RefreshLayer::dpop`](super::RefreshLayer::dpop)): its URI has no scheme and
    /// authority and the layer knows no origin for it
    /// ([`dpop_origin`](super::RefreshLayer::dpop_origin)), or signing failed. The source
    /// says which.
    DpopProof(Arc<dyn std::error::Error + Send + Sync>),
    /// The inner service failed.
    Inner(Arc<dyn std::error::Error + Send + Sync>),
}

impl Error {
    pub(crate) fn refresh_failed(error: impl Into<BoxError>) -> Self {
        Self::RefreshFailed(Arc::from(error.into()))
    }

    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    pub(crate) fn proof(error: impl Into<BoxError>) -> Self {
        Self::DpopProof(Arc::from(error.into()))
    }

    pub(crate) fn inner(error: impl Into<BoxError>) -> Self {
        Self::Inner(Arc::from(error.into()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAuthenticated => "not authenticated: the session holds no tokens",
            Self::SessionExpired => "session expired: the refresh token was refused; log in again",
            Self::RefreshFailed(_) => "token refresh failed",
            Self::WaitTimeout => "timed out waiting for a token refresh",
            Self::Overloaded => "too many requests waiting for a token refresh",
            Self::RefreshLoop => "too many token refreshes in a short time",
            Self::SessionChanged => "session changed: logged in or out since the request was made",
            Self::NoRuntime => "no Tokio runtime with timers to wait for the token refresh on",
            Self::DpopProof(_) => "could not make a dpop proof for the request",
            Self::Inner(_) => "inner service failed",
        })
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::RefreshFailed(e) | Self::DpopProof(e) | Self::Inner(e) => Some(&**e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_is_lower_case_and_sources_chain() {
        let e = Error::refresh_failed(std::io::Error::other("connection reset"));
        assert_eq!(e.to_string(), "token refresh failed");
        assert_eq!(e.source().unwrap().to_string(), "connection reset");
        for e in [
            Error::NotAuthenticated,
            Error::SessionExpired,
            Error::WaitTimeout,
            Error::Overloaded,
            Error::RefreshLoop,
            Error::SessionChanged,
            Error::NoRuntime,
        ] {
            let shown = e.to_string();
            assert!(shown.starts_with(|c: char| c.is_lowercase()), "{shown}");
            assert!(e.source().is_none());
        }
    }
}
