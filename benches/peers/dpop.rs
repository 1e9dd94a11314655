//! DPoP (RFC 9449) against peer crates, ES256, in one run. Run with
//! `cargo bench --bench dpop` in this folder.
//!
//! Verification of one proof (`htm`, `htu`, `iat`, `jti`, `ath`; made by our `DpopKey` from the
//! test key `ec_private.pem`, a fresh one before each iteration, outside the timed section):
//!
//! - `bare_signature_check`: `jsonwebtoken::crypto::verify` of the proof's signature (aws-lc-rs,
//!   the key decoded once), the floor, as in the main crate's `benches/verify.rs`;
//! - `bare_signature_check_p256`: the same check with RustCrypto's `p256` 0.13 (the key parsed
//!   once), the signature code dpop-verifier builds on;
//! - `ours_verify_memory_store`: our `DpopVerifier::verify` with its memory replay store, no
//!   nonces, as `benches/dpop.rs` calls it;
//! - `dpop_verifier_memory_store`: dpop-verifier 4.4 with the same window (60 s back, 10 s
//!   ahead), no nonces, and an in-memory replay store of the same design as ours (the crate
//!   leaves the store to the application and ships none). Like ours it is given the request's
//!   headers, path and access token, and reads the proof from the headers and builds the
//!   expected `htu` from the external base URL inside the timed section.
//!
//! Our verifier runs on a clock moved on by 61 s every 10 000 proofs, so that its replay store's
//! entries expire as in a live server (as `benches/dpop.rs` does). dpop-verifier reads the
//! system clock itself, so its proofs carry the real time; its replay store expires entries on
//! the same moved clock, so both stores hold the same number of live entries.
//!
//! Creation of one proof bound to an access token (`ath`):
//!
//! - `bare_signature`: aws-lc-rs `EcdsaKeyPair::sign` over a proof's signing input, the key
//!   parsed once: the floor;
//! - `bare_signature_huskarl_signer`: huskarl's own ES256 signer (RustCrypto `p256` 0.14) over
//!   the same bytes, the key parsed once;
//! - `ours_create_proof`: `DpopKey::proof(..).access_token(..).sign()`;
//! - `huskarl_create_proof`: huskarl 0.11's resource-server proof
//!   (`DPoP::to_resource_server_dpop().proof(..)`) for the same method, URI, token and key.
//!
//! Every contender's result is checked: each verification is asserted to succeed, and before
//! the measurements a proof from each creator is verified by both verifiers, and a proof with
//! an altered signature is refused by both.
//!
//! With `DPOP_PEERS_CALLS=1` the run prints how often each timed function ran, for instruction
//! counts under valgrind (`--toggle-collect` on the `timed_*` functions).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use criterion::{Criterion, criterion_group};
use http::{HeaderMap, HeaderValue, Method, Uri};
use jsonwebtoken::{Algorithm, DecodingKey};
use tower_jwt_refresh::Clock;
use tower_jwt_refresh::client::dpop::DpopKey;
use tower_jwt_refresh::server::dpop::{DpopError, DpopVerifier, VerifiedProof};

#[path = "../support/harness.rs"]
mod harness;

use harness::{complete, runtime};

/// The main crate's test keys.
const KEY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/keys");
const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.a-realistic-access-token-of-some-length.signature";
const BASE: &str = "https://api.example.com";
const CALLED: &str = "https://api.example.com/orders?page=2";
const SEEN: &str = "/orders?page=2";
/// How far back a proof's `iat` may be, and so how long a `jti` is remembered.
const WINDOW: u64 = 60;

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEY_DIR}/{name}")).unwrap()
}

/// The DER inside a PEM file.
fn pem_der(pem: &[u8]) -> Vec<u8> {
    let body: String = std::str::from_utf8(pem)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    STANDARD.decode(body).unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// How often each `timed_*` function ran, for instruction counts per call.
/// (An increment at each one's start: a few instructions.)
static CALLS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
const CALL_NAMES: [&str; 8] = [
    "timed_bare_check",
    "timed_bare_check_p256",
    "timed_ours_verify",
    "timed_dpop_verifier_verify",
    "timed_bare_sign",
    "timed_bare_sign_huskarl",
    "timed_ours_proof",
    "timed_huskarl_proof",
];

fn count(row: usize) {
    CALLS[row].fetch_add(1, Ordering::Relaxed);
}

/// A replay store for dpop-verifier of the same design as our `MemoryReplayStore`: each `jti`
/// hash with its expiry, in a map and in a heap of expiries that is drained on each insert,
/// behind a mutex so that a server's workers can share it.
#[derive(Clone)]
struct PeerMemoryStore {
    state: Arc<Mutex<PeerState>>,
    clock: Arc<AtomicU64>,
}

#[derive(Default)]
struct PeerState {
    seen: HashMap<[u8; 32], u64>,
    expiries: BinaryHeap<Reverse<(u64, [u8; 32])>>,
}

#[async_trait::async_trait]
impl dpop_verifier::ReplayStore for PeerMemoryStore {
    async fn insert_once(
        &mut self,
        jti_hash: [u8; 32],
        _ctx: dpop_verifier::ReplayContext<'_>,
    ) -> Result<bool, dpop_verifier::DpopError> {
        let now = self.clock.load(Ordering::Relaxed);
        let mut state = self.state.lock().unwrap();
        let state = &mut *state;
        while let Some(Reverse((expiry, hash))) = state.expiries.peek().copied() {
            if expiry > now {
                break;
            }
            state.expiries.pop();
            state.seen.remove(&hash);
        }
        if state.seen.contains_key(&jti_hash) {
            return Ok(false);
        }
        state.seen.insert(jti_hash, now + WINDOW);
        state.expiries.push(Reverse((now + WINDOW, jti_hash)));
        Ok(true)
    }
}

#[inline(never)]
fn timed_bare_check(signature: &str, input: &str, key: &DecodingKey) -> bool {
    count(0);
    jsonwebtoken::crypto::verify(
        black_box(signature),
        input.as_bytes(),
        key,
        Algorithm::ES256,
    )
    .unwrap()
}

#[inline(never)]
fn timed_bare_check_p256(signature: &str, input: &str, key: &p256::ecdsa::VerifyingKey) -> bool {
    use p256::ecdsa::signature::Verifier as _;
    count(1);
    let bytes = URL_SAFE_NO_PAD.decode(black_box(signature)).unwrap();
    let signature = p256::ecdsa::Signature::from_slice(&bytes).unwrap();
    key.verify(input.as_bytes(), &signature).is_ok()
}

#[inline(never)]
fn timed_ours_verify(
    rt: &tokio::runtime::Runtime,
    verifier: &DpopVerifier,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<VerifiedProof, DpopError> {
    count(2);
    complete(rt, verifier.verify(&Method::GET, uri, headers, Some(TOKEN)))
}

#[inline(never)]
fn timed_dpop_verifier_verify(
    rt: &tokio::runtime::Runtime,
    verifier: &dpop_verifier::DpopVerifier,
    store: &mut PeerMemoryStore,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<dpop_verifier::VerifiedDpop, dpop_verifier::DpopError> {
    count(3);
    let proof = headers
        .get("dpop")
        .and_then(|v| v.to_str().ok())
        .ok_or(dpop_verifier::DpopError::MalformedJws)?;
    let htu = format!("{BASE}{}", uri.path());
    complete(
        rt,
        verifier.verify(store, proof, &htu, Method::GET.as_str(), Some(TOKEN)),
    )
}

fn headers(proof: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("dpop", HeaderValue::from_str(proof).unwrap());
    headers
}

fn verification(c: &mut Criterion) {
    tower_jwt_refresh::keys::install_crypto_provider();
    let rt = runtime();
    let _guard = rt.enter();
    let called = Uri::from_static(CALLED);
    let seen = Uri::from_static(SEEN);
    let key = DpopKey::from_pkcs8_pem(Algorithm::ES256, key_file("ec_private.pem")).unwrap();
    let proof = key
        .proof(&Method::GET, &called)
        .access_token(TOKEN)
        .sign()
        .unwrap();
    let (input, signature) = proof.rsplit_once('.').unwrap();

    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(key.public_jwk()).unwrap();
    let decoding = DecodingKey::from_jwk(&jwk).unwrap();
    assert!(timed_bare_check(signature, input, &decoding));
    c.bench_function("dpop_verify/ES256/bare_signature_check", |b| {
        b.iter(|| assert!(timed_bare_check(signature, input, &decoding)))
    });

    let point = {
        let jwk: serde_json::Value = serde_json::from_str(key.public_jwk()).unwrap();
        let b64 = |m: &str| URL_SAFE_NO_PAD.decode(jwk[m].as_str().unwrap()).unwrap();
        [vec![4], b64("x"), b64("y")].concat()
    };
    let p256_key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
    assert!(timed_bare_check_p256(signature, input, &p256_key));
    c.bench_function("dpop_verify/ES256/bare_signature_check_p256", |b| {
        b.iter(|| assert!(timed_bare_check_p256(signature, input, &p256_key)))
    });

    // The moved clock (see the module's docs), shared by our verifier and the peer's store.
    let now = Arc::new(AtomicU64::new(unix_now()));
    let made = AtomicU64::new(0);
    let tick = || {
        if made.fetch_add(1, Ordering::Relaxed) % 10_000 == 9_999 {
            now.fetch_add(61, Ordering::Relaxed);
        }
    };

    let ours = DpopVerifier::new(BASE).unwrap().clock(Clock::from_fn({
        let now = now.clone();
        move || now.load(Ordering::Relaxed)
    }));
    let fresh_ours = || {
        tick();
        let proof = key.proof(&Method::GET, &called).access_token(TOKEN);
        headers(&proof.issued_at(now.load(Ordering::Relaxed)).sign().unwrap())
    };
    let verified = timed_ours_verify(&rt, &ours, &seen, &fresh_ours()).unwrap();
    assert_eq!(verified.thumbprint(), key.thumbprint());
    c.bench_function("dpop_verify/ES256/ours_verify_memory_store", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let headers = fresh_ours();
                let start = Instant::now();
                let verified = timed_ours_verify(&rt, &ours, &seen, &headers);
                timed += start.elapsed();
                verified.unwrap();
            }
            timed
        })
    });

    let peer = dpop_verifier::DpopVerifier::new()
        .with_max_age_seconds(WINDOW as i64)
        .with_future_skew_seconds(10);
    let mut store = PeerMemoryStore {
        state: Arc::default(),
        clock: now.clone(),
    };
    let fresh_peer = || {
        tick();
        let proof = key.proof(&Method::GET, &called).access_token(TOKEN);
        headers(&proof.sign().unwrap())
    };
    let replayed = fresh_peer();
    let verified = timed_dpop_verifier_verify(&rt, &peer, &mut store, &seen, &replayed).unwrap();
    assert_eq!(verified.jkt, key.thumbprint().as_str());
    assert!(matches!(
        timed_dpop_verifier_verify(&rt, &peer, &mut store, &seen, &replayed),
        Err(dpop_verifier::DpopError::Replay)
    ));
    // Both verifiers refuse a proof whose signature is altered.
    let proof = key.proof(&Method::GET, &called).access_token(TOKEN);
    let proof = proof.issued_at(now.load(Ordering::Relaxed)).sign().unwrap();
    let (input, signature) = proof.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let altered = headers(&format!("{input}.{flipped}{}", &signature[1..]));
    assert!(matches!(
        timed_ours_verify(&rt, &ours, &seen, &altered),
        Err(DpopError::Signature)
    ));
    assert!(matches!(
        timed_dpop_verifier_verify(&rt, &peer, &mut store, &seen, &altered),
        Err(dpop_verifier::DpopError::InvalidSignature)
    ));
    c.bench_function("dpop_verify/ES256/dpop_verifier_memory_store", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let headers = fresh_peer();
                let start = Instant::now();
                let verified = timed_dpop_verifier_verify(&rt, &peer, &mut store, &seen, &headers);
                timed += start.elapsed();
                verified.unwrap();
            }
            timed
        })
    });
}

#[inline(never)]
fn timed_bare_sign(
    key: &aws_lc_rs::signature::EcdsaKeyPair,
    rng: &aws_lc_rs::rand::SystemRandom,
    input: &str,
) -> aws_lc_rs::signature::Signature {
    count(4);
    key.sign(rng, black_box(input).as_bytes()).unwrap()
}

#[inline(never)]
fn timed_bare_sign_huskarl(
    rt: &tokio::runtime::Runtime,
    signer: &dyn huskarl::core::crypto::signer::JwsSigner,
    input: &str,
) -> Vec<u8> {
    count(5);
    complete(rt, signer.sign(black_box(input).as_bytes())).unwrap()
}

#[inline(never)]
fn timed_ours_proof(key: &DpopKey, uri: &Uri) -> String {
    count(6);
    key.proof(&Method::GET, uri)
        .access_token(TOKEN)
        .sign()
        .unwrap()
}

#[inline(never)]
fn timed_huskarl_proof(
    rt: &tokio::runtime::Runtime,
    dpop: &dyn huskarl::core::dpop::ResourceServerDPoP,
    uri: &Uri,
    token: &huskarl::core::secrets::SecretString,
    jkt: &str,
) -> huskarl::core::secrets::SecretString {
    count(7);
    complete(rt, dpop.proof(&Method::GET, uri, token, jkt))
        .unwrap()
        .unwrap()
}

fn creation(c: &mut Criterion) {
    use huskarl::core::dpop::{AuthorizationServerDPoP as _, DPoP};
    use huskarl_crypto_native::asymmetric::signer::{AsymmetricAlgorithm, PrivateKey, pkcs8_pem};

    tower_jwt_refresh::keys::install_crypto_provider();
    let rt = runtime();
    let _guard = rt.enter();
    let called = Uri::from_static(CALLED);
    let seen = Uri::from_static(SEEN);
    let pem = key_file("ec_private.pem");
    let ours = DpopKey::from_pkcs8_pem(Algorithm::ES256, &pem).unwrap();

    let huskarl_key = PrivateKey::from_jwk(
        pkcs8_pem(
            std::str::from_utf8(&pem).unwrap(),
            AsymmetricAlgorithm::Es256,
            None,
        )
        .unwrap(),
    )
    .unwrap();
    let jkt = huskarl_key.as_private_jwk().public_jwk().thumbprint();
    assert_eq!(jkt, ours.thumbprint().as_str());
    let huskarl_dpop = DPoP::builder()
        .signer(huskarl_key.clone())
        .build()
        .to_resource_server_dpop();
    let token = huskarl::core::secrets::SecretString::new(TOKEN);

    // Each creator's proof passes both verifiers, with the token's hash as `ath`.
    let check = |proof: &str| {
        let verifier = DpopVerifier::new(BASE).unwrap();
        let verified = timed_ours_verify(&rt, &verifier, &seen, &headers(proof)).unwrap();
        assert_eq!(verified.thumbprint(), ours.thumbprint());
        let peer = dpop_verifier::DpopVerifier::new();
        let mut store = PeerMemoryStore {
            state: Arc::default(),
            clock: Arc::new(AtomicU64::new(unix_now())),
        };
        let verified =
            timed_dpop_verifier_verify(&rt, &peer, &mut store, &seen, &headers(proof)).unwrap();
        assert_eq!(verified.jkt, jkt);
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(proof.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        for claim in ["jti", "htm", "htu", "iat", "ath"] {
            assert!(claims.get(claim).is_some(), "{claim} missing in {claims}");
        }
    };
    let proof = timed_ours_proof(&ours, &called);
    check(&proof);
    let husk = timed_huskarl_proof(&rt, &*huskarl_dpop, &called, &token, &jkt);
    check(husk.expose_secret());

    let (input, _) = proof.rsplit_once('.').unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &pem_der(&pem),
    )
    .unwrap();
    c.bench_function("dpop_create/ES256/bare_signature", |b| {
        b.iter(|| timed_bare_sign(&pair, &rng, input))
    });

    let signer = complete(
        &rt,
        huskarl::core::crypto::signer::JwsSignerSelector::select_signer(&huskarl_key),
    );
    assert_eq!(signer.jws_algorithm(), "ES256");
    c.bench_function("dpop_create/ES256/bare_signature_huskarl_signer", |b| {
        b.iter(|| timed_bare_sign_huskarl(&rt, &*signer, input))
    });

    c.bench_function("dpop_create/ES256/ours_create_proof", |b| {
        b.iter(|| timed_ours_proof(&ours, &called))
    });

    c.bench_function("dpop_create/ES256/huskarl_create_proof", |b| {
        b.iter(|| timed_huskarl_proof(&rt, &*huskarl_dpop, &called, &token, &jkt))
    });
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = verification, creation }

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::var_os("DPOP_PEERS_CALLS").is_some() {
        for (name, calls) in CALL_NAMES.iter().zip(&CALLS) {
            eprintln!("calls {name} {}", calls.load(Ordering::Relaxed));
        }
    }
}
