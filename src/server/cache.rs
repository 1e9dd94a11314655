//! A bounded cache of verified tokens, so a repeated token skips signature work.
//!
//! Entries are keyed by the whole token string and compared in full, never by a hash alone.
//! An entry is used only while `now < exp` and while the key set that verified it is still
//! current, so it never outlives the token's `exp` nor a retired key. DenyList is not cached:
//! the layer checks it on every request, hits included.
//!
//! Memory is bounded by weight: an entry weighs its token length plus its decoded payload
//! length plus [`ENTRY_OVERHEAD`] bytes, and the sum of weights never exceeds the configured
//! capacity. The payload length bounds the heap of the registered claims and of compact
//! custom claims types; a custom type that expands JSON (deeply nested `Value`s, say) can
//! hold more. The capacity is split across shards, so a very small capacity may not cache
//! large tokens at all.

use std::fmt;
use std::sync::Arc;

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::server::claims::Claims;

/// Bookkeeping per entry, in bytes, counted into its weight: the key and value headers, the
/// shared claims allocation, and the cache's own slot.
pub(crate) const ENTRY_OVERHEAD: u64 = 192;

/// Default weight capacity: 8 MiB.
pub(crate) const DEFAULT_CAPACITY: u64 = 8 * 1024 * 1024;

pub(crate) struct TokenCache<C> {
    entries: Cache<Arc<[u8]>, Entry<C>, Weigh>,
}

struct Entry<C> {
    claims: Claims<C>,
    exp: u64,
    epoch: u64,
    weight: u64,
}

impl<C> Clone for Entry<C> {
    fn clone(&self) -> Self {
        Self {
            claims: self.claims.clone(),
            exp: self.exp,
            epoch: self.epoch,
            weight: self.weight,
        }
    }
}

#[derive(Clone)]
struct Weigh;

impl<C> Weighter<Arc<[u8]>, Entry<C>> for Weigh {
    fn weight(&self, _: &Arc<[u8]>, entry: &Entry<C>) -> u64 {
        entry.weight
    }
}

impl<C> fmt::Debug for TokenCache<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.entries.len())
            .field("weight", &self.entries.weight())
            .field("capacity", &self.entries.capacity())
            .finish()
    }
}

impl<C: Send + Sync + 'static> TokenCache<C> {
    /// A cache whose entries weigh at most `capacity` bytes in all.
    pub(crate) fn new(capacity: u64) -> Self {
        // Estimate ~1 KiB per entry for the initial table size.
        let items = usize::try_from(capacity / 1024)
            .unwrap_or(usize::MAX)
            .clamp(16, 1 << 20);
        Self {
            entries: Cache::with_weighter(items, capacity, Weigh),
        }
    }

    /// The claims of `token`, if it was verified with the key set of `epoch` and `now` is
    /// before its `exp`. Keys are bytes, so a token can be looked up before it is read as text:
    /// only tokens that passed extraction's checks are ever inserted.
    pub(crate) fn get(&self, token: &[u8], now: u64, epoch: u64) -> Option<Claims<C>> {
        let entry = self.entries.get(token)?;
        if now < entry.exp && entry.epoch == epoch {
            Some(entry.claims)
        } else {
            self.entries.remove(token);
            None
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.entries.capacity()
    }

    pub(crate) fn insert(&self, token: &str, claims: Claims<C>, payload_len: usize, epoch: u64) {
        let exp = claims.registered().exp;
        let weight = (token.len() + payload_len) as u64 + ENTRY_OVERHEAD;
        self.entries.insert(
            Arc::from(token.as_bytes()),
            Entry {
                claims,
                exp,
                epoch,
                weight,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn weight(&self) -> u64 {
        self.entries.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::RegisteredClaims;

    fn claims(exp: u64) -> Claims<()> {
        Claims::new(
            RegisteredClaims {
                sub: None,
                iss: None,
                aud: vec![],
                exp,
                nbf: None,
                iat: None,
                jti: None,
                sid: None,
                scope: None,
            },
            (),
        )
    }

    #[test]
    fn an_entry_never_outlives_exp() {
        let cache = TokenCache::new(1 << 20);
        cache.insert("tok", claims(100), 10, 1);
        assert!(cache.get(b"tok", 99, 1).is_some());
        assert!(cache.get(b"tok", 100, 1).is_none());
        // And it was dropped, not just hidden.
        assert!(cache.get(b"tok", 0, 1).is_none());
    }

    #[test]
    fn a_new_key_set_invalidates_entries() {
        let cache = TokenCache::new(1 << 20);
        cache.insert("tok", claims(100), 10, 1);
        assert!(cache.get(b"tok", 50, 2).is_none());
    }

    #[test]
    fn lookup_compares_the_whole_token() {
        let cache = TokenCache::new(1 << 20);
        let token = "a".repeat(300);
        cache.insert(&token, claims(100), 10, 1);
        let mut other = token.clone();
        other.replace_range(299.., "b");
        assert!(cache.get(other.as_bytes(), 50, 1).is_none());
        assert!(cache.get(&token.as_bytes()[..299], 50, 1).is_none());
        assert!(cache.get(token.as_bytes(), 50, 1).is_some());
    }

    #[test]
    fn weight_stays_within_capacity() {
        let capacity = 64 * 1024;
        let cache = TokenCache::new(capacity);
        for i in 0..10_000 {
            cache.insert(&format!("{i:0>400}"), claims(u64::MAX), 300, 1);
        }
        assert!(
            cache.weight() <= capacity,
            "{} > {capacity}",
            cache.weight()
        );
        assert!(cache.weight() > 0);
    }
}
