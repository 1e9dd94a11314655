//! The server's hot path, per algorithm, with a realistic six-claim access token:
//! (a) bare `jsonwebtoken::decode` with equivalent validation, (b) `JwtAuth` with the cache
//! off, (c) `JwtAuth` on a cache hit, and the rejection paths (an expired token, a bad
//! signature), and the cache hit through an axum router against the same router without the
//! layer, both as rows of their own and as their difference measured in turns. Run with
//! `cargo bench --bench verify`. The comparison with peer crates is a crate of its own,
//! `benches/peers/`, so their dependencies stay out of this build.
//!
//! With `--features metrics`, the `metrics/` rows measure the instruments: the cache hit with
//! a Prometheus recorder, and the two ways of recording an event (a handle built once, the
//! facade's macro per event), with no recorder and with one. The cache hit with no recorder
//! installed is `HS256/c_layer_cache_hit`, run with and without the feature.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey};
use tower::Service;

#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/harness.rs"]
mod harness;

use fixture::{ALGORITHMS, bench_noop, bench_ours, bench_service, keys, layer, request, token};
use harness::{complete, noop, runtime};

/// The test keys, for `fixture`.
const KEY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");

fn algorithms(c: &mut Criterion) {
    let rt = runtime();
    bench_noop(c, &rt);
    for alg in ALGORITHMS {
        let (encoding, _, _) = keys(alg);
        let valid = token(alg, &encoding, 3600, "at+jwt");
        bench_ours(c, &rt, alg, &valid);
    }
}

fn rejections(c: &mut Criterion) {
    let rt = runtime();
    let (encoding, _, ours) = keys(Algorithm::HS256);
    let service = tower::Layer::layer(&layer(ours), noop());
    let expired = token(Algorithm::HS256, &encoding, -3600, "at+jwt");
    bench_service(
        c,
        "HS256/reject_expired",
        &rt,
        service.clone(),
        &expired,
        StatusCode::UNAUTHORIZED,
    );
    let forged = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-another-secret!!!!!"),
        3600,
        "at+jwt",
    );
    bench_service(
        c,
        "HS256/reject_bad_signature",
        &rt,
        service,
        &forged,
        StatusCode::UNAUTHORIZED,
    );
}

/// A cache hit where users meet it: through an axum router. The same router, route and no-op
/// handler with and without the layer; the difference is the layer's net cost, axum's work
/// for a layered route included. Each router is served as `axum::serve` serves one: after
/// `with_state(())`, which turns every route into a `Route` once instead of on every request.
fn through_axum(c: &mut Criterion) {
    let rt = runtime();
    for alg in ALGORITHMS {
        let (encoding, _, ours) = keys(alg);
        let valid = token(alg, &encoding, 3600, "at+jwt");
        let router = || axum::Router::new().route("/", axum::routing::get(|| async {}));
        let name = format!("{alg:?}");
        if alg == Algorithm::HS256 {
            let bare = router().with_state::<()>(());
            bench_service(c, "axum/router_no_auth", &rt, bare, &valid, StatusCode::OK);
        }
        let layered = router().layer(layer(ours)).with_state::<()>(());
        let row = format!("{name}/axum_router_cache_hit");
        bench_service(c, &row, &rt, layered.clone(), &valid, StatusCode::OK);
        let bare = router().with_state::<()>(());
        let row = format!("{name}/axum_router_cache_hit_net");
        bench_net(c, &row, &rt, layered, bare, &valid);
    }
}

/// The layered router's time minus the bare router's, per request. The two take turns, a few
/// hundred requests each, so both run on the same machine state, and each sample reports its
/// median turn: on a shared machine a turn that another process interrupted is an outlier,
/// which a sum of all turns (or the difference of two rows measured seconds apart) would
/// carry in full.
fn bench_net<L, B, LB, BB>(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    layered: L,
    bare: B,
    token: &str,
) where
    L: Service<Request<Full<Bytes>>, Response = Response<LB>> + Clone,
    B: Service<Request<Full<Bytes>>, Response = Response<BB>> + Clone,
    L::Error: std::fmt::Debug,
    B::Error: std::fmt::Debug,
{
    const TURN: u64 = 256;
    let _guard = rt.enter();
    c.bench_function(name, |b| {
        let (mut layered, mut bare) = (layered.clone(), bare.clone());
        b.iter_custom(|iters| {
            let mut nets = Vec::new();
            let mut done = 0;
            while done < iters {
                let n = TURN.min(iters - done);
                let with = timed(rt, &mut layered, token, n);
                let without = timed(rt, &mut bare, token, n);
                nets.push((with.as_nanos() as f64 - without.as_nanos() as f64) / n as f64);
                done += n;
            }
            nets.sort_by(f64::total_cmp);
            // Noise can put a short sample below zero; criterion needs a positive time.
            let median = nets[nets.len() / 2].max(0.001);
            Duration::from_secs_f64(median * iters as f64 / 1e9)
        });
    });
}

/// The instruments' cost: what an event costs with no recorder installed and with one, for a
/// handle built once (what the crate does) and for the facade's macro per event.
#[cfg(feature = "metrics")]
fn instruments(c: &mut Criterion) {
    use metrics_exporter_prometheus::PrometheusBuilder;
    let rt = runtime();
    let (encoding, _, ours) = keys(Algorithm::HS256);
    let valid = token(Algorithm::HS256, &encoding, 3600, "at+jwt");
    let recorder = PrometheusBuilder::new().build_recorder();
    // Built under the recorder, the layer's handles are bound to it.
    let service =
        metrics::with_local_recorder(&recorder, || tower::Layer::layer(&layer(ours), noop()));
    let row = "metrics/HS256_cache_hit_prometheus";
    bench_service(c, row, &rt, service, &valid, StatusCode::OK);

    let name = "tower_jwt_refresh.bench.events";
    let handle = metrics::counter!(name, "result" => "hit");
    c.bench_function("metrics/handle_no_recorder", |b| {
        b.iter(|| black_box(&handle).increment(1))
    });
    c.bench_function("metrics/macro_no_recorder", |b| {
        b.iter(|| {
            metrics::counter!("tower_jwt_refresh.bench.events", "result" => "hit").increment(1)
        })
    });
    metrics::with_local_recorder(&recorder, || {
        let handle = metrics::counter!(name, "result" => "hit");
        c.bench_function("metrics/handle_prometheus", |b| {
            b.iter(|| black_box(&handle).increment(1))
        });
        c.bench_function("metrics/macro_prometheus", |b| {
            b.iter(|| {
                metrics::counter!("tower_jwt_refresh.bench.events", "result" => "hit").increment(1)
            })
        });
    });
}

/// `n` requests through `service`, each built before the clock starts.
fn timed<S, B>(rt: &tokio::runtime::Runtime, service: &mut S, token: &str, n: u64) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let requests: Vec<_> = (0..n).map(|_| request(token)).collect();
    let start = Instant::now();
    for req in requests {
        let response = complete(rt, service.call(req)).unwrap();
        assert_eq!(black_box(response.status()), StatusCode::OK);
    }
    start.elapsed()
}

#[cfg(not(feature = "metrics"))]
fn instruments(_: &mut Criterion) {}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = algorithms, through_axum, rejections, instruments }
criterion_main!(benches);
