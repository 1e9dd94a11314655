//! DPoP proofs (RFC 9449) end to end through the public API: our `DpopKey`'s proofs verify,
//! every check of §4.3 has a must-reject row, hostile input is a typed error, RFC 9449's own
//! example proofs verify at their time, replays are caught in memory and in Redis, and
//! Wycheproof's keys cross-check key loading and the private-key refusal.
//!
//! The Redis rows need `REDIS_URL` (`scripts/test` starts a server and sets it); without it
//! they are skipped with a notice, and under `CI=true` they fail. The Wycheproof rows read
//! `../shared/vectors/wycheproof/`, with the same rule.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Method, Uri};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower_jwt_refresh::Clock;
use tower_jwt_refresh::client::dpop::DpopKey;
use tower_jwt_refresh::keys::Thumbprint;
use tower_jwt_refresh::server::dpop::replay::MemoryReplayStore;
use tower_jwt_refresh::server::dpop::{DpopError, DpopNonces, DpopVerifier, VerifiedProof};

const NOW: u64 = 1_900_000_000;
const BASE: &str = "https://api.example.com";
const TOKEN: &str = "an-access-token";

fn verifier() -> DpopVerifier {
    DpopVerifier::new(BASE)
        .unwrap()
        .clock(Clock::from_fn(|| NOW))
}

fn headers(proofs: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for proof in proofs {
        headers.append("dpop", HeaderValue::from_str(proof).unwrap());
    }
    headers
}

/// Verifies `proof` as the proof of `GET /orders?page=2` with [`TOKEN`].
async fn verify(verifier: &DpopVerifier, proof: &str) -> Result<VerifiedProof, DpopError> {
    let uri = Uri::from_static("/orders?page=2");
    verifier
        .verify(&Method::GET, &uri, &headers(&[proof]), Some(TOKEN))
        .await
}

fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

fn fixture_key() -> DpopKey {
    DpopKey::from_pkcs8_pem(Algorithm::ES256, support::key_file("ec_private.pem")).unwrap()
}

fn fixture_jwk() -> Value {
    serde_json::from_str(fixture_key().public_jwk()).unwrap()
}

fn ed_jwk() -> Value {
    let key = DpopKey::from_pkcs8_pem(Algorithm::EdDSA, support::key_file("ed_private.pem"));
    serde_json::from_str(key.unwrap().public_jwk()).unwrap()
}

static JTI: AtomicU64 = AtomicU64::new(0);

fn good_header() -> Value {
    json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": fixture_jwk()})
}

fn good_claims() -> Value {
    json!({
        "jti": format!("jti-{}", JTI.fetch_add(1, Ordering::Relaxed)),
        "htm": "GET",
        "htu": "https://api.example.com/orders",
        "iat": NOW,
        "ath": ath(TOKEN),
    })
}

/// Signs raw JSON texts (so duplicates and odd spellings survive) with `key` under `alg`.
fn sign_raw(alg: Algorithm, key: &EncodingKey, header: &str, claims: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    tower_jwt_refresh::keys::install_crypto_provider();
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

/// Signs with the ES256 fixture key, whose public half is [`fixture_jwk`].
fn sign(header: &Value, claims: &Value) -> String {
    let alg = match header["alg"].as_str() {
        Some("EdDSA" | "Ed25519") => Algorithm::EdDSA,
        Some("RS256") => Algorithm::RS256,
        Some("HS256") => Algorithm::HS256,
        _ => Algorithm::ES256,
    };
    sign_raw(
        alg,
        &support::encoding_key(alg),
        &header.to_string(),
        &claims.to_string(),
    )
}

#[tokio::test]
async fn our_proofs_verify_and_name_their_key() {
    for alg in [Algorithm::ES256, Algorithm::EdDSA] {
        let key = DpopKey::generate_with(alg).unwrap();
        let called = Uri::from_static("https://API.example.com:443/orders?page=2#top");
        let proof = key
            .proof(&Method::GET, &called)
            .access_token(TOKEN)
            .issued_at(NOW)
            .sign()
            .unwrap();
        let verified = verify(&verifier(), &proof).await.unwrap();
        assert_eq!(verified.thumbprint(), key.thumbprint());
        assert_eq!(verified.algorithm(), alg);
        assert_eq!(verified.issued_at(), NOW);
        verified.check_binding(key.thumbprint().as_str()).unwrap();
        assert!(matches!(
            verified.check_binding(fixture_key().thumbprint().as_str()),
            Err(DpopError::KeyMismatch)
        ));
    }
}

/// One row per check: a mutation of a valid proof, and the error it must give.
#[tokio::test]
async fn every_check_has_a_must_reject_row() {
    type Mutation = fn(&mut Value, &mut Value);
    let rows: &[(&str, Mutation, &str)] = &[
        ("valid", |_, _| {}, "ok"),
        (
            "typ missing",
            |h, _| drop(h.as_object_mut().unwrap().remove("typ")),
            "Type",
        ),
        ("typ jwt", |h, _| h["typ"] = json!("jwt"), "Type"),
        ("typ at+jwt", |h, _| h["typ"] = json!("at+jwt"), "Type"),
        (
            "typ not a string",
            |h, _| h["typ"] = json!(["dpop+jwt"]),
            "Type",
        ),
        ("alg none", |h, _| h["alg"] = json!("none"), "Algorithm"),
        (
            "alg lower case",
            |h, _| h["alg"] = json!("es256"),
            "Algorithm",
        ),
        ("alg unknown", |h, _| h["alg"] = json!("ES512"), "Algorithm"),
        (
            "alg missing",
            |h, _| drop(h.as_object_mut().unwrap().remove("alg")),
            "Algorithm",
        ),
        (
            "HS256 with an oct key",
            |h, _| {
                h["alg"] = json!("HS256");
                h["jwk"] = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(support::SECRET)});
            },
            "Algorithm",
        ),
        (
            "jwk missing",
            |h, _| drop(h.as_object_mut().unwrap().remove("jwk")),
            "InvalidKey",
        ),
        ("jwk a string", |h, _| h["jwk"] = json!("key"), "InvalidKey"),
        (
            "jwk with d",
            |h, _| h["jwk"]["d"] = json!("seozKmyNFtJQGiVOgU43SNqfB0jHoUE7mCB5ZgDejpc"),
            "PrivateKey",
        ),
        (
            "jwk with d null",
            |h, _| h["jwk"]["d"] = Value::Null,
            "PrivateKey",
        ),
        (
            "jwk oct",
            |h, _| h["jwk"] = json!({"kty": "oct", "k": "AAAA"}),
            "PrivateKey",
        ),
        (
            "jwk of another type than alg",
            |h, _| h["alg"] = json!("EdDSA"),
            "InvalidKey",
        ),
        (
            "alg Ed25519 (RFC 9864) with an Ed25519 key",
            |h, _| {
                h["alg"] = json!("Ed25519");
                h["jwk"] = ed_jwk();
            },
            "ok",
        ),
        (
            "alg Ed25519 with an EC key",
            |h, _| h["alg"] = json!("Ed25519"),
            "InvalidKey",
        ),
        (
            "jwk alg differs",
            |h, _| h["jwk"]["alg"] = json!("ES384"),
            "InvalidKey",
        ),
        (
            "jwk use enc",
            |h, _| h["jwk"]["use"] = json!("enc"),
            "InvalidKey",
        ),
        (
            "jwk point off the curve",
            |h, _| h["jwk"]["y"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32])),
            "InvalidKey",
        ),
        (
            "jwk of another key",
            |h, _| {
                h["jwk"] = serde_json::from_str(DpopKey::generate().unwrap().public_jwk()).unwrap();
            },
            "Signature",
        ),
        ("crit", |h, _| h["crit"] = json!(["exp"]), "Malformed"),
        (
            "jti missing",
            |_, c| drop(c.as_object_mut().unwrap().remove("jti")),
            "MissingClaim(\"jti\")",
        ),
        (
            "jti empty",
            |_, c| c["jti"] = json!(""),
            "MissingClaim(\"jti\")",
        ),
        ("jti a number", |_, c| c["jti"] = json!(7), "Malformed"),
        (
            "htm missing",
            |_, c| drop(c.as_object_mut().unwrap().remove("htm")),
            "MissingClaim(\"htm\")",
        ),
        (
            "htu missing",
            |_, c| drop(c.as_object_mut().unwrap().remove("htu")),
            "MissingClaim(\"htu\")",
        ),
        (
            "iat missing",
            |_, c| drop(c.as_object_mut().unwrap().remove("iat")),
            "MissingClaim(\"iat\")",
        ),
        (
            "iat a string",
            |_, c| c["iat"] = json!(NOW.to_string()),
            "Malformed",
        ),
        ("iat negative", |_, c| c["iat"] = json!(-1), "Malformed"),
        ("htm POST", |_, c| c["htm"] = json!("POST"), "Method"),
        ("htm lower case", |_, c| c["htm"] = json!("get"), "Method"),
        (
            "htu another host",
            |_, c| c["htu"] = json!("https://evil.example.com/orders"),
            "Uri",
        ),
        (
            "htu another scheme",
            |_, c| c["htu"] = json!("http://api.example.com/orders"),
            "Uri",
        ),
        (
            "htu another port",
            |_, c| c["htu"] = json!("https://api.example.com:8443/orders"),
            "Uri",
        ),
        (
            "htu another path",
            |_, c| c["htu"] = json!("https://api.example.com/orders/1"),
            "Uri",
        ),
        ("htu relative", |_, c| c["htu"] = json!("/orders"), "Uri"),
        (
            "htu with user info",
            |_, c| c["htu"] = json!("https://u@api.example.com/orders"),
            "Uri",
        ),
        (
            "htu normalised alike",
            |_, c| c["htu"] = json!("HTTPS://Api.Example.com:443/x/../%6Frders?other#frag"),
            "ok",
        ),
        (
            "ath missing",
            |_, c| drop(c.as_object_mut().unwrap().remove("ath")),
            "MissingClaim(\"ath\")",
        ),
        (
            "ath of another token",
            |_, c| c["ath"] = json!(ath("another token")),
            "AccessTokenHash",
        ),
        (
            "ath the token itself",
            |_, c| c["ath"] = json!(TOKEN),
            "AccessTokenHash",
        ),
        ("iat 60 s old", |_, c| c["iat"] = json!(NOW - 60), "ok"),
        ("iat 61 s old", |_, c| c["iat"] = json!(NOW - 61), "Stale"),
        ("iat 10 s ahead", |_, c| c["iat"] = json!(NOW + 10), "ok"),
        (
            "iat 11 s ahead",
            |_, c| c["iat"] = json!(NOW + 11),
            "FromTheFuture",
        ),
        (
            "iat with a fraction",
            |_, c| c["iat"] = json!(NOW as f64 + 0.5),
            "ok",
        ),
        (
            "nonce when none is required",
            |_, c| c["nonce"] = json!("anything"),
            "ok",
        ),
    ];
    let verifier = verifier();
    let mut failures = Vec::new();
    for (name, mutate, want) in rows {
        let (mut header, mut claims) = (good_header(), good_claims());
        mutate(&mut header, &mut claims);
        let got = match verify(&verifier, &sign(&header, &claims)).await {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("{e:?}"),
        };
        if got != *want {
            failures.push(format!("{name}: want {want}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A forged EdDSA proof: the `jwk` is Ed25519's identity point, the signature `R` the
/// identity and `S` zero, which an unchecked verifier takes for any message. The key is of
/// small order and refused, so the forgery proves nothing.
#[tokio::test]
async fn an_ed25519_key_of_small_order_is_refused_and_its_forgery_with_it() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    for x in [identity, [0u8; 32]] {
        let header = json!({
            "typ": "dpop+jwt",
            "alg": "EdDSA",
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(x)},
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(good_claims().to_string())
        );
        let mut signature = [0u8; 64];
        signature[0] = 1; // R: the identity; S: zero.
        let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
        let refused = verify(&verifier(), &forged).await;
        assert!(refused.is_err(), "a forged proof was accepted: {refused:?}");
    }
}

#[tokio::test]
async fn algorithms_outside_the_allow_list_and_symmetric_ones_are_refused() {
    let rs = {
        tower_jwt_refresh::keys::install_crypto_provider();
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
            &support::encoding_key(Algorithm::RS256),
            Algorithm::RS256,
        )
        .unwrap();
        let mut jwk = serde_json::to_value(jwk).unwrap();
        jwk.as_object_mut().unwrap().remove("alg");
        sign(
            &json!({"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}),
            &good_claims(),
        )
    };
    // RS256 is on the default list...
    assert!(verify(&verifier(), &rs).await.is_ok());
    // ...and refused by a list without it.
    let es_only = verifier().algorithms([Algorithm::ES256]);
    assert!(matches!(
        verify(&es_only, &rs).await,
        Err(DpopError::Algorithm)
    ));
    // HS256 stays refused even when listed.
    let careless = verifier().algorithms([Algorithm::HS256, Algorithm::ES256]);
    let hs = sign(
        &json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": URL_SAFE_NO_PAD.encode(support::SECRET)}}),
        &good_claims(),
    );
    assert!(matches!(
        verify(&careless, &hs).await,
        Err(DpopError::Algorithm)
    ));
    // An unsigned proof.
    let none = {
        let h = URL_SAFE_NO_PAD
            .encode(json!({"typ": "dpop+jwt", "alg": "none", "jwk": fixture_jwk()}).to_string());
        let c = URL_SAFE_NO_PAD.encode(good_claims().to_string());
        format!("{h}.{c}.")
    };
    assert!(matches!(
        verify(&careless, &none).await,
        Err(DpopError::Algorithm)
    ));
    assert_eq!(es_only.allowed_algorithms(), &[Algorithm::ES256]);
}

#[tokio::test]
async fn hostile_input_is_a_typed_error_never_a_panic() {
    let v = verifier();
    let uri = Uri::from_static("/orders");
    let run = |headers: HeaderMap| {
        let v = v.clone();
        let uri = uri.clone();
        async move { v.verify(&Method::GET, &uri, &headers, Some(TOKEN)).await }
    };
    let good = sign(&good_header(), &good_claims());
    let cases: Vec<(&str, HeaderMap, &str)> = vec![
        ("no header", HeaderMap::new(), "Missing"),
        ("two headers", headers(&[&good, &good]), "Multiple"),
        (
            "over the cap",
            headers(&[&"a".repeat(8 * 1024 + 1)]),
            "TooLarge",
        ),
        ("two segments", headers(&["e30.e30"]), "Malformed"),
        (
            "four segments",
            headers(&[&format!("{good}.e30")]),
            "Malformed",
        ),
        ("empty", headers(&[""]), "Malformed"),
        ("bad base64", headers(&["e3!.e30.AA"]), "Malformed"),
        ("padded base64", headers(&["e30=.e30.AA"]), "Malformed"),
        (
            "two proofs in one value",
            headers(&[&format!("{good},{good}")]),
            "Malformed",
        ),
        (
            "header an array",
            headers(&[&format!("{}.e30.AA", URL_SAFE_NO_PAD.encode("[1]"))]),
            "Malformed",
        ),
        (
            "header not json",
            headers(&[&format!("{}.e30.AA", URL_SAFE_NO_PAD.encode("{"))]),
            "Malformed",
        ),
    ];
    let mut failures = Vec::new();
    for (name, headers, want) in cases {
        let got = match run(headers).await {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("{e:?}"),
        };
        if got != want {
            failures.push(format!("{name}: want {want}, got {got}"));
        }
    }
    // Bytes outside visible ASCII.
    let mut odd = HeaderMap::new();
    odd.insert("dpop", HeaderValue::from_bytes(b"e30.e30.\xff").unwrap());
    assert!(matches!(run(odd).await, Err(DpopError::Malformed)));
    // Deep nesting, within the size cap.
    let deep = format!(
        r#"{{"typ":"dpop+jwt","x":{}{}}}"#,
        "[".repeat(3000),
        "]".repeat(3000)
    );
    let deep = format!("{}.e30.AA", URL_SAFE_NO_PAD.encode(deep));
    assert!(matches!(
        run(headers(&[&deep])).await,
        Err(DpopError::Malformed)
    ));
    // Duplicate members, however spelled, in the header, the jwk or the claims.
    let jwk = fixture_key().public_jwk().to_owned();
    let claims = good_claims().to_string();
    let raw = [
        (
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk},"alg":"ES256"}}"#),
            claims.clone(),
        ),
        (
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk},"\u0061lg":"ES256"}}"#),
            claims.clone(),
        ),
        (
            format!(
                r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{}}}"#,
                jwk.replace(r#""kty""#, r#""kty":"EC","kty""#)
            ),
            claims.clone(),
        ),
        (
            good_header().to_string(),
            claims.replace(r#""htm":"GET""#, r#""htm":"GET","htm":"POST""#),
        ),
    ];
    for (header, claims) in raw {
        let proof = sign_raw(
            Algorithm::ES256,
            &support::encoding_key(Algorithm::ES256),
            &header,
            &claims,
        );
        let got = run(headers(&[&proof])).await;
        assert!(
            matches!(got, Err(DpopError::Malformed)),
            "{header} {claims}: {got:?}"
        );
    }
    // A proof whose signature was cut or altered.
    let cut = &good[..good.len() - 4];
    assert!(matches!(
        run(headers(&[cut])).await,
        Err(DpopError::Signature | DpopError::Malformed)
    ));
    let mut altered = good.clone().into_bytes();
    let last = altered.len() - 10;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    assert!(matches!(
        run(headers(&[&altered])).await,
        Err(DpopError::Signature)
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn the_cap_is_configurable() {
    let proof = sign(&good_header(), &good_claims());
    let tight = verifier().max_proof_len(proof.len() - 1);
    assert!(matches!(
        verify(&tight, &proof).await,
        Err(DpopError::TooLarge)
    ));
    let exact = verifier().max_proof_len(proof.len());
    assert!(verify(&exact, &proof).await.is_ok());
}

#[tokio::test]
async fn a_proof_is_used_once_while_its_window_lasts() {
    let now = Arc::new(AtomicU64::new(NOW));
    let clock = Clock::from_fn({
        let now = now.clone();
        move || now.load(Ordering::Relaxed)
    });
    let store = MemoryReplayStore::new();
    let a = verifier().clock(clock.clone()).replay_store(store.clone());
    let b = verifier().clock(clock).replay_store(store.clone());
    let proof = sign(&good_header(), &good_claims());
    assert!(verify(&a, &proof).await.is_ok());
    assert!(matches!(verify(&a, &proof).await, Err(DpopError::Replayed)));
    // Another verifier on the same store sees it too.
    assert!(matches!(verify(&b, &proof).await, Err(DpopError::Replayed)));
    // A verifier with its own store does not: one store per deployment.
    assert!(verify(&verifier(), &proof).await.is_ok());
    // At the end of the window the proof is still a replay; after it, stale.
    now.store(NOW + 60, Ordering::Relaxed);
    assert!(matches!(verify(&a, &proof).await, Err(DpopError::Replayed)));
    now.store(NOW + 61, Ordering::Relaxed);
    assert!(matches!(verify(&a, &proof).await, Err(DpopError::Stale)));
    // A refused proof does not take a place in the store.
    let before = store.len();
    let mut claims = good_claims();
    claims["htm"] = json!("POST");
    let _ = verify(&a, &sign(&good_header(), &claims)).await;
    assert_eq!(store.len(), before);
}

#[tokio::test]
async fn a_full_replay_store_fails_closed() {
    let v = verifier().replay_store(MemoryReplayStore::with_capacity(1));
    assert!(
        verify(&v, &sign(&good_header(), &good_claims()))
            .await
            .is_ok()
    );
    let err = verify(&v, &sign(&good_header(), &good_claims()))
        .await
        .unwrap_err();
    assert!(matches!(err, DpopError::Store(_)), "{err:?}");
    assert_eq!(err.error_code(), "temporarily_unavailable");
}

#[tokio::test]
async fn server_nonces() {
    let now = Arc::new(AtomicU64::new(NOW));
    let clock = Clock::from_fn({
        let now = now.clone();
        move || now.load(Ordering::Relaxed)
    });
    let nonces = DpopNonces::new([3u8; 32])
        .unwrap()
        .lifetime(Duration::from_secs(100));
    let v = verifier().clock(clock).nonces(nonces.clone());
    let current = v.current_nonce().unwrap();
    assert_eq!(current, nonces.nonce_at(NOW));
    let with = |nonce: Option<&str>| {
        let mut claims = good_claims();
        claims["iat"] = json!(now.load(Ordering::Relaxed));
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        sign(&good_header(), &claims)
    };
    let err = verify(&v, &with(None)).await.unwrap_err();
    assert!(matches!(err, DpopError::UseNonce));
    assert_eq!(err.error_code(), "use_dpop_nonce");
    assert!(matches!(
        verify(&v, &with(Some("made up"))).await,
        Err(DpopError::UseNonce)
    ));
    let other = DpopNonces::new([4u8; 32]).unwrap().nonce_at(NOW);
    assert!(matches!(
        verify(&v, &with(Some(&other))).await,
        Err(DpopError::UseNonce)
    ));
    assert!(verify(&v, &with(Some(&current))).await.is_ok());
    // The next window still takes it; the one after does not.
    now.store(NOW + 100, Ordering::Relaxed);
    assert!(verify(&v, &with(Some(&current))).await.is_ok());
    now.store(NOW + 200, Ordering::Relaxed);
    assert!(matches!(
        verify(&v, &with(Some(&current))).await,
        Err(DpopError::UseNonce)
    ));
    let fresh = v.current_nonce().unwrap();
    assert_ne!(fresh, current);
    assert!(verify(&v, &with(Some(&fresh))).await.is_ok());
    assert_eq!(verifier().current_nonce(), None);
}

#[tokio::test]
async fn the_base_url_carries_the_external_scheme_host_and_prefix() {
    // Behind a proxy that terminates TLS and strips `/api`.
    let v = DpopVerifier::new("https://example.com/api/")
        .unwrap()
        .clock(Clock::from_fn(|| NOW));
    let key = fixture_key();
    let called = Uri::from_static("https://example.com/api/orders");
    let seen = Uri::from_static("http://10.0.0.7:8080/orders");
    let proof = key
        .proof(&Method::GET, &called)
        .issued_at(NOW)
        .sign()
        .unwrap();
    let ok = v
        .verify(&Method::GET, &seen, &headers(&[&proof]), None)
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    // The request's own authority is never what is compared.
    let direct = Uri::from_static("http://10.0.0.7:8080/orders");
    let proof = key
        .proof(&Method::GET, &direct)
        .issued_at(NOW)
        .sign()
        .unwrap();
    let err = v
        .verify(&Method::GET, &seen, &headers(&[&proof]), None)
        .await;
    assert!(matches!(err, Err(DpopError::Uri)), "{err:?}");
    for bad in [
        "/api",
        "ftp://example.com",
        "https://example.com/?q",
        "https://example.com/#f",
        "https://u@example.com",
    ] {
        assert!(DpopVerifier::new(bad).is_err(), "{bad}");
    }
}

/// RFC 9449 §4.1 (Figure 3): a proof for a token request, made at 1562262616.
const RFC_TOKEN_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";

/// RFC 9449 §7.1 (Figure 13): a proof for a resource request with an access token, made at
/// 1562262618.
const RFC_RESOURCE_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA";

/// RFC 9449 §7.1's access token, and the thumbprint of §6.1 (Figure 13's `cnf.jkt`).
const RFC_ACCESS_TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
const RFC_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

#[tokio::test]
async fn rfc_9449_example_proofs_verify_at_their_time() {
    let at = |base: &str, now: u64| {
        DpopVerifier::new(base)
            .unwrap()
            .clock(Clock::from_fn(move || now))
    };
    let token = at("https://server.example.com", 1_562_262_616);
    let uri = Uri::from_static("/token");
    let verified = token
        .verify(&Method::POST, &uri, &headers(&[RFC_TOKEN_PROOF]), None)
        .await
        .unwrap();
    assert_eq!(verified.thumbprint().as_str(), RFC_JKT);
    assert_eq!(verified.algorithm(), Algorithm::ES256);

    let resource = at("https://resource.example.org", 1_562_262_618);
    let uri = Uri::from_static("/protectedresource");
    let proof = headers(&[RFC_RESOURCE_PROOF]);
    let verified = resource
        .verify(&Method::GET, &uri, &proof, Some(RFC_ACCESS_TOKEN))
        .await
        .unwrap();
    verified.check_binding(RFC_JKT).unwrap();
    // The same proof: a replay, with another token, too late, or at another URI.
    let again = resource
        .verify(&Method::GET, &uri, &proof, Some(RFC_ACCESS_TOKEN))
        .await;
    assert!(matches!(again, Err(DpopError::Replayed)));
    let fresh = || at("https://resource.example.org", 1_562_262_618);
    let other_token = fresh()
        .verify(&Method::GET, &uri, &proof, Some("another"))
        .await;
    assert!(matches!(other_token, Err(DpopError::AccessTokenHash)));
    let late = at("https://resource.example.org", 1_562_262_618 + 61)
        .verify(&Method::GET, &uri, &proof, Some(RFC_ACCESS_TOKEN))
        .await;
    assert!(matches!(late, Err(DpopError::Stale)));
    let elsewhere = fresh()
        .verify(
            &Method::GET,
            &Uri::from_static("/other"),
            &proof,
            Some(RFC_ACCESS_TOKEN),
        )
        .await;
    assert!(matches!(elsewhere, Err(DpopError::Uri)));
    assert_eq!(Thumbprint::of_jwk(r#"{"kty":"EC","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA","crv":"P-256"}"#).unwrap().as_str(), RFC_JKT);
}

#[test]
fn verifiers_keys_stores_and_futures_cross_threads() {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync_clone::<DpopVerifier>();
    send_sync_clone::<DpopKey>();
    send_sync_clone::<MemoryReplayStore>();
    send_sync_clone::<DpopNonces>();
    send_sync_clone::<VerifiedProof>();
    send::<tower_jwt_refresh::server::dpop::future::VerifyFuture>();
    send::<DpopError>();
}

#[tokio::test]
async fn each_proof_is_signed_afresh() {
    // Same key, request and time: a fresh `jti`, and a fresh (randomized) ES256 signature.
    let key = fixture_key();
    let uri = Uri::from_static("https://api.example.com/orders");
    let a = key.proof(&Method::GET, &uri).issued_at(NOW).sign().unwrap();
    let b = key.proof(&Method::GET, &uri).issued_at(NOW).sign().unwrap();
    assert_ne!(a, b);
    for proof in [a, b] {
        let got = verifier()
            .verify(
                &Method::GET,
                &Uri::from_static("/orders"),
                &headers(&[&proof]),
                None,
            )
            .await;
        assert!(got.is_ok(), "{got:?}");
    }
}

#[cfg(feature = "redis")]
mod on_redis {
    use super::*;
    use tower_jwt_refresh::server::dpop::replay::RedisReplayStore;

    #[tokio::test]
    async fn a_replay_is_caught_across_two_instances_sharing_redis() {
        let Some(url) = support::redis_url() else {
            return;
        };
        // A prefix of its own per run, so reruns on one Redis do not see each other.
        let prefix = format!("dpop-test-{}", DpopKey::generate().unwrap().thumbprint());
        let store = || async {
            RedisReplayStore::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("REDIS_URL={url} is set but unreachable: {e}"))
                .prefix(prefix.clone())
        };
        let a = verifier().replay_store(store().await);
        let b = verifier().replay_store(store().await);
        let proof = sign(&good_header(), &good_claims());
        assert!(verify(&a, &proof).await.is_ok());
        assert!(matches!(verify(&b, &proof).await, Err(DpopError::Replayed)));
        assert!(matches!(verify(&a, &proof).await, Err(DpopError::Replayed)));
        // Concurrent first uses of one proof: exactly one wins.
        let proof = sign(&good_header(), &good_claims());
        let (x, y) = tokio::join!(verify(&a, &proof), verify(&b, &proof));
        assert_eq!(
            usize::from(x.is_ok()) + usize::from(y.is_ok()),
            1,
            "{x:?} {y:?}"
        );
        // The key expires with the window: Redis holds it for `iat + 61 - now` seconds.
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:dpop:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(keys.len(), 2);
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&keys[0])
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((59_000..=61_000).contains(&ttl), "{ttl}");
    }
}

/// Wycheproof's JWS keys: every private JWK is refused as a proof's `jwk`, its thumbprint is
/// its public half's, and a `DpopKey` loaded from each P-256 private scalar derives the
/// public key Wycheproof gives and makes proofs that verify under it.
#[tokio::test]
async fn wycheproof_keys() {
    const VECTORS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/vectors/wycheproof/json_web_signature_test.json"
    );
    let text = match std::fs::read_to_string(VECTORS) {
        Ok(text) => text,
        Err(e) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("CI=true but the Wycheproof vectors are unreadable at {VECTORS}: {e}")
        }
        Err(e) => {
            eprintln!("notice: skipping Wycheproof keys, {VECTORS} is unreadable: {e}");
            return;
        }
    };
    let file: Value = serde_json::from_str(&text).unwrap();
    let (mut private_refused, mut p256_loaded) = (0, 0);
    for group in file["testGroups"].as_array().unwrap() {
        let Some(private) = group.get("private") else {
            continue;
        };
        let kty = private["kty"].as_str().unwrap();
        // As a proof's key: refused for holding private members, before anything else.
        let mut header = good_header();
        header["jwk"] = private.clone();
        let got = verify(&verifier(), &sign(&header, &good_claims())).await;
        assert!(matches!(got, Err(DpopError::PrivateKey)), "{kty}: {got:?}");
        private_refused += 1;
        let Some(public) = group.get("public") else {
            continue;
        };
        let supported = !matches!(private["crv"].as_str(), Some("P-521"));
        if kty == "oct" || !supported {
            assert!(Thumbprint::of_jwk(private.to_string()).is_err());
            continue;
        }
        let from_private = Thumbprint::of_jwk(private.to_string()).unwrap();
        assert_eq!(
            from_private,
            Thumbprint::of_jwk(public.to_string()).unwrap()
        );
        if private["crv"] == "P-256" {
            let d = URL_SAFE_NO_PAD
                .decode(private["d"].as_str().unwrap())
                .unwrap();
            let key = DpopKey::from_pkcs8_der(Algorithm::ES256, p256_pkcs8(&d)).unwrap();
            assert_eq!(*key.thumbprint(), from_private);
            let uri = Uri::from_static("https://api.example.com/orders");
            let proof = key
                .proof(&Method::GET, &uri)
                .access_token(TOKEN)
                .issued_at(NOW)
                .sign()
                .unwrap();
            let verified = verify(&verifier(), &proof).await.unwrap();
            assert_eq!(*verified.thumbprint(), from_private);
            p256_loaded += 1;
        }
    }
    assert!(
        private_refused >= 20 && p256_loaded >= 4,
        "{private_refused} {p256_loaded}"
    );
}

/// A P-256 private scalar as PKCS#8 (RFC 5208 around RFC 5915, without the public key).
fn p256_pkcs8(d: &[u8]) -> Vec<u8> {
    assert_eq!(d.len(), 32);
    let mut der = vec![
        0x30, 0x41, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
        0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x27, 0x30, 0x25,
        0x02, 0x01, 0x01, 0x04, 0x20,
    ];
    der.extend_from_slice(d);
    der
}
