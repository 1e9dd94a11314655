//! The server's hot path, per algorithm, with a realistic six-claim access token:
//! (a) bare `jsonwebtoken::decode` with equivalent validation, (b) `JwtAuth` with the cache
//! off, (c) `JwtAuth` on a cache hit, (d) peer crates over the same inner service, and the
//! rejection paths (an expired token, a bad signature). Run with `cargo bench --bench verify`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tower::{Service, ServiceExt};
use tower_jwt_refresh::keys::Key;
use tower_jwt_refresh::server::JwtAuthLayer;

#[path = "support/harness.rs"]
mod harness;
#[path = "support/peers.rs"]
mod peers;

use harness::{complete, noop, runtime};

/// The six claims of the benchmark token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims6 {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
    iat: u64,
    jti: String,
}

const SECRET: &[u8] = b"benchmark-secret-benchmark-secret!!";

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Private key, public key PEM (or the secret) for `alg`.
fn keys(alg: Algorithm) -> (EncodingKey, DecodingKey, Key) {
    let ours = |k: Result<Key, _>| k.unwrap();
    match alg {
        Algorithm::HS256 => (
            EncodingKey::from_secret(SECRET),
            DecodingKey::from_secret(SECRET),
            ours(Key::hmac(alg, SECRET)),
        ),
        Algorithm::RS256 => (
            EncodingKey::from_rsa_pem(&key_file("rsa_private.pem")).unwrap(),
            DecodingKey::from_rsa_pem(&key_file("rsa_public.pem")).unwrap(),
            ours(Key::from_pem(alg, key_file("rsa_public.pem"))),
        ),
        Algorithm::ES256 => (
            EncodingKey::from_ec_pem(&key_file("ec_private.pem")).unwrap(),
            DecodingKey::from_ec_pem(&key_file("ec_public.pem")).unwrap(),
            ours(Key::from_pem(alg, key_file("ec_public.pem"))),
        ),
        _ => (
            EncodingKey::from_ed_pem(&key_file("ed_private.pem")).unwrap(),
            DecodingKey::from_ed_pem(&key_file("ed_public.pem")).unwrap(),
            ours(Key::from_pem(alg, key_file("ed_public.pem"))),
        ),
    }
}

fn token(alg: Algorithm, encoding: &EncodingKey, exp_in: i64, typ: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims6 {
        sub: "user-1234".into(),
        iss: "https://issuer.test".into(),
        aud: "api".into(),
        exp: (now as i64 + exp_in) as u64,
        iat: now,
        jti: "6f1c2a4e-0b9d-4d8e-9b1a-3c5d7e9f1a2b".into(),
    };
    let mut header = Header::new(alg);
    header.typ = Some(typ.into());
    jsonwebtoken::encode(&header, &claims, encoding).unwrap()
}

fn request(token: &str) -> Request<Full<Bytes>> {
    Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap()
}

/// Times `service` on `token`, building each request outside the measurement.
fn bench_service<S, B>(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    service: S,
    token: &str,
    expect: StatusCode,
) where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    // Check once, outside the measurement, that the contender does what it should.
    let status = rt
        .block_on(service.clone().oneshot(request(token)))
        .unwrap()
        .status();
    assert_eq!(status, expect, "{name}");
    let _guard = rt.enter();
    c.bench_function(name, |b| {
        let mut service = service.clone();
        b.iter_batched(
            || request(token),
            |req| {
                // Every contender is always ready, so tower's contract holds.
                let response = complete(rt, service.call(req)).unwrap();
                black_box(response.status())
            },
            BatchSize::SmallInput,
        );
    });
}

fn algorithms(c: &mut Criterion) {
    let rt = runtime();
    // What every service measurement includes besides the contender: the harness and the
    // inner service.
    bench_service(
        c,
        "baseline/noop_inner_service",
        &rt,
        noop(),
        "unused",
        StatusCode::OK,
    );
    for alg in [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let name = format!("{alg:?}");
        let (encoding, decoding, ours) = keys(alg);
        let valid = token(alg, &encoding, 3600, "at+jwt");

        // (a) The floor: jsonwebtoken's decode, validating what the layer validates.
        let mut validation = Validation::new(alg);
        validation.set_issuer(&["https://issuer.test"]);
        validation.set_audience(&["api"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        c.bench_function(&format!("{name}/a_bare_decode"), |b| {
            b.iter(|| {
                jsonwebtoken::decode::<Claims6>(black_box(&valid), &decoding, &validation).unwrap()
            })
        });

        // (b) The layer, cache off: a full verification every request.
        let layer = JwtAuthLayer::<Claims6>::with_claims(ours.clone())
            .issuer("https://issuer.test")
            .audience("api");
        let uncached = tower::Layer::layer(&layer.clone().cache_capacity(0), noop());
        bench_service(
            c,
            &format!("{name}/b_layer_no_cache"),
            &rt,
            uncached,
            &valid,
            StatusCode::OK,
        );

        // (c) The layer, cache hit.
        let cached = tower::Layer::layer(&layer, noop());
        bench_service(
            c,
            &format!("{name}/c_layer_cache_hit"),
            &rt,
            cached,
            &valid,
            StatusCode::OK,
        );

        // (d) The peers.
        peers::bench(c, &rt, alg, &valid);
    }
}

fn rejections(c: &mut Criterion) {
    let rt = runtime();
    let (encoding, _, ours) = keys(Algorithm::HS256);
    let layer = JwtAuthLayer::<Claims6>::with_claims(ours)
        .issuer("https://issuer.test")
        .audience("api");
    let service = tower::Layer::layer(&layer, noop());
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

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = algorithms, rejections }
criterion_main!(benches);
