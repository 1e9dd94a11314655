//! [`MemoryReplayStore`]: the `jti`s of one instance, in memory, bounded.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::server::dpop::replay::{JtiStatus, ReplayCheck, ReplayKey, ReplayStore};

/// The replay store of one instance: a bounded map in memory.
///
/// Entries leave at their expiry (the end of their proof's `iat` window). When the store is
/// full of unexpired entries it refuses new proofs (fail closed, a 503 at the layer) rather
/// than forget a `jti` early: size [`with_capacity`](Self::with_capacity) for your peak rate
/// of DPoP requests times the window. The default, 262 144 entries, takes about 20 MiB when
/// full and holds an hour of 70 requests a second under a one-minute window.
///
/// Several instances behind one load balancer need a shared store
/// ([`RedisReplayStore`](crate::server::dpop::replay::RedisReplayStore) with the `redis`
/// feature): with one store each, a proof replayed to another instance goes unnoticed.
///
/// Cloning is cheap and shares the entries.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::server::dpop::replay::{JtiStatus, MemoryReplayStore, ReplayKey, ReplayStore};
///
/// let store = MemoryReplayStore::with_capacity(2);
/// let key = ReplayKey::from_bytes([1; 32]);
/// assert_eq!(store.try_check(&key, 100, 160).unwrap(), JtiStatus::Fresh);
/// assert_eq!(store.try_check(&key, 101, 161).unwrap(), JtiStatus::Replayed);
/// // After its expiry the entry is gone (its proof would be stale by then).
/// assert_eq!(store.try_check(&key, 160, 220).unwrap(), JtiStatus::Fresh);
/// ```
#[derive(Clone)]
pub struct MemoryReplayStore {
    state: Arc<Mutex<State>>,
    capacity: usize,
}

#[derive(Default)]
struct State {
    /// Each key's expiry.
    seen: HashMap<ReplayKey, u64>,
    /// The same entries, soonest expiry first.
    expiries: BinaryHeap<Reverse<(u64, [u8; 32])>>,
}

/// The store is full of unexpired entries.
#[derive(Debug)]
struct Full(usize);

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dpop replay store full ({} unexpired entries)", self.0)
    }
}

impl std::error::Error for Full {}

impl Default for MemoryReplayStore {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl fmt::Debug for MemoryReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayStore")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl MemoryReplayStore {
    /// The default capacity, in entries.
    pub const DEFAULT_CAPACITY: usize = 1 << 18;

    /// A store of [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that holds at most `capacity` unexpired entries (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            state: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// The number of entries held, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`ReplayStore::check`], answered directly: the memory store never waits.
    pub fn try_check(
        &self,
        key: &ReplayKey,
        now: u64,
        expires_at: u64,
    ) -> Result<JtiStatus, crate::BoxError> {
        let mut state = self.lock();
        let state = &mut *state;
        while let Some(Reverse((expiry, bytes))) = state.expiries.peek().copied() {
            if expiry > now {
                break;
            }
            state.expiries.pop();
            state.seen.remove(&ReplayKey(bytes));
        }
        if state.seen.contains_key(key) {
            return Ok(JtiStatus::Replayed);
        }
        if state.seen.len() >= self.capacity {
            return Err(Box::new(Full(self.capacity)));
        }
        let expires_at = expires_at.max(now.saturating_add(1));
        state.seen.insert(*key, expires_at);
        state.expiries.push(Reverse((expires_at, key.0)));
        Ok(JtiStatus::Fresh)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The map is consistent between statements; a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ReplayStore for MemoryReplayStore {
    fn check(&self, key: &ReplayKey, now: u64, expires_at: u64) -> ReplayCheck {
        ReplayCheck::ready(self.try_check(key, now, expires_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ReplayKey {
        ReplayKey([n; 32])
    }

    #[test]
    fn a_key_is_fresh_once_until_it_expires() {
        let store = MemoryReplayStore::new();
        assert_eq!(
            store.try_check(&key(1), 100, 161).unwrap(),
            JtiStatus::Fresh
        );
        assert_eq!(
            store.try_check(&key(1), 160, 221).unwrap(),
            JtiStatus::Replayed
        );
        assert_eq!(
            store.try_check(&key(2), 160, 221).unwrap(),
            JtiStatus::Fresh
        );
        // At 161 the first entry expires; the second stays.
        assert_eq!(
            store.try_check(&key(3), 161, 222).unwrap(),
            JtiStatus::Fresh
        );
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.try_check(&key(2), 161, 222).unwrap(),
            JtiStatus::Replayed
        );
    }

    #[test]
    fn a_full_store_refuses_rather_than_forgets() {
        let store = MemoryReplayStore::with_capacity(2);
        store.try_check(&key(1), 100, 200).unwrap();
        store.try_check(&key(2), 100, 150).unwrap();
        let err = store.try_check(&key(3), 120, 220).unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        // Known keys are still answered, and space comes back as entries expire.
        assert_eq!(
            store.try_check(&key(1), 120, 220).unwrap(),
            JtiStatus::Replayed
        );
        assert_eq!(
            store.try_check(&key(3), 150, 250).unwrap(),
            JtiStatus::Fresh
        );
    }

    #[test]
    fn concurrent_checks_of_one_key_have_one_winner() {
        let store = MemoryReplayStore::new();
        let fresh: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| store.try_check(&key(9), 100, 160).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|status| *status == JtiStatus::Fresh)
                .count()
        });
        assert_eq!(fresh, 1);
    }

    #[test]
    fn a_past_expiry_is_kept_for_a_second() {
        let store = MemoryReplayStore::new();
        store.try_check(&key(1), 100, 90).unwrap();
        assert_eq!(
            store.try_check(&key(1), 100, 90).unwrap(),
            JtiStatus::Replayed
        );
        assert_eq!(store.try_check(&key(1), 101, 90).unwrap(), JtiStatus::Fresh);
    }
}
