//! The `on_refresh` hook, and the storage lock that orders it.
//!
//! Hooks run one at a time, in the order their tokens were installed, and only while their
//! tokens are still the session's: a flight takes the session's storage lock *before* it
//! installs, so the next flight (which can only start from the tokens this one installs)
//! queues behind it, and checks the session again under the lock before the hook starts. The
//! application takes the same lock with [`Session::lock_storage`] around its own writes to
//! token storage, so that clearing storage at logout is never overtaken by a hook.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tracing::{Instrument as _, Span};

use super::Session;
use super::tokens::CurrentTokens;

/// The `on_refresh` hook: awaited before waiters are released.
pub(crate) type OnRefresh =
    Arc<dyn Fn(CurrentTokens) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The session's storage lock, held: no `on_refresh` hook of this session runs meanwhile.
///
/// Returned by [`Session::lock_storage`]; dropping it lets the next hook run.
#[must_use = "the lock is released when the guard is dropped"]
#[derive(Debug)]
pub struct StorageGuard {
    _guard: OwnedMutexGuard<()>,
}

impl Session {
    /// Waits for the `on_refresh` hook in progress, if any, and keeps the next from starting
    /// until the guard is dropped.
    ///
    /// Take it around the application's own writes to token storage, so that a hook never
    /// overwrites them with tokens of a login that has ended. A hook that would start after a
    /// `logout` or `login` made under the guard does not run at all.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_jwt_refresh::client::Session;
    /// # async fn clear_storage() {}
    /// # async fn run(session: Session) {
    /// let _storage = session.lock_storage().await;
    /// session.logout();
    /// clear_storage().await; // no hook writes the old tokens back afterwards
    /// # }
    /// ```
    pub async fn lock_storage(&self) -> StorageGuard {
        let lock = Arc::clone(&self.shared.storage);
        StorageGuard {
            _guard: lock.lock_owned().await,
        }
    }

    /// The storage lock, if it can be had by `deadline`.
    pub(super) async fn lock_storage_until(&self, deadline: Instant) -> Option<StorageGuard> {
        tokio::time::timeout_at(deadline, self.lock_storage())
            .await
            .ok()
    }
}

/// Runs `hook` with `tokens` in a task of its own, bounded by `deadline`. A hook that panics
/// or times out is logged and changes nothing else: the tokens are installed already, and the
/// waiters go on with them.
pub(super) async fn run(hook: &OnRefresh, tokens: CurrentTokens, deadline: Instant, span: &Span) {
    let hook = Arc::clone(hook);
    // The call itself runs in the task too, so a hook that panics before returning its
    // future is caught there as well.
    let mut task = tokio::spawn(async move { hook(tokens).await }.instrument(span.clone()));
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => span.in_scope(|| {
            tracing::error!(%error, "on_refresh hook failed; the new tokens are in use but not persisted");
        }),
        Err(_) => {
            task.abort();
            span.in_scope(|| tracing::warn!("on_refresh hook timed out"));
        }
    }
}
