//! The deny-list hook, consulted on every request after the token verifies (cache hits
//! included).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::BoxError;

use crate::server::claims::RegisteredClaims;

/// The status of a verified token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    /// Not revoked: the request goes on.
    Active,
    /// Revoked: 401 `invalid_token` "token revoked".
    Revoked,
}

/// The answer of a [`DenyList`] check: ready now, or after a future resolves.
///
/// An in-memory denylist answers with [`DenyCheck::ready`] and costs no allocation; a
/// remote one returns [`DenyCheck::pending`]. An error answers 503 (fail closed); a
/// backend that prefers to fail open returns [`TokenStatus::Active`] on its own errors.
pub struct DenyCheck(pub(crate) Check);

pub(crate) enum Check {
    Ready(Result<TokenStatus, BoxError>),
    Pending(Pin<Box<dyn Future<Output = Result<TokenStatus, BoxError>> + Send>>),
}

impl DenyCheck {
    /// An answer known now.
    pub fn ready(status: Result<TokenStatus, BoxError>) -> Self {
        Self(Check::Ready(status))
    }

    /// The token is active.
    pub fn active() -> Self {
        Self::ready(Ok(TokenStatus::Active))
    }

    /// The token is revoked.
    pub fn revoked() -> Self {
        Self::ready(Ok(TokenStatus::Revoked))
    }

    /// An answer that needs I/O.
    pub fn pending<F>(future: F) -> Self
    where
        F: Future<Output = Result<TokenStatus, BoxError>> + Send + 'static,
    {
        Self(Check::Pending(Box::pin(future)))
    }
}

impl fmt::Debug for DenyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Check::Ready(status) => f.debug_tuple("Ready").field(status).finish(),
            Check::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// Decides whether a verified token has been revoked, for example by a `jti` or a session
/// (`sid`) deny list.
///
/// This is the verifier's per-request hook. It is not RFC 7009 token revocation, which is an
/// endpoint of the issuer ([`RevocationEndpoint`](crate::issuer::RevocationEndpoint)); a
/// [`TokenIssuer`](crate::issuer::TokenIssuer)'s [`deny_list`](crate::issuer::TokenIssuer::deny_list)
/// connects the two, refusing the access tokens of a session that endpoint revoked.
///
/// Implemented for every `Fn(&RegisteredClaims) -> DenyCheck`.
///
/// # Example
///
/// ```
/// use std::collections::HashSet;
/// use std::sync::{Arc, RwLock};
/// use tower_jwt_refresh::server::{RegisteredClaims, DenyCheck};
///
/// let revoked_sessions = Arc::new(RwLock::new(HashSet::<String>::new()));
/// let hook = move |claims: &RegisteredClaims| {
///     let denied = claims
///         .sid
///         .as_ref()
///         .is_some_and(|sid| revoked_sessions.read().unwrap().contains(sid));
///     if denied { DenyCheck::revoked() } else { DenyCheck::active() }
/// };
/// # let _: &dyn tower_jwt_refresh::server::DenyList = &hook;
/// ```
pub trait DenyList: Send + Sync + 'static {
    /// Checks one token. Called on every request; keep the ready path cheap.
    fn check(&self, claims: &RegisteredClaims) -> DenyCheck;
}

impl<F> DenyList for F
where
    F: Fn(&RegisteredClaims) -> DenyCheck + Send + Sync + 'static,
{
    fn check(&self, claims: &RegisteredClaims) -> DenyCheck {
        self(claims)
    }
}
