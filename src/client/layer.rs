//! [`RefreshLayer`]: the configuration of the refreshing client.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, Response, StatusCode};
use tokio::time::Instant;
use tower_layer::Layer;

use super::refresher::Refresher;
use super::replay::{CloneBodies, NoReplay, ReplayBody, TeeBodies};
use super::service::Refresh;
use super::session::{RefreshSettings, Session, TokenSet, TokenState};

/// When to refresh before the access token expires.
#[derive(Debug, Clone, Copy)]
enum Early {
    /// The larger of 30 s and a tenth of the lifetime.
    Auto,
    Fixed(Duration),
    Off,
}

/// What counts as "token rejected".
type Predicate = Arc<dyn Fn(StatusCode, &HeaderMap) -> bool + Send + Sync>;

/// Everything a [`Refresh`] service shares: the session, the settings and the replay policy.
pub(crate) struct Shared<P> {
    pub(crate) session: Session,
    pub(crate) settings: Arc<RefreshSettings>,
    pub(crate) policy: P,
    early: Early,
    pub(crate) max_replays: usize,
    require_invalid_token: bool,
    grpc: bool,
    predicate: Option<Predicate>,
    pub(crate) pass_through: bool,
    pub(crate) raw_authorization: bool,
}

impl<P: Clone> Clone for Shared<P> {
    fn clone(&self) -> Self {
        Self {
            session: self.session.clone(),
            settings: Arc::clone(&self.settings),
            policy: self.policy.clone(),
            early: self.early,
            max_replays: self.max_replays,
            require_invalid_token: self.require_invalid_token,
            grpc: self.grpc,
            predicate: self.predicate.clone(),
            pass_through: self.pass_through,
            raw_authorization: self.raw_authorization,
        }
    }
}

impl<P> Shared<P> {
    /// Whether `tokens` are inside the early window at `now`.
    pub(crate) fn needs_refresh(&self, tokens: &TokenState, now: Instant) -> bool {
        let (Some(expires_at), Some(lifetime)) = (tokens.expires_at, tokens.lifetime) else {
            return false;
        };
        let early = match self.early {
            Early::Off => return false,
            Early::Auto => Duration::from_secs(30).max(lifetime / 10),
            Early::Fixed(early) => early,
        };
        // Never more than half the lifetime, so short-lived tokens are not refreshed on every
        // request.
        now + early.min(lifetime / 2) >= expires_at
    }

    /// Whether `response` says the token was rejected.
    pub(crate) fn rejects<B>(&self, response: &Response<B>) -> bool {
        let (status, headers) = (response.status(), response.headers());
        if self.predicate.as_ref().is_some_and(|p| p(status, headers)) {
            return true;
        }
        if status == StatusCode::UNAUTHORIZED {
            return !self.require_invalid_token
                || headers.get_all(WWW_AUTHENTICATE).iter().any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.contains("error=\"invalid_token\""))
                });
        }
        // A trailers-only gRPC answer carries its status in the headers.
        self.grpc && headers.get("grpc-status").is_some_and(|s| s == "16")
    }
}

/// Attaches the session's access token to every request, refreshing it silently.
///
/// Layers [`Refresh`]. See the [module docs](super) for the algorithm and examples.
///
/// Defaults: refresh early when the token is within the larger of 30 s and a tenth of its
/// lifetime (at most half of it) of expiry; replay a rejected request once; wait at most 10 s
/// for a refresh, which itself may take 10 s; at most 65,536 waiting requests; at most 4
/// refreshes in 2 s (the loop guard); "rejected" is a 401 or a gRPC `UNAUTHENTICATED`; a
/// request without tokens fails with `NotAuthenticated`; `Clone` bodies are replayed.
pub struct RefreshLayer<P = CloneBodies> {
    shared: Arc<Shared<P>>,
}

impl<P: Clone> Clone for RefreshLayer<P> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<P> fmt::Debug for RefreshLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshLayer")
            .field("session", &self.shared.session)
            .field("early", &self.shared.early)
            .field("max_replays", &self.shared.max_replays)
            .field("wait_timeout", &self.shared.settings.wait_timeout)
            .field("refresh_timeout", &self.shared.settings.refresh_timeout)
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
            wait_timeout: Duration::from_secs(10),
            refresh_timeout: Duration::from_secs(10),
            max_waiters: 65_536,
            loop_limit: 4,
            loop_window: Duration::from_secs(2),
            on_refresh: None,
            on_session_expired: None,
        };
        Self {
            shared: Arc::new(Shared {
                session,
                settings: Arc::new(settings),
                policy: CloneBodies,
                early: Early::Auto,
                max_replays: 1,
                require_invalid_token: false,
                grpc: true,
                predicate: None,
                pass_through: false,
                raw_authorization: false,
            }),
        }
    }
}

impl<P: Clone> RefreshLayer<P> {
    fn with(mut self, f: impl FnOnce(&mut Shared<P>)) -> Self {
        f(Arc::make_mut(&mut self.shared));
        self
    }

    fn settings(self, f: impl FnOnce(&mut RefreshSettings)) -> Self {
        self.with(|s| f(Arc::make_mut(&mut s.settings)))
    }

    /// The session this layer refreshes.
    pub fn session(&self) -> &Session {
        &self.shared.session
    }

    /// Refresh before sending when the token expires within `window` (at most half its
    /// lifetime).
    #[must_use]
    pub fn early_refresh(self, window: Duration) -> Self {
        self.with(|s| s.early = Early::Fixed(window))
    }

    /// Never refresh before sending; only a rejection triggers a refresh.
    #[must_use]
    pub fn no_early_refresh(self) -> Self {
        self.with(|s| s.early = Early::Off)
    }

    /// How many times one request may be sent again after a rejection (default 1).
    #[must_use]
    pub fn max_replays(self, replays: usize) -> Self {
        self.with(|s| s.max_replays = replays)
    }

    /// How long a request waits for a refresh before failing with `WaitTimeout` (default
    /// 10 s).
    #[must_use]
    pub fn wait_timeout(self, timeout: Duration) -> Self {
        self.settings(|s| s.wait_timeout = timeout)
    }

    /// How long a refresh (and the `on_refresh` hook) may take before it counts as failed
    /// (default 10 s).
    #[must_use]
    pub fn refresh_timeout(self, timeout: Duration) -> Self {
        self.settings(|s| s.refresh_timeout = timeout)
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
        self.with(|s| s.require_invalid_token = true)
    }

    /// Do not treat gRPC `UNAUTHENTICATED` (status 16) answers as "token rejected".
    #[must_use]
    pub fn ignore_grpc_status(self) -> Self {
        self.with(|s| s.grpc = false)
    }

    /// Also treat responses for which `predicate` is true as "token rejected".
    #[must_use]
    pub fn rejected_when<F>(self, predicate: F) -> Self
    where
        F: Fn(StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
    {
        self.with(|s| s.predicate = Some(Arc::new(predicate)))
    }

    /// Send requests as they are while the session has no tokens, instead of failing.
    #[must_use]
    pub fn pass_through_without_token(self) -> Self {
        self.with(|s| s.pass_through = true)
    }

    /// Send the bare token as `Authorization: <token>`, without the `Bearer` scheme, for
    /// legacy servers that expect it (the original NestJS backend, for one).
    #[must_use]
    pub fn raw_authorization(self) -> Self {
        self.with(|s| s.raw_authorization = true)
    }

    /// Awaits `hook` with the new tokens after each refresh, before any waiting request goes
    /// on: persist them here. It is bounded by the refresh timeout.
    #[must_use]
    pub fn on_refresh<F, Fut>(self, hook: F) -> Self
    where
        F: Fn(TokenSet) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.settings(|s| s.on_refresh = Some(Arc::new(move |tokens| Box::pin(hook(tokens)))))
    }

    /// Calls `hook` once each time the session expires (the refresh token refused for good):
    /// show the login screen here.
    #[must_use]
    pub fn on_session_expired<F>(self, hook: F) -> Self
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.settings(|s| s.on_session_expired = Some(Arc::new(hook)))
    }

    /// Keeps bodies for replays with `policy`.
    pub fn replay<Q: Clone>(self, policy: Q) -> RefreshLayer<Q> {
        let shared = Arc::unwrap_or_clone(self.shared);
        RefreshLayer {
            shared: Arc::new(Shared {
                session: shared.session,
                settings: shared.settings,
                policy,
                early: shared.early,
                max_replays: shared.max_replays,
                require_invalid_token: shared.require_invalid_token,
                grpc: shared.grpc,
                predicate: shared.predicate,
                pass_through: shared.pass_through,
                raw_authorization: shared.raw_authorization,
            }),
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
