//! [`MemoryStore`]: the embedded refresh-token store.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use super::auth::unix_time;
use super::revoke::RevocationCheck;
use super::store::{
    FamilyInfo, NewFamily, REUSE_HISTORY, RefreshStore, Rotation, RotationOutcome, StoreError,
};

/// Refresh-token families in this process's memory.
///
/// For one instance: every family is lost when the process exits (users log in again), and
/// two instances do not see each other's families. Use `RedisStore` (feature `redis`) for
/// more. Expired families and tombstones are purged as operations go by (a full sweep at most
/// once per as many operations as there are entries, so the cost stays constant per
/// operation and memory stays bounded under churn). Cloning shares the store.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::server::{AccessTokenIssuer, Algorithm, MemoryStore, SigningKey, TokenIssuer};
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
    state: Arc<Mutex<State>>,
    clock: fn() -> u64,
}

#[derive(Default)]
struct State {
    families: HashMap<String, Family>,
    /// Revoked family ids, until when they are remembered.
    tombstones: HashMap<String, u64>,
    /// Operations since the last sweep.
    since_sweep: usize,
}

struct Family {
    info: FamilyInfo,
    expires_at: u64,
    idle_timeout: u64,
    last_used: u64,
    current: String,
    /// The previous token's hash, the successor sealed for it, and when it was rotated.
    previous: Option<(String, String, u64)>,
    /// Older hashes, newest first.
    history: VecDeque<String>,
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
            || self.previous.as_ref().is_some_and(|(p, _, _)| p == hash)
            || self.history.iter().any(|h| h == hash)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (families, tombstones) = self
            .state
            .lock()
            .map_or((0, 0), |s| (s.families.len(), s.tombstones.len()));
        f.debug_struct("MemoryStore")
            .field("families", &families)
            .field("tombstones", &tombstones)
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            clock: unix_time,
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The source of Unix time in seconds for tombstones and purging (default: the system
    /// clock). For tests; use the issuer's clock.
    #[must_use]
    pub fn clock(mut self, now: fn() -> u64) -> Self {
        self.clock = now;
        self
    }

    /// How many families and tombstones are held, expired ones not yet purged included.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .map_or(0, |s| s.families.len() + s.tombstones.len())
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Locks the state, sweeping expired entries once per as many operations as entries.
    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| StoreError::new("memory store poisoned"))?;
        state.since_sweep += 1;
        if state.since_sweep > state.families.len() + state.tombstones.len() + 64 {
            let now = (self.clock)();
            state.families.retain(|_, f| f.ends_at() > now);
            state.tombstones.retain(|_, until| *until > now);
            state.since_sweep = 0;
        }
        Ok(state)
    }

    fn tombstone(&self, state: &mut State, family: &str, ttl: u64) {
        let until = (self.clock)().saturating_add(ttl);
        state.tombstones.insert(family.to_owned(), until);
    }
}

impl RefreshStore for MemoryStore {
    async fn create(&self, family: NewFamily<'_>) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        state.families.insert(
            family.id.to_owned(),
            Family {
                info: FamilyInfo::new(family.subject.to_owned(), family.claims.to_owned()),
                expires_at: family.expires_at,
                idle_timeout: family.idle_timeout,
                last_used: family.now,
                current: family.token_hash.to_owned(),
                previous: None,
                history: VecDeque::new(),
            },
        );
        Ok(())
    }

    async fn rotate(&self, r: Rotation<'_>) -> Result<RotationOutcome, StoreError> {
        let mut state = self.lock()?;
        let state = &mut *state;
        let Some(family) = state.families.get_mut(r.family) else {
            let revoked = state
                .tombstones
                .get(r.family)
                .is_some_and(|&until| until > r.now);
            return Ok(if revoked {
                RotationOutcome::Revoked
            } else {
                RotationOutcome::Unknown
            });
        };
        if family.ends_at() <= r.now {
            state.families.remove(r.family);
            return Ok(RotationOutcome::Expired);
        }
        if family.current == r.presented {
            if let Some((previous, _, _)) = family.previous.take() {
                family.history.push_front(previous);
                family.history.truncate(REUSE_HISTORY);
            }
            let current = std::mem::replace(&mut family.current, r.successor.to_owned());
            family.previous = Some((current, r.sealed_successor.to_owned(), r.now));
            family.last_used = r.now;
            return Ok(RotationOutcome::Rotated(family.info.clone()));
        }
        // The immediately previous token, inside the grace window: the same successor.
        if let Some((previous, sealed, rotated_at)) = &family.previous
            && *previous == r.presented
            && r.grace > 0
            && r.now.saturating_sub(*rotated_at) <= r.grace
        {
            return Ok(RotationOutcome::Retried(
                family.info.clone(),
                sealed.clone(),
            ));
        }
        if family.knows(r.presented) {
            state.families.remove(r.family);
            self.tombstone(state, r.family, r.tombstone_ttl);
            return Ok(RotationOutcome::Reused);
        }
        Ok(RotationOutcome::Unknown)
    }

    async fn revoke(
        &self,
        family: &str,
        token_hash: Option<&str>,
        tombstone_ttl: u64,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        let state = &mut *state;
        let known = match (state.families.get(family), token_hash) {
            (Some(f), Some(hash)) => f.knows(hash),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if known {
            state.families.remove(family);
            self.tombstone(state, family, tombstone_ttl);
        }
        Ok(known)
    }

    fn is_revoked(&self, family: &str) -> RevocationCheck {
        match self.state.lock() {
            Ok(state) => match state.tombstones.get(family) {
                Some(&until) if until > (self.clock)() => RevocationCheck::revoked(),
                _ => RevocationCheck::active(),
            },
            Err(_) => RevocationCheck::ready(Err("memory store poisoned".into())),
        }
    }
}
