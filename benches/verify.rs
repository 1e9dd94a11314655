//! The server's hot path, per algorithm, with a realistic six-claim access token:
//! (a) bare `jsonwebtoken::decode` with equivalent validation, (b) `JwtAuth` with the cache
//! off, (c) `JwtAuth` on a cache hit, and the rejection paths (an expired token, a bad
//! signature), and the cache hit through an axum router against the same router without the
//! layer, both as rows of their own and as their difference measured in turns. Run with
//! `cargo bench --bench verify`. The comparison with peer crates is a crate of its own,
//! `benches/peers/`, so their dependencies stay out of this build.
//!
//! With `dpop` and `client` (`--all-features`), the `dpop/` rows measure one DPoP request on
//! an access-token cache hit (the proof's verification, its `ath`, the replay check in the
//! memory store and the binding to `cnf.jkt`), next to a bare ES256 check of the proof's
//! signature, which the request costs at least.
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

/// One DPoP request on an access-token cache hit, and the bare ES256 signature check of its
/// proof. Each request carries a proof made just before it, outside the timed section.
#[cfg(all(feature = "dpop", feature = "client"))]
fn dpop(c: &mut Criterion) {
    use http::{HeaderValue, Method, Uri};
    use tower::ServiceExt;
    use tower_jwt_refresh::client::dpop::DpopKey;
    use tower_jwt_refresh::server::dpop::{DpopMode, DpopVerifier};

    let rt = runtime();
    let _guard = rt.enter();
    let proof_key = DpopKey::generate().unwrap();
    let (encoding, _, ours) = keys(Algorithm::HS256);
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": "user-1234", "iss": fixture::ISS, "aud": fixture::AUD, "exp": now + 3600,
        "iat": now, "jti": "6f1c2a4e-0b9d-4d8e-9b1a-3c5d7e9f1a2b",
        "cnf": { "jkt": proof_key.thumbprint().as_str() },
    });
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
    let verifier = DpopVerifier::new("https://api.example.com").unwrap();
    let service = tower::Layer::layer(&layer(ours).dpop(verifier, DpopMode::Allowed), noop());
    let called = Uri::from_static("https://api.example.com/");
    let proof = || {
        let proof = proof_key.proof(&Method::GET, &called);
        proof.access_token(&token).sign().unwrap()
    };
    let request = |proof: &str| {
        Request::get("/")
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", HeaderValue::from_str(proof).unwrap())
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    // Check once (and fill the token cache) outside the measurement.
    let first = rt.block_on(service.clone().oneshot(request(&proof())));
    assert_eq!(first.unwrap().status(), StatusCode::OK);
    c.bench_function("dpop/ES256/layer_cache_hit", |b| {
        let mut service = service.clone();
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let req = request(&proof());
                let start = Instant::now();
                let response = complete(&rt, service.call(req)).unwrap();
                timed += start.elapsed();
                assert_eq!(response.status(), StatusCode::OK);
            }
            timed
        })
    });

    let proof = proof();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(proof_key.public_jwk()).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let (input, signature) = proof.rsplit_once('.').unwrap();
    c.bench_function("dpop/ES256/bare_signature_check", |b| {
        b.iter(|| {
            let valid = jsonwebtoken::crypto::verify(
                black_box(signature),
                input.as_bytes(),
                &decoding,
                Algorithm::ES256,
            );
            assert!(valid.unwrap());
        })
    });
}

#[cfg(not(all(feature = "dpop", feature = "client")))]
fn dpop(_: &mut Criterion) {}

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

criterion_group! { name = benches; config = config(); targets = algorithms, through_axum, rejections, instruments, dpop }
criterion_main!(benches);
