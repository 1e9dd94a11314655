//! The single-flight refresh: one refresh per session at a time, in a task of its own, and
//! the requests waiting for it.
//!
//! Laid out as tower's `buffer/worker.rs`: `Session::join` is the front (join the flight in
//! progress, or start one), `run_refresh` the worker task, and `Finish` the one place a
//! flight ends. A waiting request wakes in `Session::wait`, when `Finish` publishes the
//! outcome on the flight's `watch` channel, or when its wait timeout passes.
//!
//! Where tower's buffer queues every caller unbounded, a flight bounds its waiters
//! (`max_waiters`), their wait (`wait_timeout`), the refresh (`refresh_timeout`) and how often
//! refreshes may start (the loop guard).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument as _, Span};

use super::hooks::{self, OnRefresh};
use super::tokens::{CurrentTokens, Tokens};
use super::{Session, runtime};
use crate::client::error::Error;
use crate::client::refresher::{DynRefresher, RefreshFailure};

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
    /// Where refreshes run: the runtime current when the layer was built, unless set.
    pub(crate) runtime: Option<tokio::runtime::Handle>,
}

/// A flight's outcome, `None` until it lands.
type Outcome = Option<Result<(), Error>>;

/// What the session's mutex guards: the flight in progress, the loop guard and the backoff.
#[derive(Default)]
pub(super) struct Control {
    flight: Option<Flight>,
    /// Start times of recent refreshes that did not fail, for the loop guard.
    recent: VecDeque<Instant>,
    next_flight: u64,
    backoff: Backoff,
}

/// After a failed refresh, no other starts before `until`; requests that must wait for one
/// get the failure at once meanwhile.
#[derive(Default)]
struct Backoff {
    until: Option<Instant>,
    /// The next delay, doubling from `FIRST_BACKOFF` up to `MAX_BACKOFF`.
    next: Duration,
    last: Option<Error>,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

impl Backoff {
    /// The failure to report while backing off.
    fn active(&self) -> Option<Error> {
        let until = self.until?;
        (Instant::now() < until)
            .then(|| self.last.clone())
            .flatten()
    }

    /// A failed refresh: no other before the next delay has passed, or the server's
    /// `Retry-After`. The client's own delay ends by `expires_at`, the access token's expiry
    /// when it is still ahead: a backoff started while the token was valid (a failed
    /// prefetch) must not keep failing requests after it expires, when the endpoint may be
    /// back. The server's `Retry-After` is honoured whole.
    fn failed(&mut self, error: Error, retry_after: Option<Duration>, expires_at: Option<Instant>) {
        let delay = self.next.max(FIRST_BACKOFF);
        let now = Instant::now();
        let until = match retry_after {
            Some(hint) => now + hint.min(MAX_RETRY_AFTER).max(delay),
            None => match expires_at.filter(|at| *at > now) {
                Some(expiry) => (now + delay).min(expiry),
                None => now + delay,
            },
        };
        self.until = Some(until);
        self.next = (delay * 2).min(MAX_BACKOFF);
        self.last = Some(error);
    }
}

/// The refresh in progress for one generation of tokens.
struct Flight {
    id: u64,
    generation: u64,
    outcome: watch::Receiver<Outcome>,
    waiters: Arc<AtomicUsize>,
}

/// The result of asking for tokens newer than a generation.
pub(crate) enum Joined {
    /// Newer tokens are already installed.
    Newer,
    /// Wait for the refresh in flight.
    Wait(Waiter),
}

/// A place among a refresh's waiters; leaving frees it.
pub(crate) struct Waiter {
    outcome: watch::Receiver<Outcome>,
    count: Arc<AtomicUsize>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Flight {
    /// One more waiter, unless `max_waiters` already wait.
    fn join(&self, max_waiters: usize) -> Result<Waiter, Error> {
        if self.waiters.fetch_add(1, Ordering::AcqRel) >= max_waiters {
            self.waiters.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Overloaded);
        }
        Ok(Waiter {
            outcome: self.outcome.clone(),
            count: Arc::clone(&self.waiters),
        })
    }
}

impl Control {
    /// A login or logout: the loop guard's history and the backoff belonged to the previous
    /// identity.
    pub(super) fn new_epoch(&mut self) {
        self.recent.clear();
        self.backoff = Backoff::default();
    }

    /// Records how flight `id`, started at `started`, ended: a failure leaves the loop guard
    /// (it was no loop) and starts a backoff; a success ends any backoff.
    fn settle(
        &mut self,
        id: u64,
        started: Instant,
        outcome: &Result<(), Error>,
        (hint, expires_at): (Hint, Option<Instant>),
    ) {
        if self.flight.as_ref().is_some_and(|f| f.id == id) {
            self.flight = None;
        }
        match outcome {
            Ok(()) => self.backoff = Backoff::default(),
            Err(error @ (Error::RefreshFailed(_) | Error::NoRuntime)) => {
                if let Some(at) = self.recent.iter().rposition(|t| *t == started) {
                    self.recent.remove(at);
                }
                if let Error::RefreshFailed(_) = error {
                    self.backoff.failed(error.clone(), hint, expires_at);
                }
            }
            Err(_) => {}
        }
    }

    /// The loop guard: at most `loop_limit` refreshes start within any `loop_window`.
    fn admit(&mut self, settings: &RefreshSettings) -> Result<(), Error> {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= settings.loop_window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= settings.loop_limit {
            tracing::warn!(limit = settings.loop_limit, "refresh loop guard tripped");
            return Err(Error::RefreshLoop);
        }
        self.recent.push_back(now);
        Ok(())
    }

    /// Records a new flight for `generation`, whose first waiter is the caller (a prefetch
    /// drops it at once).
    fn start(&mut self, generation: u64) -> (u64, watch::Sender<Outcome>, Waiter) {
        let (tx, outcome) = watch::channel(None);
        let waiters = Arc::new(AtomicUsize::new(1));
        let id = self.next_flight;
        self.next_flight += 1;
        self.flight = Some(Flight {
            id,
            generation,
            outcome: outcome.clone(),
            waiters: Arc::clone(&waiters),
        });
        let waiter = Waiter {
            outcome,
            count: waiters,
        };
        (id, tx, waiter)
    }
}

/// A refresher's hint of when to try again.
type Hint = Option<Duration>;

impl Session {
    /// Asks for tokens newer than generation `seen`: at once if they exist, else by joining
    /// the refresh in flight or starting one. While backing off from a failed refresh, fails
    /// at once with that failure.
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
            return flight.join(settings.max_waiters).map(Joined::Wait);
        }
        if let Some(failure) = control.backoff.active() {
            return Err(failure);
        }
        let Some(refresh_token) = tokens.refresh_token().map(str::to_owned) else {
            drop(control);
            self.expire(state.generation, settings);
            return Err(Error::SessionExpired);
        };
        control.admit(settings)?;
        let generation = state.generation;
        drop(state);
        self.launch(control, generation, refresh_token, settings)
            .map(Joined::Wait)
    }

    /// Starts a background refresh of generation `seen` if none runs, nothing backs off, and
    /// the loop guard allows one; never waits for the lock, never fails anyone.
    pub(crate) fn prefetch(&self, seen: u64, settings: &Arc<RefreshSettings>) {
        let mut control = match self.shared.control.try_lock() {
            Ok(control) => control,
            Err(std::sync::TryLockError::Poisoned(control)) => control.into_inner(),
            // Someone is starting or ending a flight right now.
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let state = self.shared.state.load();
        let refresh_token = match &state.tokens {
            Some(tokens) if state.generation == seen && !state.expired => tokens.refresh_token(),
            _ => return,
        };
        let Some(refresh_token) = refresh_token.map(str::to_owned) else {
            return;
        };
        let busy = control
            .flight
            .as_ref()
            .is_some_and(|f| f.generation == seen);
        if busy || control.backoff.active().is_some() || control.admit(settings).is_err() {
            return;
        }
        drop(state);
        tracing::debug!(generation = seen, "prefetching tokens");
        // A prefetch that cannot start is nobody's error: the stale point still waits.
        let _ = self.launch(control, seen, refresh_token, settings);
    }

    /// Starts the flight for `generation`, with the control lock held on entry.
    fn launch(
        &self,
        mut control: std::sync::MutexGuard<'_, Control>,
        generation: u64,
        refresh_token: String,
        settings: &Arc<RefreshSettings>,
    ) -> Result<Waiter, Error> {
        let started = control.recent.back().copied().unwrap_or_else(Instant::now);
        let (id, tx, waiter) = control.start(generation);
        drop(control);
        // Outside the lock: a task dropped at once (a runtime shutting down) ends the flight
        // through `Finish`, which takes the lock.
        let finish = Finish {
            session: self.clone(),
            id,
            started,
            hint: None,
            tx: Some(tx),
        };
        spawn_refresh(Arc::clone(settings), refresh_token, generation, finish)?;
        Ok(waiter)
    }

    /// Waits for the refresh, bounded by the wait timeout: where a waiting request wakes.
    pub(crate) async fn wait(
        &self,
        waiter: Waiter,
        settings: &RefreshSettings,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let mut outcome = waiter.outcome.clone();
        let deadline = started + settings.wait_timeout;
        let landed = outcome.wait_for(Option::is_some);
        let result = runtime::timeout_at(settings.runtime.as_ref(), deadline, landed)?.await;
        self.count_wait(started.elapsed());
        drop(waiter);
        match result {
            Err(_) => Err(Error::WaitTimeout),
            Ok(Err(_)) => Err(Error::refresh_failed("refresh task ended without a result")),
            Ok(Ok(outcome)) => outcome.clone().unwrap_or(Err(Error::WaitTimeout)),
        }
    }
}

/// One refresh as its task runs it: for which generation, and by when.
struct Task {
    session: Session,
    settings: Arc<RefreshSettings>,
    generation: u64,
    deadline: Instant,
    span: Span,
}

/// Starts the refresh task on the layer's runtime; without one, ends the flight at once.
fn spawn_refresh(
    settings: Arc<RefreshSettings>,
    refresh_token: String,
    generation: u64,
    finish: Finish,
) -> Result<(), Error> {
    match runtime::handle(settings.runtime.as_ref()) {
        // On a runtime that has shut down, Tokio drops the task unrun, which ends the flight
        // through `Finish`.
        Ok(runtime) => {
            runtime.spawn(run_refresh(settings, refresh_token, generation, finish));
            Ok(())
        }
        Err(error) => {
            finish.send(Err(error.clone()));
            Err(error)
        }
    }
}

/// The refresh task: refresh, install, run the hook, then release the waiters, all within
/// the refresh timeout.
async fn run_refresh(
    settings: Arc<RefreshSettings>,
    refresh_token: String,
    generation: u64,
    finish: Finish,
) {
    let task = Task {
        deadline: Instant::now() + settings.refresh_timeout,
        span: tracing::info_span!("token_refresh", generation),
        session: finish.session.clone(),
        settings,
        generation,
    };
    let refresh = Arc::clone(&task.settings.refresher).refresh_owned(refresh_token.clone());
    let mut finish = finish;
    let Ok(refresh) = runtime::timeout_at(None, task.deadline, refresh) else {
        // A runtime without timers: every flight would hang without its timeout.
        return finish.send(Err(Error::NoRuntime));
    };
    let result = refresh.instrument(task.span.clone()).await;
    let outcome = match result {
        Ok(Ok(new)) => task.accept(new, refresh_token).await,
        Ok(Err(RefreshFailure::RetryAfter(error, after))) => {
            finish.hint = Some(after);
            Err(task.failed(RefreshFailure::Transient(error)))
        }
        Ok(Err(failure)) => Err(task.failed(failure)),
        Err(_) => {
            task.span.in_scope(|| tracing::warn!("refresh timed out"));
            Err(Error::refresh_failed("refresh timed out"))
        }
    };
    task.session.metrics().refresh(finish.started, &outcome);
    finish.send(task.settle(outcome));
}

impl Task {
    /// Installs what the refresher returned, then awaits `on_refresh` with it.
    async fn accept(&self, new: Tokens, spent: String) -> Result<(), Error> {
        let set = match CurrentTokens::new(Tokens::refreshed(new, spent)) {
            Ok(set) => set,
            // The server has rotated already, so the refresh token this replaced is spent, and
            // tokens that cannot be sent are no session: expire it rather than retry with a
            // spent token.
            Err(error) => {
                self.span.in_scope(
                    || tracing::warn!(%error, "refreshed access token unusable; session expired"),
                );
                return Err(self.expire());
            }
        };
        // Hooks run in the order their tokens are installed: take the storage lock first.
        let storage = match &self.settings.on_refresh {
            Some(_) => match self.session.lock_storage_until(self.deadline).await {
                None => {
                    let skipped = "storage lock held past the refresh timeout; on_refresh skipped";
                    self.span.in_scope(|| tracing::warn!(skipped));
                    None
                }
                guard => guard,
            },
            None => None,
        };
        if !self.session.install(set.clone(), self.generation) {
            return Ok(());
        }
        self.session.count_refresh();
        self.span.in_scope(|| tracing::debug!("tokens refreshed"));
        // Persisted before any waiter goes on; only tokens still in use (a logout or login
        // since the install ends them).
        if let (Some(hook), Some(_storage)) = (&self.settings.on_refresh, storage)
            && self.session.is_at(self.generation + 1)
        {
            hooks::run(hook, set, self.deadline, &self.span).await;
        }
        Ok(())
    }

    /// What a refresher's failure means for the waiters.
    fn failed(&self, failure: RefreshFailure) -> Error {
        match failure {
            RefreshFailure::Permanent(error) => {
                self.span
                    .in_scope(|| tracing::warn!(%error, "refresh token refused; session expired"));
                self.expire()
            }
            RefreshFailure::Transient(error) | RefreshFailure::RetryAfter(error, _) => {
                self.span
                    .in_scope(|| tracing::warn!(%error, "refresh failed"));
                Error::refresh_failed(error)
            }
        }
    }

    fn expire(&self) -> Error {
        self.session.expire(self.generation, &self.settings);
        Error::SessionExpired
    }

    /// Counts a failure, and turns it into success if the application logged in or out
    /// meanwhile: waiters then re-read the session and go on with its tokens (or learn there
    /// are none).
    fn settle(&self, outcome: Result<(), Error>) -> Result<(), Error> {
        let Err(error) = outcome else {
            return Ok(());
        };
        self.session.count_refresh_failure();
        let state = self.session.shared.state.load();
        let moved_on = state.generation != self.generation && !state.expired;
        if moved_on { Ok(()) } else { Err(error) }
    }
}

/// Ends a flight: clears it from the session and releases its waiters, exactly once, even if
/// the task panics or is dropped.
struct Finish {
    session: Session,
    id: u64,
    /// The flight's entry in the loop guard.
    started: Instant,
    /// The refresher's `Retry-After`, if it failed with one.
    hint: Hint,
    tx: Option<watch::Sender<Outcome>>,
}

impl Finish {
    fn send(mut self, outcome: Result<(), Error>) {
        self.complete(outcome);
    }

    fn complete(&mut self, outcome: Result<(), Error>) {
        let Some(tx) = self.tx.take() else { return };
        // The expiry of the tokens in place, which a backoff does not outlast.
        let expires_at = self
            .session
            .load()
            .tokens
            .as_ref()
            .and_then(|t| t.0.expires_at);
        let mut control = self.session.control();
        control.settle(self.id, self.started, &outcome, (self.hint, expires_at));
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
