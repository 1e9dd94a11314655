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
//!   revokes a family for reuse or expiry, add the family to an index and publish it
//!   (`lua/announce.lua`), then write the tombstone, all in one script: no other client sees
//!   the one without the other, and a script that fails while announcing has written
//!   nothing.
//! - **Pub/sub, not client-side caching.** RESP3 `CLIENT TRACKING` invalidates keys a client
//!   has *read*: it would tell an instance that a tombstone it once asked about changed, but
//!   never about the tombstone of a family it never asked about, which is every new
//!   revocation. Broadcast tracking (`BCAST PREFIX`) would, but it sends key names only, needs
//!   RESP3 on a connection the redis client shares with every other call, and leaves the
//!   resynchronisation problem exactly where it is. A channel carries what is needed (the
//!   family and how long to remember it) to every subscriber, is plain RESP2, and its one
//!   weakness (a message sent while a subscriber is away is lost) is what the index covers.
//! - **The index.** A sorted set, scored by when each entry may be forgotten (Redis's time
//!   plus the revocation TTL: the access-token lifetime plus leeway), trimmed as it is
//!   written and read. On every (re)connect the worker subscribes *first*, then reads the
//!   entries not yet past (`lua/resync.lua`): a revocation announced in between arrives on
//!   the channel, one committed before is in the index, so none falls between. Only then is
//!   the set trusted.
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
//! - **Names, and Redis Cluster.** The channel `<prefix>:{revocations}` and the index
//!   `<prefix>:{revocations}:index` share one hash tag, so on Cluster they map to one slot and
//!   sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`) can carry the channel; the publish command is a
//!   setting of [`Feed`], `PUBLISH` here. The scripts take the index as an argument, not a
//!   declared key, so rotations that revoke nothing stay within their family's slot.
//!   What Cluster still needs: the index write and the publish happen on the family's node,
//!   so the index must be co-located with the families (for example one index and channel
//!   per hash-tag bucket), and a subscriber per shard that follows failovers.

mod local;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;

pub(crate) use local::LocalRevocations;

use crate::issuer::store::RedisStore;
use crate::issuer::store::StoreError;
use worker::{Context, Worker};

/// How long [`RedisStore::propagate_revocations`] waits for the first synchronisation.
const START_BOUND: Duration = Duration::from_secs(3);

/// Where revocations are announced: the index, the channel, and the command that publishes
/// on it.
#[derive(Debug)]
pub(crate) struct Feed {
    pub(crate) index: String,
    pub(crate) channel: String,
    /// `PUBLISH`; sharded pub/sub on Redis Cluster would use `SPUBLISH`, with a subscriber
    /// that sends `SSUBSCRIBE` to the channel's shard.
    pub(crate) publish: &'static str,
}

impl Feed {
    /// The feed of the stores sharing key prefix `prefix`.
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            index: format!("{prefix}:{{revocations}}:index"),
            channel: format!("{prefix}:{{revocations}}"),
            publish: "PUBLISH",
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
    /// A background task subscribes through `subscriber` (a client for the same Redis) to the
    /// revocations every store on this Redis and [`prefix`](Self::prefix) announces, and
    /// reads the index of recent revocations, before the set is trusted. This returns once that
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
        subscriber: redis::Client,
    ) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::new("propagate_revocations needs a Tokio runtime"))?;
        let local = Arc::new(LocalRevocations::new());
        let worker = Worker::spawn(
            &runtime,
            Context {
                subscriber,
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
