//! DPoP (RFC 9449) in the server layer over real sockets: a bound token with its proof, and
//! each must-reject row that concerns the layer (the proof's own checks are rows of
//! `tests/dpop.rs`, at the verifier).
//!
//! The Redis row needs `REDIS_URL` (`scripts/test` starts a server and sets it); without it
//! it is skipped with a notice, and under `CI=true` it fails.

mod support;

use std::net::SocketAddr;

use http::{Method, Request, Uri};
use http_body_util::Full;
use serde_json::json;
use support::*;
use tower_jwt_refresh::BoxError;
use tower_jwt_refresh::client::dpop::DpopKey;
use tower_jwt_refresh::server::JwtAuthLayer;
use tower_jwt_refresh::server::dpop::replay::{ReplayCheck, ReplayKey, ReplayStore};
use tower_jwt_refresh::server::dpop::{DpopMode, DpopNonces, DpopVerifier};

/// The URL clients address the API by; the proofs' `htu` is under it, whatever the port.
const BASE: &str = "http://api.test";

fn verifier() -> DpopVerifier {
    DpopVerifier::new(BASE).unwrap()
}

fn layer() -> JwtAuthLayer {
    JwtAuthLayer::new(all_keys())
        .issuer("https://issuer.test")
        .audience("api")
}

async fn serve_layer(layer: JwtAuthLayer) -> SocketAddr {
    serve(app(layer)).await
}

/// An access token bound to `key` (`cnf.jkt` its thumbprint).
fn bound_token(key: &DpopKey) -> String {
    let mut claims = good_claims();
    claims["cnf"] = json!({ "jkt": key.thumbprint().as_str() });
    sign(at_header("ES256", "es"), claims)
}

fn unbound_token() -> String {
    sign(at_header("ES256", "es"), good_claims())
}

/// A proof by `key` for `method` on `/`, over `token`, with `nonce` if any.
fn proof(key: &DpopKey, method: &Method, token: &str, nonce: Option<&str>) -> String {
    let uri = Uri::from_static("http://api.test/");
    let proof = key.proof(method, &uri).access_token(token);
    match nonce {
        Some(nonce) => proof.nonce(nonce).sign().unwrap(),
        None => proof.sign().unwrap(),
    }
}

/// GET `/` with `Authorization: DPoP <token>` and these `DPoP` headers.
async fn get_dpop(addr: SocketAddr, token: &str, proofs: &[&str]) -> Reply {
    let mut req =
        Request::get(format!("http://{addr}/")).header("authorization", format!("DPoP {token}"));
    for proof in proofs {
        req = req.header("dpop", *proof);
    }
    send(&client(), req.body(Full::default()).unwrap()).await
}

fn challenges(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn assert_dpop_refusal(reply: &Reply, error: &str, description: &str) {
    assert_eq!(reply.status, 401, "{}", reply.body);
    let challenge = challenges(reply);
    assert_eq!(challenge.len(), 1, "{challenge:?}");
    assert!(
        challenge[0].starts_with(&format!(
            "DPoP realm=\"api\", error=\"{error}\", error_description=\"{description}\""
        )),
        "{challenge:?}"
    );
    assert!(
        challenge[0].ends_with("algs=\"ES256 ES384 EdDSA PS256 PS384 PS512 RS256 RS384 RS512\""),
        "{challenge:?}"
    );
}

#[tokio::test]
async fn a_bound_token_passes_with_a_fresh_proof_on_every_request() {
    let key = DpopKey::generate().unwrap();
    let addr = serve_layer(layer().dpop(verifier(), DpopMode::Allowed)).await;
    let token = bound_token(&key);
    // The second request is an access-token cache hit; its proof is checked all the same.
    for _ in 0..2 {
        let reply = get_dpop(addr, &token, &[&proof(&key, &Method::GET, &token, None)]).await;
        assert_eq!(
            (reply.status.as_u16(), reply.body.as_str()),
            (200, "hello alice")
        );
    }
    // Bearer tokens still pass in this mode.
    let reply = get_bearer(&client(), addr, &unbound_token()).await;
    assert_eq!(
        (reply.status.as_u16(), reply.body.as_str()),
        (200, "hello alice")
    );
}

#[tokio::test]
async fn a_reused_proof_is_refused_on_a_cache_hit() {
    let key = DpopKey::generate().unwrap();
    let addr = serve_layer(layer().dpop(verifier(), DpopMode::Allowed)).await;
    let token = bound_token(&key);
    let once = proof(&key, &Method::GET, &token, None);
    assert_eq!(get_dpop(addr, &token, &[&once]).await.status, 200);
    let again = get_dpop(addr, &token, &[&once]).await;
    assert_dpop_refusal(&again, "invalid_dpop_proof", "dpop proof replayed");
}

#[tokio::test]
async fn proof_rows_the_layer_must_refuse() {
    let key = DpopKey::generate().unwrap();
    let other = DpopKey::generate().unwrap();
    let addr = serve_layer(layer().dpop(verifier(), DpopMode::Allowed)).await;
    let token = bound_token(&key);
    let rows: [(&str, Vec<String>, &str); 5] = [
        ("missing proof", vec![], "dpop proof missing"),
        (
            "two DPoP headers",
            vec![
                proof(&key, &Method::GET, &token, None),
                proof(&key, &Method::GET, &token, None),
            ],
            "more than one dpop proof",
        ),
        (
            "cnf mismatch",
            vec![proof(&other, &Method::GET, &token, None)],
            "dpop proof key does not match the token binding",
        ),
        (
            "wrong htm",
            vec![proof(&key, &Method::POST, &token, None)],
            "dpop proof htm does not match the request",
        ),
        (
            "ath of another token",
            vec![proof(&key, &Method::GET, &unbound_token(), None)],
            "dpop proof ath does not match the access token",
        ),
    ];
    for (row, proofs, description) in rows {
        let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
        let reply = get_dpop(addr, &token, &proofs).await;
        assert_eq!(reply.status, 401, "{row}");
        assert_dpop_refusal(&reply, "invalid_dpop_proof", description);
    }
}

#[tokio::test]
async fn a_bound_token_as_bearer_is_refused_with_or_without_dpop_configured() {
    let key = DpopKey::generate().unwrap();
    let token = bound_token(&key);
    for layer in [layer(), layer().dpop(verifier(), DpopMode::Allowed)] {
        let addr = serve_layer(layer).await;
        // Twice: the second is a cache hit on the hot path.
        for _ in 0..2 {
            let reply = get_bearer(&client(), addr, &token).await;
            assert_eq!(reply.status, 401);
            assert_eq!(reply.error(), "invalid_token");
            assert_eq!(
                reply.description(),
                "token is dpop-bound: present it with a dpop proof"
            );
            assert!(challenges(&reply)[0].starts_with("DPoP realm=\"api\""));
        }
    }
}

#[tokio::test]
async fn an_unbound_token_under_dpop_is_refused() {
    let key = DpopKey::generate().unwrap();
    let addr = serve_layer(layer().dpop(verifier(), DpopMode::Allowed)).await;
    let token = unbound_token();
    let reply = get_dpop(addr, &token, &[&proof(&key, &Method::GET, &token, None)]).await;
    assert_dpop_refusal(&reply, "invalid_token", "token is not dpop-bound");
}

#[tokio::test]
async fn without_dpop_configured_the_dpop_scheme_is_no_credentials() {
    let key = DpopKey::generate().unwrap();
    let addr = serve_layer(layer()).await;
    let token = bound_token(&key);
    let reply = get_dpop(addr, &token, &[&proof(&key, &Method::GET, &token, None)]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(challenges(&reply), ["Bearer realm=\"api\""]);
}

#[tokio::test]
async fn the_modes_choose_the_challenges() {
    // Both: a Bearer challenge and a DPoP one.
    let addr = serve_layer(layer().dpop(verifier(), DpopMode::Allowed)).await;
    let reply = get_with(&client(), addr, &[]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        challenges(&reply),
        [
            "Bearer realm=\"api\"",
            "DPoP realm=\"api\", algs=\"ES256 ES384 EdDSA PS256 PS384 PS512 RS256 RS384 RS512\""
        ]
    );
    // DPoP only: a bearer token is no credential, and the one challenge is DPoP.
    let only = verifier().algorithms([tower_jwt_refresh::keys::Algorithm::ES256]);
    let addr = serve_layer(layer().dpop(only, DpopMode::Required)).await;
    let reply = get_bearer(&client(), addr, &unbound_token()).await;
    assert_eq!(reply.status, 401);
    assert_eq!(challenges(&reply), ["DPoP realm=\"api\", algs=\"ES256\""]);
    // ... while a bound token with its proof passes.
    let key = DpopKey::generate().unwrap();
    let token = bound_token(&key);
    let reply = get_dpop(addr, &token, &[&proof(&key, &Method::GET, &token, None)]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn a_nonce_challenge_then_success() {
    let key = DpopKey::generate().unwrap();
    let nonces = DpopNonces::random().unwrap();
    let addr = serve_layer(layer().dpop(verifier().nonces(nonces), DpopMode::Required)).await;
    let token = bound_token(&key);
    let first = get_dpop(addr, &token, &[&proof(&key, &Method::GET, &token, None)]).await;
    assert_dpop_refusal(
        &first,
        "use_dpop_nonce",
        "dpop proof needs the server's current nonce",
    );
    let nonce = first.headers["dpop-nonce"].to_str().unwrap().to_owned();
    let wrong = get_dpop(
        addr,
        &token,
        &[&proof(&key, &Method::GET, &token, Some("x"))],
    )
    .await;
    assert_eq!(wrong.error(), "use_dpop_nonce");
    let reply = get_dpop(
        addr,
        &token,
        &[&proof(&key, &Method::GET, &token, Some(&nonce))],
    )
    .await;
    assert_eq!(
        (reply.status.as_u16(), reply.body.as_str()),
        (200, "hello alice")
    );
    // RFC 9449 §8.2: the success carries the current nonce, so the client keeps up with it.
    assert_eq!(reply.headers["dpop-nonce"].to_str().unwrap(), nonce);
}

#[tokio::test]
async fn without_nonces_no_answer_carries_one() {
    let key = DpopKey::generate().unwrap();
    let addr = serve_layer(layer().dpop(verifier(), DpopMode::Allowed)).await;
    let token = bound_token(&key);
    let reply = get_dpop(addr, &token, &[&proof(&key, &Method::GET, &token, None)]).await;
    assert_eq!(reply.status.as_u16(), 200);
    assert!(reply.headers.get("dpop-nonce").is_none());
}

#[tokio::test]
async fn grpc_refusals_follow_the_grpc_rules() {
    let key = DpopKey::generate().unwrap();
    let addr = serve_layer(layer().dpop(verifier(), DpopMode::Allowed)).await;
    let token = bound_token(&key);
    let auth = format!("DPoP {token}");
    let reply = post_with(
        &client(),
        addr,
        &[
            ("authorization", &auth),
            ("content-type", "application/grpc"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["grpc-status"], "16");
    assert_eq!(reply.headers["grpc-message"], "dpop proof missing");
}

#[tokio::test]
async fn behind_an_asynchronous_deny_list_the_proof_is_checked_after_it() {
    use tower_jwt_refresh::server::{DenyCheck, RegisteredClaims, TokenStatus};
    // The token's verdict needs I/O: the proof is checked once it is in, from the request's
    // method, URI and `DPoP` headers kept for it.
    let hook = |claims: &RegisteredClaims| {
        let revoked = claims.sub.as_deref() == Some("mallory");
        DenyCheck::pending(async move {
            tokio::task::yield_now().await;
            Ok(if revoked {
                TokenStatus::Revoked
            } else {
                TokenStatus::Active
            })
        })
    };
    let addr = serve_layer(layer().deny_list(hook).dpop(verifier(), DpopMode::Allowed)).await;
    let key = DpopKey::generate().unwrap();
    let token = bound_token(&key);
    let once = proof(&key, &Method::GET, &token, None);
    let reply = get_dpop(addr, &token, &[&once]).await;
    assert_eq!(
        (reply.status.as_u16(), reply.body.as_str()),
        (200, "hello alice")
    );
    let again = get_dpop(addr, &token, &[&once]).await;
    assert_dpop_refusal(&again, "invalid_dpop_proof", "dpop proof replayed");
    let other = DpopKey::generate().unwrap();
    let theirs = proof(&other, &Method::GET, &token, None);
    let reply = get_dpop(addr, &token, &[&theirs]).await;
    assert_dpop_refusal(
        &reply,
        "invalid_dpop_proof",
        "dpop proof key does not match the token binding",
    );
    // A revoked token is refused as revoked: the token is judged before its proof.
    let mut claims = good_claims();
    claims["sub"] = json!("mallory");
    claims["cnf"] = json!({ "jkt": key.thumbprint().as_str() });
    let revoked = sign(at_header("ES256", "es"), claims);
    let reply = get_dpop(
        addr,
        &revoked,
        &[&proof(&key, &Method::GET, &revoked, None)],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.description(), "token revoked");
}

/// A replay store that cannot answer.
struct Broken;

impl ReplayStore for Broken {
    fn check(&self, _: &ReplayKey, _: u64, _: u64) -> ReplayCheck {
        ReplayCheck::ready(Err(BoxError::from("store down")))
    }
}

#[tokio::test]
async fn a_failing_replay_store_is_503() {
    let key = DpopKey::generate().unwrap();
    let addr = serve_layer(layer().dpop(verifier().replay_store(Broken), DpopMode::Allowed)).await;
    let token = bound_token(&key);
    let reply = get_dpop(addr, &token, &[&proof(&key, &Method::GET, &token, None)]).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(
        reply.body.contains("temporarily_unavailable"),
        "{}",
        reply.body
    );
}

/// A replay store that never answers (a network partition that drops packets silently).
struct Hanging;

impl ReplayStore for Hanging {
    fn check(&self, _: &ReplayKey, _: u64, _: u64) -> ReplayCheck {
        ReplayCheck::pending(std::future::pending())
    }
}

#[tokio::test]
async fn a_hanging_replay_store_is_503_after_the_io_timeout() {
    let key = DpopKey::generate().unwrap();
    let verifier = verifier().replay_store(Hanging);
    let layer = layer()
        .dpop(verifier, DpopMode::Allowed)
        .io_timeout(std::time::Duration::from_millis(200));
    let addr = serve_layer(layer).await;
    let token = bound_token(&key);
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        get_dpop(addr, &token, &[&proof(&key, &Method::GET, &token, None)]),
    )
    .await
    .expect("the request is answered, not left hanging");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers["retry-after"], "1");
    // Not before the timeout, and not long after it.
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(200)
            && waited < std::time::Duration::from_secs(2),
        "{waited:?}"
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_proof_replayed_at_a_second_instance_sharing_redis_is_refused() {
    use tower_jwt_refresh::server::dpop::replay::RedisReplayStore;
    let Some(url) = redis_url() else {
        return;
    };
    let key = DpopKey::generate().unwrap();
    // A prefix of its own per run, so reruns on one Redis do not see each other.
    let prefix = format!("dpop-layer-test-{}", key.thumbprint());
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let store = RedisReplayStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("REDIS_URL={url} is set but unreachable: {e}"))
            .prefix(prefix.clone());
        let layer = layer().dpop(verifier().replay_store(store), DpopMode::Allowed);
        addrs.push(serve_layer(layer).await);
    }
    let token = bound_token(&key);
    let once = proof(&key, &Method::GET, &token, None);
    assert_eq!(get_dpop(addrs[0], &token, &[&once]).await.status, 200);
    let replayed = get_dpop(addrs[1], &token, &[&once]).await;
    assert_dpop_refusal(&replayed, "invalid_dpop_proof", "dpop proof replayed");
    // A fresh proof passes at the second instance.
    let fresh = proof(&key, &Method::GET, &token, None);
    assert_eq!(get_dpop(addrs[1], &token, &[&fresh]).await.status, 200);
}
