//! One conformance suite for every `RefreshStore`: rotation, reuse detection, the grace window,
//! expiry, revocation, concurrency and the store-level guarantees, one test per behaviour and
//! store (`memory::grace_window`, `redis::grace_window`, …), so `cargo test grace_window` runs
//! one behaviour on every store and `cargo test memory::` one store. Then what only one store
//! has: purging (memory), two instances sharing one store and key expiry (Redis), and issuer
//! settings checked on the memory store.
//!
//! Time is controlled, never slept: the memory store runs on paused Tokio time, Redis on a
//! manual offset (paused time would fire the Redis client's own timeouts). The one exception
//! is what Redis times itself, in real time: `redis::grace_window_edge_…` waits about 2 s for
//! it (`Time::elapse`). The Redis half
//! needs the `redis` feature and `REDIS_URL` (`scripts/test` starts a server and sets it),
//! the cluster half (`cluster::<name>`, the same suite on a Redis Cluster) `REDIS_CLUSTER_URLS`
//! (`scripts/test` starts a cluster of three primaries with a replica each and sets it); each
//! is skipped with a notice when its variable is not set, and under `CI=true` it fails.

mod support;

use std::cell::Cell;
use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use tower_jwt_refresh::Clock;
use tower_jwt_refresh::issuer::store::{
    NewFamily, RefreshStore, Rotation, RotationOutcome, StoreError,
};
use tower_jwt_refresh::issuer::{
    AccessTokenIssuer, GrantError, MemoryStore, RefreshError, TokenIssuer,
};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};
use tower_jwt_refresh::server::{DenyCheck, JwtAuthLayer, Rejection, TokenError};

const BASE: u64 = 1_900_000_000;

thread_local! {
    /// Seconds added by `advance` on top of Tokio's clock (for Redis).
    static OFFSET: Cell<u64> = const { Cell::new(0) };
    static START: tokio::time::Instant = tokio::time::Instant::now();
}

/// The tests' Unix clock: a fixed base, plus Tokio time elapsed (paused in memory-store tests),
/// plus the manual offset. Each test runs on its own thread, so each has its own clock.
fn clock() -> u64 {
    let elapsed = START.with(|start| start.elapsed().as_secs());
    BASE + elapsed + OFFSET.with(Cell::get)
}

/// How a store's tests move time forward.
#[derive(Clone, Copy)]
enum Time {
    /// Tokio's paused clock (the memory store).
    Paused,
    /// The manual offset (Redis).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Manual,
}

impl Time {
    async fn advance(self, secs: u64) {
        match self {
            Time::Paused => tokio::time::advance(Duration::from_secs(secs)).await,
            Time::Manual => OFFSET.with(|o| o.set(o.get() + secs)),
        }
    }

    /// Lets `by` pass for the store as well as for the clock: Redis expires keys in real
    /// time, so there this waits for real. Only for what Redis itself times.
    async fn elapse(self, by: Duration) {
        match self {
            Time::Paused => tokio::time::advance(by).await,
            Time::Manual => tokio::time::sleep(by).await,
        }
    }

    /// Waits until a second of the tests' clock has just begun.
    async fn align(self) {
        let into_second = START.with(|start| start.elapsed()).subsec_nanos();
        if into_second > 0 {
            self.elapse(Duration::from_nanos(u64::from(1_000_000_000 - into_second)))
                .await;
        }
    }
}

fn key() -> SigningKey {
    SigningKey::hmac(Algorithm::HS256, [9u8; 32]).unwrap()
}

fn issuer<S: RefreshStore + Clone>(store: S, grace: u64) -> TokenIssuer<S> {
    let access = AccessTokenIssuer::new(key())
        .lifetime(Duration::from_secs(300))
        .clock(Clock::from_fn(clock));
    TokenIssuer::new(access, store)
        .grace_period(Duration::from_secs(grace))
        .refresh_lifetime(Duration::from_secs(7 * 24 * 3600))
        .clock(Clock::from_fn(clock))
}

fn grant_error(result: Result<impl std::fmt::Debug, RefreshError>) -> GrantError {
    match result {
        Err(RefreshError::InvalidGrant(e)) => e,
        other => panic!("expected invalid_grant, got {other:?}"),
    }
}

// ----- the conformance suite: one function per behaviour, each run on every store -----

async fn rotation_installs_a_successor_with_the_family_claims<S: RefreshStore + Clone>(
    store: S,
    _: Time,
) {
    let issuer = issuer(store, 0);
    let first = issuer
        .issue("alice", &json!({"role": "admin"}))
        .await
        .unwrap();
    assert_eq!(first.token_type, "Bearer");
    assert_eq!(first.expires_in, 300);
    let second = issuer.rotate(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    // The new access token carries the family's subject, claims and sid.
    #[derive(Clone, serde::Deserialize)]
    struct Role {
        role: String,
    }
    let layer =
        JwtAuthLayer::<Role>::with_claims(key().verification_key()).clock(Clock::from_fn(clock));
    let claims = layer.verify(&second.access_token).await.unwrap();
    assert_eq!(
        (claims.subject(), claims.role.as_str()),
        (Some("alice"), "admin")
    );
    let first_claims = layer.verify(&first.access_token).await.unwrap();
    assert_eq!(claims.registered().sid, first_claims.registered().sid);
    // A chain of rotations keeps working.
    let mut token = second.refresh_token;
    for _ in 0..5 {
        token = issuer.rotate(&token).await.unwrap().refresh_token;
    }
}

async fn reuse_revokes_the_family_and_its_successor<S: RefreshStore + Clone>(store: S, _: Time) {
    let issuer = issuer(store, 0);
    let first = issuer.issue("alice", &()).await.unwrap();
    let second = issuer.rotate(&first.refresh_token).await.unwrap();
    assert_eq!(
        grant_error(issuer.rotate(&first.refresh_token).await),
        GrantError::Reused
    );
    // The successor dies with the family.
    assert_eq!(
        grant_error(issuer.rotate(&second.refresh_token).await),
        GrantError::Revoked
    );
}

async fn grace_window<S: RefreshStore + Clone>(store: S, time: Time) {
    let issuer = issuer(store, 10);
    let first = issuer.issue("alice", &()).await.unwrap();
    let second = issuer.rotate(&first.refresh_token).await.unwrap();
    time.advance(5).await;
    // Inside the window: the same successor, which still works.
    let retry = issuer.rotate(&first.refresh_token).await.unwrap();
    assert_eq!(retry.refresh_token, second.refresh_token);
    assert_ne!(retry.access_token, second.access_token);
    time.advance(6).await;
    // Outside it: reuse.
    assert_eq!(
        grant_error(issuer.rotate(&first.refresh_token).await),
        GrantError::Reused
    );
    assert_eq!(
        grant_error(issuer.rotate(&second.refresh_token).await),
        GrantError::Revoked
    );
}

/// The window's last second counts whole: rotated out at second `t`, the previous token is
/// retried up to second `t + grace` included (more than `grace` seconds later in real time),
/// and is reuse from `t + grace + 1`, on every store alike.
async fn grace_window_edge_is_inclusive_in_whole_seconds<S: RefreshStore + Clone>(
    store: S,
    time: Time,
) {
    let issuer = issuer(store, 1);
    let first = issuer.issue("alice", &()).await.unwrap();
    time.align().await;
    let second = issuer.rotate(&first.refresh_token).await.unwrap();
    // 1.6 s later: past the one-second window in real time, still its last second by the
    // clock.
    time.elapse(Duration::from_millis(1_600)).await;
    let retry = issuer.rotate(&first.refresh_token).await.unwrap();
    assert_eq!(retry.refresh_token, second.refresh_token);
    // The next second is past the window.
    time.elapse(Duration::from_millis(600)).await;
    assert_eq!(
        grant_error(issuer.rotate(&first.refresh_token).await),
        GrantError::Reused
    );
}

async fn two_generations_back_is_reuse_even_in_grace<S: RefreshStore + Clone>(store: S, _: Time) {
    let issuer = issuer(store, 60);
    let first = issuer.issue("alice", &()).await.unwrap();
    let second = issuer.rotate(&first.refresh_token).await.unwrap();
    let third = issuer.rotate(&second.refresh_token).await.unwrap();
    assert_eq!(
        grant_error(issuer.rotate(&first.refresh_token).await),
        GrantError::Reused
    );
    assert_eq!(
        grant_error(issuer.rotate(&third.refresh_token).await),
        GrantError::Revoked
    );
}

async fn absolute_and_idle_expiry<S: RefreshStore + Clone>(store: S, time: Time) {
    let short = issuer(store.clone(), 0).refresh_lifetime(Duration::from_secs(100));
    let pair = short.issue("alice", &()).await.unwrap();
    time.advance(60).await;
    let pair = short.rotate(&pair.refresh_token).await.unwrap();
    time.advance(40).await;
    // Rotation does not extend the absolute lifetime.
    assert_eq!(
        grant_error(short.rotate(&pair.refresh_token).await),
        GrantError::Expired
    );

    let idle = issuer(store, 0).idle_timeout(Duration::from_secs(30));
    let pair = idle.issue("bob", &()).await.unwrap();
    time.advance(29).await;
    let pair = idle.rotate(&pair.refresh_token).await.unwrap();
    time.advance(29).await;
    let pair = idle.rotate(&pair.refresh_token).await.unwrap();
    time.advance(30).await;
    assert_eq!(
        grant_error(idle.rotate(&pair.refresh_token).await),
        GrantError::Expired
    );
}

async fn revoke_by_token_or_by_session<S: RefreshStore + Clone>(store: S, _: Time) {
    let issuer = issuer(store, 0);
    let pair = issuer.issue("alice", &()).await.unwrap();
    assert!(!issuer.revoke("not a token").await.unwrap());
    assert!(issuer.revoke(&pair.refresh_token).await.unwrap());
    assert!(!issuer.revoke(&pair.refresh_token).await.unwrap());
    assert_eq!(
        grant_error(issuer.rotate(&pair.refresh_token).await),
        GrantError::Revoked
    );
    // By session id, without the token.
    let other = issuer.issue("bob", &()).await.unwrap();
    let sid = other.refresh_token.split('.').next().unwrap();
    assert!(issuer.revoke_session(sid).await.unwrap());
    assert_eq!(
        grant_error(issuer.rotate(&other.refresh_token).await),
        GrantError::Revoked
    );
}

async fn revoked_families_lose_their_access_tokens<S: RefreshStore + Clone>(store: S, _: Time) {
    let issuer = issuer(store, 0);
    let layer = JwtAuthLayer::new(key().verification_key())
        .clock(Clock::from_fn(clock))
        .deny_list(issuer.deny_list());
    let pair = issuer.issue("alice", &()).await.unwrap();
    let other = issuer.issue("bob", &()).await.unwrap();
    assert!(layer.verify(&pair.access_token).await.is_ok());
    issuer.revoke(&pair.refresh_token).await.unwrap();
    // Refused on the very next request, though cached and unexpired.
    assert_eq!(
        layer.verify(&pair.access_token).await.unwrap_err(),
        Rejection::InvalidToken(TokenError::Revoked)
    );
    assert!(layer.verify(&other.access_token).await.is_ok());
    // Reuse revokes the family's access tokens too.
    let next = issuer.rotate(&other.refresh_token).await.unwrap();
    let _ = issuer.rotate(&other.refresh_token).await;
    assert_eq!(
        layer.verify(&next.access_token).await.unwrap_err(),
        Rejection::InvalidToken(TokenError::Revoked)
    );
    // A logout with an older token of the family (a client that never got its successor)
    // still ends it.
    let third = issuer.issue("carol", &()).await.unwrap();
    let fourth = issuer.rotate(&third.refresh_token).await.unwrap();
    assert!(issuer.revoke(&third.refresh_token).await.unwrap());
    assert_eq!(
        layer.verify(&fourth.access_token).await.unwrap_err(),
        Rejection::InvalidToken(TokenError::Revoked)
    );
}

async fn garbage_with_a_known_family_id_revokes_nothing<S: RefreshStore + Clone>(
    store: S,
    _: Time,
) {
    // The family id is public (it is the access tokens' `sid`): a forged secret under it must
    // not end the session, neither by rotation nor by revocation.
    let issuer = issuer(store, 0);
    let pair = issuer.issue("alice", &()).await.unwrap();
    let family = pair.refresh_token.split('.').next().unwrap();
    let forged = format!("{family}.{}", "A".repeat(43));
    assert_eq!(
        grant_error(issuer.rotate(&forged).await),
        GrantError::Unknown
    );
    assert!(!issuer.revoke(&forged).await.unwrap());
    assert!(issuer.rotate(&pair.refresh_token).await.is_ok());
    // And an access token is never a refresh token.
    assert_eq!(
        grant_error(issuer.rotate(&pair.access_token).await),
        GrantError::Malformed
    );
}

async fn concurrent_rotation_without_grace<S: RefreshStore + Clone>(store: S, _: Time) {
    let issuer = issuer(store, 0);
    let pair = issuer.issue("alice", &()).await.unwrap();
    let results = rotate_concurrently(&issuer, &pair.refresh_token, 100).await;
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one rotation wins");
    // Every loser saw reuse (or the family it revoked), and the family ends revoked.
    for result in &results {
        if let Err(e) = result {
            assert!(
                matches!(e, GrantError::Reused | GrantError::Revoked),
                "{e:?}"
            );
        }
    }
    assert_eq!(
        grant_error(issuer.rotate(winners[0]).await),
        GrantError::Revoked
    );
}

async fn concurrent_rotation_with_grace<S: RefreshStore + Clone>(store: S, _: Time) {
    let issuer = issuer(store, 30);
    let pair = issuer.issue("alice", &()).await.unwrap();
    let results = rotate_concurrently(&issuer, &pair.refresh_token, 100).await;
    let successors: HashSet<_> = results
        .iter()
        .map(|r| r.clone().expect("every task gets a pair"))
        .collect();
    assert_eq!(successors.len(), 1, "all the same successor");
    let successor = successors.into_iter().next().unwrap();
    assert!(issuer.rotate(&successor).await.is_ok(), "and it works");
}

/// Rotates `token` from `n` tasks at once; each result is the new refresh token or the error.
async fn rotate_concurrently<S: RefreshStore + Clone>(
    issuer: &TokenIssuer<S>,
    token: &str,
    n: usize,
) -> Vec<Result<String, GrantError>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (issuer, token) = (issuer.clone(), token.to_owned());
            tokio::spawn(async move {
                issuer
                    .rotate(&token)
                    .await
                    .map(|p| p.refresh_token)
                    .map_err(|e| match e {
                        RefreshError::InvalidGrant(g) => g,
                        other => panic!("{other}"),
                    })
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// The store-level guarantees no issuer call shows: an unchanged rotation sent twice is
/// applied once, a grace retry needs a clock at or after the rotation, and only tokens of a
/// family's recent history count as reuse.
async fn store_level_guarantees<S: RefreshStore + Clone>(store: S, _: Time) {
    let family = format!("{:0>22}", OFFSET.with(Cell::get) + clock());
    let hash = |n: usize| format!("{n:0>43}");
    let mut create = NewFamily::default();
    create.id = &family;
    let first = hash(0);
    create.token_hash = &first;
    create.subject = "alice";
    create.claims = "{}";
    create.now = clock();
    create.expires_at = clock() + 3600;
    create.tombstone_ttl = 60;
    store.create(create).await.unwrap();
    let rotation =
        |presented: usize, successor: usize, now: u64| (hash(presented), hash(successor), now);
    let rotate = |(presented, successor, now): (String, String, u64), grace: u64| {
        let store = store.clone();
        let family = family.clone();
        async move {
            let mut r = Rotation::default();
            r.family = &family;
            r.presented = &presented;
            r.successor = &successor;
            r.sealed_successor = "sealed";
            r.now = now;
            r.grace = grace;
            r.tombstone_ttl = 60;
            store.rotate(r).await.unwrap()
        }
    };
    let now = clock();
    // 0 -> 1, then the same request again: applied once, answered twice.
    assert!(matches!(
        rotate(rotation(0, 1, now), 10).await,
        RotationOutcome::Rotated(_)
    ));
    assert!(matches!(
        rotate(rotation(0, 1, now), 10).await,
        RotationOutcome::Rotated(_)
    ));
    for n in 1..40 {
        assert!(matches!(
            rotate(rotation(n, n + 1, now + n as u64), 0).await,
            RotationOutcome::Rotated(_)
        ));
    }
    // 33 generations back is past the history: unknown, the family lives on.
    assert_eq!(
        rotate(rotation(40 - 34, 99, now + 50), 0).await,
        RotationOutcome::Unknown
    );
    // Within the history: reuse, the family dies.
    assert_eq!(
        rotate(rotation(40 - 5, 99, now + 50), 0).await,
        RotationOutcome::Reused
    );
    assert_eq!(
        rotate(rotation(40, 99, now + 50), 0).await,
        RotationOutcome::Revoked
    );

    // A grace retry from a clock behind the rotation is not a retry but reuse.
    let family = format!("{family:x<21}z");
    let mut create = NewFamily::default();
    create.id = &family;
    create.token_hash = &first;
    create.subject = "bob";
    create.claims = "{}";
    create.now = now;
    create.expires_at = now + 3600;
    create.tombstone_ttl = 60;
    store.create(create).await.unwrap();
    let rotate_at = |presented: String, successor: String, at: u64| {
        let (store, family) = (store.clone(), family.clone());
        async move {
            let mut r = Rotation::default();
            r.family = &family;
            r.presented = &presented;
            r.successor = &successor;
            r.sealed_successor = "sealed";
            r.now = at;
            r.grace = 30;
            r.tombstone_ttl = 60;
            store.rotate(r).await.unwrap()
        }
    };
    assert!(matches!(
        rotate_at(hash(0), hash(1), now + 10).await,
        RotationOutcome::Rotated(_)
    ));
    assert_eq!(
        rotate_at(hash(0), hash(2), now + 9).await,
        RotationOutcome::Reused
    );
}

async fn a_bound_family_rotates_only_with_its_key<S: RefreshStore + Clone>(store: S, _: Time) {
    let hash = |n: usize| format!("{n:0>43}");
    let create = |family: String, jkt: &'static str| {
        let store = store.clone();
        async move {
            let first = hash(0);
            let mut create = NewFamily::default();
            create.id = &family;
            create.token_hash = &first;
            create.subject = "alice";
            create.claims = "{}";
            create.now = clock();
            create.expires_at = clock() + 3600;
            create.tombstone_ttl = 60;
            create.jkt = jkt;
            store.create(create).await.unwrap();
        }
    };
    let rotate = |family: String, presented: usize, successor: usize, jkt: &'static str| {
        let store = store.clone();
        async move {
            let (presented, successor) = (hash(presented), hash(successor));
            let mut r = Rotation::default();
            r.family = &family;
            r.presented = &presented;
            r.successor = &successor;
            r.sealed_successor = "sealed";
            r.now = clock();
            r.tombstone_ttl = 60;
            r.jkt = jkt;
            store.rotate(r).await.unwrap()
        }
    };
    let bound = format!("k{:0>21}", OFFSET.with(Cell::get) + clock());
    create(bound.clone(), "thumbprint-a").await;
    // Without the key, or with another: refused, and nothing changes.
    for jkt in ["", "thumbprint-b"] {
        let outcome = rotate(bound.clone(), 0, 1, jkt).await;
        assert_eq!(outcome, RotationOutcome::WrongKey, "{jkt:?}");
    }
    assert!(matches!(
        rotate(bound.clone(), 0, 1, "thumbprint-a").await,
        RotationOutcome::Rotated(_)
    ));
    // A rotated-out token without the key is refused before reuse detection: a thief without
    // the key cannot even revoke the family.
    assert_eq!(
        rotate(bound.clone(), 0, 9, "").await,
        RotationOutcome::WrongKey
    );
    assert!(matches!(
        rotate(bound.clone(), 1, 2, "thumbprint-a").await,
        RotationOutcome::Rotated(_)
    ));
    // An unbound family rotates with or without a key.
    let unbound = format!("u{:0>21}", OFFSET.with(Cell::get) + clock());
    create(unbound.clone(), "").await;
    assert!(matches!(
        rotate(unbound.clone(), 0, 1, "thumbprint-a").await,
        RotationOutcome::Rotated(_)
    ));
    assert!(matches!(
        rotate(unbound, 1, 2, "").await,
        RotationOutcome::Rotated(_)
    ));
}

/// One `#[tokio::test]` per behaviour of the suite, in the calling module: `$store` is an
/// async expression for the store (`None` skips), `$time` how that store's tests move time.
macro_rules! conformance {
    (#[$test:meta] $store:expr, $time:expr) => {
        conformance!(@each #[$test] $store, $time;
            rotation_installs_a_successor_with_the_family_claims,
            reuse_revokes_the_family_and_its_successor,
            grace_window,
            grace_window_edge_is_inclusive_in_whole_seconds,
            two_generations_back_is_reuse_even_in_grace,
            absolute_and_idle_expiry,
            revoke_by_token_or_by_session,
            revoked_families_lose_their_access_tokens,
            garbage_with_a_known_family_id_revokes_nothing,
            concurrent_rotation_without_grace,
            concurrent_rotation_with_grace,
            store_level_guarantees,
            a_bound_family_rotates_only_with_its_key,
        );
    };
    (@each #[$test:meta] $store:expr, $time:expr; $($behaviour:ident,)+) => {
        $(
            #[$test]
            async fn $behaviour() {
                if let Some(store) = $store.await {
                    super::$behaviour(store, $time).await;
                }
            }
        )+
    };
}

/// The suite on [`MemoryStore`], and its purging.
mod memory {
    use super::*;

    async fn store() -> Option<MemoryStore> {
        Some(MemoryStore::new().clock(Clock::from_fn(clock)))
    }

    conformance!(
        #[tokio::test(start_paused = true)]
        store(),
        Time::Paused
    );

    #[tokio::test(start_paused = true)]
    async fn purges_ended_families_whatever_the_traffic() {
        let store = MemoryStore::new().clock(Clock::from_fn(clock));
        let issuer = issuer(store.clone(), 0)
            .refresh_lifetime(Duration::from_secs(60))
            .revocation_ttl(Duration::from_secs(30));
        for _ in 0..500 {
            issuer.issue("churn", &()).await.unwrap();
        }
        assert_eq!(store.len(), 500);
        // Ended families are kept a revocation TTL longer (a late logout still works), then go.
        tokio::time::advance(Duration::from_secs(91)).await;
        // Logins alone keep memory bounded: they sweep as they go.
        for _ in 0..2_000 {
            issuer.issue("churn", &()).await.unwrap();
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        // Whatever is left is at most the families of the last 90 s (900 logins), plus slack.
        assert!(store.len() <= 1_500, "{} entries left", store.len());
        assert!(store.len() >= 900, "{} entries left", store.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrency_on_many_threads() {
        super::concurrent_rotation_without_grace(
            MemoryStore::new().clock(Clock::from_fn(clock)),
            Time::Paused,
        )
        .await;
        super::concurrent_rotation_with_grace(
            MemoryStore::new().clock(Clock::from_fn(clock)),
            Time::Paused,
        )
        .await;
    }
}

/// The suite on `RedisStore`, and what only a shared store shows.
#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use tower_jwt_refresh::issuer::RedisStore;

    /// The store on `REDIS_URL`, or `None` (with a notice) when it is not set outside CI.
    async fn store() -> Option<RedisStore> {
        support::redis_store().await
    }

    conformance!(
        #[tokio::test]
        store(),
        Time::Manual
    );

    #[tokio::test]
    async fn two_instances_on_one_redis_detect_reuse_across_them() {
        let (Some(a), Some(b)) = (store().await, store().await) else {
            return;
        };
        let (a, b) = (issuer(a, 0), issuer(b, 0));
        let pair = a.issue("alice", &()).await.unwrap();
        let next = a.rotate(&pair.refresh_token).await.unwrap();
        // B sees A's rotation: the old token is reuse, which revokes the family for both.
        assert_eq!(
            grant_error(b.rotate(&pair.refresh_token).await),
            GrantError::Reused
        );
        assert_eq!(
            grant_error(a.rotate(&next.refresh_token).await),
            GrantError::Revoked
        );
        // And B's verifier refuses the family's access tokens.
        let layer = JwtAuthLayer::new(key().verification_key())
            .clock(Clock::from_fn(clock))
            .deny_list(b.deny_list());
        assert!(layer.verify(&next.access_token).await.is_err());
    }

    /// `wait_for_replicas` on a Redis with no replica: the login is written but never
    /// acknowledged, so no token is handed out. The script is loaded on the way (the server's
    /// script cache was flushed), inside the pipeline that waits.
    #[tokio::test]
    async fn a_write_no_replica_acknowledges_hands_out_no_token() {
        let Some(store) = store().await else {
            return;
        };
        let url = std::env::var("REDIS_URL").unwrap();
        let mut connection = ::redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let families = |connection: &mut ::redis::aio::MultiplexedConnection| {
            let mut connection = connection.clone();
            async move {
                let keys: Vec<String> = ::redis::cmd("KEYS")
                    .arg("{waited:b*}:*")
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                keys.len()
            }
        };
        let before = families(&mut connection).await;
        let () = ::redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut connection)
            .await
            .unwrap();
        let store = store
            .prefix("waited")
            .wait_for_replicas(1, Duration::from_millis(50));
        let issuer = issuer(store, 0);
        let error = match issuer.issue("alice", &()).await {
            Err(tower_jwt_refresh::issuer::IssueError::Unavailable(error)) => error,
            other => panic!("expected the store to refuse, got {other:?}"),
        };
        assert!(error.is_ambiguous());
        let cause = std::error::Error::source(&error).unwrap().to_string();
        assert_eq!(
            cause,
            "written, but 0 of 1 replicas acknowledged within 50 ms"
        );
        assert_eq!(families(&mut connection).await, before + 1, "written");
    }

    #[tokio::test]
    async fn keys_expire_with_their_family() {
        let Some(store) = store().await else {
            return;
        };
        let issuer = issuer(store, 0).refresh_lifetime(Duration::from_secs(120));
        let pair = issuer.issue("alice", &()).await.unwrap();
        let family = pair.refresh_token.split('.').next().unwrap();
        let url = std::env::var("REDIS_URL").unwrap();
        let mut connection = ::redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ttl: i64 = ::redis::cmd("TTL")
            .arg(support::family_key("tjr", family))
            .query_async(&mut connection)
            .await
            .unwrap();
        // The family's end, plus the revocation TTL (300 s of access token + 60 s).
        assert!((120 + 300..=120 + 360).contains(&ttl), "ttl {ttl}");
        issuer.revoke(&pair.refresh_token).await.unwrap();
        let tombstone: i64 = ::redis::cmd("TTL")
            .arg(format!("{}:revoked", support::family_key("tjr", family)))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(
            (300..=360).contains(&tombstone),
            "tombstone ttl {tombstone}"
        );
    }
}

/// The suite on `RedisStore` over a Redis Cluster (three primaries with a replica each), and
/// where a family's keys live there.
#[cfg(feature = "redis")]
mod cluster {
    use super::*;
    use ::redis::cluster_async::ClusterConnection;
    use tower_jwt_refresh::issuer::RedisStore;

    /// The store on `REDIS_CLUSTER_URLS`, or `None` (with a notice) when it is not set outside
    /// CI.
    async fn store() -> Option<RedisStore<ClusterConnection>> {
        let urls = support::redis_cluster_urls()?;
        match RedisStore::connect_cluster(&urls).await {
            Ok(store) => Some(store),
            Err(e) => panic!("REDIS_CLUSTER_URLS={urls:?} is set but unreachable: {e}"),
        }
    }

    conformance!(
        #[tokio::test]
        store(),
        Time::Manual
    );

    /// With `wait_for_replicas`, every write waits for the primary's replica: the behaviours
    /// that write the most still hold, the grace retry and reuse detection included.
    #[tokio::test]
    async fn the_suite_holds_when_writes_wait_for_a_replica() {
        let Some(store) = store().await else {
            return;
        };
        let store = store.wait_for_replicas(1, Duration::from_millis(500));
        super::rotation_installs_a_successor_with_the_family_claims(store.clone(), Time::Manual)
            .await;
        super::concurrent_rotation_with_grace(store.clone(), Time::Manual).await;
        super::revoked_families_lose_their_access_tokens(store.clone(), Time::Manual).await;
        super::store_level_guarantees(store, Time::Manual).await;
    }

    /// Every node's own connection, with its role.
    async fn nodes(urls: &[String]) -> Vec<(String, bool, ::redis::aio::MultiplexedConnection)> {
        let mut nodes = Vec::new();
        for url in urls {
            let mut connection = ::redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let role: Vec<::redis::Value> = ::redis::cmd("ROLE")
                .query_async(&mut connection)
                .await
                .unwrap();
            let primary = role.first() == Some(&::redis::Value::BulkString(b"master".to_vec()));
            nodes.push((url.clone(), primary, connection));
        }
        nodes
    }

    /// The keys matching `pattern` on each primary, by URL.
    async fn keys_by_node(urls: &[String], pattern: &str) -> Vec<(String, Vec<String>)> {
        let mut found = Vec::new();
        for (url, primary, mut connection) in nodes(urls).await {
            if !primary {
                continue;
            }
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut connection)
                .await
                .unwrap();
            if !keys.is_empty() {
                found.push((url, keys));
            }
        }
        found
    }

    /// What each script wrote lives on one primary, in one slot: the family and its sealed
    /// successor after a rotation, the tombstone and the bucket's index of revocations after
    /// a revocation. And logins spread over every primary, so the suite above ran on all
    /// three.
    #[tokio::test]
    async fn a_familys_keys_live_in_one_slot_and_families_spread_over_every_primary() {
        let (Some(store), Some(urls)) = (store().await, support::redis_cluster_urls()) else {
            return;
        };
        let issuer = issuer(store, 30);
        let pair = issuer.issue("alice", &()).await.unwrap();
        issuer.rotate(&pair.refresh_token).await.unwrap();
        let family = pair.refresh_token.split('.').next().unwrap();
        let key = support::family_key("tjr", family);
        let pattern = format!("{key}*");
        let mut written = keys_by_node(&urls, &pattern).await;
        assert_eq!(written.len(), 1, "on one primary: {written:?}");
        let (node, mut keys) = written.pop().unwrap();
        keys.sort();
        let expected = [key.clone(), format!("{key}:sealed")];
        assert_eq!(keys, expected);
        issuer.revoke(&pair.refresh_token).await.unwrap();
        let written = keys_by_node(&urls, &pattern).await;
        assert_eq!(written, [(node.clone(), vec![format!("{key}:revoked")])]);
        let index = format!("{}:revocations", support::bucket_tag("tjr", family));
        let indexed = keys_by_node(&urls, &index).await;
        assert_eq!(indexed, [(node.clone(), vec![index.clone()])]);
        // One slot for all four names, as the node answers it.
        let (_, _, mut connection) = nodes(&urls).await.pop().unwrap();
        let mut slots = HashSet::new();
        for key in expected.iter().chain([&written[0].1[0], &index]) {
            let slot: i64 = ::redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async(&mut connection)
                .await
                .unwrap();
            slots.insert(slot);
        }
        assert_eq!(slots.len(), 1, "{slots:?}");

        let mut primaries = HashSet::new();
        for _ in 0..30 {
            let pair = issuer.issue("bob", &()).await.unwrap();
            let family = pair.refresh_token.split('.').next().unwrap();
            let written = keys_by_node(&urls, &support::family_key("tjr", family)).await;
            assert_eq!(written.len(), 1, "{written:?}");
            primaries.insert(written[0].0.clone());
        }
        assert_eq!(primaries.len(), 3, "{primaries:?}");
    }
}

// ----- issuer behaviour on the memory store -----

#[tokio::test(start_paused = true)]
async fn grace_defaults_to_30_s_and_is_capped_at_60_s() {
    let store = MemoryStore::new().clock(Clock::from_fn(clock));
    let access = AccessTokenIssuer::new(key()).clock(Clock::from_fn(clock));
    // Defaults: 30 s of grace (over the client's 10 s refresh timeout), a 7-day lifetime.
    let defaults = TokenIssuer::new(access.clone(), store.clone()).clock(Clock::from_fn(clock));
    let pair = defaults.issue("alice", &()).await.unwrap();
    let next = defaults.rotate(&pair.refresh_token).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let retried = defaults.rotate(&pair.refresh_token).await.unwrap();
    assert_eq!(retried.refresh_token, next.refresh_token);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        grant_error(defaults.rotate(&pair.refresh_token).await),
        GrantError::Reused
    );
    let pair = defaults.issue("alice", &()).await.unwrap();
    tokio::time::advance(Duration::from_secs(7 * 24 * 3600 - 1)).await;
    let pair = defaults.rotate(&pair.refresh_token).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        grant_error(defaults.rotate(&pair.refresh_token).await),
        GrantError::Expired
    );
    // An hour of grace is cut to 60 s.
    let lenient = TokenIssuer::new(access, store)
        .clock(Clock::from_fn(clock))
        .grace_period(Duration::from_secs(3600));
    let pair = lenient.issue("bob", &()).await.unwrap();
    lenient.rotate(&pair.refresh_token).await.unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(lenient.rotate(&pair.refresh_token).await.is_ok());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        grant_error(lenient.rotate(&pair.refresh_token).await),
        GrantError::Reused
    );
}

#[tokio::test(start_paused = true)]
async fn duration_max_in_every_setter_is_capped_without_overflow() {
    let store = MemoryStore::new().clock(Clock::from_fn(clock));
    let access = AccessTokenIssuer::new(key())
        .lifetime(Duration::MAX)
        .clock(Clock::from_fn(clock));
    let issuer = TokenIssuer::new(access, store)
        .clock(Clock::from_fn(clock))
        .grace_period(Duration::MAX)
        .refresh_lifetime(Duration::MAX)
        .idle_timeout(Duration::MAX)
        .revocation_ttl(Duration::MAX);
    let year = 366 * 24 * 3600;
    // Access tokens: cut to a year (a wrap would make them 1 s).
    let pair = issuer.issue("alice", &()).await.unwrap();
    assert_eq!(pair.expires_in, year);
    // Grace: cut to 60 s (a wrap would make it 0, and this retry reuse).
    let next = issuer.rotate(&pair.refresh_token).await.unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    let retried = issuer.rotate(&pair.refresh_token).await.unwrap();
    assert_eq!(retried.refresh_token, next.refresh_token);
    // Lifetime and idle timeout: cut to ten years.
    tokio::time::advance(Duration::from_secs(10 * year - 61)).await;
    let last = issuer.rotate(&next.refresh_token).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        grant_error(issuer.rotate(&last.refresh_token).await),
        GrantError::Expired
    );
    // Revocation TTL: a revoked family is remembered (ten years, not 0 s).
    let pair = issuer.issue("bob", &()).await.unwrap();
    assert!(issuer.revoke(&pair.refresh_token).await.unwrap());
    tokio::time::advance(Duration::from_secs(year - 1)).await;
    let layer = JwtAuthLayer::new(key().verification_key())
        .clock(Clock::from_fn(clock))
        .deny_list(issuer.deny_list());
    assert!(matches!(
        layer.verify(&pair.access_token).await,
        Err(Rejection::InvalidToken(TokenError::Revoked))
    ));
}

/// A memory store whose next rotation is applied but whose reply is lost.
#[derive(Clone)]
struct LosesReply {
    inner: MemoryStore,
    lose: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RefreshStore for LosesReply {
    async fn create(&self, family: NewFamily<'_>) -> Result<(), StoreError> {
        self.inner.create(family).await
    }

    async fn rotate(&self, rotation: Rotation<'_>) -> Result<RotationOutcome, StoreError> {
        let outcome = self.inner.rotate(rotation).await?;
        if self.lose.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::ambiguous("reply lost"));
        }
        Ok(outcome)
    }

    async fn revoke(&self, family: &str, hash: Option<&str>, ttl: u64) -> Result<bool, StoreError> {
        self.inner.revoke(family, hash, ttl).await
    }

    fn is_revoked(&self, family: &str) -> DenyCheck {
        self.inner.is_revoked(family)
    }
}

#[tokio::test(start_paused = true)]
async fn a_rotation_whose_reply_was_lost_is_confirmed_not_lost() {
    let store = LosesReply {
        inner: MemoryStore::new().clock(Clock::from_fn(clock)),
        lose: Default::default(),
    };
    let issuer = issuer(store.clone(), 0);
    let pair = issuer.issue("alice", &()).await.unwrap();
    store.lose.store(true, std::sync::atomic::Ordering::SeqCst);
    // The store committed, the reply was lost; the issuer sends the same rotation again and
    // gets the committed successor instead of an error (and, at grace 0, a lost session).
    let next = issuer.rotate(&pair.refresh_token).await.unwrap();
    assert!(issuer.rotate(&next.refresh_token).await.is_ok());
}
