//! A bounded cache of verified tokens, so a repeated token skips signature work.
//!
//! Entries are keyed by the whole token string and compared in full, never by a hash alone.
//! The hash itself reads only the token's length and its last 16 bytes, keyed per cache: a
//! cached token is a verified JWS, whose last bytes are its signature and as good as random,
//! so hashing the rest would cost a pass over the token for nothing.
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
use std::hash::{BuildHasher, Hasher, RandomState};
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
    entries: Cache<Arc<[u8]>, Entry<C>, Weigh, TailHash>,
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

/// Hashes a token by its length and its last 16 bytes, with keys drawn per cache.
///
/// A token's tail is its signature, which nobody without the key chooses, and the key keeps
/// bucket placement unpredictable anyway. Colliding tokens cost a comparison, never a wrong
/// answer: the cache compares every candidate in full.
#[derive(Clone)]
struct TailHash {
    keys: [u64; 2],
}

impl TailHash {
    fn new() -> Self {
        let random = RandomState::new();
        Self {
            keys: [random.hash_one(1u8), random.hash_one(2u8)],
        }
    }
}

impl BuildHasher for TailHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher {
            state: self.keys[0],
            key: self.keys[1],
        }
    }
}

struct TailHasher {
    state: u64,
    key: u64,
}

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let (low, high) = match n {
            16.. => (word(n - 16), word(n - 8)),
            8.. => (word(0), word(n - 8)),
            _ => {
                let mut padded = [0; 8];
                padded[..n].copy_from_slice(bytes);
                (u64::from_le_bytes(padded), 0)
            }
        };
        self.state = fold(self.state ^ low, self.key ^ high ^ n as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.state = fold(self.state ^ n as u64, self.key);
    }

    fn finish(&self) -> u64 {
        fold(self.state, self.key.rotate_left(32))
    }
}

/// The folded multiply of `foldhash` and `ahash`: every input bit reaches the middle bits.
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
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
            entries: Cache::with(items, capacity, Weigh, TailHash::new(), Default::default()),
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
                cnf_jkt: None,
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
    fn tokens_that_share_their_tail_stay_apart() {
        // Same length, same last 16 bytes: the same hash, so only the full comparison can
        // tell them apart.
        let cache = TokenCache::new(1 << 20);
        let tail = "s".repeat(40);
        let (first, second) = (format!("first.{tail}"), format!("other.{tail}"));
        cache.insert(&first, claims(100), 10, 1);
        assert!(cache.get(second.as_bytes(), 50, 1).is_none());
        cache.insert(&second, claims(200), 10, 1);
        let exp = |token: &str| {
            cache
                .get(token.as_bytes(), 50, 1)
                .map(|c| c.registered().exp)
        };
        assert_eq!((exp(&first), exp(&second)), (Some(100), Some(200)));
        // Short tokens are hashed whole.
        cache.insert("ab", claims(300), 10, 1);
        assert!(cache.get(b"ba", 50, 1).is_none());
        assert_eq!(exp("ab"), Some(300));
    }

    #[test]
    fn the_hash_reads_the_length_and_the_tail() {
        let hash = TailHash::new();
        let h = |bytes: &[u8]| hash.hash_one(bytes);
        let token = b"header.payload.0123456789abcdefghij";
        let mut head_changed = *token;
        head_changed[0] = b'H';
        assert_eq!(h(token), h(&head_changed));
        let mut tail_changed = *token;
        tail_changed[token.len() - 1] = b'J';
        assert_ne!(h(token), h(&tail_changed));
        assert_ne!(h(token), h(&token[1..]));
        // Each cache draws its own keys.
        assert_ne!(h(token), TailHash::new().hash_one(&token[..]));
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
