//! Revocations propagated to every instance: a local set of revoked families, fed by Redis
//! pub/sub and resynchronised from an index whenever the subscription comes back (feature
//! `redis`).
//!
//! Where [`RedisStore`]'s per-request check asks Redis (`EXISTS`, one round trip), a
//! propagating store answers from memory, and asks Redis only while its set cannot be
//! trusted.
//!
//! # Design
//!
//! - **Publish inside the script that revokes.** `revoke.lua`, and `rotate.lua` when it
//!   revokes a family for reuse or expiry, add the family to its bucket's index and publish
//!   it on its bucket's channel (`redis/lua/announce.lua`), then write the tombstone, all in one
//!   script: no other client sees the one without the other, and a script that fails while
//!   announcing has written nothing.
//! - **Buckets, for Redis Cluster.** A script runs on one node and may touch one slot only.
//!   So the families are spread over 16 buckets (see [`RedisStore`]'s key layout), each with
//!   its own index and channel under the bucket's hash tag: a revocation's tombstone, index
//!   entry and message are in one slot, written by one script on one node, as on a single
//!   Redis. The channel has the index's name, which pins it to that slot (Redis 7.0 does not
//!   check, inside a script, that a sharded channel is in the script's slot).
//! - **Pub/sub, not client-side caching.** RESP3 `CLIENT TRACKING` invalidates keys a client
//!   has *read*: it would tell an instance that a tombstone it once asked about changed, but
//!   never about the tombstone of a family it never asked about, which is every new
//!   revocation. Broadcast tracking (`BCAST PREFIX`) would, but it sends key names only, needs
//!   RESP3 on a connection the redis client shares with every other call, and leaves the
//!   resynchronisation problem exactly where it is. A channel carries what is needed (the
//!   family and how long to remember it) to every subscriber, is plain RESP2 on a single
//!   Redis, and its one weakness (a message sent while a subscriber is away is lost) is what
//!   the index covers.
//! - **Sharded pub/sub on Redis Cluster.** On a single Redis the scripts `PUBLISH` and the
//!   worker `SUBSCRIBE`s to the 16 channels on one connection. On Cluster (a store made by
//!   [`connect_cluster`](RedisStore::connect_cluster)) they `SPUBLISH`, which Redis delivers
//!   within the channel's shard only (plain `PUBLISH` is broadcast to every node over the
//!   cluster bus), and the worker `SSUBSCRIBE`s to each channel through a `redis` cluster
//!   connection of its own (RESP3, its pushes read from a bounded queue), which sends each
//!   subscription to the primary owning the bucket's slot. That connection, rather than
//!   plain connections to the primaries found with `CLUSTER SHARDS`, because it already
//!   routes by slot, follows `MOVED` and reports each node's disconnection as a push; the
//!   worker takes nothing else from it. The crate resubscribes by itself after a
//!   reconnection, but what was published in between is lost, so the worker does not rely on
//!   that: any node's disconnection, a
//!   `SUNSUBSCRIBE` from a node that no longer owns a slot (resharding), a full queue, or a
//!   primary not answering the heartbeat `PING` ends the session; the next one opens a new
//!   connection on the current slot map, subscribes to all 16 channels and reads all 16
//!   indexes again before the set is trusted. A failover is therefore a resynchronisation,
//!   with per-request checks meanwhile.
//! - **The index.** One per bucket: a sorted set, scored by when each entry may be forgotten
//!   (Redis's time plus the revocation TTL: the access-token lifetime plus leeway), trimmed
//!   as it is written and read. On every (re)connect the worker subscribes to every bucket *first*,
//!   then reads every bucket's entries not yet past (`redis/lua/resync.lua`): a revocation
//!   announced in between arrives on the channel, one committed before is in the index, so
//!   none falls between. Only then is the set trusted.
//! - **The gaps.** While the subscription is down, or up but not yet resynchronised, the set
//!   is not trusted: every check asks Redis as before (`EXISTS`, with its breaker and
//!   [`fail_closed`](RedisStore::fail_closed)), or is refused with 503 under
//!   [`refuse_while_unsynced`](RedisStore::refuse_while_unsynced); a family already in the
//!   set is still refused from it, even with Redis down. A subscription that dies
//!   without a word (a silent network partition) is caught by a ping every second, bounded
//!   by a second. Start-up is a (re)connect like any other, and
//!   [`propagate_revocations`](RedisStore::propagate_revocations) returns only once the
//!   first one has synchronised.
//! - **Entry lifetime.** Each entry is kept as long as the tombstone: the revocation TTL the
//!   revoking issuer announced ([`TokenIssuer::revocation_ttl`](crate::issuer::TokenIssuer::revocation_ttl),
//!   by default the access tokens' lifetime plus 60 s of leeway), counted on this instance's
//!   monotonic clock from when the message arrived (or from Redis's time for the index), so
//!   instances need no synchronised clocks for it.
//! - **Publish command.** The store picks `SPUBLISH` when its connection is a cluster
//!   connection, `PUBLISH` otherwise, and the subscriber must match: a
//!   [`RevocationSubscriber::cluster`] for a cluster store, a
//!   [`RevocationSubscriber::single`] (or a `redis::Client`) for the others.

mod local;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;

pub(crate) use local::LocalRevocations;

use crate::issuer::store::RedisStore;
use crate::issuer::store::StoreError;
use crate::issuer::store::redis::BUCKETS;
use worker::{Context, Worker};

/// How long [`RedisStore::propagate_revocations`] waits for the first synchronisation.
const START_BOUND: Duration = Duration::from_secs(3);

/// Where revocations are announced: each bucket's hash tag and index (also its channel).
#[derive(Debug)]
pub(crate) struct Feed {
    tags: Vec<String>,
    indexes: Vec<String>,
}

impl Feed {
    /// The feed of the stores sharing key prefix `prefix`.
    pub(crate) fn new(prefix: &str) -> Self {
        let tags: Vec<String> = (0..BUCKETS).map(|b| format!("{{{prefix}:b{b}}}")).collect();
        let indexes = tags
            .iter()
            .map(|tag| format!("{tag}:revocations"))
            .collect();
        Self { tags, indexes }
    }

    /// Bucket `bucket`'s hash tag, `{<prefix>:b<N>}`.
    pub(crate) fn tag(&self, bucket: usize) -> &str {
        &self.tags[bucket]
    }

    /// Bucket `bucket`'s index of recent revocations, and the name of its channel.
    pub(crate) fn index(&self, bucket: usize) -> &str {
        &self.indexes[bucket]
    }

    /// Every bucket's index (and channel).
    pub(crate) fn indexes(&self) -> &[String] {
        &self.indexes
    }
}

/// Where a propagating store hears of revocations: a Redis server or a Redis Cluster, given
/// to [`RedisStore::propagate_revocations`]. A `redis::Client` converts into one.
///
/// The worker opens its own connections from it (one for a single Redis, one per primary for
/// a cluster), so that subscriptions never share a connection with the store's commands.
#[derive(Clone)]
pub struct RevocationSubscriber(pub(crate) Source);

#[derive(Clone)]
pub(crate) enum Source {
    Single(redis::Client),
    Cluster(Vec<String>),
}

impl RevocationSubscriber {
    /// Subscribes to one Redis (`PUBLISH`/`SUBSCRIBE`), for a store made by
    /// [`RedisStore::connect`] or on any connection but a cluster one.
    pub fn single(client: redis::Client) -> Self {
        Self(Source::Single(client))
    }

    /// Subscribes to a Redis Cluster through its nodes `urls` (one that answers is enough),
    /// with sharded pub/sub (`SSUBSCRIBE`, Redis 7 or later), for a store made by
    /// [`RedisStore::connect_cluster`]. Same timeouts as the store's connection.
    pub fn cluster(urls: &[impl AsRef<str>]) -> Self {
        Self(Source::Cluster(
            urls.iter().map(|u| u.as_ref().to_owned()).collect(),
        ))
    }
}

impl From<redis::Client> for RevocationSubscriber {
    fn from(client: redis::Client) -> Self {
        Self::single(client)
    }
}

impl fmt::Debug for RevocationSubscriber {
    /// No URL: it may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::Single(_) => f.write_str("RevocationSubscriber::Single"),
            Source::Cluster(urls) => {
                write!(f, "RevocationSubscriber::Cluster({} seeds)", urls.len())
            }
        }
    }
}

/// A store's propagated revocations: the set, and the worker keeping it.
pub(crate) struct Propagation {
    pub(crate) local: Arc<LocalRevocations>,
    _worker: Worker,
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Keeps a local set of revoked families, so that the per-request deny-list check is a
    /// memory lookup instead of a round trip to Redis.
    ///
    /// A background task subscribes through `subscriber` (a `redis::Client` for the same
    /// Redis, or [`RevocationSubscriber::cluster`] for the same cluster) to the revocations
    /// every store on this Redis and [`prefix`](Self::prefix) announces, and reads the indexes
    /// of recent revocations, before the set is trusted. This returns once that
    /// first synchronisation is done (at most 3 s; past that it fails, and the store is not
    /// returned). Afterwards, whenever the subscription is lost, checks fall back to asking
    /// Redis (or to 503, [`refuse_while_unsynced`](Self::refuse_while_unsynced)) until it is
    /// back and the index has been read again. Call it last, after
    /// [`prefix`](Self::prefix). Must run on a Tokio runtime.
    ///
    /// Every store announces its revocations whether or not it propagates them, so a fleet
    /// can turn this on one instance at a time.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_jwt_refresh::issuer::RedisStore;
    ///
    /// let url = "redis://127.0.0.1/";
    /// let store = RedisStore::connect(url)
    ///     .await?
    ///     .propagate_revocations(redis::Client::open(url)?)
    ///     .await?;
    /// assert!(store.revocations_synced());
    /// # Ok(()) }
    /// ```
    pub async fn propagate_revocations(
        mut self,
        subscriber: impl Into<RevocationSubscriber>,
    ) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::new("propagate_revocations needs a Tokio runtime"))?;
        let local = Arc::new(LocalRevocations::new());
        let worker = Worker::spawn(
            &runtime,
            Context {
                subscriber: subscriber.into().0,
                connection: self.connection.clone(),
                feed: Arc::clone(&self.feed),
                resync: Arc::clone(&self.scripts.resync),
                local: Arc::clone(&local),
            },
        );
        if !local.synced_within(START_BOUND).await {
            return Err(StoreError::new(
                "revocation feed did not synchronise within 3 s",
            ));
        }
        self.propagation = Some(Arc::new(Propagation {
            local,
            _worker: worker,
        }));
        Ok(self)
    }
}

impl<C> RedisStore<C> {
    /// While propagated revocations are not synchronised (see
    /// [`propagate_revocations`](Self::propagate_revocations)), refuse every token with 503
    /// (`true`) instead of asking Redis per request (`false`, the default). No effect on a
    /// store that does not propagate revocations.
    #[must_use]
    pub fn refuse_while_unsynced(mut self, refuse: bool) -> Self {
        self.refuse_while_unsynced = refuse;
        self
    }

    /// Whether the local set of revoked families is trusted now: the store propagates
    /// revocations, its subscription is up, and it has read the index since. `false` for a
    /// store that does not propagate. For readiness probes.
    pub fn revocations_synced(&self) -> bool {
        self.propagation
            .as_ref()
            .is_some_and(|p| p.local.is_synced())
    }

    /// Waits until [`revocations_synced`](Self::revocations_synced), at most `bound`; returns
    /// whether it is.
    pub async fn wait_for_revocation_sync(&self, bound: Duration) -> bool {
        match &self.propagation {
            Some(propagation) => propagation.local.synced_within(bound).await,
            None => false,
        }
    }

    /// Records a revocation this store made in its own set, at once: its own next request
    /// refuses the family without waiting for the message.
    pub(super) fn remember_revoked(&self, family: &str, ttl: u64) {
        if let Some(propagation) = &self.propagation {
            propagation.local.insert(family, Duration::from_secs(ttl));
        }
    }
}
