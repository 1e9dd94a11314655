//! [`RefreshStore`]: where refresh-token families live.
//!
//! A family is one login session: the subject, the claims its access tokens carry, its
//! lifetimes, and the SHA-256 of its tokens (the current one, the previous one for the grace
//! window, and a short history for reuse detection). Every operation is atomic in the store,
//! so two instances (or two tasks) racing on one token cannot both win.
//!
//! Two stores implement [`RefreshStore`]: [`MemoryStore`], for one process, and (feature
//! `redis`) `RedisStore`, shared by every instance, whose operations are the Lua scripts in
//! `store/redis/lua/`. Implement the trait for another backend; `tests/store.rs` holds the
//! conformance suite both stores pass.

use std::fmt;
use std::future::Future;

use crate::server::DenyCheck;
use crate::{BoxError, Clock};

#[cfg(feature = "redis")]
mod breaker;
mod memory;
#[cfg(feature = "redis")]
mod propagation;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use propagation::RevocationSubscriber;
#[cfg(feature = "redis")]
pub use redis::RedisStore;

/// How many past token hashes a family remembers, for reuse detection. A token older than
/// that is refused as unknown, without revoking the family.
pub const REUSE_HISTORY: usize = 32;

/// A new family, as [`RefreshStore::create`] records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewFamily<'a> {
    /// The family id (the refresh token's prefix, the access tokens' `sid`).
    pub id: &'a str,
    /// The SHA-256 of the first refresh token.
    pub token_hash: &'a str,
    /// The subject.
    pub subject: &'a str,
    /// The custom claims of its access tokens, as a JSON object.
    pub claims: &'a str,
    /// When it was created, in Unix seconds.
    pub now: u64,
    /// When it ends whatever happens (the absolute lifetime), in Unix seconds.
    pub expires_at: u64,
    /// Seconds without a rotation after which it ends; `0` for no idle timeout.
    pub idle_timeout: u64,
    /// Seconds to remember a revoked family (and to keep an ended one, so a logout near its
    /// end still revokes its access tokens): as long as those may be valid.
    pub tombstone_ttl: u64,
    /// The RFC 7638 thumbprint of the key its refresh tokens are bound to (DPoP, RFC 9449
    /// §5), or empty for an unbound family.
    pub jkt: &'a str,
}

/// One rotation attempt, as [`RefreshStore::rotate`] applies it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rotation<'a> {
    /// The family id from the presented token.
    pub family: &'a str,
    /// The SHA-256 of the presented token.
    pub presented: &'a str,
    /// The SHA-256 of the successor to install if `presented` is current.
    pub successor: &'a str,
    /// The successor, sealed for the holder of the presented token; kept for grace retries,
    /// and only for the grace window (not at all with grace 0). A store that expires it in
    /// real time keeps it `grace + 1` seconds, since the window counts whole seconds.
    pub sealed_successor: &'a str,
    /// The time, in Unix seconds.
    pub now: u64,
    /// Seconds after a rotation during which the previous token may be presented again:
    /// inclusive, in the issuer's whole seconds (see [`RefreshStore::rotate`]).
    pub grace: u64,
    /// Seconds to remember a family revoked for reuse (so its access tokens are refused), and
    /// to keep it past its end.
    pub tombstone_ttl: u64,
    /// The thumbprint of the key whose DPoP proof came with the request, or empty. A family
    /// bound to a key rotates only with that key's thumbprint here.
    pub jkt: &'a str,
}

/// What a family's access tokens are minted from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FamilyInfo {
    /// The subject.
    pub subject: String,
    /// The custom claims, as a JSON object.
    pub claims: String,
}

impl FamilyInfo {
    /// Builds the info a store read back.
    pub fn new(subject: String, claims: String) -> Self {
        Self { subject, claims }
    }
}

/// The outcome of a rotation.
///
/// Presenting the previous token together with the successor already installed (the same
/// rotation sent twice, after a lost reply) answers [`Rotated`](Self::Rotated) again.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationOutcome {
    /// The presented token was current; the successor is now.
    Rotated(FamilyInfo),
    /// The presented token was the previous one, inside the grace window: the successor that
    /// rotation installed, sealed, with the hash of the current token to check it against.
    Retried {
        /// The family.
        info: FamilyInfo,
        /// The sealed successor.
        sealed: String,
        /// The SHA-256 of the current token.
        current: String,
    },
    /// The presented token was rotated out earlier: the family is now revoked.
    Reused,
    /// The family's absolute lifetime or idle timeout has passed; it is revoked (its access
    /// tokens with it).
    Expired,
    /// The family was revoked.
    Revoked,
    /// No such family, or a token it never issued.
    Unknown,
    /// The token is one of the family's, but the family is bound to a key (DPoP) and the
    /// rotation did not come with that key's thumbprint: nothing changed. Checked before
    /// anything else but [`Unknown`](Self::Unknown) and [`Revoked`](Self::Revoked), so that
    /// a stolen bound token cannot even revoke its family for reuse.
    WrongKey,
}

/// The store could not answer (Redis down, say). Callers answer 503 and may retry.
#[derive(Debug)]
pub struct StoreError {
    error: BoxError,
    ambiguous: bool,
}

impl StoreError {
    /// Wraps the backend's error: the operation did not happen.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self {
            error: error.into(),
            ambiguous: false,
        }
    }

    /// Wraps the backend's error when the operation may have happened (the request was sent
    /// but the reply was lost). A rotation is then sent once more, unchanged, which is safe:
    /// the same rotation twice answers `Rotated` again.
    pub fn ambiguous(error: impl Into<BoxError>) -> Self {
        Self {
            error: error.into(),
            ambiguous: true,
        }
    }

    /// Whether the operation may have happened.
    pub fn is_ambiguous(&self) -> bool {
        self.ambiguous
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("refresh-token store unavailable")
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

/// Where refresh-token families live. [`MemoryStore`] and (feature `redis`) `RedisStore`
/// implement it; its conformance suite runs against both.
///
/// Each operation must be atomic: a rotation reads and writes the family as one step.
pub trait RefreshStore: Send + Sync + 'static {
    /// Records a new family.
    fn create(&self, family: NewFamily<'_>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Rotates the token whose hash is `rotation.presented`, as [`RotationOutcome`] describes.
    ///
    /// The grace window, one rule for every store: the previous token presented at `now` gets
    /// [`Retried`](RotationOutcome::Retried) when `rotated_at <= now <= rotated_at + grace`,
    /// both ends included, all in the issuer's whole seconds ([`Rotation::now`] of the two
    /// rotations). Second `rotated_at + grace` is inside the window whole: a retry up to
    /// `grace + 1` real seconds after the rotation may fall in it, so a store that expires the
    /// sealed successor in real time keeps it that long. Outside the window, the previous
    /// token is [`Reused`](RotationOutcome::Reused). A store drops the sealed successor once
    /// its window has ended.
    fn rotate(
        &self,
        rotation: Rotation<'_>,
    ) -> impl Future<Output = Result<RotationOutcome, StoreError>> + Send;

    /// Revokes family `family` and remembers it as revoked for `tombstone_ttl` seconds.
    ///
    /// With `token_hash`, only if that hash is one of the family's tokens (current, previous
    /// or in its history), so that knowing a family id (an access token's `sid`) is not
    /// enough to end someone's session. Returns whether a family was revoked.
    fn revoke(
        &self,
        family: &str,
        token_hash: Option<&str>,
        tombstone_ttl: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Whether family `family` was revoked, for the verifier's deny-list hook; called on
    /// every request, so keep it cheap.
    fn is_revoked(&self, family: &str) -> DenyCheck;

    /// Adopts the issuer's clock for what the store times itself (tombstones, purging).
    /// [`TokenIssuer::clock`](crate::issuer::TokenIssuer::clock) calls it. The default ignores
    /// it, as a store whose times come from its server (Redis key expiry) may.
    fn set_clock(&mut self, clock: Clock) {
        let _ = clock;
    }
}
