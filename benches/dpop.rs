//! DPoP (RFC 9449) costs, per algorithm (ES256, EdDSA):
//!
//! - verification: `DpopVerifier::verify` with the memory replay store (every check of
//!   RFC 9449 §4.3, the key in the proof parsed per request, the `jti` recorded), against
//!   three baselines: aws-lc-rs's signature check with the key parsed once (the floor),
//!   jsonwebtoken's `crypto::verify` (which parses the key on every call), and jsonwebtoken
//!   decoding the proof with a `DecodingKey` built from its embedded `jwk`, as a minimal
//!   verifier would;
//! - creation: `DpopKey`'s proof (fresh `jti`, claims, `ath`, signature), against a bare
//!   jsonwebtoken signature over the same bytes.
//!
//! Run with `cargo bench --bench dpop`. Each proof is used once: the verification rows make a
//! new proof before each iteration, outside the timed section, and move the clock on by 61 s
//! every 10 000 proofs so that the replay store's entries expire as in a live server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Uri};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use tower_jwt_refresh::Clock;
use tower_jwt_refresh::client::dpop::DpopKey;
use tower_jwt_refresh::server::dpop::DpopVerifier;

#[path = "support/harness.rs"]
mod harness;

use harness::{complete, runtime};

const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.a-realistic-access-token-of-some-length.signature";
const START: u64 = 1_900_000_000;

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The fixture key of `alg`, as our `DpopKey` and as jsonwebtoken's keys.
fn keys(alg: Algorithm) -> (DpopKey, EncodingKey, DecodingKey) {
    tower_jwt_refresh::keys::install_crypto_provider();
    match alg {
        Algorithm::ES256 => (
            DpopKey::from_pkcs8_pem(alg, key_file("ec_private.pem")).unwrap(),
            EncodingKey::from_ec_pem(&key_file("ec_private.pem")).unwrap(),
            DecodingKey::from_ec_pem(&key_file("ec_public.pem")).unwrap(),
        ),
        _ => (
            DpopKey::from_pkcs8_pem(alg, key_file("ed_private.pem")).unwrap(),
            EncodingKey::from_ed_pem(&key_file("ed_private.pem")).unwrap(),
            DecodingKey::from_ed_pem(&key_file("ed_public.pem")).unwrap(),
        ),
    }
}

/// The public key of `key`, as aws-lc-rs reads it: the uncompressed point, or the 32 bytes.
fn public_key_bytes(key: &DpopKey) -> Vec<u8> {
    let jwk: serde_json::Value = serde_json::from_str(key.public_jwk()).unwrap();
    let b64 = |member: &str| {
        URL_SAFE_NO_PAD
            .decode(jwk[member].as_str().unwrap())
            .unwrap()
    };
    match jwk["kty"].as_str() {
        Some("EC") => [vec![4], b64("x"), b64("y")].concat(),
        _ => b64("x"),
    }
}

fn verification(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let called = Uri::from_static("https://api.example.com/orders?page=2");
    let seen = Uri::from_static("/orders?page=2");
    for alg in [Algorithm::ES256, Algorithm::EdDSA] {
        let (key, _, decoding) = keys(alg);
        let name = format!("dpop/{alg:?}");
        let proof = key
            .proof(&Method::GET, &called)
            .access_token(TOKEN)
            .issued_at(START)
            .sign()
            .unwrap();

        let (input, signature) = proof.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        c.bench_function(&format!("{name}/bare_signature_check"), |b| {
            b.iter(|| {
                let sig = URL_SAFE_NO_PAD.encode(&signature);
                assert!(
                    jsonwebtoken::crypto::verify(&sig, input.as_bytes(), &decoding, alg).unwrap()
                );
            })
        });

        // The floor: aws-lc-rs with the key parsed once, as no proof verifier can have it.
        let public = public_key_bytes(&key);
        let parsed = aws_lc_rs::signature::ParsedPublicKey::new(
            match alg {
                Algorithm::ES256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                _ => &aws_lc_rs::signature::ED25519,
            },
            public,
        )
        .unwrap();
        c.bench_function(&format!("{name}/bare_signature_check_parsed_key"), |b| {
            b.iter(|| {
                let sig = URL_SAFE_NO_PAD
                    .decode(proof.rsplit_once('.').unwrap().1)
                    .unwrap();
                parsed.verify_sig(input.as_bytes(), &sig).unwrap()
            })
        });

        c.bench_function(&format!("{name}/jsonwebtoken_embedded_jwk"), |b| {
            let mut validation = Validation::new(alg);
            validation.required_spec_claims.clear();
            validation.validate_exp = false;
            b.iter(|| {
                let header = jsonwebtoken::decode_header(&proof).unwrap();
                let jwk = header.jwk.as_ref().unwrap();
                let key = DecodingKey::from_jwk(jwk).unwrap();
                jsonwebtoken::decode::<serde_json::Value>(&proof, &key, &validation).unwrap()
            })
        });

        let now = Arc::new(AtomicU64::new(START));
        let verifier = DpopVerifier::new("https://api.example.com")
            .unwrap()
            .clock(Clock::from_fn({
                let now = now.clone();
                move || now.load(Ordering::Relaxed)
            }));
        let made = AtomicU64::new(0);
        let fresh = || {
            if made.fetch_add(1, Ordering::Relaxed) % 10_000 == 9_999 {
                now.fetch_add(61, Ordering::Relaxed);
            }
            let proof = key
                .proof(&Method::GET, &called)
                .access_token(TOKEN)
                .issued_at(now.load(Ordering::Relaxed))
                .sign()
                .unwrap();
            let mut headers = HeaderMap::new();
            headers.insert("dpop", HeaderValue::from_str(&proof).unwrap());
            headers
        };
        // Each iteration verifies a proof made just before it, outside the timed section.
        c.bench_function(&format!("{name}/verify_memory_store"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let headers = fresh();
                    let start = Instant::now();
                    let verified = complete(
                        &rt,
                        verifier.verify(&Method::GET, &seen, &headers, Some(TOKEN)),
                    );
                    timed += start.elapsed();
                    verified.unwrap();
                }
                timed
            })
        });
    }
}

fn creation(c: &mut Criterion) {
    let called = Uri::from_static("https://api.example.com/orders?page=2");
    for alg in [Algorithm::ES256, Algorithm::EdDSA] {
        let (key, encoding, _) = keys(alg);
        let name = format!("dpop/{alg:?}");
        let proof = key
            .proof(&Method::GET, &called)
            .access_token(TOKEN)
            .sign()
            .unwrap();
        let (input, _) = proof.rsplit_once('.').unwrap();
        c.bench_function(&format!("{name}/bare_signature"), |b| {
            b.iter(|| jsonwebtoken::crypto::sign(input.as_bytes(), &encoding, alg).unwrap())
        });
        c.bench_function(&format!("{name}/create_proof"), |b| {
            b.iter(|| {
                key.proof(&Method::GET, &called)
                    .access_token(TOKEN)
                    .sign()
                    .unwrap()
            })
        });
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = verification, creation }
criterion_main!(benches);
