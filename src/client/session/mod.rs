//! [`Session`]: the tokens, and the one refresh in flight.
//!
//! Requests read the current tokens lock-free (an `ArcSwap`). Everything that changes them
//! (login, logout, a finished refresh) and the start of a refresh take one short-held mutex,
//! never across an `.await`. A refresh runs in a task of its own: the request that started it
//! can give up without cancelling it for the others, and every waiter gets the same result.
//!
//! `tokens.rs` holds the tokens and reads their lifetime; `flight.rs` runs the single-flight
//! refresh and is where a waiting request wakes up.

mod flight;
mod hooks;
mod runtime;
mod tokens;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use self::flight::Control;
pub(crate) use self::flight::{Joined, RefreshSettings};
pub use self::hooks::StorageGuard;
pub(crate) use self::tokens::TokenState;
pub use self::tokens::{CurrentTokens, Tokens, UnusableToken};

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
    /// Requests sent once more with a server's new DPoP nonce, after a `use_dpop_nonce`
    /// challenge (not replays: no token was rejected). A refresher's own retry at the token
    /// endpoint is not counted here.
    pub dpop_nonce_retries: u64,
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
    dpop_nonce_retries: AtomicU64,
    waits: AtomicU64,
    wait_nanos: AtomicU64,
}

/// What requests read, swapped whole on every change.
///
/// `generation` moves with every new token set; `epoch` only when the identity may change (a
/// login or a logout), so a request can tell "refreshed" from "someone else".
pub(crate) struct State {
    pub(crate) tokens: Option<CurrentTokens>,
    pub(crate) generation: u64,
    pub(crate) epoch: u64,
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
/// # Ok::<_, tower_jwt_refresh::client::UnusableToken>(())
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
    metrics: crate::metrics::Client,
    /// Held while an `on_refresh` hook runs, and by the application's storage writes.
    storage: Arc<tokio::sync::Mutex<()>>,
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
            .field("epoch", &state.epoch)
            .field("expired", &state.expired)
            .finish()
    }
}

impl Session {
    /// A session without tokens.
    pub fn new() -> Self {
        let state = State {
            tokens: None,
            generation: 0,
            epoch: 0,
            expired: false,
        };
        Self {
            shared: Arc::new(Shared {
                state: ArcSwap::from_pointee(state),
                control: Mutex::default(),
                events: watch::channel(SessionEvent::LoggedOut).0,
                counters: Counters::default(),
                metrics: crate::metrics::Client::new(),
                storage: Arc::default(),
            }),
        }
    }

    /// Installs `tokens` (a login), ending any expiry; requests use them at once.
    ///
    /// A login starts a new identity epoch: a request made before it is never sent with these
    /// tokens (not after a wait, not as a replay) and fails with
    /// [`Error::SessionChanged`](super::Error::SessionChanged) instead. To install new tokens
    /// of the same identity without failing requests in flight, use
    /// [`replace_tokens`](Self::replace_tokens).
    pub fn login(&self, tokens: Tokens) -> Result<(), UnusableToken> {
        let set = CurrentTokens::new(tokens)?;
        let mut control = self.control();
        control.new_epoch();
        let state = self.shared.state.load();
        let state = State {
            tokens: Some(set),
            generation: state.generation + 1,
            epoch: state.epoch + 1,
            expired: false,
        };
        self.publish(state, SessionEvent::LoggedIn);
        Ok(())
    }

    /// Installs `tokens` of the same identity, ending any expiry; requests in flight go on
    /// with them.
    ///
    /// For tokens the application obtained itself for the user already logged in: a
    /// re-authentication (step-up, a new consent) or tokens refreshed by another process and
    /// read from shared storage. Unlike [`login`](Self::login), it keeps the identity epoch,
    /// so requests made before it are sent (or replayed) with these tokens. Never use it for
    /// another user: their requests would go out with this user's tokens.
    pub fn replace_tokens(&self, tokens: Tokens) -> Result<(), UnusableToken> {
        let set = CurrentTokens::new(tokens)?;
        let _control = self.control();
        let state = self.shared.state.load();
        let state = State {
            tokens: Some(set),
            generation: state.generation + 1,
            epoch: state.epoch,
            expired: false,
        };
        self.publish(state, SessionEvent::Refreshed);
        Ok(())
    }

    /// Forgets the tokens; requests fail with [`Error::NotAuthenticated`] until the next login.
    ///
    /// Like a login it starts a new identity epoch: requests made before it that still wait
    /// for a refresh or a replay fail with [`Error::SessionChanged`].
    ///
    /// [`Error::NotAuthenticated`]: super::Error::NotAuthenticated
    /// [`Error::SessionChanged`]: super::Error::SessionChanged
    pub fn logout(&self) {
        let mut control = self.control();
        control.new_epoch();
        let state = self.shared.state.load();
        let state = State {
            tokens: None,
            generation: state.generation + 1,
            epoch: state.epoch + 1,
            expired: false,
        };
        self.publish(state, SessionEvent::LoggedOut);
    }

    /// The current tokens.
    pub fn tokens(&self) -> Option<CurrentTokens> {
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
            dpop_nonce_retries: c.dpop_nonce_retries.load(Ordering::Relaxed),
            waits: c.waits.load(Ordering::Relaxed),
            wait_time: Duration::from_nanos(c.wait_nanos.load(Ordering::Relaxed)),
        }
    }

    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<State>> {
        self.shared.state.load()
    }

    /// The state itself, for a request path that caches it (`arc_swap::Cache`).
    pub(crate) fn state(&self) -> &ArcSwap<State> {
        &self.shared.state
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        // Nothing panics while holding it; recover anyway rather than poison every request.
        self.shared
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `state` for requests to read and reports `event`; the caller holds the control
    /// lock, so changes are published in the order they were made.
    fn publish(&self, state: State, event: SessionEvent) {
        self.shared.state.store(Arc::new(state));
        self.shared.events.send_replace(event);
    }

    /// Installs `set` if the session is still at `generation` and not expired.
    fn install(&self, set: CurrentTokens, generation: u64) -> bool {
        let _control = self.control();
        let state = self.shared.state.load();
        if state.generation != generation || state.expired {
            // The application logged in or out meanwhile: its tokens win.
            return false;
        }
        let state = State {
            tokens: Some(set),
            generation: generation + 1,
            epoch: state.epoch,
            expired: false,
        };
        self.publish(state, SessionEvent::Refreshed);
        true
    }

    /// Whether the session still holds the tokens of `generation`, unexpired.
    fn is_at(&self, generation: u64) -> bool {
        let state = self.shared.state.load();
        state.generation == generation && !state.expired
    }

    /// Marks the session expired, if still at `generation`, and fires the hook: once per
    /// expiry, since only one caller can flip the flag under the lock.
    fn expire(&self, generation: u64, settings: &RefreshSettings) {
        let control = self.control();
        let state = self.shared.state.load();
        if state.generation != generation || state.expired {
            return;
        }
        let expired = State {
            tokens: state.tokens.clone(),
            generation,
            epoch: state.epoch,
            expired: true,
        };
        self.publish(expired, SessionEvent::Expired);
        self.metrics().expired();
        drop(control);
        if let Some(hook) = &settings.on_session_expired {
            hook();
        }
    }

    pub(crate) fn count_replay(&self, stale: bool) {
        let counters = &self.shared.counters;
        counters.replays.fetch_add(1, Ordering::Relaxed);
        self.metrics().replay(stale);
        if stale {
            counters.stale_replays.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_nonce_retry(&self) {
        let counters = &self.shared.counters;
        counters.dpop_nonce_retries.fetch_add(1, Ordering::Relaxed);
        self.metrics().nonce_retry();
    }

    fn count_wait(&self, waited: Duration) {
        let counters = &self.shared.counters;
        counters.waits.fetch_add(1, Ordering::Relaxed);
        self.metrics().waited(waited);
        let waited = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        counters.wait_nanos.fetch_add(waited, Ordering::Relaxed);
    }

    fn metrics(&self) -> &crate::metrics::Client {
        &self.shared.metrics
    }

    fn count_refresh(&self) {
        let counters = &self.shared.counters;
        counters.refreshes.fetch_add(1, Ordering::Relaxed);
    }

    fn count_refresh_failure(&self) {
        let counters = &self.shared.counters;
        counters.refresh_failures.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::tokens::tests::{jwt, unix_now};
    use super::*;

    #[test]
    fn expires_in_wins_over_the_jwt_claims() {
        // `exp` read against a client clock that may be skewed says a minute; the server said
        // an hour, counted from receipt.
        let now = unix_now();
        let session = Session::new();
        session
            .login(Tokens::new(jwt(now + 60), "r").expires_in(Duration::from_secs(3600)))
            .unwrap();
        let left = session.tokens().unwrap().expires_at().unwrap() - Instant::now();
        assert!(left > Duration::from_secs(3590), "{left:?}");
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
        assert_eq!(session.load().epoch, 2);
        session.login(Tokens::new("a", "r")).unwrap();
        session.replace_tokens(Tokens::new("b", "r")).unwrap();
        assert_eq!((session.load().generation, session.load().epoch), (4, 3));
        assert_eq!(
            session.login(Tokens::access_only("bad\ntoken")),
            Err(UnusableToken)
        );
    }
}
