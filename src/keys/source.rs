//! Where a layer's keys come from: a fixed set, or one kept current from a remote JWKS.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::keys::key::Key;
use crate::keys::set::KeySet;

/// A future that resolves once a key refetch has finished (whatever its outcome).
pub(crate) type RefetchWait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Something that can fetch keys again when a token names an unknown `kid`.
pub(crate) trait Refetch: Send + Sync + 'static {
    /// Joins the refetch in flight, or starts one; `None` when the rate limit forbids it.
    fn unknown_kid(&self) -> Option<RefetchWait>;
}

/// The keys a [`JwtAuthLayer`](crate::server::JwtAuthLayer) verifies with.
///
/// Build one from a [`Key`], a [`KeySet`], or (feature `jwks`) a `RemoteJwks`. Reading the
/// current set is lock-free.
#[derive(Clone)]
pub struct KeySource {
    current: Arc<ArcSwap<KeySet>>,
    refetch: Option<Arc<dyn Refetch>>,
    /// The epoch of a set that never changes, read without touching `current`.
    fixed_epoch: Option<u64>,
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySource")
            .field("keys", &**self.current.load())
            .field("remote", &self.refetch.is_some())
            .finish()
    }
}

impl KeySource {
    #[cfg_attr(not(feature = "jwks"), allow(dead_code))]
    pub(crate) fn dynamic(current: Arc<ArcSwap<KeySet>>, refetch: Arc<dyn Refetch>) -> Self {
        Self {
            current,
            refetch: Some(refetch),
            fixed_epoch: None,
        }
    }

    /// The current key set.
    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// The current set's epoch; for fixed keys without loading the set.
    pub(crate) fn epoch(&self) -> u64 {
        self.fixed_epoch
            .unwrap_or_else(|| self.current.load().epoch())
    }

    /// Whether these keys never change (no remote JWKS behind them).
    pub(crate) fn is_fixed(&self) -> bool {
        self.refetch.is_none()
    }

    /// Joins or starts a refetch for an unknown `kid`; `None` when the keys are fixed or the
    /// rate limit forbids one now.
    pub(crate) fn unknown_kid(&self) -> Option<RefetchWait> {
        self.refetch.as_ref()?.unknown_kid()
    }
}

impl From<KeySet> for KeySource {
    fn from(keys: KeySet) -> Self {
        Self {
            fixed_epoch: Some(keys.epoch()),
            current: Arc::new(ArcSwap::from_pointee(keys)),
            refetch: None,
        }
    }
}

impl From<Key> for KeySource {
    fn from(key: Key) -> Self {
        KeySet::from(key).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Algorithm;

    struct NoRefetch;

    impl Refetch for NoRefetch {
        fn unknown_kid(&self) -> Option<RefetchWait> {
            None
        }
    }

    fn set() -> KeySet {
        KeySet::from(Key::hmac(Algorithm::HS256, [7; 32]).unwrap())
    }

    #[test]
    fn the_epoch_is_the_current_sets() {
        let fixed = KeySource::from(set());
        assert_eq!(fixed.epoch(), fixed.load().epoch());
        let current = Arc::new(ArcSwap::from_pointee(set()));
        let remote = KeySource::dynamic(Arc::clone(&current), Arc::new(NoRefetch));
        assert_eq!(remote.epoch(), current.load().epoch());
        let next = set();
        let epoch = next.epoch();
        current.store(Arc::new(next));
        assert_eq!(remote.epoch(), epoch);
        assert_ne!(remote.epoch(), fixed.epoch());
    }
}
