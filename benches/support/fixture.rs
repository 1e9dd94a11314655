//! The verification benchmarks' fixture, shared by `benches/verify.rs` and the peer comparison
//! in `benches/peers/`: the six-claim token, its keys, the request, the service driver, and
//! the rows for `jsonwebtoken` and our layer. The crate that includes this file names the
//! folder of the test keys as `crate::KEY_DIR`.
#![allow(dead_code)] // each benchmark uses a part

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tower::{Service, ServiceExt};
use tower_jwt_refresh::keys::Key;
use tower_jwt_refresh::server::JwtAuthLayer;

use crate::harness::{complete, noop};

/// The six claims of the benchmark token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claims6 {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
    iat: u64,
    jti: String,
}

pub(crate) const ISS: &str = "https://issuer.test";
pub(crate) const AUD: &str = "api";
pub(crate) const SECRET: &[u8] = b"benchmark-secret-benchmark-secret!!";

/// The algorithms every verification benchmark covers.
pub(crate) const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

pub(crate) fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/{name}", crate::KEY_DIR)).unwrap()
}

/// Private key, public key PEM (or the secret) for `alg`.
pub(crate) fn keys(alg: Algorithm) -> (EncodingKey, DecodingKey, Key) {
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

pub(crate) fn token(alg: Algorithm, encoding: &EncodingKey, exp_in: i64, typ: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims6 {
        sub: "user-1234".into(),
        iss: ISS.into(),
        aud: AUD.into(),
        exp: (now as i64 + exp_in) as u64,
        iat: now,
        jti: "6f1c2a4e-0b9d-4d8e-9b1a-3c5d7e9f1a2b".into(),
    };
    let mut header = Header::new(alg);
    header.typ = Some(typ.into());
    jsonwebtoken::encode(&header, &claims, encoding).unwrap()
}

pub(crate) fn request(token: &str) -> Request<Full<Bytes>> {
    Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap()
}

/// Times `service` on `token`, building each request outside the measurement.
pub(crate) fn bench_service<S, B>(
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

/// What every service measurement includes besides the contender: the harness and the inner
/// service.
pub(crate) fn bench_noop(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    bench_service(
        c,
        "baseline/noop_inner_service",
        rt,
        noop(),
        "unused",
        StatusCode::OK,
    );
}

/// Our layer, validating the token's issuer and audience.
pub(crate) fn layer(key: Key) -> JwtAuthLayer<Claims6> {
    JwtAuthLayer::<Claims6>::with_claims(key)
        .issuer(ISS)
        .audience(AUD)
}

/// The rows (a), (b) and (c) for `alg`, on the accepted token `valid`.
pub(crate) fn bench_ours(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    alg: Algorithm,
    valid: &str,
) {
    let name = format!("{alg:?}");
    let (_, decoding, ours) = keys(alg);

    // (a) The floor: jsonwebtoken's decode, validating what the layer validates.
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[ISS]);
    validation.set_audience(&[AUD]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    c.bench_function(&format!("{name}/a_bare_decode"), |b| {
        b.iter(|| {
            jsonwebtoken::decode::<Claims6>(black_box(valid), &decoding, &validation).unwrap()
        })
    });

    // (b) The layer, cache off: a full verification every request.
    let layer = layer(ours);
    let uncached = tower::Layer::layer(&layer.clone().cache_capacity(0), noop());
    let row = format!("{name}/b_layer_no_cache");
    bench_service(c, &row, rt, uncached, valid, StatusCode::OK);

    // (c) The layer, cache hit.
    let cached = tower::Layer::layer(&layer, noop());
    let row = format!("{name}/c_layer_cache_hit");
    bench_service(c, &row, rt, cached, valid, StatusCode::OK);
}
