//! [`RedisStore`]: refresh-token families in Redis, shared by every instance (feature `redis`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use crate::issuer::store::{
    FamilyInfo, NewFamily, REUSE_HISTORY, RefreshStore, Rotation, RotationOutcome, StoreError,
};
use crate::server::{DenyCheck, TokenStatus};

/// The server-side scripts, one per write operation; each file documents its keys, arguments
/// and replies.
struct Scripts {
    create: Script,
    rotate: Script,
    revoke: Script,
}

impl Scripts {
    fn load() -> Self {
        Self {
            create: Script::new(include_str!("lua/create.lua")),
            rotate: Script::new(include_str!("lua/rotate.lua")),
            revoke: Script::new(include_str!("lua/revoke.lua")),
        }
    }
}

/// Characters of history kept: [`REUSE_HISTORY`] hashes of 43 characters, space-separated.
const HISTORY_CHARS: usize = REUSE_HISTORY * 44 - 1;

/// Refresh-token families in Redis, for several instances of a service.
///
/// Every operation is one round trip: a server-side Lua script for create, rotate and revoke
/// (so rotation keeps reuse detection atomically, never check-then-set), one `EXISTS` for the
/// per-request deny-list check. (After Redis restarts, a script's first call also loads it:
/// two more round trips, once.) Keys expire a tombstone TTL after their family ends. A
/// family's keys share one hash tag (`<prefix>:{<family>}`), so the store works on Redis
/// Cluster too. It talks through a reconnecting connection manager: while Redis is down,
/// operations fail within the connection's timeouts with [`StoreError`] (the refresh endpoint
/// answers 503), and it recovers by itself.
///
/// While Redis is unreachable or slower than [`check_timeout`](Self::check_timeout), the
/// deny-list check lets access tokens through (it fails open), so that verification keeps
/// working; revocations made before the outage are enforced again once Redis answers.
///
/// Run Redis with `maxmemory-policy noeviction`: an evicted tombstone would let a revoked
/// session's access tokens through again, an evicted family would lose a session. With
/// asynchronous replication, a failover can lose the last acknowledged rotation; the client
/// then holds a token the new primary never saw, and must log in again.
///
/// Times come from the issuer (its clock), so instances should keep their clocks in sync, as
/// JWT expiry already requires.
#[derive(Clone)]
pub struct RedisStore<C = ConnectionManager> {
    connection: C,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
    check_timeout: Duration,
    breaker: Arc<Breaker>,
}

impl<C> fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`), with one-second connection and response
    /// timeouts. Fails if Redis cannot be reached now.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::new)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(StoreError::new)?;
        Ok(Self::with_connection(connection))
    }
}

impl<C> RedisStore<C> {
    /// Uses an existing connection: a configured `ConnectionManager`, or (with the `redis`
    /// crate's `cluster-async` feature) a Redis Cluster connection. Configure its timeouts:
    /// every wait of the store but the deny-list check is bounded by them.
    #[must_use]
    pub fn with_connection(connection: C) -> Self {
        Self {
            connection,
            prefix: Arc::from("tjr"),
            scripts: Arc::new(Scripts::load()),
            check_timeout: Duration::from_millis(250),
            breaker: Arc::new(Breaker::default()),
        }
    }

    /// The key prefix (default `tjr`), to share one Redis between applications.
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// How long the per-request deny-list check may wait for Redis before it lets the token
    /// through (default 250 ms). After a check fails, checks let tokens through without asking
    /// Redis for one second, so an outage costs one bounded wait per second, not one per
    /// request.
    #[must_use]
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// Runs `script` unless the breaker is open; trips it when Redis proves unreachable.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError>
    where
        C: ConnectionLike + Clone,
    {
        if self.breaker.is_open() {
            // Nothing was sent: not ambiguous.
            return Err(StoreError::new("redis unreachable a moment ago"));
        }
        let mut connection = self.connection.clone();
        script.invoke_async(&mut connection).await.map_err(|error| {
            if unreachable(&error) {
                tracing::warn!(%error, "redis unreachable; store calls fail fast for 1 s");
                self.breaker.trip();
            }
            store_error(error)
        })
    }

    fn tombstone_key(&self, family: &str) -> String {
        format!("{}:{{{family}}}:revoked", self.prefix)
    }

    /// The family's key, its tombstone's and its sealed successor's, sharing the hash tag
    /// `{family}`.
    fn keys(&self, family: &str) -> [String; 3] {
        let key = format!("{}:{{{family}}}", self.prefix);
        let tombstone = self.tombstone_key(family);
        let sealed = format!("{key}:sealed");
        [key, tombstone, sealed]
    }
}

/// A Redis error as a store error: a timeout or a dropped connection may have happened after
/// the script ran, so the outcome is unknown.
fn store_error(error: redis::RedisError) -> StoreError {
    if error.is_timeout() || error.is_connection_dropped() {
        StoreError::ambiguous(error)
    } else {
        StoreError::new(error)
    }
}

/// The outcome a `rotate.lua` reply stands for.
fn rotation_outcome(reply: Vec<String>) -> Result<RotationOutcome, StoreError> {
    let malformed = || StoreError::new("malformed rotate reply");
    let mut reply = reply.into_iter();
    let outcome = match reply.next().as_deref() {
        Some("rotated") => {
            let (Some(subject), Some(claims)) = (reply.next(), reply.next()) else {
                return Err(malformed());
            };
            RotationOutcome::Rotated(FamilyInfo::new(subject, claims))
        }
        Some("retried") => {
            let (Some(subject), Some(claims), Some(sealed), Some(current)) =
                (reply.next(), reply.next(), reply.next(), reply.next())
            else {
                return Err(malformed());
            };
            RotationOutcome::Retried {
                info: FamilyInfo::new(subject, claims),
                sealed,
                current,
            }
        }
        Some("reused") => RotationOutcome::Reused,
        Some("expired") => RotationOutcome::Expired,
        Some("revoked") => RotationOutcome::Revoked,
        Some("unknown") => RotationOutcome::Unknown,
        _ => return Err(malformed()),
    };
    Ok(outcome)
}

/// Whether `error` says Redis cannot be reached (rather than refusing a command).
fn unreachable(error: &redis::RedisError) -> bool {
    error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_io_error()
}

/// The circuit breaker every call shares: once Redis proves unreachable, for a second
/// deny-list checks pass without asking it and writes fail at once (503, `Retry-After: 1`)
/// instead of each waiting out the connection's timeouts.
#[derive(Default)]
struct Breaker {
    /// Milliseconds since `epoch` until which the breaker is open.
    open_until: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(Instant::now);
        u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_open(&self) -> bool {
        self.now_ms() < self.open_until.load(Ordering::Relaxed)
    }

    fn trip(&self) {
        self.open_until
            .store(self.now_ms() + 1000, Ordering::Relaxed);
    }
}

impl<C> RefreshStore for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn create(&self, family: NewFamily<'_>) -> Result<(), StoreError> {
        let [key, _, _] = self.keys(family.id);
        let _: i64 = self
            .invoke(
                self.scripts
                    .create
                    .key(key)
                    .arg(family.token_hash)
                    .arg(family.subject)
                    .arg(family.claims)
                    .arg(family.now)
                    .arg(family.expires_at)
                    .arg(family.idle_timeout)
                    .arg(family.tombstone_ttl.max(1)),
            )
            .await?;
        Ok(())
    }

    async fn rotate(&self, r: Rotation<'_>) -> Result<RotationOutcome, StoreError> {
        let [key, tombstone, sealed] = self.keys(r.family);
        let reply: Vec<String> = self
            .invoke(
                self.scripts
                    .rotate
                    .key(key)
                    .key(tombstone)
                    .key(sealed)
                    .arg(r.presented)
                    .arg(r.successor)
                    .arg(r.sealed_successor)
                    .arg(r.now)
                    .arg(r.grace)
                    .arg(r.tombstone_ttl.max(1))
                    .arg(HISTORY_CHARS),
            )
            .await?;
        rotation_outcome(reply)
    }

    async fn revoke(
        &self,
        family: &str,
        token_hash: Option<&str>,
        tombstone_ttl: u64,
    ) -> Result<bool, StoreError> {
        let [key, tombstone, sealed] = self.keys(family);
        let revoked: i64 = self
            .invoke(
                self.scripts
                    .revoke
                    .key(key)
                    .key(tombstone)
                    .key(sealed)
                    .arg(token_hash.unwrap_or(""))
                    .arg(tombstone_ttl.max(1)),
            )
            .await?;
        Ok(revoked == 1)
    }

    fn is_revoked(&self, family: &str) -> DenyCheck {
        if self.breaker.is_open() {
            return DenyCheck::active();
        }
        let tombstone = self.tombstone_key(family);
        let mut connection = self.connection.clone();
        let (bound, breaker) = (self.check_timeout, Arc::clone(&self.breaker));
        DenyCheck::pending(async move {
            match tokio::time::timeout(bound, connection.exists::<_, bool>(tombstone)).await {
                Ok(Ok(true)) => Ok(TokenStatus::Revoked),
                Ok(Ok(false)) => Ok(TokenStatus::Active),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "redis unreachable; deny-list checks fail open for 1 s");
                    breaker.trip();
                    Ok(TokenStatus::Active)
                }
                Err(_) => {
                    tracing::warn!("redis slow; deny-list checks fail open for 1 s");
                    breaker.trip();
                    Ok(TokenStatus::Active)
                }
            }
        })
    }
}
