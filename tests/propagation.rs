//! Revocations propagated between instances, over a real Redis and a real Redis Cluster: a
//! revocation on one store is refused by another from its local set; while the subscription
//! is down the other asks Redis per request (or refuses, if so configured); when it comes
//! back, the indexes give it what it missed; a new instance starts synchronised; local
//! entries end with the revocation TTL.
//!
//! Each test runs twice: `single::<name>` on one Redis (`PUBLISH`/`SUBSCRIBE`), and
//! `cluster::<name>` on a Redis Cluster (`SPUBLISH`/`SSUBSCRIBE`, one subscription per
//! bucket on the node owning its slot).
//!
//! Each store here is an "instance" with connections of its own. That a refusal comes from
//! the local set and not from Redis is shown by deleting the family's tombstone behind the
//! stores' backs: then only the local set (or the index) still knows.
//!
//! The disconnections are real: an instance's subscription logs in as a Redis user of its
//! own (an ACL user on every node); to cut it, every node disables that user and kills its
//! connections (`CLIENT KILL USER`), so reconnections fail until the test enables it again.
//!
//! Needs `REDIS_URL` for `single::`, `REDIS_CLUSTER_URLS` for `cluster::` (`scripts/test`
//! starts both); without one, its tests are skipped with a notice, and fail under `CI=true`.
//! Waits are bounded; nothing is timed. Without the `redis` feature (plain `cargo test`) the
//! file is empty.
#![cfg(feature = "redis")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use redis::aio::ConnectionLike;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_jwt_refresh::Clock;
use tower_jwt_refresh::issuer::{
    AccessTokenIssuer, IssuedTokens, RedisStore, RevocationSubscriber, TokenIssuer,
};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};
use tower_jwt_refresh::server::JwtAuthLayer;

/// How long any wait here may take before the test fails.
const BOUND: Duration = Duration::from_secs(10);

fn key() -> SigningKey {
    SigningKey::hmac(Algorithm::HS256, [7u8; 32]).unwrap()
}

/// A name of this test's own (a key prefix, a Redis user), so that tests running side by
/// side share no channel.
fn prefix(test: &str, backend: &impl Backend) -> String {
    format!("prop-{test}-{}-{}", backend.name(), std::process::id())
}

/// A Redis deployment the tests run on: one server, or a cluster.
trait Backend {
    type Connection: ConnectionLike + Clone + Send + Sync + 'static;

    /// `single` or `cluster`.
    fn name(&self) -> &'static str;

    /// The nodes' URLs (one for a single server).
    fn urls(&self) -> &[String];

    /// A store with `prefix`, not propagating.
    async fn polled(&self, prefix: &str) -> RedisStore<Self::Connection>;

    /// A subscriber that logs in with `credentials` (`user:password@`, or empty), or to the
    /// nodes `urls` instead when given.
    fn subscriber(&self, credentials: &str) -> RevocationSubscriber;

    /// A subscriber to a port where nothing listens.
    fn dead_subscriber(&self, url: String) -> RevocationSubscriber;

    /// Runs `command` for the key it names, on the node that owns it.
    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> T;
}

/// One Redis, on `REDIS_URL`.
struct Single(Vec<String>);

impl Backend for Single {
    type Connection = redis::aio::ConnectionManager;

    fn name(&self) -> &'static str {
        "single"
    }

    fn urls(&self) -> &[String] {
        &self.0
    }

    async fn polled(&self, prefix: &str) -> RedisStore {
        RedisStore::connect(&self.0[0])
            .await
            .unwrap()
            .prefix(prefix)
    }

    fn subscriber(&self, credentials: &str) -> RevocationSubscriber {
        let url = with_credentials(&self.0[0], credentials);
        RevocationSubscriber::single(redis::Client::open(url).unwrap())
    }

    fn dead_subscriber(&self, url: String) -> RevocationSubscriber {
        redis::Client::open(url).unwrap().into()
    }

    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> T {
        let mut connection = node(&self.0[0]).await;
        command.query_async(&mut connection).await.unwrap()
    }
}

/// A Redis Cluster, on `REDIS_CLUSTER_URLS`.
struct Cluster(Vec<String>);

impl Backend for Cluster {
    type Connection = redis::cluster_async::ClusterConnection;

    fn name(&self) -> &'static str {
        "cluster"
    }

    fn urls(&self) -> &[String] {
        &self.0
    }

    async fn polled(&self, prefix: &str) -> RedisStore<Self::Connection> {
        RedisStore::connect_cluster(&self.0)
            .await
            .unwrap()
            .prefix(prefix)
    }

    fn subscriber(&self, credentials: &str) -> RevocationSubscriber {
        let urls: Vec<String> = self
            .0
            .iter()
            .map(|url| with_credentials(url, credentials))
            .collect();
        RevocationSubscriber::cluster(&urls)
    }

    fn dead_subscriber(&self, url: String) -> RevocationSubscriber {
        RevocationSubscriber::cluster(&[url])
    }

    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> T {
        let mut connection = redis::cluster::ClusterClient::new(self.0.clone())
            .unwrap()
            .get_async_connection()
            .await
            .unwrap();
        command.query_async(&mut connection).await.unwrap()
    }
}

/// `url` (`redis://host:port/`) logging in with `credentials`.
fn with_credentials(url: &str, credentials: &str) -> String {
    url.replacen("redis://", &format!("redis://{credentials}"), 1)
}

/// A connection to one node.
async fn node(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A Redis user of one instance's subscription, on every node: cutting it disconnects that
/// subscription and refuses its reconnections until it is let through again.
struct Gate {
    user: String,
    urls: Vec<String>,
}

impl Gate {
    async fn new(backend: &impl Backend, user: &str) -> Self {
        let gate = Self {
            user: user.to_owned(),
            urls: backend.urls().to_vec(),
        };
        gate.set(&["reset", "on", ">pw", "~*", "&*", "+@all"]).await;
        gate
    }

    /// The subscriber that logs in as this gate's user.
    fn subscriber(&self, backend: &impl Backend) -> RevocationSubscriber {
        backend.subscriber(&format!("{}:pw@", self.user))
    }

    async fn set(&self, rules: &[&str]) {
        for url in &self.urls {
            let _: () = redis::cmd("ACL")
                .arg("SETUSER")
                .arg(&self.user)
                .arg(rules)
                .query_async(&mut node(url).await)
                .await
                .unwrap();
        }
    }

    /// Disables the user and kills its connections, on every node.
    async fn cut(&self) {
        self.set(&["off"]).await;
        let mut killed = 0;
        for url in &self.urls {
            let n: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("USER")
                .arg(&self.user)
                .query_async(&mut node(url).await)
                .await
                .unwrap();
            killed += n;
        }
        assert!(killed > 0, "a subscription was connected as {}", self.user);
    }

    /// Lets the user log in again.
    async fn restore(&self) {
        self.set(&["on"]).await;
    }
}

/// A store with `prefix`, propagating revocations through `subscriber`.
async fn propagated<B: Backend>(
    backend: &B,
    prefix: &str,
    subscriber: RevocationSubscriber,
) -> RedisStore<B::Connection> {
    backend
        .polled(prefix)
        .await
        .propagate_revocations(subscriber)
        .await
        .unwrap()
}

/// An issuer on `store`, without a grace window, so a second use of a token is reuse.
fn issuer<C>(store: RedisStore<C>) -> TokenIssuer<RedisStore<C>>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    TokenIssuer::new(AccessTokenIssuer::new(key()), store).grace_period(Duration::ZERO)
}

/// The status a route behind `issuer`'s deny list answers to `token`.
async fn status<C>(issuer: &TokenIssuer<RedisStore<C>>, token: &str) -> StatusCode
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let layer = JwtAuthLayer::new(key().verification_key()).deny_list(issuer.deny_list());
    let service =
        tower::ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_: Request<Full<Bytes>>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::default()))
            });
    let request = Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    service.oneshot(request).await.unwrap().status()
}

/// Waits, bounded, until `issuer` answers `token` with `expected`.
async fn until_status<C>(issuer: &TokenIssuer<RedisStore<C>>, token: &str, expected: StatusCode)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let waited = tokio::time::timeout(BOUND, async {
        while status(issuer, token).await != expected {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never answered {expected}");
}

/// Waits, bounded, until `store`'s set is untrusted.
async fn until_unsynced<C>(store: &RedisStore<C>) {
    let waited = tokio::time::timeout(BOUND, async {
        while store.revocations_synced() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the lost subscription was never noticed");
}

fn family(tokens: &IssuedTokens) -> &str {
    tokens.refresh_token.split('.').next().unwrap()
}

/// Deletes `family`'s tombstone: from then on, only a local set or the index knows it was
/// revoked.
async fn forget_tombstone(backend: &impl Backend, prefix: &str, family: &str) {
    let tombstone = format!("{}:revoked", support::family_key(prefix, family));
    let deleted: i64 = backend.query(redis::cmd("DEL").arg(tombstone)).await;
    assert_eq!(deleted, 1, "the tombstone was there");
}

/// The tests, each run on one Redis (`single::`) and on the cluster (`cluster::`).
macro_rules! on_both {
    ($($test:ident),* $(,)?) => {
        mod single {
            $(
                #[tokio::test]
                async fn $test() {
                    if let Some(url) = crate::support::redis_url() {
                        super::$test(super::Single(vec![url])).await;
                    }
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test]
                async fn $test() {
                    if let Some(urls) = crate::support::redis_cluster_urls() {
                        super::$test(super::Cluster(urls)).await;
                    }
                }
            )*
        }
    };
}

on_both!(
    a_revocation_on_one_instance_is_refused_by_another_from_memory,
    an_ended_family_is_propagated_too,
    the_revoking_instance_refuses_at_once,
    a_new_instance_is_synchronised_before_its_first_token,
    after_a_disconnection_checks_ask_redis_until_the_indexes_are_read_again,
    refuse_while_unsynced_answers_503_until_resynchronised,
    entries_end_with_the_revocation_ttl,
);

async fn a_revocation_on_one_instance_is_refused_by_another_from_memory(backend: impl Backend) {
    let prefix = prefix("between", &backend);
    let a = issuer(backend.polled(&prefix).await);
    let b = issuer(propagated(&backend, &prefix, backend.subscriber("")).await);
    let polling = issuer(backend.polled(&prefix).await);

    // An explicit revocation (logout) on A.
    let pair = a.issue("alice", &()).await.unwrap();
    assert_eq!(status(&b, &pair.access_token).await, StatusCode::OK);
    assert!(a.revoke(&pair.refresh_token).await.unwrap());
    until_status(&b, &pair.access_token, StatusCode::UNAUTHORIZED).await;
    forget_tombstone(&backend, &prefix, family(&pair)).await;
    // Redis no longer says so, and a polling instance lets the token through; B still
    // refuses it, from its local set.
    assert_eq!(status(&polling, &pair.access_token).await, StatusCode::OK);
    assert_eq!(
        status(&b, &pair.access_token).await,
        StatusCode::UNAUTHORIZED
    );

    // A reuse detected on A revokes the family on B as well.
    let first = a.issue("bob", &()).await.unwrap();
    let second = a.rotate(&first.refresh_token).await.unwrap();
    assert_eq!(status(&b, &second.access_token).await, StatusCode::OK);
    assert!(a.rotate(&first.refresh_token).await.is_err(), "reuse");
    until_status(&b, &second.access_token, StatusCode::UNAUTHORIZED).await;
    forget_tombstone(&backend, &prefix, family(&first)).await;
    assert_eq!(status(&polling, &second.access_token).await, StatusCode::OK);
    assert_eq!(
        status(&b, &second.access_token).await,
        StatusCode::UNAUTHORIZED
    );

    // Sessions in every bucket: each bucket's channel reaches B.
    let mut buckets = std::collections::HashSet::new();
    while buckets.len() < 16 {
        let pair = a.issue("carol", &()).await.unwrap();
        if !buckets.insert(support::bucket_tag(&prefix, family(&pair))) {
            continue;
        }
        assert!(a.revoke(&pair.refresh_token).await.unwrap());
        until_status(&b, &pair.access_token, StatusCode::UNAUTHORIZED).await;
        forget_tombstone(&backend, &prefix, family(&pair)).await;
        assert_eq!(status(&polling, &pair.access_token).await, StatusCode::OK);
        assert_eq!(
            status(&b, &pair.access_token).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(b.store().wait_for_revocation_sync(BOUND).await);
}

/// A family that ends (its refresh lifetime over) is revoked by the rotation that finds it
/// so, and that revocation propagates like the others.
async fn an_ended_family_is_propagated_too(backend: impl Backend) {
    let prefix = prefix("ended", &backend);
    let ahead = Arc::new(AtomicU64::new(0));
    let clock = Clock::from_fn({
        let ahead = ahead.clone();
        move || support::now() + ahead.load(Ordering::SeqCst)
    });
    let a = issuer(backend.polled(&prefix).await)
        .refresh_lifetime(Duration::from_secs(3600))
        .clock(clock);
    let b = issuer(propagated(&backend, &prefix, backend.subscriber("")).await);
    let pair = a.issue("alice", &()).await.unwrap();
    assert_eq!(status(&b, &pair.access_token).await, StatusCode::OK);
    // An hour later for the issuer (B's verifier still finds the access token valid).
    ahead.store(3600, Ordering::SeqCst);
    assert!(a.rotate(&pair.refresh_token).await.is_err(), "ended");
    until_status(&b, &pair.access_token, StatusCode::UNAUTHORIZED).await;
    forget_tombstone(&backend, &prefix, family(&pair)).await;
    assert_eq!(
        status(&b, &pair.access_token).await,
        StatusCode::UNAUTHORIZED
    );
}

async fn the_revoking_instance_refuses_at_once(backend: impl Backend) {
    let prefix = prefix("self", &backend);
    let a = issuer(propagated(&backend, &prefix, backend.subscriber("")).await);
    let pair = a.issue("alice", &()).await.unwrap();
    assert!(a.revoke(&pair.refresh_token).await.unwrap());
    // No wait for the message: the next request is refused.
    forget_tombstone(&backend, &prefix, family(&pair)).await;
    assert_eq!(
        status(&a, &pair.access_token).await,
        StatusCode::UNAUTHORIZED
    );
}

async fn a_new_instance_is_synchronised_before_its_first_token(backend: impl Backend) {
    let prefix = prefix("startup", &backend);
    let a = issuer(backend.polled(&prefix).await);
    let pair = a.issue("alice", &()).await.unwrap();
    assert!(a.revoke(&pair.refresh_token).await.unwrap());
    forget_tombstone(&backend, &prefix, family(&pair)).await;
    // Started after the revocation, whose message it never saw and whose tombstone is gone:
    // the constructor returned only after reading the indexes, so the first request is
    // refused.
    let b = issuer(propagated(&backend, &prefix, backend.subscriber("")).await);
    assert!(b.store().revocations_synced());
    assert_eq!(
        status(&b, &pair.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    // A prefix set afterwards is not what the set was fed under: the store stops trusting it.
    assert!(!b.store().clone().prefix("other").revocations_synced());
    // A subscription that cannot be made is an error at start-up, within the bound.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("redis://{}/", closed.local_addr().unwrap());
    drop(closed);
    let started = backend
        .polled(&prefix)
        .await
        .propagate_revocations(backend.dead_subscriber(dead));
    let result = tokio::time::timeout(BOUND, started).await.expect("bounded");
    assert!(result.is_err());
}

/// Revocations made while the subscription was down: the per-request check (safe mode)
/// refuses them, and the resynchronisation brings them into the local set.
async fn after_a_disconnection_checks_ask_redis_until_the_indexes_are_read_again(
    backend: impl Backend,
) {
    let prefix = prefix("disconnect", &backend);
    let gate = Gate::new(&backend, &prefix).await;
    let a = issuer(backend.polled(&prefix).await);
    let b = issuer(propagated(&backend, &prefix, gate.subscriber(&backend)).await);
    let before = a.issue("alice", &()).await.unwrap();
    let during = a.issue("bob", &()).await.unwrap();
    assert!(a.revoke(&before.refresh_token).await.unwrap());
    until_status(&b, &before.access_token, StatusCode::UNAUTHORIZED).await;

    // Redis drops B's subscription and refuses B's reconnections.
    gate.cut().await;
    until_unsynced(b.store()).await;
    // Revoked now, while B hears nothing: B's per-request check asks Redis and refuses it.
    assert!(a.revoke(&during.refresh_token).await.unwrap());
    assert_eq!(
        status(&b, &during.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    // Asking Redis it is: without the tombstone, B lets the token through.
    forget_tombstone(&backend, &prefix, family(&during)).await;
    assert_eq!(status(&b, &during.access_token).await, StatusCode::OK);
    // What B learnt before the disconnection it still knows.
    forget_tombstone(&backend, &prefix, family(&before)).await;
    assert_eq!(
        status(&b, &before.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(!b.store().revocations_synced());

    // The subscription comes back; B trusts its set again only after reading the indexes,
    // the only place left that knows of `during`.
    gate.restore().await;
    assert!(b.store().wait_for_revocation_sync(BOUND).await);
    assert_eq!(
        status(&b, &during.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    // And new revocations propagate again.
    let after = a.issue("carol", &()).await.unwrap();
    assert!(a.revoke(&after.refresh_token).await.unwrap());
    until_status(&b, &after.access_token, StatusCode::UNAUTHORIZED).await;
    forget_tombstone(&backend, &prefix, family(&after)).await;
    assert_eq!(
        status(&b, &after.access_token).await,
        StatusCode::UNAUTHORIZED
    );
}

async fn refuse_while_unsynced_answers_503_until_resynchronised(backend: impl Backend) {
    let prefix = prefix("refuse", &backend);
    let gate = Gate::new(&backend, &prefix).await;
    let store = backend
        .polled(&prefix)
        .await
        .refuse_while_unsynced(true)
        .propagate_revocations(gate.subscriber(&backend))
        .await
        .unwrap();
    let b = issuer(store);
    let pair = b.issue("alice", &()).await.unwrap();
    assert_eq!(status(&b, &pair.access_token).await, StatusCode::OK);
    gate.cut().await;
    until_unsynced(b.store()).await;
    // Redis answers, but the set is not synchronised: refused.
    assert_eq!(
        status(&b, &pair.access_token).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    gate.restore().await;
    assert!(b.store().wait_for_revocation_sync(BOUND).await);
    assert_eq!(status(&b, &pair.access_token).await, StatusCode::OK);
}

/// The local entry, and the index entry, last as long as the revocation TTL and no longer.
/// Redis times the index in real time, so this waits (about 2 s) for real.
async fn entries_end_with_the_revocation_ttl(backend: impl Backend) {
    let prefix = prefix("expiry", &backend);
    let ttl = Duration::from_secs(1);
    let a = issuer(backend.polled(&prefix).await).revocation_ttl(ttl);
    let b = issuer(propagated(&backend, &prefix, backend.subscriber("")).await);
    let pair = a.issue("alice", &()).await.unwrap();
    assert!(a.revoke(&pair.refresh_token).await.unwrap());
    until_status(&b, &pair.access_token, StatusCode::UNAUTHORIZED).await;
    let index = format!(
        "{}:revocations",
        support::bucket_tag(&prefix, family(&pair))
    );
    let entries: i64 = backend.query(redis::cmd("ZCARD").arg(&index)).await;
    assert_eq!(entries, 1);
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    // The access token itself is still valid (300 s); its family is no longer remembered,
    // by Redis nor by B, which is synchronised and answers from memory.
    assert!(b.store().wait_for_revocation_sync(BOUND).await);
    assert_eq!(status(&b, &pair.access_token).await, StatusCode::OK);
    // A new instance's synchronisation trims the indexes of what is past.
    let _c = propagated(&backend, &prefix, backend.subscriber("")).await;
    let entries: i64 = backend.query(redis::cmd("ZCARD").arg(&index)).await;
    assert_eq!(entries, 0);
}
