//! [`RefreshLayer`]: the configuration of the refreshing client, and nothing else.
//!
//! What the options mean per request lives with the code that reads them: the plan (refresh
//! first, or send) in `config.rs`, what counts as a rejection in `rejection.rs`, how a refresh
//! runs in `session/flight.rs`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tower_layer::Layer;

use super::config::{Config, Early, Shared};
use super::proofs::Proofs;
use super::refresher::Refresher;
use super::rejection::RejectionRule;
use super::replay::{CloneBodies, NoReplay, ReplayBody, TeeBodies};
use super::service::Refresh;
use super::session::{CurrentTokens, RefreshSettings, Session};

/// Attaches the session's access token to every request, refreshing it silently.
///
/// Layers [`Refresh`]. See the [module docs](super) for the algorithm and examples.
///
/// Defaults: refresh early when the token is within the larger of 30 s and a tenth of its
/// lifetime (at most half of it) of expiry; replay a rejected request once (every request
/// whose body can be kept keeps a copy: see [`replay_window`](Self::replay_window)); wait at most 15 s for a refresh, which
/// itself (with the `on_refresh` hook) may take 10 s; at most 65,536 waiting requests; at most
/// 4 refreshes in 2 s (the loop guard); "rejected" is a 401 or a gRPC `UNAUTHENTICATED`; a
/// request without tokens fails with `NotAuthenticated`; `Clone` bodies are replayed.
#[derive(Clone)]
pub struct RefreshLayer<P = CloneBodies> {
    shared: Arc<Shared<P>>,
}

impl<P> fmt::Debug for RefreshLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.shared.config;
        f.debug_struct("RefreshLayer")
            .field("session", &config.session)
            .field("early", &config.early)
            .field("max_replays", &config.max_replays)
            .field("wait_timeout", &config.settings.wait_timeout)
            .field("refresh_timeout", &config.settings.refresh_timeout)
            .finish_non_exhaustive()
    }
}

impl<S, P: Clone> Layer<S> for RefreshLayer<P> {
    type Service = Refresh<S, P>;

    fn layer(&self, inner: S) -> Refresh<S, P> {
        Refresh::from_shared(inner, Arc::clone(&self.shared))
    }
}

impl RefreshLayer {
    /// Refreshes `session`'s tokens with `refresher`.
    pub fn new(session: Session, refresher: impl Refresher) -> Self {
        let settings = RefreshSettings {
            refresher: Arc::new(refresher),
            wait_timeout: Duration::from_secs(15),
            refresh_timeout: Duration::from_secs(10),
            max_waiters: 65_536,
            loop_limit: 4,
            loop_window: Duration::from_secs(2),
            on_refresh: None,
            on_session_expired: None,
            runtime: tokio::runtime::Handle::try_current().ok(),
        };
        Self {
            shared: Arc::new(Shared {
                config: Config {
                    session,
                    settings: Arc::new(settings),
                    early: Early::Auto,
                    stale: Duration::from_secs(5),
                    max_replays: 1,
                    rejection: RejectionRule::new(),
                    pass_through: false,
                    raw_authorization: false,
                    replay_window: false,
                    proofs: Proofs::default(),
                },
                policy: CloneBodies,
            }),
        }
    }
}

impl<P: Clone> RefreshLayer<P> {
    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut Arc::make_mut(&mut self.shared).config);
        self
    }

    fn settings(self, f: impl FnOnce(&mut RefreshSettings)) -> Self {
        self.with(|s| f(Arc::make_mut(&mut s.settings)))
    }

    /// The session this layer refreshes.
    pub fn session(&self) -> &Session {
        &self.shared.config.session
    }

    /// The settings, for a front end other than tower's.
    #[cfg(feature = "reqwest")]
    pub(crate) fn into_config(self) -> Config {
        Arc::unwrap_or_clone(self.shared).config
    }

    #[cfg(test)]
    pub(crate) fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Refresh in the background when the token expires within `window` (at most half its
    /// lifetime): the first request past a prefetch point drawn at random in the first half
    /// of the window starts one refresh, and every request still goes out at once with the
    /// valid token. Only inside the [stale margin](Self::stale_margin) do requests wait.
    #[must_use]
    pub fn early_refresh(self, window: Duration) -> Self {
        self.with(|s| s.early = Early::Fixed(window))
    }

    /// How close to expiry requests stop going out with the current token and wait for the
    /// refresh instead (default 5 s; at most a tenth of the lifetime and half the early
    /// window, so short-lived tokens wait less).
    #[must_use]
    pub fn stale_margin(self, margin: Duration) -> Self {
        self.with(|s| s.stale = margin)
    }

    /// Never refresh before sending; only a rejection triggers a refresh.
    #[must_use]
    pub fn no_early_refresh(self) -> Self {
        self.with(|s| s.early = Early::Off)
    }

    /// How many times one request may be sent again after a rejection (default 1). With
    /// [`dpop`](Self::dpop), a `use_dpop_nonce` challenge's one resend is not counted here.
    #[must_use]
    pub fn max_replays(self, replays: usize) -> Self {
        self.with(|s| s.max_replays = replays)
    }

    /// How long a request waits for a refresh before failing with `WaitTimeout` (default
    /// 15 s). Keep it above the refresh timeout.
    #[must_use]
    pub fn wait_timeout(self, timeout: Duration) -> Self {
        self.settings(|s| s.wait_timeout = timeout)
    }

    /// How long a refresh and its `on_refresh` hook may take together before the refresh
    /// counts as failed (default 10 s). Keep it under the server's grace window, so a refresh
    /// whose reply was lost can be retried with the same refresh token: the issuer's default
    /// (`TokenIssuer::grace_period`, 30 s) covers this default with margin.
    #[must_use]
    pub fn refresh_timeout(self, timeout: Duration) -> Self {
        self.settings(|s| s.refresh_timeout = timeout)
    }

    /// The runtime refreshes run on (default: the one current when the layer was built, else
    /// the one the request that starts the refresh runs on).
    ///
    /// A refresh serves every request of the session, whichever runtime each runs on, so it
    /// must not run on one that may stop being driven, such as a `current_thread` runtime
    /// whose `block_on` has returned. Give a runtime that lives as long as the layer and has
    /// timers enabled. Waits are also timed on it for a caller outside any runtime.
    #[must_use]
    pub fn runtime(self, handle: tokio::runtime::Handle) -> Self {
        self.settings(|s| s.runtime = Some(handle))
    }

    /// How many requests may wait for one refresh; more fail with `Overloaded` (default
    /// 65,536).
    #[must_use]
    pub fn max_waiters(self, waiters: usize) -> Self {
        self.settings(|s| s.max_waiters = waiters)
    }

    /// At most `refreshes` refreshes in any `window`; one more fails with `RefreshLoop`
    /// (default 4 in 2 s). It stops a server that rejects every token from being asked for
    /// new ones in a loop.
    #[must_use]
    pub fn loop_guard(self, refreshes: usize, window: Duration) -> Self {
        self.settings(|s| {
            s.loop_limit = refreshes.max(1);
            s.loop_window = window;
        })
    }

    /// Count a 401 as "token rejected" only when its challenge says `error="invalid_token"`
    /// (RFC 6750), not for every 401.
    #[must_use]
    pub fn require_invalid_token(self) -> Self {
        self.with(|s| s.rejection.require_invalid_token = true)
    }

    /// Do not treat gRPC `UNAUTHENTICATED` (status 16) answers as "token rejected".
    ///
    /// Only a status in the response headers (a trailers-only answer, as authentication
    /// layers such as `JwtAuthLayer` send) is seen: one sent in trailers after a streamed
    /// response cannot be acted on before the body is read.
    #[must_use]
    pub fn ignore_grpc_status(self) -> Self {
        self.with(|s| s.rejection.grpc = false)
    }

    /// Also treat responses for which `predicate` is true as "token rejected".
    #[must_use]
    pub fn rejected_when<F>(self, predicate: F) -> Self
    where
        F: Fn(StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
    {
        self.with(|s| s.rejection.predicate = Some(Arc::new(predicate)))
    }

    /// Send requests as they are while the session has no tokens, instead of failing.
    #[must_use]
    pub fn pass_through_without_token(self) -> Self {
        self.with(|s| s.pass_through = true)
    }

    /// Keep a replay copy of a request only late in its token's life, not of every request.
    ///
    /// By default every request whose body the [`ReplayPolicy`](super::ReplayPolicy) can keep
    /// keeps a copy of itself (method, URI, headers without `Authorization`, extensions, and
    /// the body), whatever its token's age, so that no rejection reaches the caller when the
    /// refresh succeeds: young tokens are rejected too (a rotated signing key, a server
    /// restarted with a new secret, a deny-list, a verifier whose clock runs ahead). The copy
    /// is cheap (see the [module docs](super)); measure before turning it off.
    ///
    /// With this option a request keeps a copy only when its token's expiry is unknown or in
    /// the second half of its lifetime; a young token's rejected request gets its 401 back,
    /// after the refresh it triggered. With [`dpop`](Self::dpop) every request keeps one
    /// anyway, for a nonce challenge that may come at any age.
    #[must_use]
    pub fn replay_window(self) -> Self {
        self.with(|s| s.replay_window = true)
    }

    /// Send the bare token as `Authorization: <token>`, without the `Bearer` scheme, for
    /// legacy servers that expect it (the NestJS backend this crate's examples replace, for
    /// one). Tokens sent with DPoP proofs ([`dpop`](Self::dpop)) always go as `DPoP <token>`.
    #[must_use]
    pub fn raw_authorization(self) -> Self {
        self.with(|s| s.raw_authorization = true)
    }

    /// Awaits `hook` with the new tokens after each refresh that installed them, before any
    /// waiting request goes on: persist them here. It is bounded by the refresh timeout.
    ///
    /// Hooks run one at a time, in the order their tokens were installed, and never once a
    /// `logout` or `login` has replaced those tokens; take [`Session::lock_storage`] around
    /// the application's own storage writes to order them against hooks too. A hook that
    /// panics is logged; the refresh still succeeds.
    ///
    /// Hooks belong to this layer while refreshes belong to the session: give every layer
    /// over one `Session` the same hooks.
    #[must_use]
    pub fn on_refresh<F, Fut>(self, hook: F) -> Self
    where
        F: Fn(CurrentTokens) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.settings(|s| s.on_refresh = Some(Arc::new(move |tokens| Box::pin(hook(tokens)))))
    }

    /// Calls `hook` once each time the session expires (the refresh token refused for good):
    /// show the login screen here. Like `on_refresh`, give every layer over one `Session` the
    /// same hook; `Session::subscribe` reports expiry whichever layer saw it.
    #[must_use]
    pub fn on_session_expired<F>(self, hook: F) -> Self
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.settings(|s| s.on_session_expired = Some(Arc::new(hook)))
    }

    /// Sends every request with a DPoP proof (RFC 9449) signed by `key`, under
    /// `Authorization: DPoP <token>`, for access tokens bound to that key.
    ///
    /// - Each request, and each replay, gets a fresh proof (its `htm`, `htu`, `iat`, a new
    ///   `jti`, the token's hash `ath`, and the latest nonce its server sent).
    /// - A `DPoP-Nonce` header in any answer is remembered for that server's origin, in the
    ///   key, so clones of the key (in an [`OAuthRefresher::dpop`](super::OAuthRefresher::dpop),
    ///   say) share it.
    /// - A `use_dpop_nonce` challenge (with a new `DPoP-Nonce`) is answered by sending the
    ///   request once more, at once, with the new nonce: not a token rejection, so it never
    ///   starts a refresh nor counts as a replay. Every request with a keepable body keeps a
    ///   copy for it, whatever [`max_replays`](Self::max_replays) and
    ///   [`replay_window`](Self::replay_window) say. A second challenge is returned.
    /// - A refused proof (`invalid_dpop_proof`) is returned as it is: the token passed, so a
    ///   refresh would not help.
    /// - Tokens whose type is `Bearer` (`token_type` in the token response,
    ///   [`Tokens::token_type`](super::Tokens::token_type)) go out as bearer tokens, without a
    ///   proof; tokens of type `DPoP`, or of no stated type, with one.
    ///
    /// Proofs need the request's absolute URI: give [`dpop_origin`](Self::dpop_origin) for
    /// requests that carry only a path (tonic's). Give the refresher the same key, so refresh
    /// requests carry proofs too.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_jwt_refresh::client::dpop::DpopKey;
    /// use tower_jwt_refresh::client::{OAuthRefresher, RefreshLayer, Session};
    /// # use bytes::Bytes; use http_body_util::Full;
    /// # use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    /// let key = DpopKey::generate()?;
    /// let refresher = OAuthRefresher::new(http, "https://auth.example.com/oauth/token".parse()?)
    ///     .dpop(key.clone());
    /// let layer = RefreshLayer::new(Session::new(), refresher).dpop(key);
    /// # let _ = layer; Ok(()) }
    /// ```
    #[cfg(feature = "dpop")]
    #[must_use]
    pub fn dpop(self, key: super::dpop::DpopKey) -> Self {
        self.with(|s| s.proofs = std::mem::take(&mut s.proofs).with_key(key))
    }

    /// The scheme and authority DPoP proofs name for requests whose URI is only a path, as a
    /// tonic client's are inside its channel: the server's address, `https://api.example.com`
    /// (before or after [`dpop`](Self::dpop)).
    ///
    /// # Panics
    ///
    /// If `origin` has no scheme or no authority (`api.example.com` alone, say).
    #[cfg(feature = "dpop")]
    #[must_use]
    pub fn dpop_origin(self, origin: http::Uri) -> Self {
        self.with(|s| s.proofs = std::mem::take(&mut s.proofs).with_origin(origin))
    }

    /// Keeps bodies for replays with `policy`.
    pub fn replay<Q: Clone>(self, policy: Q) -> RefreshLayer<Q> {
        let Shared { config, .. } = Arc::unwrap_or_clone(self.shared);
        RefreshLayer {
            shared: Arc::new(Shared { config, policy }),
        }
    }

    /// Tees streaming bodies up to `cap` bytes for replays (64 KiB is a good default), wrapping
    /// them back with `rebuild` (for tonic: `tonic::body::Body::new`).
    pub fn tee_bodies<B, F>(self, cap: usize, rebuild: F) -> RefreshLayer<TeeBodies<F>>
    where
        F: Fn(ReplayBody<B>) -> B + Clone + Send + Sync + 'static,
    {
        self.replay(TeeBodies::new(cap, rebuild))
    }

    /// Keeps no bodies: a rejected request gets its 401 back after the refresh.
    pub fn no_replay(self) -> RefreshLayer<NoReplay> {
        self.replay(NoReplay)
    }
}
