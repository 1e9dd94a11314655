//! Where the `jti` of every accepted DPoP proof is remembered, so that a proof is used once:
//! the [`ReplayStore`] trait, [`MemoryReplayStore`] for one instance and, with the `redis`
//! feature, [`RedisReplayStore`] for several.
//!
//! A store sees a [`ReplayKey`] (a SHA-256 of the proof's key thumbprint and `jti`, so its
//! size is fixed whatever the client sent) and how long to remember it: until the proof's
//! `iat` leaves the verifier's window, after which the proof is refused as stale anyway.
//!
//! # Example
//!
//! A store of your own, here a wrapper that counts what it is asked:
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use tower_jwt_refresh::server::dpop::replay::{
//!     MemoryReplayStore, ReplayCheck, ReplayKey, ReplayStore,
//! };
//!
//! #[derive(Debug, Default)]
//! struct Counting {
//!     inner: MemoryReplayStore,
//!     checks: AtomicU64,
//! }
//!
//! impl ReplayStore for Counting {
//!     fn check(&self, key: &ReplayKey, now: u64, expires_at: u64) -> ReplayCheck {
//!         self.checks.fetch_add(1, Ordering::Relaxed);
//!         self.inner.check(key, now, expires_at)
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::BoxError;

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryReplayStore;
#[cfg(feature = "redis")]
pub use redis::RedisReplayStore;

/// What a replay store says about a `jti`.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::server::dpop::replay::{JtiStatus, MemoryReplayStore, ReplayKey};
///
/// let store = MemoryReplayStore::new();
/// let key = ReplayKey::from_bytes([1; 32]);
/// assert_eq!(store.try_check(&key, 0, 60).unwrap(), JtiStatus::Fresh);
/// assert_eq!(store.try_check(&key, 1, 61).unwrap(), JtiStatus::Replayed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JtiStatus {
    /// First seen now, and now remembered: the proof may be accepted.
    Fresh,
    /// Seen before, within its window: the proof is a replay.
    Replayed,
}

/// The key a replay store remembers: SHA-256 over the proof key's thumbprint and the `jti`.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::server::dpop::replay::ReplayKey;
///
/// let key = ReplayKey::from_bytes([7; 32]);
/// assert_eq!(key.as_bytes(), &[7; 32]);
/// assert_eq!(key.to_string().len(), 43);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayKey([u8; 32]);

impl ReplayKey {
    /// A key from its 32 bytes, for stores' own tests.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ReplayKey {
    /// Base64url without padding: 43 characters, for text keys such as Redis'.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine as _;
        f.write_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for ReplayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplayKey({self})")
    }
}

/// The answer of a [`ReplayStore`]: ready now, or after a future resolves.
///
/// An in-memory store answers with [`ReplayCheck::ready`] and costs no allocation; a remote
/// one returns [`ReplayCheck::pending`]. An error refuses the proof with
/// [`DpopError::Store`](crate::server::dpop::DpopError::Store) (fail closed: a proof that
/// cannot be checked for replay is not accepted).
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::server::dpop::replay::{JtiStatus, ReplayCheck};
///
/// // A store that answers at once, and one that has to ask a server first.
/// let now = ReplayCheck::ready(Ok(JtiStatus::Fresh));
/// let later = ReplayCheck::pending(async { Ok(JtiStatus::Replayed) });
/// # let _ = (now, later);
/// ```
pub struct ReplayCheck(pub(crate) Check);

pub(crate) enum Check {
    Ready(Result<JtiStatus, BoxError>),
    Pending(Pin<Box<dyn Future<Output = Result<JtiStatus, BoxError>> + Send>>),
}

impl ReplayCheck {
    /// An answer known now.
    pub fn ready(status: Result<JtiStatus, BoxError>) -> Self {
        Self(Check::Ready(status))
    }

    /// An answer that needs I/O.
    pub fn pending<F>(future: F) -> Self
    where
        F: Future<Output = Result<JtiStatus, BoxError>> + Send + 'static,
    {
        Self(Check::Pending(Box::pin(future)))
    }
}

impl fmt::Debug for ReplayCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Check::Ready(status) => f.debug_tuple("Ready").field(status).finish(),
            Check::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// Remembers the `jti` of accepted DPoP proofs, atomically: of two concurrent checks of one
/// key, exactly one is [`JtiStatus::Fresh`].
///
/// The module's example wraps a store; [`MemoryReplayStore`] and `RedisReplayStore` are the
/// crate's own.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::server::dpop::DpopVerifier;
/// use tower_jwt_refresh::server::dpop::replay::MemoryReplayStore;
///
/// // One store shared by two verifiers (say, two routers of one process).
/// let store = MemoryReplayStore::new();
/// let api = DpopVerifier::new("https://api.example.com")?.replay_store(store.clone());
/// let admin = DpopVerifier::new("https://admin.example.com")?.replay_store(store);
/// # let _ = (api, admin);
/// # Ok::<_, tower_jwt_refresh::server::dpop::InvalidBaseUrl>(())
/// ```
pub trait ReplayStore: Send + Sync + 'static {
    /// Records `key` until `expires_at` (Unix seconds, later than `now`) unless it is already
    /// recorded, and says which. `now` is the verifier's clock, for stores that keep time
    /// themselves; a store with its own expiry (Redis) only needs `expires_at - now`.
    fn check(&self, key: &ReplayKey, now: u64, expires_at: u64) -> ReplayCheck;
}

impl<S: ReplayStore + ?Sized> ReplayStore for std::sync::Arc<S> {
    fn check(&self, key: &ReplayKey, now: u64, expires_at: u64) -> ReplayCheck {
        (**self).check(key, now, expires_at)
    }
}
