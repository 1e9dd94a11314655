//! Where a family's keys live: its bucket, whose hash tag every key of the family and the
//! bucket's index of revocations share (see [`RedisStore`](super::RedisStore)'s key layout).

/// How many buckets the families are spread over (see [`RedisStore`](super::RedisStore)'s key
/// layout).
pub(crate) const BUCKETS: usize = 16;

/// The bucket of `family`: its 32-bit FNV-1a hash, modulo [`BUCKETS`]. Stable across versions
/// and platforms, as every instance must agree on it.
pub(crate) fn bucket(family: &str) -> usize {
    let hash = family.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash as usize % BUCKETS
}

#[cfg(test)]
mod tests {
    use super::{BUCKETS, bucket};
    use crate::issuer::store::RedisStore;

    /// The bucket is part of every key's name: it must never change between versions.
    #[test]
    fn buckets_are_fnv_1a_modulo_16_and_spread() {
        // FNV-1a 32 of "" is 0x811c9dc5, of "a" 0xe40c292c (the published test vectors).
        assert_eq!(bucket(""), 0x811c_9dc5 % 16);
        assert_eq!(bucket("a"), 0xe40c_292c % 16);
        let mut seen = [0usize; BUCKETS];
        for i in 0..1600 {
            seen[bucket(&format!("family-{i}"))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    /// A family's four keys share its bucket's hash tag, which starts each of them.
    #[test]
    fn a_familys_keys_share_its_buckets_tag() {
        let store = RedisStore::with_connection(()).prefix("app");
        let family = "Zm9vYmFyYmF6cXV4cXV1eA";
        let tag = format!("{{app:b{}}}", bucket(family));
        let keys = store.keys(family);
        assert_eq!(
            keys,
            [
                format!("{tag}:{family}"),
                format!("{tag}:{family}:revoked"),
                format!("{tag}:{family}:sealed"),
                format!("{tag}:revocations"),
            ]
        );
        assert_eq!(store.tombstone_key(family), keys[1]);
    }
}
