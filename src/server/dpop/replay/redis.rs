//! [`RedisReplayStore`]: the `jti`s of every instance, in Redis (feature `redis`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};

use crate::BoxError;
use crate::server::dpop::replay::{JtiStatus, ReplayCheck, ReplayKey, ReplayStore};

/// The replay store of several instances: one `SET key 1 NX PX ttl` per proof, so the first
/// instance to see a `jti` wins, atomically, and Redis forgets it when its window ends.
///
/// While Redis is unreachable, checks fail within the connection's timeouts and proofs are
/// refused with [`DpopError::Store`](crate::server::dpop::DpopError::Store) (fail closed; a
/// 503 at the layer). Run Redis with `maxmemory-policy noeviction` (or a `volatile-*` policy
/// that spares nothing else of yours): an evicted key lets its proof be replayed.
///
/// # Example
///
/// ```no_run
/// use tower_jwt_refresh::server::dpop::DpopVerifier;
/// use tower_jwt_refresh::server::dpop::replay::RedisReplayStore;
///
/// # async fn run() -> Result<(), tower_jwt_refresh::BoxError> {
/// let store = RedisReplayStore::connect("redis://127.0.0.1/").await?.prefix("api");
/// let verifier = DpopVerifier::new("https://api.example.com")?.replay_store(store);
/// # let _ = verifier; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisReplayStore<C = ConnectionManager> {
    connection: C,
    prefix: Arc<str>,
}

impl<C> fmt::Debug for RedisReplayStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplayStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisReplayStore {
    /// Connects to `url` (`redis://host:port/db`), with one-second connection and response
    /// timeouts. Fails if Redis cannot be reached now.
    pub async fn connect(url: &str) -> Result<Self, BoxError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self::with_connection(connection))
    }
}

impl<C> RedisReplayStore<C> {
    /// Uses an existing connection (a configured `ConnectionManager`, or a cluster
    /// connection); its timeouts bound every check.
    #[must_use]
    pub fn with_connection(connection: C) -> Self {
        Self {
            connection,
            prefix: Arc::from("tjr"),
        }
    }

    /// The prefix of this store's keys (`tjr` by default): keys are
    /// `<prefix>:dpop:<replay key>`. Instances that must see each other's proofs share it.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }
}

impl<C> ReplayStore for RedisReplayStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn check(&self, key: &ReplayKey, now: u64, expires_at: u64) -> ReplayCheck {
        let mut connection = self.connection.clone();
        let key = format!("{}:dpop:{key}", self.prefix);
        let ttl_ms = expires_at.saturating_sub(now).max(1).saturating_mul(1000);
        ReplayCheck::pending(async move {
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut connection)
                .await?;
            Ok(match set {
                Some(_) => JtiStatus::Fresh,
                None => JtiStatus::Replayed,
            })
        })
    }
}
