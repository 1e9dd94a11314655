//! [`JwtAuthLayer`]: the configuration, shared by every service it builds.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::de::{DeserializeOwned, IgnoredAny};
use tower_layer::Layer;

use crate::Clock;
use crate::keys::KeySource;
use crate::server::cache::{DEFAULT_CAPACITY, TokenCache};
use crate::server::claims::Claims;
use crate::server::decision::{Auth, Scheme, WaitBudget};
use crate::server::deny_list::DenyList;
use crate::server::rejection::{Rejection, Responder};
use crate::server::service::JwtAuth;
use crate::server::sources::Sources;
use crate::server::verify::Validation;

/// Verifies JWT bearer tokens, then hands the claims to the inner service.
///
/// Layers [`JwtAuth`]. A request with a valid access token reaches the inner service with a
/// [`Claims<C>`] in its extensions; any other request gets an RFC 6750 answer (or its gRPC
/// equivalent) without reaching it.
///
/// Defaults: `Authorization: Bearer` only, tokens up to 8 KiB, `typ` `at+jwt`, 30 s leeway,
/// an 8 MiB verified-token cache, and `iss`/`aud` unchecked until you set them (set them).
///
/// Every key verifies tokens for every accepted issuer: with several issuers that must not
/// sign for each other, build one layer per issuer.
///
/// An asynchronous deny-list hook, a remote JWKS, or a [`FormTokenLayer`](super::FormTokenLayer)
/// needs a Tokio runtime with its time driver (`#[tokio::main]` and axum provide one); the
/// synchronous path needs no runtime at all.
///
/// Cloning is cheap. Every builder method that changes what a token must satisfy gives the
/// layer a fresh cache, so a layer derived with stricter rules never trusts a looser layer's
/// verdicts; [`require_scope`](Self::require_scope), [`optional`](Self::optional) and the
/// response settings keep the cache shared, so per-route variants cost nothing extra.
///
/// With axum, `Router::layer` and `Router::route_layer` cost the same on a route that
/// matches. They differ only for a path that matches no route: `route_layer` leaves it a
/// 404, while `layer` puts the fallback behind the layer too, so it gets a 401 without a token.
///
/// # Example
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_jwt_refresh::keys::{Algorithm, Key};
/// use tower_jwt_refresh::server::{Claims, JwtAuthLayer};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = Key::hmac(Algorithm::HS256, std::env::var("JWT_SECRET")
///     .unwrap_or_else(|_| "an example secret of at least 32 bytes!".into()))?;
/// let auth = JwtAuthLayer::new(key).issuer("https://auth.example").audience("api");
///
/// let app: Router = Router::new()
///     .route("/me", get(|claims: Claims| async move {
///         claims.subject().unwrap_or_default().to_owned()
///     }))
///     .layer(auth);
/// # Ok(()) }
/// ```
pub struct JwtAuthLayer<C = IgnoredAny> {
    auth: Arc<Auth<C>>,
    _claims: PhantomData<fn() -> C>,
}

impl<C> Clone for JwtAuthLayer<C> {
    fn clone(&self) -> Self {
        Self {
            auth: Arc::clone(&self.auth),
            _claims: PhantomData,
        }
    }
}

impl<C> fmt::Debug for JwtAuthLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JwtAuthLayer").field(&self.auth).finish()
    }
}

impl<S, C> Layer<S> for JwtAuthLayer<C> {
    type Service = JwtAuth<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth::from_parts(inner, Arc::clone(&self.auth))
    }
}

impl<C> JwtAuthLayer<C> {
    pub(crate) fn from_auth(auth: Arc<Auth<C>>) -> Self {
        Self {
            auth,
            _claims: PhantomData,
        }
    }
}

impl JwtAuthLayer {
    /// A layer verifying with `keys`, handing on only the registered claims.
    ///
    /// Use [`JwtAuthLayer::with_claims`] to deserialize your own claims type too.
    #[must_use]
    pub fn new(keys: impl Into<KeySource>) -> Self {
        Self::with_claims(keys)
    }
}

impl<C: DeserializeOwned + Send + Sync + 'static> JwtAuthLayer<C> {
    /// A layer verifying with `keys` and deserializing the payload into `C` as well.
    #[must_use]
    pub fn with_claims(keys: impl Into<KeySource>) -> Self {
        crate::keys::install_crypto_provider();
        let auth = Auth {
            keys: keys.into(),
            validation: Validation::default(),
            sources: Sources::default(),
            cache: Some(Arc::new(TokenCache::new(DEFAULT_CAPACITY))),
            deny_list: None,
            scopes: Vec::new(),
            optional: false,
            responder: Responder::new("api"),
            io_timeout: Duration::from_secs(2),
            check_waits: WaitBudget::new(1024),
            refetch_waits: WaitBudget::new(1024),
            clock: Clock::system(),
            metrics: crate::metrics::Server::new(),
            #[cfg(feature = "dpop")]
            dpop: None,
        };
        Self {
            auth: Arc::new(auth),
            _claims: PhantomData,
        }
    }

    /// Verifies `token` as the layer would, without a request: the cache, every check, and
    /// the deny-list hook if it answers synchronously.
    ///
    /// Useful for WebSocket handshakes and other places a token arrives outside a header.
    /// A deny-list hook that needs I/O is awaited. The token counts as a bearer token: a
    /// DPoP-bound one, which needs a proof, is refused.
    pub async fn verify(&self, token: &str) -> Result<Claims<C>, Rejection> {
        // Extraction caps a request's token; a token handed in directly is capped here.
        self.auth
            .validation
            .check_len(token)
            .map_err(Rejection::InvalidToken)?;
        self.auth
            .check_token(token.into(), Scheme::Bearer)
            .resolve()
            .await?
            .ok_or(Rejection::MissingToken)
    }

    /// Accept only tokens whose `iss` is `issuer` (call again to accept several). Keys are not
    /// bound to issuers: any key of the layer may sign for any accepted issuer.
    #[must_use]
    pub fn issuer(self, issuer: impl Into<String>) -> Self {
        self.validation(|v| v.issuers.push(issuer.into().into()))
    }

    /// Accept only tokens whose `aud` contains `audience` (call again to accept several).
    #[must_use]
    pub fn audience(self, audience: impl Into<String>) -> Self {
        self.validation(|v| v.audiences.push(audience.into().into()))
    }

    /// Clock skew allowed for `exp`, `nbf` and `iat`, in whole seconds (default 30 s).
    #[must_use]
    pub fn leeway(self, leeway: Duration) -> Self {
        self.validation(|v| v.leeway = leeway.as_secs())
    }

    /// The accepted `typ` header values (default `at+jwt`, RFC 9068). `application/` may be
    /// omitted and case is ignored, as RFC 7515 says. An empty list disables the check, which
    /// lets ID tokens and refresh JWTs through: do that only for an issuer that sets no `typ`.
    #[must_use]
    pub fn token_types<I, T>(self, types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let types = types
            .into_iter()
            .map(|t| {
                let t = t.into().to_ascii_lowercase();
                t.strip_prefix("application/")
                    .map(str::to_owned)
                    .unwrap_or(t)
                    .into_boxed_str()
            })
            .collect();
        self.validation(|v| v.types = types)
    }

    /// Claims that must be present, beyond `exp` (which always is): registered names such
    /// as `sub` or `jti`, or your own.
    #[must_use]
    pub fn require_claims<I, T>(self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let names: Vec<Box<str>> = names
            .into_iter()
            .map(|n| n.into().into_boxed_str())
            .collect();
        self.validation(|v| v.required.extend(names))
    }

    /// The longest token accepted, in bytes (default 8 KiB); longer ones are refused before
    /// any decoding.
    #[must_use]
    pub fn max_token_len(self, bytes: usize) -> Self {
        self.validation(|v| v.max_len = bytes)
    }

    /// Also accept a scheme-less `Authorization: <token>`, as some legacy clients send.
    #[must_use]
    pub fn allow_raw_authorization(self) -> Self {
        self.sources(|s| s.raw_authorization = true)
    }

    /// Also read the token from the cookie `name`. Mind CSRF: a cookie is sent by the browser
    /// on cross-site requests too.
    #[must_use]
    pub fn token_from_cookie(self, name: impl Into<String>) -> Self {
        let name = name.into().into_boxed_str();
        self.sources(|s| s.cookie = Some(name))
    }

    /// Also read the token from the header `name` (a raw token, `Bearer ` optional).
    #[must_use]
    pub fn token_from_header(self, name: HeaderName) -> Self {
        self.sources(|s| s.header = Some(name))
    }

    /// Also read the token from the query parameter `name` (RFC 6750 §2.3 suggests
    /// `access_token`). Query strings end up in logs and `Referer` headers: avoid if you can.
    #[must_use]
    pub fn token_from_query(self, name: impl Into<String>) -> Self {
        let name = name.into().into_boxed_str();
        self.sources(|s| s.query = Some(name))
    }

    /// Also accept the `access_token` form parameter read by a
    /// [`FormTokenLayer`](super::FormTokenLayer) in front of this layer (RFC 6750 §2.2).
    #[must_use]
    pub fn token_from_form(self) -> Self {
        self.sources(|s| s.form = true)
    }

    /// Accepts DPoP-bound tokens (RFC 9449): `Authorization: DPoP <token>` with one `DPoP`
    /// proof header, which `verifier` checks on every request (cache hits included: a proof
    /// is single-use) once the token has passed, with `ath`, and whose key must be the
    /// token's `cnf.jkt`. [`DpopMode::Required`](crate::server::dpop::DpopMode) refuses bearer
    /// tokens; [`DpopMode::Allowed`](crate::server::dpop::DpopMode) takes both.
    ///
    /// A token with `cnf.jkt` is refused as `Bearer` whether or not this is set. Refusals of a
    /// proof answer `WWW-Authenticate: DPoP error="invalid_dpop_proof", algs="…"`; a missing
    /// or stale server nonce `use_dpop_nonce` with a `DPoP-Nonce` header; a replay store that
    /// fails or overruns [`io_timeout`](Self::io_timeout), 503.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_jwt_refresh::keys::{Algorithm, Key};
    /// use tower_jwt_refresh::server::JwtAuthLayer;
    /// use tower_jwt_refresh::server::dpop::{DpopMode, DpopVerifier};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let key = Key::hmac(Algorithm::HS256, [7u8; 32])?;
    /// let verifier = DpopVerifier::new("https://api.example.com")?;
    /// let layer = JwtAuthLayer::new(key).dpop(verifier, DpopMode::Allowed);
    /// # let _ = layer; Ok(()) }
    /// ```
    #[cfg(feature = "dpop")]
    #[must_use]
    pub fn dpop(
        self,
        verifier: crate::server::dpop::DpopVerifier,
        mode: crate::server::dpop::DpopMode,
    ) -> Self {
        self.with(|auth| {
            let algs: Vec<String> = verifier
                .allowed_algorithms()
                .iter()
                .map(|alg| format!("{alg:?}"))
                .collect();
            let nonces = verifier.clone();
            let only = mode == crate::server::dpop::DpopMode::Required;
            auth.responder.set_dpop(
                &algs.join(" "),
                only,
                Arc::new(move || nonces.current_nonce()),
            );
            auth.sources.dpop = true;
            auth.dpop = Some(crate::server::dpop::DpopSettings { verifier, mode });
        })
    }

    /// The verified-token cache's capacity in bytes (default 8 MiB); see the
    /// [module docs](super) for how entries are weighed. `0` turns the cache off.
    #[must_use]
    pub fn cache_capacity(self, bytes: u64) -> Self {
        self.with(|auth| auth.cache = (bytes > 0).then(|| Arc::new(TokenCache::new(bytes))))
    }

    /// Checks each verified token with `hook`, on every request (cache hits included).
    #[must_use]
    pub fn deny_list(self, hook: impl DenyList) -> Self {
        self.with(|auth| auth.deny_list = Some(Arc::new(hook)))
    }

    /// How long an asynchronous deny-list check, or a wait for a key refetch, may take
    /// (default 2 s). A deny-list check that overruns answers 503.
    #[must_use]
    pub fn io_timeout(self, timeout: Duration) -> Self {
        self.with(|auth| auth.io_timeout = timeout)
    }

    /// The most requests that may wait at once on an asynchronous deny-list check (default
    /// 1024). Past it, a request is answered 503 at once instead of queueing. Shared by this
    /// layer and its clones.
    ///
    /// Only tokens that have passed every check but the deny list wait here: a token with an
    /// unknown `kid` waits in a budget of its own
    /// ([`max_unknown_kid_waits`](Self::max_unknown_kid_waits)), so a flood of forged tokens
    /// cannot fill this one and turn valid tokens away.
    #[must_use]
    pub fn max_pending_checks(self, requests: usize) -> Self {
        self.with(|auth| auth.check_waits.max = requests)
    }

    /// The most requests that may wait at once for a key refetch because their token names a
    /// `kid` the remote JWKS does not know (default 1024). Past it, such a request is answered
    /// 401 at once instead of queueing. Shared by this layer and its clones.
    ///
    /// These tokens have not passed their signature check, and anyone can make them: the
    /// budget is separate from [`max_pending_checks`](Self::max_pending_checks), so filling it
    /// delays only other tokens with unknown `kid`s, never verified ones. A request leaves this
    /// budget once the refetch is over, before any deny-list check, so it holds one place at a
    /// time. Keys that never change (no remote JWKS) never wait here.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_jwt_refresh::keys::{Algorithm, Key};
    /// use tower_jwt_refresh::server::JwtAuthLayer;
    ///
    /// # fn main() -> Result<(), tower_jwt_refresh::keys::KeyError> {
    /// # let keys = Key::hmac(Algorithm::HS256, [7u8; 32])?;
    /// let layer = JwtAuthLayer::new(keys)
    ///     .max_pending_checks(4096)
    ///     .max_unknown_kid_waits(256);
    /// # let _ = layer; Ok(()) }
    /// ```
    #[must_use]
    pub fn max_unknown_kid_waits(self, requests: usize) -> Self {
        self.with(|auth| auth.refetch_waits.max = requests)
    }

    /// Require `scope` in the token's `scope` (or `scp`) claim, answering 403
    /// `insufficient_scope` otherwise. Call again to require several.
    ///
    /// The cache stays shared, so `auth.clone().require_scope("admin")` on one route costs
    /// nothing beyond the check.
    #[must_use]
    pub fn require_scope(self, scope: impl Into<String>) -> Self {
        self.with(|auth| {
            auth.scopes.push(scope.into().into_boxed_str());
            auth.responder.set_scope(&auth.scopes.join(" "));
        })
    }

    /// Optional authentication: a request without any token passes through without claims.
    /// A request with a bad token is still refused, and so is an anonymous one when the layer
    /// also requires a scope.
    #[must_use]
    pub fn optional(self) -> Self {
        self.with(|auth| auth.optional = true)
    }

    /// The `realm` of `WWW-Authenticate` challenges (default `api`).
    #[must_use]
    pub fn realm(self, realm: &str) -> Self {
        self.with(|auth| auth.responder.set_realm(realm))
    }

    /// Replaces the JSON body of HTTP rejections: `handler` returns the `Content-Type` and the
    /// body. Status and `WWW-Authenticate` stay as RFC 6750 requires; gRPC answers have no
    /// body and are not affected.
    #[must_use]
    pub fn rejection_body<F>(self, handler: F) -> Self
    where
        F: Fn(&Rejection) -> (HeaderValue, Bytes) + Send + Sync + 'static,
    {
        self.with(|auth| auth.responder.set_body(Arc::new(handler)))
    }

    /// The wall clock that `exp`, `nbf` and `iat` are checked against (default: the system
    /// clock). For tests; give the [`TokenIssuer`](crate::issuer::TokenIssuer) the same one.
    #[must_use]
    pub fn clock(self, clock: Clock) -> Self {
        self.with(|auth| {
            auth.clock = clock;
            auth.fresh_cache();
        })
    }

    fn with(mut self, f: impl FnOnce(&mut Auth<C>)) -> Self {
        f(Arc::make_mut(&mut self.auth));
        self
    }

    /// Changes what a token must satisfy, which needs a cache of its own.
    fn validation(self, f: impl FnOnce(&mut Validation)) -> Self {
        self.with(|auth| {
            f(&mut auth.validation);
            auth.fresh_cache();
        })
    }

    fn sources(self, f: impl FnOnce(&mut Sources)) -> Self {
        self.with(|auth| f(&mut auth.sources))
    }
}

impl<C: Send + Sync + 'static> Auth<C> {
    fn fresh_cache(&mut self) {
        if let Some(cache) = &self.cache {
            self.cache = Some(Arc::new(TokenCache::new(cache.capacity())));
        }
    }
}
