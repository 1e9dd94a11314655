//! Revocations propagated between instances, over a real Redis: a revocation on one store is
//! refused by another from its local set; while the subscription is down the other asks Redis
//! per request (or refuses, if so configured); when it comes back, the index gives it what it
//! missed; a new instance starts synchronised; local entries end with the revocation TTL.
//!
//! Each store here is an "instance" with connections of its own. That a refusal comes from
//! the local set and not from Redis is shown by deleting the family's tombstone behind the
//! stores' backs: then only the local set (or the index) still knows.
//!
//! The disconnections are real: a TCP proxy sits between one instance's subscription and
//! Redis, Redis itself kills that connection (`CLIENT KILL ADDR`), and the proxy refuses
//! reconnections until the test lets them through.
//!
//! Needs `REDIS_URL` (`scripts/test` starts a server); without it each test is skipped with a
//! notice, and fails under `CI=true`. Waits are bounded; nothing is timed.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;
use tower_jwt_refresh::Clock;
use tower_jwt_refresh::issuer::{AccessTokenIssuer, IssuedTokens, RedisStore, TokenIssuer};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};
use tower_jwt_refresh::server::JwtAuthLayer;

/// How long any wait here may take before the test fails.
const BOUND: Duration = Duration::from_secs(10);

fn key() -> SigningKey {
    SigningKey::hmac(Algorithm::HS256, [7u8; 32]).unwrap()
}

/// A key prefix of this test's own, so that tests running side by side share no channel.
fn prefix(test: &str) -> String {
    format!("prop-{test}-{}", std::process::id())
}

/// A store on `url` with `prefix`, not propagating.
async fn polled(url: &str, prefix: &str) -> RedisStore {
    RedisStore::connect(url).await.unwrap().prefix(prefix)
}

/// A store on `url` with `prefix`, propagating revocations through a subscription to
/// `subscribe_to`.
async fn propagated(url: &str, prefix: &str, subscribe_to: &str) -> RedisStore {
    polled(url, prefix)
        .await
        .propagate_revocations(redis::Client::open(subscribe_to).unwrap())
        .await
        .unwrap()
}

/// An issuer on `store`, without a grace window, so a second use of a token is reuse.
fn issuer(store: RedisStore) -> TokenIssuer<RedisStore> {
    TokenIssuer::new(AccessTokenIssuer::new(key()), store).grace_period(Duration::ZERO)
}

/// The status a route behind `issuer`'s deny list answers to `token`.
async fn status(issuer: &TokenIssuer<RedisStore>, token: &str) -> StatusCode {
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
async fn until_status(issuer: &TokenIssuer<RedisStore>, token: &str, expected: StatusCode) {
    let waited = tokio::time::timeout(BOUND, async {
        while status(issuer, token).await != expected {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never answered {expected}");
}

/// Waits, bounded, until `store`'s set is untrusted.
async fn until_unsynced(store: &RedisStore) {
    let waited = tokio::time::timeout(BOUND, async {
        while store.revocations_synced() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the lost subscription was never noticed");
}

/// A connection for looking behind the stores' backs.
async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn family(tokens: &IssuedTokens) -> &str {
    tokens.refresh_token.split('.').next().unwrap()
}

/// Deletes `family`'s tombstone: from then on, only a local set or the index knows it was
/// revoked.
async fn forget_tombstone(url: &str, prefix: &str, family: &str) {
    let deleted: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}:{{{family}}}:revoked"))
        .query_async(&mut admin(url).await)
        .await
        .unwrap();
    assert_eq!(deleted, 1, "the tombstone was there");
}

#[tokio::test]
async fn a_revocation_on_one_instance_is_refused_by_another_from_memory() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let prefix = prefix("between");
    let a = issuer(polled(&url, &prefix).await);
    let b = issuer(propagated(&url, &prefix, &url).await);
    let polling = issuer(polled(&url, &prefix).await);

    // An explicit revocation (logout) on A.
    let pair = a.issue("alice", &()).await.unwrap();
    assert_eq!(status(&b, &pair.access_token).await, StatusCode::OK);
    assert!(a.revoke(&pair.refresh_token).await.unwrap());
    until_status(&b, &pair.access_token, StatusCode::UNAUTHORIZED).await;
    forget_tombstone(&url, &prefix, family(&pair)).await;
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
    forget_tombstone(&url, &prefix, family(&first)).await;
    assert_eq!(status(&polling, &second.access_token).await, StatusCode::OK);
    assert_eq!(
        status(&b, &second.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(b.store().wait_for_revocation_sync(BOUND).await);
}

/// A family that ends (its refresh lifetime over) is revoked by the rotation that finds it
/// so, and that revocation propagates like the others.
#[tokio::test]
async fn an_ended_family_is_propagated_too() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let prefix = prefix("ended");
    let ahead = Arc::new(AtomicU64::new(0));
    let clock = Clock::from_fn({
        let ahead = ahead.clone();
        move || support::now() + ahead.load(Ordering::SeqCst)
    });
    let a = issuer(polled(&url, &prefix).await)
        .refresh_lifetime(Duration::from_secs(3600))
        .clock(clock);
    let b = issuer(propagated(&url, &prefix, &url).await);
    let pair = a.issue("alice", &()).await.unwrap();
    assert_eq!(status(&b, &pair.access_token).await, StatusCode::OK);
    // An hour later for the issuer (B's verifier still finds the access token valid).
    ahead.store(3600, Ordering::SeqCst);
    assert!(a.rotate(&pair.refresh_token).await.is_err(), "ended");
    until_status(&b, &pair.access_token, StatusCode::UNAUTHORIZED).await;
    forget_tombstone(&url, &prefix, family(&pair)).await;
    assert_eq!(
        status(&b, &pair.access_token).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_revoking_instance_refuses_at_once() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let prefix = prefix("self");
    let a = issuer(propagated(&url, &prefix, &url).await);
    let pair = a.issue("alice", &()).await.unwrap();
    assert!(a.revoke(&pair.refresh_token).await.unwrap());
    // No wait for the message: the next request is refused.
    forget_tombstone(&url, &prefix, family(&pair)).await;
    assert_eq!(
        status(&a, &pair.access_token).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_new_instance_is_synchronised_before_its_first_token() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let prefix = prefix("startup");
    let a = issuer(polled(&url, &prefix).await);
    let pair = a.issue("alice", &()).await.unwrap();
    assert!(a.revoke(&pair.refresh_token).await.unwrap());
    forget_tombstone(&url, &prefix, family(&pair)).await;
    // Started after the revocation, whose message it never saw and whose tombstone is gone:
    // the constructor returned only after reading the index, so the first request is refused.
    let b = issuer(propagated(&url, &prefix, &url).await);
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
    let started = polled(&url, &prefix)
        .await
        .propagate_revocations(redis::Client::open(dead).unwrap());
    let result = tokio::time::timeout(BOUND, started).await.expect("bounded");
    assert!(result.is_err());
}

/// Revocations made while the subscription was down: the per-request check (safe mode)
/// refuses them, and the resynchronisation brings them into the local set.
#[tokio::test]
async fn after_a_disconnection_checks_ask_redis_until_the_index_is_read_again() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let prefix = prefix("disconnect");
    let proxy = Proxy::start(&url).await;
    let a = issuer(polled(&url, &prefix).await);
    let b = issuer(propagated(&url, &prefix, &proxy.url()).await);
    let before = a.issue("alice", &()).await.unwrap();
    let during = a.issue("bob", &()).await.unwrap();
    assert!(a.revoke(&before.refresh_token).await.unwrap());
    until_status(&b, &before.access_token, StatusCode::UNAUTHORIZED).await;

    // Redis drops B's subscription; the proxy refuses B's reconnections.
    proxy.refuse_new(true);
    proxy.kill_upstream(&url).await;
    until_unsynced(b.store()).await;
    // Revoked now, while B hears nothing: B's per-request check asks Redis and refuses it.
    assert!(a.revoke(&during.refresh_token).await.unwrap());
    assert_eq!(
        status(&b, &during.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    // Asking Redis it is: without the tombstone, B lets the token through.
    forget_tombstone(&url, &prefix, family(&during)).await;
    assert_eq!(status(&b, &during.access_token).await, StatusCode::OK);
    // What B learnt before the disconnection it still knows.
    forget_tombstone(&url, &prefix, family(&before)).await;
    assert_eq!(
        status(&b, &before.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(!b.store().revocations_synced());

    // The subscription comes back; B trusts its set again only after reading the index,
    // which is the only place left that knows of `during`.
    proxy.refuse_new(false);
    assert!(b.store().wait_for_revocation_sync(BOUND).await);
    assert_eq!(
        status(&b, &during.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    // And new revocations propagate again.
    let after = a.issue("carol", &()).await.unwrap();
    assert!(a.revoke(&after.refresh_token).await.unwrap());
    until_status(&b, &after.access_token, StatusCode::UNAUTHORIZED).await;
    forget_tombstone(&url, &prefix, family(&after)).await;
    assert_eq!(
        status(&b, &after.access_token).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn refuse_while_unsynced_answers_503_until_resynchronised() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let prefix = prefix("refuse");
    let proxy = Proxy::start(&url).await;
    let store = polled(&url, &prefix)
        .await
        .refuse_while_unsynced(true)
        .propagate_revocations(redis::Client::open(proxy.url()).unwrap())
        .await
        .unwrap();
    let b = issuer(store);
    let pair = b.issue("alice", &()).await.unwrap();
    assert_eq!(status(&b, &pair.access_token).await, StatusCode::OK);
    proxy.refuse_new(true);
    proxy.kill_upstream(&url).await;
    until_unsynced(b.store()).await;
    // Redis answers, but the set is not synchronised: refused.
    assert_eq!(
        status(&b, &pair.access_token).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    proxy.refuse_new(false);
    assert!(b.store().wait_for_revocation_sync(BOUND).await);
    assert_eq!(status(&b, &pair.access_token).await, StatusCode::OK);
}

/// The local entry, and the index entry, last as long as the revocation TTL and no longer.
/// Redis times the index in real time, so this waits (about 2 s) for real.
#[tokio::test]
async fn entries_end_with_the_revocation_ttl() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let prefix = prefix("expiry");
    let ttl = Duration::from_secs(1);
    let a = issuer(polled(&url, &prefix).await).revocation_ttl(ttl);
    let b = issuer(propagated(&url, &prefix, &url).await);
    let pair = a.issue("alice", &()).await.unwrap();
    assert!(a.revoke(&pair.refresh_token).await.unwrap());
    until_status(&b, &pair.access_token, StatusCode::UNAUTHORIZED).await;
    let index = format!("{prefix}:{{revocations}}:index");
    let mut admin = admin(&url).await;
    let entries: i64 = redis::cmd("ZCARD")
        .arg(&index)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(entries, 1);
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    // The access token itself is still valid (300 s); its family is no longer remembered,
    // by Redis nor by B, which is synchronised and answers from memory.
    assert!(b.store().wait_for_revocation_sync(BOUND).await);
    assert_eq!(status(&b, &pair.access_token).await, StatusCode::OK);
    // A new instance's synchronisation trims the index of what is past.
    let _c = propagated(&url, &prefix, &url).await;
    let entries: i64 = redis::cmd("ZCARD")
        .arg(&index)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(entries, 0);
}

/// A TCP proxy to Redis for one instance's subscription: it can refuse new connections, and
/// tells which upstream connections it holds, so Redis can kill them.
struct Proxy {
    addr: SocketAddr,
    refuse: Arc<AtomicBool>,
    /// The local addresses of the proxy's connections to Redis, as Redis sees them.
    upstream: Arc<Mutex<Vec<SocketAddr>>>,
    _stop: watch::Sender<()>,
}

impl Proxy {
    async fn start(redis_url: &str) -> Self {
        let target = redis::Client::open(redis_url)
            .unwrap()
            .get_connection_info()
            .addr()
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refuse = Arc::new(AtomicBool::new(false));
        let upstream = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = watch::channel(());
        let (refusing, held) = (refuse.clone(), upstream.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stopped.changed() => return,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                if refusing.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let Ok(mut server) = TcpStream::connect(&target).await else {
                    continue;
                };
                held.lock().unwrap().push(server.local_addr().unwrap());
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Self {
            addr,
            refuse,
            upstream,
            _stop: stop,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    fn refuse_new(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Has Redis kill every connection the proxy made to it.
    async fn kill_upstream(&self, redis_url: &str) {
        let addrs = std::mem::take(&mut *self.upstream.lock().unwrap());
        assert!(!addrs.is_empty(), "a subscription went through the proxy");
        let mut admin = admin(redis_url).await;
        for addr in addrs {
            // A connection that already ended is no longer a client: an error, ignored.
            let _: Result<redis::Value, _> = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ADDR")
                .arg(addr.to_string())
                .query_async(&mut admin)
                .await;
        }
    }
}
