//! [`Session`]: the tokens, and the one refresh in flight.
//!
//! Requests read the current tokens lock-free (an `ArcSwap`). Everything that changes them
//! (login, logout, a finished refresh) and the start of a refresh take one short-held mutex,
//! never across an `.await`. A refresh runs in a task of its own: the request that started it
//! can give up without cancelling it for the others, and every waiter gets the same result.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::HeaderValue;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::Error;
use super::refresher::{DynRefresher, RefreshFailure};

/// Tokens to log in with.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tokens {
    /// The access token.
    pub access_token: String,
    /// The refresh token; without one, an expired access token ends the session.
    pub refresh_token: Option<String>,
    /// The access token's lifetime, if the server said (`expires_in`); otherwise it is read
    /// from the JWT's `exp` claim, without verification.
    pub expires_in: Option<Duration>,
}

impl Tokens {
    /// Tokens with an access token and a refresh token.
    pub fn new(access_token: impl Into<String>, refresh_token: impl Into<String>) -> Self {
        Self {
            access_token: access_token.into(),
            refresh_token: Some(refresh_token.into()),
            expires_in: None,
        }
    }

    /// Tokens with only an access token: nothing to refresh with.
    pub fn access_only(access_token: impl Into<String>) -> Self {
        Self {
            access_token: access_token.into(),
            refresh_token: None,
            expires_in: None,
        }
    }

    /// Sets the access token's lifetime.
    #[must_use]
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_in = Some(lifetime);
        self
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// The access token cannot be sent: it has characters an HTTP header cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidToken;

impl fmt::Display for InvalidToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("access token has characters a header cannot carry")
    }
}

impl std::error::Error for InvalidToken {}

/// The session's current tokens, as the application reads them (to persist them, say).
#[derive(Clone)]
pub struct TokenSet(pub(crate) Arc<TokenState>);

pub(crate) struct TokenState {
    /// `Bearer <access token>`, built once and shared by every request.
    bearer: HeaderValue,
    /// The bare token, for legacy servers (a slice of the same bytes).
    raw: HeaderValue,
    access_token: String,
    refresh_token: Option<String>,
    pub(crate) expires_at: Option<Instant>,
    pub(crate) lifetime: Option<Duration>,
}

impl TokenState {
    /// Whether there is a refresh token to refresh with.
    pub(crate) fn can_refresh(&self) -> bool {
        self.refresh_token.is_some()
    }

    /// The `Authorization` value: `Bearer <token>`, or the bare token.
    pub(crate) fn header(&self, raw: bool) -> &HeaderValue {
        if raw { &self.raw } else { &self.bearer }
    }
}

impl TokenSet {
    fn new(tokens: Tokens) -> Result<Self, InvalidToken> {
        let bytes = Bytes::from(format!("Bearer {}", tokens.access_token));
        let value = |bytes: Bytes| {
            let mut value = HeaderValue::from_maybe_shared(bytes).map_err(|_| InvalidToken)?;
            value.set_sensitive(true);
            Ok::<_, InvalidToken>(value)
        };
        let (bearer, raw) = (value(bytes.slice(..))?, value(bytes.slice(7..))?);
        // Zero means "unknown" (a server that sends it means nothing by it). With both, the
        // shorter: `expires_in` counts whole seconds from a truncated `iat`, so it can
        // overstate a JWT's life by up to a second. Anything above MAX_LIFETIME is capped,
        // so no deadline overflows.
        let expires_in = tokens.expires_in.filter(|l| !l.is_zero());
        let lifetime = match (expires_in, jwt_lifetime(&tokens.access_token)) {
            (Some(given), Some(read)) => Some(given.min(read)),
            (given, read) => given.or(read),
        }
        .map(|l| l.min(MAX_LIFETIME));
        Ok(Self(Arc::new(TokenState {
            bearer,
            raw,
            expires_at: lifetime.map(|l| Instant::now() + l),
            lifetime,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
        })))
    }

    /// The access token.
    pub fn access_token(&self) -> &str {
        &self.0.access_token
    }

    /// The refresh token, if any.
    pub fn refresh_token(&self) -> Option<&str> {
        self.0.refresh_token.as_deref()
    }

    /// When the access token expires, if known.
    pub fn expires_at(&self) -> Option<Instant> {
        self.0.expires_at
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[redacted]")
            .field("expires_at", &self.0.expires_at)
            .finish()
    }
}

/// The longest lifetime a token is taken to have (about 31 years).
const MAX_LIFETIME: Duration = Duration::from_secs(1_000_000_000);

/// Reads a JWT's `exp` without verifying anything, as the time left until it. With `iat`, it
/// is also at most `exp - iat`, the lifetime the server gave it: a client clock running behind
/// the server's would otherwise take an expiring token for a young one.
fn jwt_lifetime(token: &str) -> Option<Duration> {
    #[derive(serde::Deserialize)]
    struct Exp {
        exp: f64,
        iat: Option<f64>,
    }
    let payload = token.split('.').nth(1)?;
    if payload.len() > 16 * 1024 {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let Exp { exp, iat } = serde_json::from_slice(&json).ok()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let left = match iat {
        Some(iat) if iat.is_finite() && iat < exp => (exp - now).min(exp - iat),
        _ => exp - now,
    };
    (left.is_finite() && left > 0.0)
        .then(|| Duration::from_secs_f64(left.min(MAX_LIFETIME.as_secs_f64())))
}

/// What happened to a session, as [`Session::subscribe`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// No tokens yet, or logged out.
    LoggedOut,
    /// The application logged in.
    LoggedIn,
    /// A refresh installed new tokens.
    Refreshed,
    /// The refresh token was refused for good.
    Expired,
}

/// Counters since the session was created, cheap to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Refreshes that installed new tokens.
    pub refreshes: u64,
    /// Refreshes that failed (transiently or for good).
    pub refresh_failures: u64,
    /// Requests sent again after a rejection.
    pub replays: u64,
    /// Of those, requests replayed at once because they had used tokens already replaced.
    pub stale_replays: u64,
    /// Requests that waited for a refresh.
    pub waits: u64,
    /// Their total waiting time.
    pub wait_time: Duration,
}

#[derive(Default)]
struct Counters {
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
    replays: AtomicU64,
    stale_replays: AtomicU64,
    waits: AtomicU64,
    wait_nanos: AtomicU64,
}

/// What requests read, swapped whole on every change.
pub(crate) struct State {
    pub(crate) tokens: Option<TokenSet>,
    pub(crate) generation: u64,
    pub(crate) expired: bool,
}

/// A shared handle on one user's tokens; clone it freely.
///
/// The application logs in with [`login`](Self::login), reads the tokens with
/// [`tokens`](Self::tokens), logs out with [`logout`](Self::logout), and watches changes with
/// [`subscribe`](Self::subscribe). A [`RefreshLayer`](super::RefreshLayer) refreshes them.
/// Two sessions never share a refresh.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::client::{Session, SessionEvent, Tokens};
///
/// let session = Session::new();
/// let mut events = session.subscribe();
/// session.login(Tokens::new("access", "refresh"))?;
/// assert_eq!(*events.borrow_and_update(), SessionEvent::LoggedIn);
/// assert_eq!(session.tokens().unwrap().refresh_token(), Some("refresh"));
/// session.logout();
/// assert!(session.tokens().is_none());
/// # Ok::<_, tower_jwt_refresh::client::InvalidToken>(())
/// ```
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

struct Shared {
    state: ArcSwap<State>,
    control: Mutex<Control>,
    events: watch::Sender<SessionEvent>,
    counters: Counters,
}

#[derive(Default)]
struct Control {
    flight: Option<Flight>,
    /// Start times of recent refreshes, for the loop guard.
    recent: VecDeque<Instant>,
    next_flight: u64,
}

struct Flight {
    id: u64,
    generation: u64,
    outcome: watch::Receiver<Option<Result<(), Error>>>,
    waiters: Arc<AtomicUsize>,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.load();
        f.debug_struct("Session")
            .field("logged_in", &state.tokens.is_some())
            .field("generation", &state.generation)
            .field("expired", &state.expired)
            .finish()
    }
}

/// How a refresh is run: the layer's settings.
#[derive(Clone)]
pub(crate) struct RefreshSettings {
    pub(crate) refresher: Arc<dyn DynRefresher>,
    pub(crate) wait_timeout: Duration,
    pub(crate) refresh_timeout: Duration,
    pub(crate) max_waiters: usize,
    pub(crate) loop_limit: usize,
    pub(crate) loop_window: Duration,
    pub(crate) on_refresh: Option<OnRefresh>,
    pub(crate) on_session_expired: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// The `on_refresh` hook: awaited before waiters are released.
pub(crate) type OnRefresh =
    Arc<dyn Fn(TokenSet) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The result of asking for tokens newer than a generation.
pub(crate) enum Joined {
    /// Newer tokens are already installed.
    Newer,
    /// Wait for the refresh in flight.
    Wait(Waiter),
}

/// A place among a refresh's waiters; leaving frees it.
pub(crate) struct Waiter {
    outcome: watch::Receiver<Option<Result<(), Error>>>,
    count: Arc<AtomicUsize>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Session {
    /// A session without tokens.
    pub fn new() -> Self {
        let state = State {
            tokens: None,
            generation: 0,
            expired: false,
        };
        Self {
            shared: Arc::new(Shared {
                state: ArcSwap::from_pointee(state),
                control: Mutex::default(),
                events: watch::channel(SessionEvent::LoggedOut).0,
                counters: Counters::default(),
            }),
        }
    }

    /// Installs `tokens` (a login), ending any expiry; requests use them at once.
    pub fn login(&self, tokens: Tokens) -> Result<(), InvalidToken> {
        let set = TokenSet::new(tokens)?;
        let _control = self.control();
        let generation = self.shared.state.load().generation + 1;
        self.shared.state.store(Arc::new(State {
            tokens: Some(set),
            generation,
            expired: false,
        }));
        self.shared.events.send_replace(SessionEvent::LoggedIn);
        Ok(())
    }

    /// Forgets the tokens; requests fail with [`Error::NotAuthenticated`] until the next login.
    pub fn logout(&self) {
        let _control = self.control();
        let generation = self.shared.state.load().generation + 1;
        self.shared.state.store(Arc::new(State {
            tokens: None,
            generation,
            expired: false,
        }));
        self.shared.events.send_replace(SessionEvent::LoggedOut);
    }

    /// The current tokens.
    pub fn tokens(&self) -> Option<TokenSet> {
        self.shared.state.load().tokens.clone()
    }

    /// Whether the refresh token was refused for good (until the next login).
    pub fn is_expired(&self) -> bool {
        self.shared.state.load().expired
    }

    /// Changes to the session, as they happen.
    pub fn subscribe(&self) -> watch::Receiver<SessionEvent> {
        self.shared.events.subscribe()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            refreshes: c.refreshes.load(Ordering::Relaxed),
            refresh_failures: c.refresh_failures.load(Ordering::Relaxed),
            replays: c.replays.load(Ordering::Relaxed),
            stale_replays: c.stale_replays.load(Ordering::Relaxed),
            waits: c.waits.load(Ordering::Relaxed),
            wait_time: Duration::from_nanos(c.wait_nanos.load(Ordering::Relaxed)),
        }
    }

    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<State>> {
        self.shared.state.load()
    }

    pub(crate) fn count_replay(&self, stale: bool) {
        self.shared.counters.replays.fetch_add(1, Ordering::Relaxed);
        if stale {
            self.shared
                .counters
                .stale_replays
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        // Nothing panics while holding it; recover anyway rather than poison every request.
        self.shared
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for tokens newer than generation `seen`: at once if they exist, else by joining
    /// the refresh in flight or starting one.
    pub(crate) fn join(&self, seen: u64, settings: &Arc<RefreshSettings>) -> Result<Joined, Error> {
        let mut control = self.control();
        let state = self.shared.state.load();
        if state.expired {
            return Err(Error::SessionExpired);
        }
        if state.generation > seen {
            return Ok(Joined::Newer);
        }
        let Some(tokens) = &state.tokens else {
            return Err(Error::NotAuthenticated);
        };
        if let Some(flight) = control
            .flight
            .as_ref()
            .filter(|f| f.generation == state.generation)
        {
            if flight.waiters.fetch_add(1, Ordering::AcqRel) >= settings.max_waiters {
                flight.waiters.fetch_sub(1, Ordering::AcqRel);
                return Err(Error::Overloaded);
            }
            return Ok(Joined::Wait(Waiter {
                outcome: flight.outcome.clone(),
                count: Arc::clone(&flight.waiters),
            }));
        }
        let Some(refresh_token) = tokens.refresh_token().map(str::to_owned) else {
            drop(control);
            self.expire(state.generation, settings);
            return Err(Error::SessionExpired);
        };
        let now = Instant::now();
        while control
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= settings.loop_window)
        {
            control.recent.pop_front();
        }
        if control.recent.len() >= settings.loop_limit {
            tracing::warn!(limit = settings.loop_limit, "refresh loop guard tripped");
            return Err(Error::RefreshLoop);
        }
        control.recent.push_back(now);
        let (tx, outcome) = watch::channel(None);
        let waiters = Arc::new(AtomicUsize::new(1));
        let id = control.next_flight;
        control.next_flight += 1;
        let generation = state.generation;
        control.flight = Some(Flight {
            id,
            generation,
            outcome: outcome.clone(),
            waiters: Arc::clone(&waiters),
        });
        drop(control);
        drop(state);
        // Outside the lock: a task dropped at once (a runtime shutting down) ends the flight
        // through `Finish`, which takes the lock.
        let finish = Finish {
            session: self.clone(),
            id,
            tx: Some(tx),
        };
        if tokio::runtime::Handle::try_current().is_err() {
            let error = Error::refresh_failed("refreshing needs a Tokio runtime");
            finish.send(Err(error.clone()));
            return Err(error);
        }
        tokio::spawn(self.clone().run_refresh(
            Arc::clone(settings),
            refresh_token,
            generation,
            finish,
        ));
        Ok(Joined::Wait(Waiter {
            outcome,
            count: waiters,
        }))
    }

    /// Waits for the refresh, bounded by the wait timeout.
    pub(crate) async fn wait(
        &self,
        waiter: Waiter,
        settings: &RefreshSettings,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let mut outcome = waiter.outcome.clone();
        let result =
            tokio::time::timeout(settings.wait_timeout, outcome.wait_for(Option::is_some)).await;
        let counters = &self.shared.counters;
        counters.waits.fetch_add(1, Ordering::Relaxed);
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        counters.wait_nanos.fetch_add(waited, Ordering::Relaxed);
        drop(waiter);
        match result {
            Err(_) => Err(Error::WaitTimeout),
            Ok(Err(_)) => Err(Error::refresh_failed("refresh task ended without a result")),
            Ok(Ok(outcome)) => outcome.clone().unwrap_or(Err(Error::WaitTimeout)),
        }
    }

    /// The refresh task: refresh, install, run the hook, then release the waiters, all within
    /// the refresh timeout.
    async fn run_refresh(
        self,
        settings: Arc<RefreshSettings>,
        refresh_token: String,
        generation: u64,
        finish: Finish,
    ) {
        let span = tracing::info_span!("token_refresh", generation);
        let deadline = Instant::now() + settings.refresh_timeout;
        let refresh = Arc::clone(&settings.refresher).refresh_owned(refresh_token.clone());
        let result = tracing::Instrument::instrument(
            tokio::time::timeout_at(deadline, refresh),
            span.clone(),
        )
        .await;
        let outcome = match result {
            Ok(Ok(new)) => {
                let tokens = Tokens {
                    access_token: new.access_token,
                    refresh_token: Some(new.refresh_token.unwrap_or(refresh_token)),
                    expires_in: new.expires_in,
                };
                match TokenSet::new(tokens) {
                    Ok(set) => {
                        if self.install(set.clone(), generation) {
                            self.shared
                                .counters
                                .refreshes
                                .fetch_add(1, Ordering::Relaxed);
                            span.in_scope(|| tracing::debug!("tokens refreshed"));
                            // Persisted before any waiter goes on; only tokens in use.
                            if let Some(hook) = &settings.on_refresh
                                && tokio::time::timeout_at(deadline, hook(set)).await.is_err()
                            {
                                span.in_scope(|| tracing::warn!("on_refresh hook timed out"));
                            }
                        }
                        Ok(())
                    }
                    // The server has rotated already, so the refresh token this replaced is
                    // spent, and tokens that cannot be sent are no session: expire it rather
                    // than retry with a spent token.
                    Err(error) => {
                        span.in_scope(|| {
                            tracing::warn!(%error, "refreshed access token unusable; session expired")
                        });
                        self.expire(generation, &settings);
                        Err(Error::SessionExpired)
                    }
                }
            }
            Ok(Err(RefreshFailure::Permanent(error))) => {
                span.in_scope(|| tracing::warn!(%error, "refresh token refused; session expired"));
                self.expire(generation, &settings);
                Err(Error::SessionExpired)
            }
            Ok(Err(RefreshFailure::Transient(error))) => {
                span.in_scope(|| tracing::warn!(%error, "refresh failed"));
                Err(Error::refresh_failed(error))
            }
            Err(_) => {
                span.in_scope(|| tracing::warn!("refresh timed out"));
                Err(Error::refresh_failed("refresh timed out"))
            }
        };
        let outcome = match outcome {
            Err(error) => {
                self.shared
                    .counters
                    .refresh_failures
                    .fetch_add(1, Ordering::Relaxed);
                // A login or logout meanwhile makes this failure moot: waiters re-read the
                // session and go on with its tokens (or learn there are none).
                let moved_on = {
                    let state = self.shared.state.load();
                    state.generation != generation && !state.expired
                };
                if moved_on { Ok(()) } else { Err(error) }
            }
            ok => ok,
        };
        finish.send(outcome);
    }

    /// Installs `set` if the session is still at `generation` and not expired.
    fn install(&self, set: TokenSet, generation: u64) -> bool {
        let _control = self.control();
        let state = self.shared.state.load();
        if state.generation != generation || state.expired {
            // The application logged in or out meanwhile: its tokens win.
            return false;
        }
        self.shared.state.store(Arc::new(State {
            tokens: Some(set),
            generation: generation + 1,
            expired: false,
        }));
        self.shared.events.send_replace(SessionEvent::Refreshed);
        true
    }

    /// Marks the session expired, if still at `generation`, and fires the hook: once per
    /// expiry, since only one caller can flip the flag under the lock.
    fn expire(&self, generation: u64, settings: &RefreshSettings) {
        let control = self.control();
        let state = self.shared.state.load();
        if state.generation != generation || state.expired {
            return;
        }
        self.shared.state.store(Arc::new(State {
            tokens: state.tokens.clone(),
            generation,
            expired: true,
        }));
        self.shared.events.send_replace(SessionEvent::Expired);
        drop(control);
        if let Some(hook) = &settings.on_session_expired {
            hook();
        }
    }
}

/// Ends a flight: clears it from the session and releases its waiters, exactly once, even if
/// the task panics or is dropped.
struct Finish {
    session: Session,
    id: u64,
    tx: Option<watch::Sender<Option<Result<(), Error>>>>,
}

impl Finish {
    fn send(mut self, outcome: Result<(), Error>) {
        self.complete(outcome);
    }

    fn complete(&mut self, outcome: Result<(), Error>) {
        let Some(tx) = self.tx.take() else { return };
        let mut control = self.session.control();
        if control.flight.as_ref().is_some_and(|f| f.id == self.id) {
            control.flight = None;
        }
        drop(control);
        tx.send_replace(Some(outcome));
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if self.tx.is_some() {
            let error = "the refresh task stopped: it panicked, or its runtime shut down";
            self.complete(Err(Error::refresh_failed(error)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: u64) -> String {
        let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
        format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig")
    }

    #[test]
    fn lifetime_comes_from_expires_in_or_the_jwt() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let from_jwt = jwt_lifetime(&jwt(now + 100)).unwrap();
        assert!((98..=100).contains(&from_jwt.as_secs()), "{from_jwt:?}");
        assert_eq!(jwt_lifetime(&jwt(now - 5)), None);
        assert_eq!(jwt_lifetime("opaque"), None);
        assert_eq!(jwt_lifetime("a.!!!.c"), None);
    }

    #[test]
    fn a_jwt_lifetime_is_at_most_what_the_server_gave_it() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // A client clock an hour behind the server's sees `exp` an hour and a minute away;
        // `exp - iat` says the token lives one minute.
        let payload =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"iat":{},"exp":{}}}"#, now + 3600, now + 3660));
        let lifetime = jwt_lifetime(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(lifetime.as_secs(), 60);
    }

    #[test]
    fn the_shorter_of_expires_in_and_exp_wins() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let session = Session::new();
        session
            .login(Tokens::new(jwt(now + 60), "r").expires_in(Duration::from_secs(3600)))
            .unwrap();
        let left = session.tokens().unwrap().expires_at().unwrap() - Instant::now();
        assert!(left <= Duration::from_secs(60), "{left:?}");
    }

    #[test]
    fn huge_and_zero_lifetimes_neither_panic_nor_count() {
        let session = Session::new();
        session
            .login(Tokens::new("a", "r").expires_in(Duration::MAX))
            .unwrap();
        let expires_at = session.tokens().unwrap().expires_at().unwrap();
        assert!(expires_at > Instant::now() + Duration::from_secs(900_000_000));
        session
            .login(Tokens::new("a", "r").expires_in(Duration::ZERO))
            .unwrap();
        assert_eq!(session.tokens().unwrap().expires_at(), None);
    }

    #[tokio::test]
    async fn login_and_logout_move_the_generation() {
        let session = Session::new();
        assert_eq!(session.load().generation, 0);
        session.login(Tokens::new("a", "r")).unwrap();
        assert_eq!(session.load().generation, 1);
        let state = session.load();
        let tokens = &state.tokens.as_ref().unwrap().0;
        assert_eq!(tokens.header(false), "Bearer a");
        assert_eq!(tokens.header(true), "a");
        assert!(tokens.header(false).is_sensitive() && tokens.header(true).is_sensitive());
        drop(state);
        session.logout();
        assert_eq!(session.load().generation, 2);
        assert_eq!(
            session.login(Tokens::access_only("bad\ntoken")),
            Err(InvalidToken)
        );
    }
}
