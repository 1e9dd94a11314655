//! The client's hot path and its storm behaviour. Run with `cargo bench --bench client`.
//!
//! - hot path: `Refresh` over a ready mock with a valid token, against the bare mock, in the
//!   benchmark thread's CPU time (see `ThreadTime`);
//! - storm: 10,000 concurrent requests on an expired token, with a refresher that takes
//!   10 ms, against the bare cost of 10,000 calls and against a naive baseline (a
//!   `tokio::sync::Mutex` around the token, refreshed under the lock);
//! - proactive storm: 10,000 concurrent requests on a token in its prefetch window, with a
//!   refresher that takes 300 ms. The first request starts the refresh in the background and
//!   every request goes out at once on the still-valid token. Criterion reports means, so the
//!   group also prints each request's latency (p50, p99, max) against the bare storm's.
//! - DPoP (with the `dpop` feature): the client's proof for one request (`DpopKey::proof`
//!   with `ath`, signed) against a bare ES256 signature of an input of the same length with
//!   the same key, and a whole request through `RefreshLayer::dpop`.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/harness.rs"]
mod harness;

use bytes::Bytes;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_jwt_refresh::client::{RefreshLayer, Session, Tokens, refresher_fn};

use harness::complete;

const STORM: usize = 10_000;
const REFRESH_LATENCY: Duration = Duration::from_millis(10);
/// The proactive storm's token endpoint: slow, as a remote one under load can be.
const SLOW_REFRESH_LATENCY: Duration = Duration::from_millis(300);
/// The proactive storm's token lifetime. With the default thresholds its early window is
/// the last second, its prefetch point falls between 1 s and 0.5 s before expiry (jittered),
/// and requests wait only in the last 0.2 s (the stale margin, a tenth of the lifetime).
const PROACTIVE_LIFETIME: Duration = Duration::from_secs(2);
/// How long the proactive storm's token ages before the storm: 0.48 s are left, past every
/// possible prefetch point and 0.28 s before the stale margin, far more than the storm takes
/// to send its requests.
const PROACTIVE_AGE: Duration = Duration::from_millis(1520);

/// 200 for `Bearer <accepted>` (or `DPoP <accepted>`), 401 otherwise.
#[derive(Clone)]
struct Mock {
    accepted: &'static str,
}

impl Service<Request<Full<Bytes>>> for Mock {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let ok = req
            .headers()
            .get("authorization")
            .and_then(|v| {
                let v = v.as_bytes();
                v.strip_prefix(b"Bearer ")
                    .or_else(|| v.strip_prefix(b"DPoP "))
            })
            .is_some_and(|t| t == self.accepted.as_bytes());
        let mut response = Response::new(Full::default());
        if !ok {
            *response.status_mut() = StatusCode::UNAUTHORIZED;
        }
        std::future::ready(Ok(response))
    }
}

fn request() -> Request<Full<Bytes>> {
    Request::get("http://api.test/aaa")
        .header("accept", "application/json")
        .body(Full::default())
        .unwrap()
}

fn refresher() -> impl tower_jwt_refresh::client::Refresher {
    slow_refresher(REFRESH_LATENCY)
}

fn slow_refresher(latency: Duration) -> impl tower_jwt_refresh::client::Refresher {
    refresher_fn(move |_| async move {
        tokio::time::sleep(latency).await;
        Ok(Tokens::new("new", "r2"))
    })
}

/// Criterion's measurement for the hot path: the CPU time of the benchmark thread, which does
/// all of a request's work (the futures complete at their first poll).
///
/// On a shared machine the wall clock also counts the time the thread waits for a core: a
/// sample long enough to be descheduled came out up to four times slower per request than a
/// short one, for every contender, and the mean measured the other tenants. CPU time leaves
/// that out; what the other tenants do to the caches stays in.
struct ThreadTime;

static WALL_TIME: WallTime = WallTime;

fn thread_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

impl Measurement for ThreadTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_time()
    }

    fn end(&self, started: Duration) -> Duration {
        thread_time().saturating_sub(started)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, as the wall clock's.
        WALL_TIME.formatter()
    }
}

fn hot_path(c: &mut Criterion<ThreadTime>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("hot_path");
    let bare = Mock { accepted: "tok" };
    group.bench_function("bare_mock", |b| {
        let mut mock = bare.clone();
        b.iter_batched(
            request,
            |req| black_box(complete(&rt, mock.call(req)).unwrap().status()),
            BatchSize::SmallInput,
        )
    });
    // What the layer's own work is measured against: the header attached by hand.
    let by_hand = http::HeaderValue::from_static("Bearer tok");
    group.bench_function("bare_mock_header_by_hand", |b| {
        let mut mock = bare.clone();
        b.iter_batched(
            request,
            |mut req| {
                req.headers_mut()
                    .insert(http::header::AUTHORIZATION, by_hand.clone());
                black_box(complete(&rt, mock.call(req)).unwrap().status())
            },
            BatchSize::SmallInput,
        )
    });
    // The default, which keeps a replay copy of every request; and the opt-in window, where a
    // young token's request (an hour left of an hour) keeps none.
    for (name, lifetime, window) in [
        (
            "refresh_layer_with_replay_copy",
            Duration::from_secs(3600),
            false,
        ),
        (
            "refresh_layer_replay_window_young_token",
            Duration::from_secs(3600),
            true,
        ),
    ] {
        let session = Session::new();
        session
            .login(Tokens::new("tok", "r1").expires_in(lifetime))
            .unwrap();
        let layer = RefreshLayer::new(session.clone(), refresher());
        let layer = if window { layer.replay_window() } else { layer };
        let mut service = ServiceBuilder::new().layer(layer).service(bare.clone());
        assert_eq!(
            rt.block_on(service.clone().oneshot(request()))
                .unwrap()
                .status(),
            StatusCode::OK
        );
        group.bench_function(name, |b| {
            b.iter_batched(
                request,
                |req| black_box(complete(&rt, service.call(req)).unwrap().status()),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The client's DPoP proof for one request against a bare ES256 signature (aws-lc-rs, the
/// key parsed once) of the proof's own signing input with the same key; and one request
/// through `RefreshLayer::dpop`.
#[cfg(all(feature = "dpop", feature = "aws-lc-rs"))]
fn dpop(c: &mut Criterion<ThreadTime>) {
    use http::{Method, Uri};
    use tower_jwt_refresh::client::dpop::DpopKey;
    use tower_jwt_refresh::keys::Algorithm;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/keys/ec_private.pem"
    ))
    .unwrap();
    let key = DpopKey::from_pkcs8_pem(Algorithm::ES256, &pem).unwrap();
    // The bare signature: the crypto backend's own ES256 signer, its key parsed once.
    let der: String = String::from_utf8(pem)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, der).unwrap();
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    // A realistic access token: a JWT of ~300 bytes.
    let token = format!(
        "eyJhbGciOiJIUzI1NiJ9.{}.{}",
        "a".repeat(240),
        "s".repeat(43)
    );
    let uri = Uri::from_static("https://api.example.com/orders?page=2");
    let proof = key
        .proof(&Method::GET, &uri)
        .access_token(&token)
        .sign()
        .unwrap();
    let (input, _) = proof.rsplit_once('.').unwrap();
    let input = input.as_bytes().to_vec();

    let mut group = c.benchmark_group("dpop");
    group.bench_function("ES256/bare_signature", |b| {
        b.iter(|| black_box(signer.sign(&rng, black_box(&input)).unwrap()))
    });
    group.bench_function("ES256/proof", |b| {
        b.iter(|| {
            let proof = key
                .proof(&Method::GET, &uri)
                .access_token(black_box(&token));
            black_box(proof.sign().unwrap())
        })
    });
    let session = Session::new();
    session
        .login(Tokens::new("tok", "r1").expires_in(Duration::from_secs(3600)))
        .unwrap();
    let layer = RefreshLayer::new(session, refresher()).dpop(key.clone());
    let mut service = ServiceBuilder::new()
        .layer(layer)
        .service(Mock { accepted: "tok" });
    assert_eq!(
        rt.block_on(service.clone().oneshot(request()))
            .unwrap()
            .status(),
        StatusCode::OK
    );
    group.bench_function("ES256/refresh_layer_request", |b| {
        b.iter_batched(
            request,
            |req| black_box(complete(&rt, service.call(req)).unwrap().status()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

#[cfg(not(all(feature = "dpop", feature = "aws-lc-rs")))]
fn dpop(_: &mut Criterion<ThreadTime>) {}

/// Runs `STORM` requests through `send`, all spawned at once; returns the time until all
/// completed. Each request's latency, from its spawn to its response, goes into `latencies`
/// if given.
async fn storm<F, Fut>(latencies: Option<&Mutex<Vec<Duration>>>, send: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = StatusCode> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..STORM)
        .map(|_| {
            let sent = Instant::now();
            let request = send();
            tokio::spawn(async move { (request.await, sent.elapsed()) })
        })
        .collect();
    let mut each = Vec::with_capacity(STORM);
    for task in tasks {
        let (status, latency) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        each.push(latency);
    }
    let total = started.elapsed();
    if let Some(latencies) = latencies {
        latencies.lock().unwrap().extend(each);
    }
    total
}

/// The `q` quantile of `latencies`, sorted.
fn quantile(latencies: &[Duration], q: f64) -> Duration {
    let at = ((latencies.len() - 1) as f64 * q).round() as usize;
    latencies[at]
}

/// Prints each request's latency in the storms on a valid token (bare, through the layer,
/// through the layer across a proactive refresh), for those that ran (a filter may have
/// skipped some).
fn print_latencies(latencies: &[Mutex<Vec<Duration>>; 3]) {
    let names = [
        "bare mock",
        "layer, valid token, no refresh",
        "layer, proactive 300 ms refresh",
    ];
    let mut sorted = latencies.each_ref().map(|l| l.lock().unwrap().clone());
    if sorted.iter().all(Vec::is_empty) {
        return;
    }
    println!(
        "storm_10k/latency per request, from spawn to response, over every storm of this run:"
    );
    for list in &mut sorted {
        list.sort_unstable();
    }
    let bare = &sorted[0];
    for (name, list) in names.iter().zip(&sorted).filter(|(_, l)| !l.is_empty()) {
        print!("  {name:32} ({:>6} requests):", list.len());
        for (label, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            let at = quantile(list, q);
            print!(" {label} {:>7.2} ms", at.as_secs_f64() * 1e3);
            if !bare.is_empty() {
                let base = quantile(bare, q).as_secs_f64();
                print!(" ({:.2}x bare)", at.as_secs_f64() / base);
            }
        }
        println!();
    }
}

fn storms(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("storm_10k");
    group.sample_size(10);
    let latencies: [Mutex<Vec<Duration>>; 3] = Default::default();
    let [bare_latencies, valid_latencies, proactive_latencies] = &latencies;
    group.bench_function("bare_10k_calls", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mock = Mock { accepted: "new" };
                total += storm(Some(bare_latencies), || {
                    let mut mock = mock.clone();
                    let mut req = request();
                    req.headers_mut()
                        .insert("authorization", "Bearer new".parse().unwrap());
                    async move { mock.call(req).await.unwrap().status() }
                })
                .await;
            }
            total
        })
    });
    for (name, known_expiry) in [
        ("refresh_layer_expired", true),
        ("refresh_layer_rejected", false),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let session = Session::new();
                    // Known to be expired (refreshed before sending), or unknown (rejected, then
                    // replayed).
                    let tokens = Tokens::new("old", "r1");
                    let tokens = if known_expiry {
                        tokens.expires_in(Duration::ZERO)
                    } else {
                        tokens
                    };
                    session.login(tokens).unwrap();
                    let client = ServiceBuilder::new()
                        .layer(RefreshLayer::new(session.clone(), refresher()))
                        .service(Mock { accepted: "new" });
                    total += storm(None, || {
                        let client = client.clone();
                        async move { client.oneshot(request()).await.unwrap().status() }
                    })
                    .await;
                    assert_eq!(
                        session.stats().refreshes,
                        1,
                        "exactly one refresh per storm"
                    );
                }
                total
            })
        });
    }
    group.bench_function("naive_mutex", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // The hand-rolled version: one lock around the token, refreshed under it.
                let token = Arc::new(tokio::sync::Mutex::new((String::from("old"), true)));
                let refreshes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let mock = Mock { accepted: "new" };
                total += storm(None, || {
                    let (token, refreshes, mut mock) =
                        (Arc::clone(&token), Arc::clone(&refreshes), mock.clone());
                    async move {
                        let value = {
                            let mut guard = token.lock().await;
                            if guard.1 {
                                tokio::time::sleep(REFRESH_LATENCY).await;
                                refreshes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                *guard = (String::from("new"), false);
                            }
                            guard.0.clone()
                        };
                        let mut req = request();
                        req.headers_mut()
                            .insert("authorization", format!("Bearer {value}").parse().unwrap());
                        mock.call(req).await.unwrap().status()
                    }
                })
                .await;
                assert_eq!(refreshes.load(std::sync::atomic::Ordering::Relaxed), 1);
            }
            total
        })
    });
    // The layer's own cost in a storm, without a refresh: a token an hour from expiry.
    group.bench_function("refresh_layer_valid_token", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let session = Session::new();
            let tokens = Tokens::new("tok", "r1").expires_in(Duration::from_secs(3600));
            session.login(tokens).unwrap();
            let client = ServiceBuilder::new()
                .layer(RefreshLayer::new(session.clone(), refresher()))
                .service(Mock { accepted: "tok" });
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += storm(Some(valid_latencies), || {
                    let client = client.clone();
                    async move { client.oneshot(request()).await.unwrap().status() }
                })
                .await;
            }
            assert_eq!(session.stats().refreshes, 0);
            total
        })
    });
    // Each storm first waits for its token to age (untimed): as few storms as criterion
    // allows, one per sample.
    group
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(20));
    group.bench_function("refresh_layer_proactive_300ms_refresh", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let session = Session::new();
                let tokens = Tokens::new("old", "r1").expires_in(PROACTIVE_LIFETIME);
                session.login(tokens).unwrap();
                let refresher = slow_refresher(SLOW_REFRESH_LATENCY);
                // This mock takes only the old token: a request that waited for the refresh
                // would carry the new one and fail the storm.
                let client = ServiceBuilder::new()
                    .layer(RefreshLayer::new(session.clone(), refresher))
                    .service(Mock { accepted: "old" });
                tokio::time::sleep(PROACTIVE_AGE).await;
                total += storm(Some(proactive_latencies), || {
                    let client = client.clone();
                    async move { client.oneshot(request()).await.unwrap().status() }
                })
                .await;
                assert_eq!(session.stats().waits, 0, "no request waits for the refresh");
                // The refresh the first request started goes on in the background; let it end
                // (untimed) so that storms do not overlap.
                let deadline = Instant::now() + Duration::from_secs(10);
                while session.stats().refreshes == 0 {
                    assert!(Instant::now() < deadline, "the prefetch never finished");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                assert_eq!(
                    session.stats().refreshes,
                    1,
                    "exactly one refresh per storm"
                );
            }
            total
        })
    });
    group.finish();
    print_latencies(&latencies);
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = hot;
    config = config().with_measurement(ThreadTime);
    targets = hot_path, dpop
}
criterion_group! { name = storm_10k; config = config(); targets = storms }
criterion_main!(hot, storm_10k);
