//! Refresh-token stores: rotations per second, one after another and with N rotations in
//! flight at once, and the revoked-family check the verifier runs on every request: in memory,
//! per request in Redis (`EXISTS`), and from the local set of a store whose revocations are
//! propagated.
//!
//! `cargo bench --all-features --bench store` measures `MemoryStore`; `REDIS_URL` adds one
//! Redis, `REDIS_CLUSTER_URLS` (comma-separated) a Redis Cluster with one replica per primary,
//! where `wait_for_replicas(1, …)` is measured too. `scripts/redis-cluster start DIR` starts
//! such a cluster and prints the variables (see BENCHMARKS.md).

use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "support/harness.rs"]
mod harness;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use http_body_util::Full;
use tower::Service;
use tower_jwt_refresh::issuer::store::RefreshStore;
use tower_jwt_refresh::issuer::{AccessTokenIssuer, MemoryStore, TokenIssuer};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};
use tower_jwt_refresh::server::JwtAuthLayer;

use harness::{complete, noop};

fn issuer<S: RefreshStore + Clone>(store: S) -> (SigningKey, TokenIssuer<S>) {
    let key = SigningKey::hmac(Algorithm::HS256, [3u8; 32]).unwrap();
    (
        key.clone(),
        TokenIssuer::new(AccessTokenIssuer::new(key), store),
    )
}

fn rotations<S: RefreshStore + Clone>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: S,
) {
    let (_, issuer) = issuer(store);
    let mut group = c.benchmark_group("rotate");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let issuer = issuer.clone();
            async move {
                let mut token = issuer.issue("alice", &()).await.unwrap().refresh_token;
                let started = Instant::now();
                for _ in 0..iters {
                    token = issuer.rotate(&token).await.unwrap().refresh_token;
                }
                started.elapsed()
            }
        })
    });
    group.finish();
}

/// The verifier on a cache hit, with and without the store's revocation hook.
fn revocation_check<S: RefreshStore + Clone>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: S,
) {
    let (key, issuer) = issuer(store);
    let pair = rt.block_on(issuer.issue("alice", &())).unwrap();
    // Timers (the hook's bound) need the runtime's context even on the first poll.
    let _guard = rt.enter();
    let mut group = c.benchmark_group("revocation_check");
    let plain = tower::Layer::layer(&JwtAuthLayer::new(key.verification_key()), noop());
    let hooked = tower::Layer::layer(
        &JwtAuthLayer::new(key.verification_key()).deny_list(issuer.deny_list()),
        noop(),
    );
    let request = || {
        Request::get("/")
            .header("authorization", format!("Bearer {}", pair.access_token))
            .body(Full::default())
            .unwrap()
    };
    for (label, service) in [
        (
            format!("{name}/without_hook"),
            tower::util::BoxCloneService::new(plain),
        ),
        (
            format!("{name}/with_hook"),
            tower::util::BoxCloneService::new(hooked),
        ),
    ] {
        assert_eq!(
            rt.block_on(tower::ServiceExt::oneshot(service.clone(), request()))
                .unwrap()
                .status(),
            200
        );
        group.bench_function(label, |b| {
            let mut service = service.clone();
            // A ready hook answers on the first poll; Redis's goes through the runtime.
            b.iter_batched(
                request,
                |req| black_box(one_request(rt, &mut service, req)),
                BatchSize::SmallInput,
            )
        });
    }
    // The store's hook alone, on the session's id: what the hook adds to a request, timed
    // on its own (a remote check answers later, so only a ready one is timed here).
    let sid = pair.refresh_token.split('.').next().unwrap().to_owned();
    if format!("{:?}", issuer.store().is_revoked(&sid)).starts_with("Ready") {
        group.bench_function(format!("{name}/hook_alone"), |b| {
            b.iter(|| black_box(issuer.store().is_revoked(black_box(&sid))))
        });
    }
    group.finish();
}

/// How many rotations are in flight at once in the throughput curve.
#[cfg(feature = "redis")]
const IN_FLIGHT: [usize; 6] = [1, 2, 4, 8, 16, 32];

/// Rotations per second with `n` rotations in flight, for each `n` of [`IN_FLIGHT`]: `n` tasks,
/// each rotating its own session's token in a loop. Task `i` uses `stores[i % len]`: one store
/// (one multiplexed connection) shared by all, or one store (connection) per task.
#[cfg(feature = "redis")]
fn throughput<S: RefreshStore + Clone>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    stores: &[S],
) {
    let issuers: Vec<_> = stores.iter().map(|s| issuer(s.clone()).1).collect();
    let mut group = c.benchmark_group(format!("rotate_in_flight/{name}"));
    group.throughput(Throughput::Elements(1));
    for n in IN_FLIGHT {
        group.bench_function(n.to_string(), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let issuers = issuers.clone();
                async move {
                    let mut sessions = Vec::with_capacity(n);
                    for i in 0..n {
                        let issuer = issuers[i % issuers.len()].clone();
                        let token = issuer.issue("alice", &()).await.unwrap().refresh_token;
                        // Task `i` does its share of `iters`, the first ones one more.
                        let count = iters / n as u64 + u64::from((i as u64) < iters % n as u64);
                        sessions.push((issuer, token, count));
                    }
                    let started = Instant::now();
                    let tasks: Vec<_> = sessions
                        .into_iter()
                        .map(|(issuer, mut token, count)| {
                            tokio::spawn(async move {
                                for _ in 0..count {
                                    token = issuer.rotate(&token).await.unwrap().refresh_token;
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    started.elapsed()
                }
            })
        });
    }
    group.finish();
}

/// The Redis rows: one Redis on `REDIS_URL`, a cluster on `REDIS_CLUSTER_URLS`.
#[cfg(feature = "redis")]
fn redis_stores(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    use tower_jwt_refresh::issuer::RedisStore;

    // The throughput curve runs on both cores: the client's work (hashing, signing) must not
    // be what limits it.
    let threads = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match std::env::var("REDIS_URL") {
        Ok(url) => {
            let store = rt.block_on(RedisStore::connect(&url)).unwrap();
            rotations(c, rt, "redis", store.clone());
            revocation_check(c, rt, "redis", store.clone());
            // The same store, its revocations propagated: the check is a memory lookup.
            let subscriber = redis::Client::open(url.as_str()).unwrap();
            let propagated = rt
                .block_on(store.propagate_revocations(subscriber))
                .unwrap();
            revocation_check(c, rt, "redis_propagated", propagated);
            let shared = threads.block_on(RedisStore::connect(&url)).unwrap();
            throughput(c, &threads, "redis_multiplexed", &[shared]);
            let own: Vec<_> = (0..32)
                .map(|_| threads.block_on(RedisStore::connect(&url)).unwrap())
                .collect();
            throughput(c, &threads, "redis_connection_each", &own);
        }
        Err(_) => eprintln!("REDIS_URL not set: skipping the Redis store benchmarks"),
    }
    match std::env::var("REDIS_CLUSTER_URLS") {
        Ok(urls) => {
            let urls: Vec<&str> = urls.split(',').collect();
            let store = rt.block_on(RedisStore::connect_cluster(&urls)).unwrap();
            let waiting = store
                .clone()
                .wait_for_replicas(1, Duration::from_millis(100));
            rotations(c, rt, "cluster", store.clone());
            revocation_check(c, rt, "cluster", store.clone());
            // Propagated through sharded pub/sub: the check is the same memory lookup.
            let subscriber = tower_jwt_refresh::issuer::RevocationSubscriber::cluster(&urls);
            let propagated = rt
                .block_on(store.propagate_revocations(subscriber))
                .unwrap();
            revocation_check(c, rt, "cluster_propagated", propagated);
            rotations(c, rt, "cluster_wait_for_replica", waiting);
            let shared = threads
                .block_on(RedisStore::connect_cluster(&urls))
                .unwrap();
            throughput(c, &threads, "cluster", std::slice::from_ref(&shared));
            let waiting = shared.wait_for_replicas(1, Duration::from_millis(100));
            throughput(c, &threads, "cluster_wait_for_replica", &[waiting]);
        }
        Err(_) => eprintln!("REDIS_CLUSTER_URLS not set: skipping the Redis Cluster benchmarks"),
    }
}

/// One request through `service`, to its status. Never inlined, so that a profiler
/// (`valgrind --tool=callgrind --toggle-collect=store::one_request`) counts exactly it.
#[inline(never)]
fn one_request<S, B>(
    rt: &tokio::runtime::Runtime,
    service: &mut S,
    req: Request<Full<Bytes>>,
) -> u16
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
{
    complete(rt, service.call(req)).unwrap().status().as_u16()
}

fn stores(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rotations(c, &rt, "memory", MemoryStore::new());
    revocation_check(c, &rt, "memory", MemoryStore::new());
    #[cfg(feature = "redis")]
    redis_stores(c, &rt);
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = stores }
criterion_main!(benches);
