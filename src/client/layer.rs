//! [`RefreshLayer`]: the configuration of the refreshing client.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderName, Response, StatusCode};
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

/// What to do with a request, decided from its tokens.
pub(crate) enum Plan {
    /// The token is inside the early window: refresh, then send.
    Refresh,
    /// Send now; `keep` a copy of the request for a replay.
    Send { keep: bool },
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

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
    replay_always: bool,
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
            replay_always: self.replay_always,
        }
    }
}

impl<P> Shared<P> {
    /// What to do with a request carrying `tokens`: refresh first, or send (keeping a copy
    /// for a replay or not). Reads the clock only when the tokens' expiry is known.
    pub(crate) fn plan(&self, tokens: &TokenState) -> Plan {
        let (Some(expires_at), Some(lifetime)) = (tokens.expires_at, tokens.lifetime) else {
            // Unknown expiry: a rejection may come any time.
            return Plan::Send {
                keep: self.max_replays > 0,
            };
        };
        let now = Instant::now();
        // Never more than half the lifetime, so short-lived tokens are not refreshed on every
        // request.
        let early = match self.early {
            Early::Off => None,
            Early::Auto => Some(Duration::from_secs(30).max(lifetime / 10)),
            Early::Fixed(early) => Some(early),
        };
        // An access-only session uses its token until it expires.
        if tokens.can_refresh()
            && early.is_some_and(|early| now + early.min(lifetime / 2) >= expires_at)
        {
            return Plan::Refresh;
        }
        // Rejections come near expiry; in the first half of its lifetime a token is not
        // worth a copy of every request.
        Plan::Send {
            keep: self.max_replays > 0 && (self.replay_always || now + lifetime / 2 >= expires_at),
        }
    }

    /// Whether `response` says the token was rejected.
    pub(crate) fn rejects<B>(&self, response: &Response<B>) -> bool {
        let (status, headers) = (response.status(), response.headers());
        if self.predicate.as_ref().is_some_and(|p| p(status, headers)) {
            return true;
        }
        if status == StatusCode::UNAUTHORIZED {
            return !self.require_invalid_token
                || headers
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .any(|v| says_invalid_token(v.as_bytes()));
        }
        // A trailers-only gRPC answer (HTTP 200) carries its status in the headers.
        self.grpc && status == StatusCode::OK && headers.get(GRPC_STATUS).is_some_and(|s| s == "16")
    }
}

/// Whether a `WWW-Authenticate` value carries `error="invalid_token"` (quoted or not, any
/// case: RFC 7235 auth-params), whatever else it holds.
fn says_invalid_token(value: &[u8]) -> bool {
    let value = value.to_ascii_lowercase();
    let mut at = 0;
    while let Some(found) = value[at..].windows(5).position(|w| w == b"error") {
        let start = at + found;
        at = start + 5;
        let boundary = start == 0 || matches!(value[start - 1], b' ' | b',' | b'\t');
        let rest = value[at..].trim_ascii_start();
        let Some(rest) = rest.strip_prefix(b"=") else {
            continue;
        };
        let rest = rest.trim_ascii_start();
        let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
        if boundary
            && rest.starts_with(b"invalid_token")
            && rest
                .get(13)
                .is_none_or(|c| matches!(c, b'"' | b',' | b' ' | b'\t'))
        {
            return true;
        }
    }
    false
}

/// Attaches the session's access token to every request, refreshing it silently.
///
/// Layers [`Refresh`]. See the [module docs](super) for the algorithm and examples.
///
/// Defaults: refresh early when the token is within the larger of 30 s and a tenth of its
/// lifetime (at most half of it) of expiry; replay a rejected request once (when it kept a
/// copy: see [`replay_always`](Self::replay_always)); wait at most 15 s
/// for a refresh, which itself (with the `on_refresh` hook) may take 10 s; at most 65,536 waiting requests; at most 4
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
            wait_timeout: Duration::from_secs(15),
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
                replay_always: false,
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
    /// 15 s). Keep it above the refresh timeout.
    #[must_use]
    pub fn wait_timeout(self, timeout: Duration) -> Self {
        self.settings(|s| s.wait_timeout = timeout)
    }

    /// How long a refresh and its `on_refresh` hook may take together before the refresh
    /// counts as failed (default 10 s).
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
    ///
    /// Only a status in the response headers (a trailers-only answer, as authentication
    /// layers such as `JwtAuthLayer` send) is seen: one sent in trailers after a streamed
    /// response cannot be acted on before the body is read.
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

    /// Keep every request for a replay, even while its token is young.
    ///
    /// By default a request keeps a copy of itself (method, URI, headers, extensions, body)
    /// only when a rejection is plausible: its token's expiry is unknown, or it is in the
    /// second half of its lifetime. A young token's request costs no copy, and in the rare
    /// case that it is rejected anyway (a revoked session, a rotated signing key) the caller
    /// gets that 401 after the refresh it triggered. With this option every rejected request
    /// is replayed, at the price of the copy on every request.
    #[must_use]
    pub fn replay_always(self) -> Self {
        self.with(|s| s.replay_always = true)
    }

    /// Send the bare token as `Authorization: <token>`, without the `Bearer` scheme, for
    /// legacy servers that expect it (the original NestJS backend, for one).
    #[must_use]
    pub fn raw_authorization(self) -> Self {
        self.with(|s| s.raw_authorization = true)
    }

    /// Awaits `hook` with the new tokens after each refresh that installed them, before any
    /// waiting request goes on: persist them here. It is bounded by the refresh timeout.
    ///
    /// Hooks belong to this layer while refreshes belong to the session: give every layer
    /// over one `Session` the same hooks.
    #[must_use]
    pub fn on_refresh<F, Fut>(self, hook: F) -> Self
    where
        F: Fn(TokenSet) -> Fut + Send + Sync + 'static,
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
                replay_always: shared.replay_always,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::refresher_fn;

    fn shared(layer: RefreshLayer) -> Arc<Shared<CloneBodies>> {
        layer.shared
    }

    fn layer() -> RefreshLayer {
        let refresher =
            refresher_fn(|_| async { Err(crate::client::RefreshFailure::transient("unused")) });
        RefreshLayer::new(Session::new(), refresher)
    }

    fn response(status: u16, headers: &[(&'static str, &[u8])]) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            response
                .headers_mut()
                .append(*name, http::HeaderValue::from_bytes(value).unwrap());
        }
        response
    }

    #[test]
    fn a_401_is_a_rejection_unless_invalid_token_is_required() {
        let any = shared(layer());
        assert!(any.rejects(&response(401, &[])));
        assert!(!any.rejects(&response(403, &[])));
        assert!(!any.rejects(&response(200, &[])));
        let strict = shared(layer().require_invalid_token());
        assert!(!strict.rejects(&response(401, &[])));
        for challenge in [
            &b"Bearer realm=\"api\", error=\"invalid_token\""[..],
            b"Bearer error=invalid_token",
            b"BEARER ERROR = \"INVALID_TOKEN\"",
            b"Bearer error=\"invalid_token\", error_description=\"\xe4\xbb\xa4\xe7\x89\x8c\"",
        ] {
            assert!(
                strict.rejects(&response(401, &[("www-authenticate", challenge)])),
                "{challenge:?}"
            );
        }
        for challenge in [
            &b"Bearer error=\"invalid_request\""[..],
            b"Bearer error_description=\"invalid_token\"",
            b"Bearer error=\"invalid_token_type\"",
            b"Bearer realm=\"myerror=invalid_token\"",
        ] {
            assert!(
                !strict.rejects(&response(401, &[("www-authenticate", challenge)])),
                "{challenge:?}"
            );
        }
    }

    #[test]
    fn grpc_unauthenticated_in_headers_and_the_predicate() {
        let layer = shared(layer());
        assert!(layer.rejects(&response(200, &[("grpc-status", b"16")])));
        assert!(!layer.rejects(&response(200, &[("grpc-status", b"7")])));
        let deaf = shared(self::layer().ignore_grpc_status());
        assert!(!deaf.rejects(&response(200, &[("grpc-status", b"16")])));
        let custom =
            shared(self::layer().rejected_when(|status, _| status == StatusCode::FORBIDDEN));
        assert!(custom.rejects(&response(403, &[])));
    }
}
