//! [`RedisStore`]: refresh-token families in Redis, shared by every instance (feature `redis`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;

mod layout;
mod replication;
mod reply;
mod scripts;

use crate::BoxError;
use crate::issuer::store::breaker::Breaker;
use crate::issuer::store::propagation::{Feed, Propagation};
use crate::issuer::store::{
    NewFamily, REUSE_HISTORY, RefreshStore, Rotation, RotationOutcome, StoreError,
};
use crate::server::{DenyCheck, TokenStatus};
pub(crate) use layout::{BUCKETS, bucket};
use replication::{Replication, replicated};
use reply::{rotation_outcome, store_error, unreachable};
pub(crate) use scripts::Scripts;

/// Characters of history kept: [`REUSE_HISTORY`] hashes of 43 characters, space-separated.
const HISTORY_CHARS: usize = REUSE_HISTORY * 44 - 1;

/// Refresh-token families in Redis, for several instances of a service.
///
/// Every operation is one round trip: a server-side Lua script for create, rotate and revoke
/// (so rotation keeps reuse detection atomically, never check-then-set), one `EXISTS` for the
/// per-request deny-list check. (After Redis restarts, a script's first call also loads it:
/// two more round trips, once.) With
/// [`propagate_revocations`](Self::propagate_revocations), the per-request check is a memory
/// lookup instead: every revocation is published, in the same script that makes it, to every
/// instance's local set of revoked families; the `EXISTS` check remains the fallback while
/// that set is not synchronised. Keys expire a tombstone TTL after their family ends.
///
/// On one Redis, [`connect`](Self::connect) talks through a reconnecting connection manager;
/// on Redis Cluster, [`connect_cluster`](Self::connect_cluster) through a cluster connection
/// that follows the slot map through failovers. Every script names all the keys it touches in
/// `KEYS`, and they share one hash tag, so each operation runs on the one node that owns their
/// slot. While Redis (or the node) is down, operations fail within the connection's timeouts
/// with [`StoreError`] (the refresh endpoint answers 503), and the store recovers by itself.
///
/// # Key layout
///
/// A family belongs to one of 16 buckets: the 32-bit FNV-1a hash of its id, modulo 16. The
/// bucket's hash tag `{<prefix>:b<N>}` starts every key of its families (the family
/// `{<prefix>:b<N>}:<family>`, its tombstone `…:<family>:revoked`, its sealed successor
/// `…:<family>:sealed`) and the bucket's index of recent revocations,
/// `{<prefix>:b<N>}:revocations`, which is also the name of the channel its revocations are
/// published on. So a revocation writes the tombstone, adds to the index and publishes in one
/// script, on one node, atomically, on Redis Cluster too. Sixteen buckets, because on Cluster
/// they are what spreads the families over the primaries (up to 16 primaries; a slot is the
/// unit Redis places), and because each is one channel a propagating instance subscribes to
/// and one index it reads when it (re)synchronises.
///
/// While Redis is unreachable or slower than [`check_timeout`](Self::check_timeout), the
/// deny-list check lets access tokens through by default (it fails open), so that
/// verification keeps working; revocations made before the outage are enforced again once
/// Redis answers. [`fail_closed`](Self::fail_closed) answers 503 instead. After
/// [`breaker_threshold`](Self::breaker_threshold) consecutive failures (3 by default), a
/// circuit breaker skips Redis for a second at a time, so an outage costs no wait per request;
/// it logs a warning when it opens and an info when Redis answers again.
///
/// Run Redis with `maxmemory-policy noeviction`: an evicted tombstone would let a revoked
/// session's access tokens through again, an evicted family would lose a session. With
/// asynchronous replication, a failover can lose the last acknowledged rotation; the client
/// then holds a token the new primary never saw, and must log in again.
/// [`wait_for_replicas`](Self::wait_for_replicas) acknowledges a write only once replicas
/// have it.
///
/// Times come from the issuer (its clock), so instances should keep their clocks in sync, as
/// JWT expiry already requires.
#[derive(Clone)]
pub struct RedisStore<C = ConnectionManager> {
    pub(super) connection: C,
    prefix: Arc<str>,
    pub(super) scripts: Arc<Scripts>,
    check_timeout: Duration,
    fail_closed: bool,
    breaker: Arc<Breaker>,
    replication: Option<Replication>,
    /// Where revocations are announced (every store announces).
    pub(super) feed: Arc<Feed>,
    /// The local set of revoked families, when revocations are propagated.
    pub(super) propagation: Option<Arc<Propagation>>,
    pub(super) refuse_while_unsynced: bool,
}

/// Consecutive failures after which the breaker opens, by default.
const BREAKER_THRESHOLD: u32 = 3;

impl<C> fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("check_timeout", &self.check_timeout)
            .field("fail_closed", &self.fail_closed)
            .field("breaker_threshold", &self.breaker.threshold())
            .field("replication", &self.replication)
            .field("propagated", &self.propagation.is_some())
            .field("revocations_synced", &self.revocations_synced())
            .field(
                "revoked_families_known",
                &self.propagation.as_ref().map(|p| p.local.len()),
            )
            .field("refuse_while_unsynced", &self.refuse_while_unsynced)
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

impl RedisStore<ClusterConnection> {
    /// Connects to a Redis Cluster through its nodes `urls` (`redis://host:port/`; one that
    /// answers is enough, the connection discovers the rest). It keeps one multiplexed
    /// connection per node, sends each operation to the node that owns the family's slot, and
    /// follows the slot map through resharding and failover (`MOVED`, `ASK`). One-second
    /// connection and response timeouts; an operation, retries and redirections included,
    /// gives up after two seconds. Fails if no node can be reached now.
    ///
    /// ```
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_jwt_refresh::issuer::RedisStore;
    ///
    /// let store = RedisStore::connect_cluster(&[
    ///     "redis://10.0.0.1:6379/",
    ///     "redis://10.0.0.2:6379/",
    ///     "redis://10.0.0.3:6379/",
    /// ])
    /// .await?
    /// .wait_for_replicas(1, std::time::Duration::from_millis(100));
    /// # let _ = store; Ok(()) }
    /// ```
    pub async fn connect_cluster(urls: &[impl AsRef<str>]) -> Result<Self, StoreError> {
        let client = cluster_client(urls).build().map_err(StoreError::new)?;
        let connection = client
            .get_async_connection()
            .await
            .map_err(StoreError::new)?;
        Ok(Self::with_connection(connection))
    }
}

/// The settings of every cluster connection the store opens: [`RedisStore::connect_cluster`]'s
/// timeouts and bounded retries. A second connection to the same cluster (a subscriber, say,
/// with RESP3 and a push sender added) starts from here.
pub(crate) fn cluster_client(urls: &[impl AsRef<str>]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(urls.iter().map(AsRef::as_ref))
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
        .overall_response_timeout(Some(Duration::from_secs(2)))
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500)
}

impl<C> RedisStore<C> {
    /// Uses an existing connection: a configured `ConnectionManager`, or a Redis Cluster
    /// connection (`redis::cluster_async::ClusterConnection`). Configure its timeouts: every
    /// wait of the store but the deny-list check is bounded by them.
    #[must_use]
    pub fn with_connection(connection: C) -> Self {
        Self {
            connection,
            prefix: Arc::from("tjr"),
            scripts: Arc::new(Scripts::load()),
            check_timeout: Duration::from_millis(250),
            fail_closed: false,
            breaker: Arc::new(Breaker::new(BREAKER_THRESHOLD)),
            replication: None,
            feed: Arc::new(Feed::new("tjr")),
            propagation: None,
            refuse_while_unsynced: false,
        }
    }

    /// Acknowledges a write (a login, a rotation, a revocation) only once at least `replicas`
    /// replicas of its node hold it: each script is followed, in the same pipeline, by Redis's
    /// `WAIT replicas timeout`. When fewer acknowledge within `timeout`, the operation fails
    /// with an ambiguous [`StoreError`] (it happened on the primary; the refresh endpoint
    /// answers 503, the issuer sends the same rotation once more), so no token is handed out
    /// that a failover could lose. Off by default, and with `replicas` 0.
    ///
    /// Redis replicates asynchronously: without this, a primary that fails right after
    /// acknowledging a write can take it with it, and its promoted replica does not know the
    /// token the client now holds. It costs one more round trip between primary and replica
    /// per write (see BENCHMARKS.md), and while a primary has fewer replicas than `replicas`
    /// (after a failover, until a replica has rejoined), writes to it fail: with one replica
    /// per primary and `replicas` 1, losing a node stops writes to its slots for a while; with
    /// two replicas per primary and `replicas` 1, they go on. Keep `timeout` (at least 1 ms)
    /// under the connection's response timeout (1 s for [`connect`](RedisStore::connect) and
    /// [`connect_cluster`](RedisStore::connect_cluster)).
    #[must_use]
    pub fn wait_for_replicas(mut self, replicas: usize, timeout: Duration) -> Self {
        self.replication = (replicas > 0).then(|| Replication {
            replicas,
            timeout_ms: u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        });
        self
    }

    /// The key prefix (default `tjr`), to share one Redis between applications. Set it before
    /// [`propagate_revocations`](Self::propagate_revocations): setting it afterwards stops
    /// the propagation (the store asks Redis per request again).
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self.feed = Arc::new(Feed::new(prefix));
        // A set fed under the old prefix is not this store's: back to asking Redis.
        self.propagation = None;
        self
    }

    /// How long the per-request deny-list check may wait for Redis (default 250 ms); a check
    /// that takes longer counts as a failure and lets the token through, or answers 503 with
    /// [`fail_closed`](Self::fail_closed). Any duration is accepted, `Duration::MAX` included
    /// (no bound but the connection's own timeouts).
    #[must_use]
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// How many consecutive failed or timed-out calls to Redis open the circuit breaker
    /// (default 3; 0 counts as 1). A single slow answer, which a loaded runtime can cause,
    /// does not open it.
    ///
    /// While it is open, for a second at a time, no call waits for Redis: deny-list checks
    /// answer at once (letting tokens through, or 503 with [`fail_closed`](Self::fail_closed))
    /// and writes fail at once (the refresh endpoint answers 503 with `Retry-After: 1`). Then
    /// calls try Redis again; the first answer closes it, a failure opens it for another
    /// second. Opening logs a warning, closing an info (`tracing`).
    ///
    /// ```
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_jwt_refresh::issuer::RedisStore;
    ///
    /// let store = RedisStore::connect("redis://127.0.0.1/")
    ///     .await?
    ///     .breaker_threshold(5)
    ///     .fail_closed(true);
    /// # let _ = store; Ok(()) }
    /// ```
    #[must_use]
    pub fn breaker_threshold(mut self, failures: u32) -> Self {
        self.breaker = Arc::new(Breaker::new(failures));
        self
    }

    /// What the deny-list check answers when Redis cannot: with `false` (the default, fail
    /// open) the token passes, so verification keeps working through an outage and
    /// revocations are enforced again once Redis answers; with `true` (fail closed) the
    /// request is refused with 503, so a revoked session is never let through, at the cost of
    /// availability. Applies while the breaker is open and to every check that fails or
    /// exceeds [`check_timeout`](Self::check_timeout).
    #[must_use]
    pub fn fail_closed(mut self, fail_closed: bool) -> Self {
        self.fail_closed = fail_closed;
        self
    }

    /// Runs `script` unless the breaker is open; counts the outcome in the breaker.
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
        let Some(replication) = self.replication else {
            let reply = script.invoke_async(&mut connection).await;
            self.count(&reply);
            return reply.map_err(store_error);
        };
        let reply = replicated(&mut connection, script, replication).await;
        self.count(&reply);
        let (value, acknowledged): (T, usize) = reply.map_err(store_error)?;
        if acknowledged < replication.replicas {
            return Err(StoreError::ambiguous(format!(
                "written, but {acknowledged} of {} replicas acknowledged within {} ms",
                replication.replicas, replication.timeout_ms
            )));
        }
        Ok(value)
    }

    /// Counts a reply in the breaker: an answer, even an error, shows Redis is there.
    fn count<T>(&self, reply: &redis::RedisResult<T>) {
        match reply {
            Err(error) if unreachable(error) => self.breaker.failure(error),
            _ => self.breaker.success(),
        }
    }

    fn tombstone_key(&self, family: &str) -> String {
        format!("{}:{family}:revoked", self.feed.tag(bucket(family)))
    }

    /// The family's key, its tombstone's, its sealed successor's and its bucket's index of
    /// revocations, sharing the bucket's hash tag.
    fn keys(&self, family: &str) -> [String; 4] {
        let bucket = bucket(family);
        let key = format!("{}:{family}", self.feed.tag(bucket));
        let tombstone = format!("{key}:revoked");
        let sealed = format!("{key}:sealed");
        [key, tombstone, sealed, self.feed.index(bucket).to_owned()]
    }
}

/// `"1"` when `C` is a Redis Cluster connection, whose subscribers listen with `SSUBSCRIBE`:
/// the scripts then publish with `SPUBLISH`, else with `PUBLISH`.
fn sharded<C: 'static>() -> &'static str {
    if std::any::TypeId::of::<C>() == std::any::TypeId::of::<ClusterConnection>() {
        "1"
    } else {
        "0"
    }
}

impl<C> RefreshStore for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn create(&self, family: NewFamily<'_>) -> Result<(), StoreError> {
        let [key, _, _, _] = self.keys(family.id);
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
                    .arg(family.tombstone_ttl.max(1))
                    .arg(family.jkt),
            )
            .await?;
        Ok(())
    }

    async fn rotate(&self, r: Rotation<'_>) -> Result<RotationOutcome, StoreError> {
        let [key, tombstone, sealed, index] = self.keys(r.family);
        let reply: Vec<String> = self
            .invoke(
                self.scripts
                    .rotate
                    .key(key)
                    .key(tombstone)
                    .key(sealed)
                    .key(index)
                    .arg(r.presented)
                    .arg(r.successor)
                    .arg(r.sealed_successor)
                    .arg(r.now)
                    .arg(r.grace)
                    .arg(r.tombstone_ttl.max(1))
                    .arg(HISTORY_CHARS)
                    .arg(r.family)
                    .arg(sharded::<C>())
                    .arg(r.jkt),
            )
            .await?;
        let outcome = rotation_outcome(reply)?;
        if matches!(outcome, RotationOutcome::Reused | RotationOutcome::Expired) {
            self.remember_revoked(r.family, r.tombstone_ttl.max(1));
        }
        Ok(outcome)
    }

    async fn revoke(
        &self,
        family: &str,
        token_hash: Option<&str>,
        tombstone_ttl: u64,
    ) -> Result<bool, StoreError> {
        let [key, tombstone, sealed, index] = self.keys(family);
        let revoked: i64 = self
            .invoke(
                self.scripts
                    .revoke
                    .key(key)
                    .key(tombstone)
                    .key(sealed)
                    .key(index)
                    .arg(token_hash.unwrap_or(""))
                    .arg(tombstone_ttl.max(1))
                    .arg(family)
                    .arg(sharded::<C>()),
            )
            .await?;
        if revoked == 1 {
            self.remember_revoked(family, tombstone_ttl.max(1));
        }
        Ok(revoked == 1)
    }

    fn is_revoked(&self, family: &str) -> DenyCheck {
        if let Some(propagation) = &self.propagation {
            if propagation.local.contains(family) {
                return DenyCheck::revoked();
            }
            if propagation.local.is_synced() {
                return DenyCheck::active();
            }
            if self.refuse_while_unsynced {
                return DenyCheck::ready(Err("revocations not synchronised".into()));
            }
        }
        // Not propagated, or not synchronised: ask Redis.
        let fail_closed = self.fail_closed;
        if self.breaker.is_open() {
            return DenyCheck::ready(fallback(fail_closed, "redis unreachable a moment ago"));
        }
        let tombstone = self.tombstone_key(family);
        let mut connection = self.connection.clone();
        let (bound, breaker) = (self.check_timeout, Arc::clone(&self.breaker));
        DenyCheck::pending(async move {
            match tokio::time::timeout(bound, connection.exists::<_, bool>(tombstone)).await {
                Ok(Ok(revoked)) => {
                    breaker.success();
                    Ok(if revoked {
                        TokenStatus::Revoked
                    } else {
                        TokenStatus::Active
                    })
                }
                Ok(Err(error)) => {
                    breaker.failure(&error);
                    fallback(fail_closed, error)
                }
                Err(_) => {
                    breaker.failure(&"deny-list check timed out");
                    fallback(fail_closed, "redis deny-list check timed out")
                }
            }
        })
    }
}

/// What a deny-list check answers when Redis did not: the token passes (fail open), or the
/// error, which the verifier answers with 503 (fail closed).
fn fallback(fail_closed: bool, error: impl Into<BoxError>) -> Result<TokenStatus, BoxError> {
    if fail_closed {
        Err(error.into())
    } else {
        Ok(TokenStatus::Active)
    }
}
