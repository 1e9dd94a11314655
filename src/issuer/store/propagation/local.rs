//! The local set of revoked families that every request consults, and whether it can be
//! trusted (synchronised with Redis).

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Revoked families, each until its access tokens can no longer be valid, and the
/// synchronisation flag.
///
/// The per-request read is one atomic load, one read lock and one hash lookup; the clock is
/// read only for a family found in the set. Writes come from the subscription worker and
/// from this instance's own revocations. Entries past their time are dropped by
/// [`purge`](Self::purge), which the worker calls once a heartbeat; until then a lookup
/// ignores them.
pub(crate) struct LocalRevocations {
    families: RwLock<HashMap<Box<str>, Instant>>,
    /// Whether the set holds every revocation Redis knows of, save those in flight: set once
    /// the subscription is up and the index was read, cleared when the subscription is lost.
    synced: AtomicBool,
    /// The same flag, for whoever awaits a change.
    changes: watch::Sender<bool>,
}

impl LocalRevocations {
    pub(crate) fn new() -> Self {
        Self {
            families: RwLock::default(),
            synced: AtomicBool::new(false),
            changes: watch::Sender::new(false),
        }
    }

    /// Whether the set can be trusted now.
    pub(crate) fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Marks the set trusted or not; returns whether that changed anything.
    pub(crate) fn set_synced(&self, synced: bool) -> bool {
        let changed = self.synced.swap(synced, Ordering::AcqRel) != synced;
        self.changes.send_replace(synced);
        changed
    }

    /// Waits until the set is synchronised, at most `bound`; returns whether it is.
    pub(crate) async fn synced_within(&self, bound: Duration) -> bool {
        let mut changes = self.changes.subscribe();
        tokio::time::timeout(bound, changes.wait_for(|synced| *synced))
            .await
            .is_ok_and(|changed| changed.is_ok())
    }

    /// Whether `family` is revoked, as far as this set knows.
    pub(crate) fn contains(&self, family: &str) -> bool {
        let Ok(families) = self.families.read() else {
            // A writer panicked mid-update: say revoked rather than trust a broken set.
            return true;
        };
        families
            .get(family)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Remembers `family` as revoked for `ttl` from now (or longer, if it already was).
    pub(crate) fn insert(&self, family: &str, ttl: Duration) {
        let until = Instant::now() + ttl.min(MAX_TTL);
        if let Ok(mut families) = self.families.write() {
            let entry = families.entry(family.into()).or_insert(until);
            *entry = (*entry).max(until);
        }
    }

    /// Drops the entries past their time.
    pub(crate) fn purge(&self) {
        let now = Instant::now();
        if let Ok(mut families) = self.families.write() {
            families.retain(|_, until| now < *until);
        }
    }

    /// How many families the set holds (expired ones not yet purged included).
    pub(crate) fn len(&self) -> usize {
        self.families.read().map_or(0, |f| f.len())
    }
}

/// The longest an entry is kept: a year, like the issuer's longest lifetime, so that no
/// announced TTL overflows the clock.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_entry_lives_exactly_its_ttl() {
        let set = LocalRevocations::new();
        set.insert("fam", Duration::from_secs(360));
        assert!(set.contains("fam"));
        assert!(!set.contains("other"));
        tokio::time::advance(Duration::from_millis(359_999)).await;
        assert!(set.contains("fam"));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!set.contains("fam"), "gone when its access tokens are");
        // Purging drops it from memory too.
        assert_eq!(set.len(), 1);
        set.purge();
        assert_eq!(set.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_announcement_only_extends() {
        let set = LocalRevocations::new();
        set.insert("fam", Duration::from_secs(100));
        set.insert("fam", Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(set.contains("fam"), "a shorter TTL does not shorten it");
        set.insert("fam", Duration::from_secs(100));
        tokio::time::advance(Duration::from_secs(99)).await;
        assert!(set.contains("fam"), "a longer one extends it");
        set.purge();
        assert_eq!(set.len(), 1, "purging keeps live entries");
    }

    #[tokio::test(start_paused = true)]
    async fn huge_ttls_are_capped_without_overflow() {
        let set = LocalRevocations::new();
        set.insert("fam", Duration::MAX);
        tokio::time::advance(MAX_TTL - Duration::from_secs(1)).await;
        assert!(set.contains("fam"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!set.contains("fam"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_flag_wakes_whoever_waits_and_waits_are_bounded() {
        let set = std::sync::Arc::new(LocalRevocations::new());
        assert!(!set.is_synced());
        assert!(!set.synced_within(Duration::from_secs(1)).await);
        let waiter = tokio::spawn({
            let set = set.clone();
            async move { set.synced_within(Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;
        assert!(set.set_synced(true));
        assert!(waiter.await.unwrap());
        assert!(!set.set_synced(true), "no change");
        assert!(set.set_synced(false));
        assert!(!set.is_synced());
    }
}
