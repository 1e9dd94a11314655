//! [`MemoryStore`]: the embedded refresh-token store.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::Clock;
use crate::issuer::store::{
    FamilyInfo, NewFamily, REUSE_HISTORY, RefreshStore, Rotation, RotationOutcome, StoreError,
};
use crate::server::DenyCheck;

/// Refresh-token families in this process's memory.
///
/// For one instance: every family is lost when the process exits (users log in again), and
/// two instances do not see each other's families. Use `RedisStore` (feature `redis`) for
/// more. Expired families and tombstones are purged as operations go by (a full sweep at most
/// once per as many operations as there are entries, so the cost stays constant per
/// operation and memory stays bounded under churn). A sealed successor kept for grace retries
/// is dropped at the first operation after its window ends. Cloning shares the store.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::issuer::{AccessTokenIssuer, MemoryStore, TokenIssuer};
/// use tower_jwt_refresh::keys::{Algorithm, SigningKey};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = SigningKey::hmac(Algorithm::HS256, [42u8; 32])?;
/// let issuer = TokenIssuer::new(AccessTokenIssuer::new(key), MemoryStore::new());
/// let pair = issuer.issue("alice", &()).await?;
/// let next = issuer.rotate(&pair.refresh_token).await?;
/// assert_ne!(next.refresh_token, pair.refresh_token);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    families: Arc<Mutex<Families>>,
    /// Revoked family ids, until when they are remembered. Apart from the families so that
    /// the per-request check never waits behind a rotation (only, briefly, behind the
    /// periodic sweep).
    tombstones: Arc<RwLock<HashMap<String, u64>>>,
    clock: Clock,
}

#[derive(Default)]
struct Families {
    map: HashMap<String, Family>,
    /// Operations since the last sweep.
    since_sweep: usize,
    /// When each sealed successor's grace window ends (its last second), and whose it is,
    /// earliest first.
    windows: BinaryHeap<Reverse<(u64, String)>>,
}

impl Families {
    /// Drops the sealed successors whose grace window ended before `now`.
    fn end_windows(&mut self, now: u64) {
        while let Some(Reverse((until, _))) = self.windows.peek()
            && *until < now
        {
            let Some(Reverse((_, id))) = self.windows.pop() else {
                break;
            };
            // The family may have rotated since, with a window of its own still open.
            if let Some(previous) = self.map.get_mut(&id).and_then(|f| f.previous.as_mut())
                && previous
                    .sealed
                    .as_ref()
                    .is_some_and(|(_, until)| *until < now)
            {
                previous.sealed = None;
            }
        }
    }
}

struct Family {
    info: FamilyInfo,
    expires_at: u64,
    idle_timeout: u64,
    last_used: u64,
    /// How long past its end it is kept, so a late logout still revokes its access tokens.
    retain: u64,
    current: String,
    previous: Option<Previous>,
    /// Older hashes, newest first.
    history: VecDeque<String>,
    /// The thumbprint its tokens are bound to, empty when unbound.
    jkt: String,
}

/// The token rotated out last, and the successor sealed for it during the grace window.
struct Previous {
    hash: String,
    rotated_at: u64,
    sealed: Option<(String, u64)>,
}

impl Family {
    fn ends_at(&self) -> u64 {
        match self.idle_timeout {
            0 => self.expires_at,
            idle => self.expires_at.min(self.last_used.saturating_add(idle)),
        }
    }

    fn knows(&self, hash: &str) -> bool {
        self.current == hash
            || self.previous.as_ref().is_some_and(|p| p.hash == hash)
            || self.history.iter().any(|h| h == hash)
    }

    /// Applies `r`, which presents one of this live family's tokens. On
    /// [`Reused`](RotationOutcome::Reused) the caller ends the family.
    fn rotate(&mut self, r: &Rotation<'_>) -> RotationOutcome {
        let previous = self.previous.as_ref();
        // The same rotation sent again after a lost reply.
        if previous.is_some_and(|p| p.hash == r.presented) && self.current == r.successor {
            return RotationOutcome::Rotated(self.info.clone());
        }
        if self.current == r.presented {
            self.install(r);
            return RotationOutcome::Rotated(self.info.clone());
        }
        // The immediately previous token, inside the grace window: the same successor.
        if let Some(sealed) = previous.and_then(|p| p.sealed_for(r)) {
            return RotationOutcome::Retried {
                info: self.info.clone(),
                sealed: sealed.to_owned(),
                current: self.current.clone(),
            };
        }
        // A token the family rotated out earlier.
        RotationOutcome::Reused
    }

    /// Makes `r.successor` current; the current token becomes the previous one (with the
    /// sealed successor for the grace window), the previous one joins the history.
    fn install(&mut self, r: &Rotation<'_>) {
        if let Some(previous) = self.previous.take() {
            self.history.push_front(previous.hash);
            self.history.truncate(REUSE_HISTORY);
        }
        let current = std::mem::replace(&mut self.current, r.successor.to_owned());
        let sealed =
            (r.grace > 0).then(|| (r.sealed_successor.to_owned(), r.now.saturating_add(r.grace)));
        self.previous = Some(Previous {
            hash: current,
            rotated_at: r.now,
            sealed,
        });
        self.last_used = r.now;
    }
}

impl Previous {
    /// The sealed successor, if `r` presents this token inside its grace window (and from a
    /// clock not behind the rotation).
    fn sealed_for(&self, r: &Rotation<'_>) -> Option<&str> {
        let (sealed, until) = self.sealed.as_ref()?;
        (self.hash == r.presented && r.now >= self.rotated_at && r.now <= *until)
            .then_some(sealed.as_str())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("families", &self.families.lock().map_or(0, |f| f.map.len()))
            .field("tombstones", &self.tombstones.read().map_or(0, |t| t.len()))
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            families: Arc::default(),
            tombstones: Arc::default(),
            clock: Clock::system(),
        }
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::new("memory store poisoned")
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The wall clock for tombstones and purging (default: the system clock). A
    /// [`TokenIssuer`](crate::issuer::TokenIssuer) sets it to its own; set it here only for a
    /// store used on its own.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// How many families and tombstones are held, expired ones not yet purged included.
    pub fn len(&self) -> usize {
        self.families.lock().map_or(0, |f| f.map.len())
            + self.tombstones.read().map_or(0, |t| t.len())
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Locks the families. Every operation counts; once they outnumber half the entries, a
    /// sweep drops what has ended, so the cost per operation stays constant and memory stays
    /// bounded whatever the mix (logins only included).
    fn lock(&self) -> Result<MutexGuard<'_, Families>, StoreError> {
        let mut families = self.families.lock().map_err(poisoned)?;
        families.since_sweep += 1;
        if families.since_sweep > families.map.len() / 2 + 64 {
            let now = self.clock.now();
            families
                .map
                .retain(|_, f| f.ends_at().saturating_add(f.retain) > now);
            self.tombstones
                .write()
                .map_err(poisoned)?
                .retain(|_, until| *until > now);
            families.since_sweep = 0;
        }
        if !families.windows.is_empty() {
            families.end_windows(self.clock.now());
        }
        Ok(families)
    }

    fn tombstone(&self, family: &str, ttl: u64) -> Result<(), StoreError> {
        let until = self.clock.now().saturating_add(ttl);
        self.tombstones
            .write()
            .map_err(poisoned)?
            .insert(family.to_owned(), until);
        Ok(())
    }

    fn is_tombstoned(&self, family: &str) -> Result<bool, StoreError> {
        // Most families have no tombstone: look before reading the clock.
        Ok(self
            .tombstones
            .read()
            .map_err(poisoned)?
            .get(family)
            .is_some_and(|&until| until > self.clock.now()))
    }
}

impl RefreshStore for MemoryStore {
    async fn create(&self, family: NewFamily<'_>) -> Result<(), StoreError> {
        let mut families = self.lock()?;
        families.map.insert(
            family.id.to_owned(),
            Family {
                info: FamilyInfo::new(family.subject.to_owned(), family.claims.to_owned()),
                expires_at: family.expires_at,
                idle_timeout: family.idle_timeout,
                last_used: family.now,
                retain: family.tombstone_ttl,
                current: family.token_hash.to_owned(),
                previous: None,
                history: VecDeque::new(),
                jkt: family.jkt.to_owned(),
            },
        );
        Ok(())
    }

    async fn rotate(&self, r: Rotation<'_>) -> Result<RotationOutcome, StoreError> {
        let mut families = self.lock()?;
        let Some(family) = families.map.get_mut(r.family) else {
            return Ok(if self.is_tombstoned(r.family)? {
                RotationOutcome::Revoked
            } else {
                RotationOutcome::Unknown
            });
        };
        // Only a token of the family may end it: a forged secret under a public family id
        // changes nothing.
        if !family.knows(r.presented) {
            return Ok(RotationOutcome::Unknown);
        }
        // A bound family moves only for its key (thumbprints are public: no secret compared).
        if !family.jkt.is_empty() && family.jkt != r.jkt {
            return Ok(RotationOutcome::WrongKey);
        }
        let outcome = if family.ends_at() <= r.now {
            RotationOutcome::Expired
        } else {
            family.rotate(&r)
        };
        if r.grace > 0 && matches!(outcome, RotationOutcome::Rotated(_)) {
            let until = r.now.saturating_add(r.grace);
            families.windows.push(Reverse((until, r.family.to_owned())));
        }
        if matches!(outcome, RotationOutcome::Expired | RotationOutcome::Reused) {
            // Remembered as revoked before it is forgotten.
            self.tombstone(r.family, r.tombstone_ttl)?;
            families.map.remove(r.family);
        }
        Ok(outcome)
    }

    async fn revoke(
        &self,
        family: &str,
        token_hash: Option<&str>,
        tombstone_ttl: u64,
    ) -> Result<bool, StoreError> {
        let mut families = self.lock()?;
        let known = match (families.map.get(family), token_hash) {
            (Some(f), Some(hash)) => f.knows(hash),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if known {
            self.tombstone(family, tombstone_ttl)?;
            families.map.remove(family);
        }
        Ok(known)
    }

    fn is_revoked(&self, family: &str) -> DenyCheck {
        match self.is_tombstoned(family) {
            Ok(true) => DenyCheck::revoked(),
            Ok(false) => DenyCheck::active(),
            Err(e) => DenyCheck::ready(Err(e.into())),
        }
    }

    fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn rotation<'a>(presented: &'a str, successor: &'a str, now: u64) -> Rotation<'a> {
        Rotation {
            family: "f",
            presented,
            successor,
            sealed_successor: "sealed",
            now,
            grace: 5,
            tombstone_ttl: 60,
            jkt: "",
        }
    }

    fn family(id: &str) -> NewFamily<'_> {
        NewFamily {
            id,
            token_hash: "a",
            subject: "alice",
            claims: "{}",
            now: 1_000,
            expires_at: 10_000,
            idle_timeout: 0,
            tombstone_ttl: 60,
            jkt: "",
        }
    }

    fn holds_sealed(store: &MemoryStore) -> bool {
        let families = store.families.lock().unwrap();
        let previous = families.map["f"].previous.as_ref().unwrap();
        previous.sealed.is_some()
    }

    #[tokio::test]
    async fn the_sealed_successor_is_dropped_when_its_window_ends() {
        let now = Arc::new(AtomicU64::new(1_000));
        let store = MemoryStore::new().clock(Clock::from_fn({
            let now = Arc::clone(&now);
            move || now.load(Ordering::Relaxed)
        }));
        store.create(family("f")).await.unwrap();
        let rotated = store.rotate(rotation("a", "b", 1_000)).await.unwrap();
        assert!(matches!(rotated, RotationOutcome::Rotated(_)));
        // The window's last second: kept, and a retry gets it.
        now.store(1_005, Ordering::Relaxed);
        store.create(family("g")).await.unwrap();
        assert!(holds_sealed(&store));
        let retried = store.rotate(rotation("a", "c", 1_005)).await.unwrap();
        assert!(matches!(retried, RotationOutcome::Retried { .. }));
        // Past it: the next operation on any family drops it, the family stays.
        now.store(1_006, Ordering::Relaxed);
        store.create(family("h")).await.unwrap();
        assert!(!holds_sealed(&store));
        let reused = store.rotate(rotation("a", "c", 1_006)).await.unwrap();
        assert_eq!(reused, RotationOutcome::Reused);
    }
}
