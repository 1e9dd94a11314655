//! Verified claims, as handed to the inner service in request extensions.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// The registered claims of a verified access token (RFC 7519 §4.1, RFC 9068).
///
/// Every field has passed its type and time checks; absent claims are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegisteredClaims {
    /// `sub`: the subject.
    pub sub: Option<String>,
    /// `iss`: the issuer.
    pub iss: Option<String>,
    /// `aud`: the audiences (a single string becomes one entry).
    pub aud: Vec<String>,
    /// `exp`: expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// `nbf`: not before, in seconds since the Unix epoch.
    pub nbf: Option<u64>,
    /// `iat`: issued at, in seconds since the Unix epoch.
    pub iat: Option<u64>,
    /// `jti`: the token's unique id.
    pub jti: Option<String>,
    /// `sid`: the session (refresh-token family) the token was issued to.
    pub sid: Option<String>,
    /// The granted scopes, from `scope` (space-separated) or `scp` (array or string).
    pub scope: Option<String>,
    /// `cnf.jkt` (RFC 9449 §6.1): the RFC 7638 thumbprint of the key the token is bound to.
    /// A token that has one is a DPoP-bound token: it is accepted only with a DPoP proof
    /// signed by that key, never as `Bearer`.
    pub cnf_jkt: Option<String>,
}

impl RegisteredClaims {
    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|granted| granted == scope))
    }
}

/// The verified claims of the request's access token.
///
/// [`JwtAuth`](super::JwtAuth) inserts one into the request's extensions after a token passes
/// every check. `C` is your own claims type, deserialized from the whole payload; it derefs to
/// `C`. Cloning is a reference-count bump.
///
/// With the `axum` feature, `Claims<C>` is also an extractor. Its rejection (500) says that
/// the layer is missing, or was built with another claims type; `Option<Claims<C>>` extracts
/// in optional-auth routes.
///
/// # Example
///
/// ```
/// use serde::Deserialize;
/// use tower_jwt_refresh::server::Claims;
///
/// #[derive(Clone, Deserialize)]
/// struct MyClaims {
///     tenant: String,
/// }
///
/// fn handler(claims: &Claims<MyClaims>) -> String {
///     format!("{} of {}", claims.registered().sub.as_deref().unwrap_or("?"), claims.tenant)
/// }
/// ```
pub struct Claims<C = serde::de::IgnoredAny> {
    inner: Arc<Inner<C>>,
}

struct Inner<C> {
    registered: RegisteredClaims,
    custom: C,
}

impl<C> Claims<C> {
    pub(crate) fn new(registered: RegisteredClaims, custom: C) -> Self {
        Self {
            inner: Arc::new(Inner { registered, custom }),
        }
    }

    /// The registered claims.
    pub fn registered(&self) -> &RegisteredClaims {
        &self.inner.registered
    }

    /// Your own claims.
    pub fn custom(&self) -> &C {
        &self.inner.custom
    }

    /// The subject (`sub`), if any.
    pub fn subject(&self) -> Option<&str> {
        self.inner.registered.sub.as_deref()
    }

    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.inner.registered.has_scope(scope)
    }
}

impl<C> Clone for Claims<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C> Deref for Claims<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.inner.custom
    }
}

impl<C: fmt::Debug> fmt::Debug for Claims<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("registered", &self.inner.registered)
            .field("custom", &self.inner.custom)
            .finish()
    }
}

#[cfg(feature = "axum")]
mod extract {
    use super::Claims;
    use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum_core::response::{IntoResponse, Response};
    use http::StatusCode;
    use http::request::Parts;
    use std::fmt;

    /// The rejection of the [`Claims`] extractor: no claims of that type in the request.
    ///
    /// It means a programming error, not a client error, so it answers 500: the route is not
    /// behind [`JwtAuthLayer`](crate::server::JwtAuthLayer), the layer runs in optional mode
    /// (extract `Option<Claims<C>>` there), or it was built with a different claims type.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct MissingClaims;

    impl fmt::Display for MissingClaims {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "no verified claims of this type in the request: is the route behind \
                 JwtAuthLayer, built with the same claims type?",
            )
        }
    }

    impl std::error::Error for MissingClaims {}

    impl IntoResponse for MissingClaims {
        fn into_response(self) -> Response {
            (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
        }
    }

    impl<S, C> FromRequestParts<S> for Claims<C>
    where
        S: Send + Sync,
        C: Send + Sync + 'static,
    {
        type Rejection = MissingClaims;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, MissingClaims> {
            parts
                .extensions
                .get::<Claims<C>>()
                .cloned()
                .ok_or(MissingClaims)
        }
    }

    impl<S, C> OptionalFromRequestParts<S> for Claims<C>
    where
        S: Send + Sync,
        C: Send + Sync + 'static,
    {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<Claims<C>>().cloned())
        }
    }
}

#[cfg(feature = "axum")]
pub use extract::MissingClaims;

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(scope: Option<&str>) -> RegisteredClaims {
        RegisteredClaims {
            sub: Some("alice".into()),
            iss: None,
            aud: vec![],
            exp: 10,
            nbf: None,
            iat: None,
            jti: None,
            sid: None,
            scope: scope.map(Into::into),
            cnf_jkt: None,
        }
    }

    #[test]
    fn scope_matches_whole_words_only() {
        let claims = Claims::new(registered(Some("read write:all")), ());
        assert!(claims.has_scope("read"));
        assert!(claims.has_scope("write:all"));
        assert!(!claims.has_scope("write"));
        assert!(!claims.has_scope(""));
        assert!(!Claims::new(registered(None), ()).has_scope("read"));
    }

    #[test]
    fn clones_share_one_allocation() {
        let a = Claims::new(registered(None), 5u32);
        let b = a.clone();
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
        assert_eq!(*b, 5);
        assert_eq!(b.subject(), Some("alice"));
    }
}
