//! DPoP (RFC 9449 §5) at the refresh endpoint over a real axum server, on every store: a login
//! with a proof binds both tokens, a bound refresh token needs a proof from its key, bad
//! proofs and nonces answer as §5 and §8 say.
//!
//! The Redis half needs `REDIS_URL` (`scripts/test` starts a server and sets it); without it
//! it is skipped with a notice, and under `CI=true` it fails.

mod support;

use std::net::SocketAddr;

use axum::Router;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::Full;
use serde_json::Value;
use support::{Reply, client, send, serve};
use tower_jwt_refresh::client::dpop::DpopKey;
use tower_jwt_refresh::issuer::store::RefreshStore;
use tower_jwt_refresh::issuer::{AccessTokenIssuer, IssuedTokens, TokenIssuer};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};
use tower_jwt_refresh::server::dpop::{DpopNonces, DpopVerifier, VerifiedProof};

/// The URL clients address the authorization server by.
const BASE: &str = "http://auth.test";

fn issuer<S: RefreshStore + Clone>(store: S) -> TokenIssuer<S> {
    let key = SigningKey::hmac(Algorithm::HS256, [5u8; 32]).unwrap();
    TokenIssuer::new(AccessTokenIssuer::new(key), store)
}

async fn serve_endpoint<S: RefreshStore + Clone>(
    issuer: &TokenIssuer<S>,
    verifier: DpopVerifier,
) -> SocketAddr {
    let endpoint = issuer.refresh_endpoint().dpop(verifier);
    serve(Router::new().route_service("/oauth/token", endpoint)).await
}

/// A proof by `key` for `POST <BASE><path>`, with `nonce` if any.
fn proof(key: &DpopKey, path: &str, nonce: Option<&str>) -> String {
    let uri: Uri = format!("{BASE}{path}").parse().unwrap();
    let proof = key.proof(&Method::POST, &uri);
    match nonce {
        Some(nonce) => proof.nonce(nonce).sign().unwrap(),
        None => proof.sign().unwrap(),
    }
}

/// What a login handler does with the `DPoP` header of `POST /login`.
async fn login_proof(key: &DpopKey) -> VerifiedProof {
    let mut headers = HeaderMap::new();
    headers.insert("dpop", proof(key, "/login", None).parse().unwrap());
    let uri = Uri::from_static("/login");
    DpopVerifier::new(BASE)
        .unwrap()
        .verify(&Method::POST, &uri, &headers, None)
        .await
        .unwrap()
}

/// An issuer on `store`, a client key, and a session logged in with a proof by it.
async fn bound_session<S: RefreshStore + Clone>(
    store: S,
) -> (TokenIssuer<S>, DpopKey, IssuedTokens) {
    let issuer = issuer(store);
    let key = DpopKey::generate().unwrap();
    let pair = issuer
        .issue_bound("alice", &(), &login_proof(&key).await)
        .await
        .unwrap();
    (issuer, key, pair)
}

/// `POST /oauth/token` with `refresh_token` and these `DPoP` headers.
async fn refresh(addr: SocketAddr, token: &str, proofs: &[&str]) -> Reply {
    let mut req = Request::post(format!("http://{addr}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded");
    for proof in proofs {
        req = req.header("dpop", *proof);
    }
    let body = format!("grant_type=refresh_token&refresh_token={token}");
    send(&client(), req.body(Full::from(body)).unwrap()).await
}

fn body(reply: &Reply) -> Value {
    serde_json::from_str(&reply.body).unwrap()
}

/// The `cnf.jkt` of an access token, if any.
fn cnf_jkt(access_token: &str) -> Option<String> {
    let payload = access_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["cnf"]["jkt"].as_str().map(str::to_owned)
}

fn assert_pair(reply: &Reply, token_type: &str, jkt: Option<&str>) -> String {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let pair = body(reply);
    assert_eq!(pair["token_type"], token_type, "{}", reply.body);
    let access = pair["access_token"].as_str().unwrap();
    assert_eq!(cnf_jkt(access).as_deref(), jkt);
    pair["refresh_token"].as_str().unwrap().to_owned()
}

fn assert_error(reply: &Reply, code: &str) {
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(body(reply)["error"], code, "{}", reply.body);
}

// ----- one function per behaviour, each run on every store -----

async fn a_login_with_a_proof_binds_both_tokens<S: RefreshStore + Clone>(store: S) {
    let issuer = issuer(store);
    let key = DpopKey::generate().unwrap();
    let jkt = key.thumbprint().as_str().to_owned();
    let first: IssuedTokens = issuer
        .issue_bound("alice", &(), &login_proof(&key).await)
        .await
        .unwrap();
    assert_eq!(first.token_type, "DPoP");
    assert_eq!(cnf_jkt(&first.access_token).as_deref(), Some(jkt.as_str()));
    let addr = serve_endpoint(&issuer, DpopVerifier::new(BASE).unwrap()).await;
    let mut token = first.refresh_token;
    for _ in 0..2 {
        let reply = refresh(addr, &token, &[&proof(&key, "/oauth/token", None)]).await;
        token = assert_pair(&reply, "DPoP", Some(&jkt));
    }
}

async fn a_bound_refresh_token_needs_a_proof_from_its_key<S: RefreshStore + Clone>(store: S) {
    let issuer = issuer(store);
    let key = DpopKey::generate().unwrap();
    let other = DpopKey::generate().unwrap();
    let pair = issuer
        .issue_bound("alice", &(), &login_proof(&key).await)
        .await
        .unwrap();
    let addr = serve_endpoint(&issuer, DpopVerifier::new(BASE).unwrap()).await;
    // Without a proof, with another key's: refused, and not counted as reuse.
    assert_error(
        &refresh(addr, &pair.refresh_token, &[]).await,
        "invalid_grant",
    );
    let theirs = proof(&other, "/oauth/token", None);
    assert_error(
        &refresh(addr, &pair.refresh_token, &[&theirs]).await,
        "invalid_grant",
    );
    // The holder of the key still refreshes: nothing changed for the family.
    let ours = proof(&key, "/oauth/token", None);
    let reply = refresh(addr, &pair.refresh_token, &[&ours]).await;
    assert_pair(&reply, "DPoP", Some(key.thumbprint().as_str()));
}

async fn an_unbound_session_refreshed_with_a_proof_gets_a_bound_access_token<
    S: RefreshStore + Clone,
>(
    store: S,
) {
    let issuer = issuer(store);
    let key = DpopKey::generate().unwrap();
    let pair = issuer.issue("alice", &()).await.unwrap();
    assert_eq!(pair.token_type, "Bearer");
    assert_eq!(cnf_jkt(&pair.access_token), None);
    let addr = serve_endpoint(&issuer, DpopVerifier::new(BASE).unwrap()).await;
    let proof = proof(&key, "/oauth/token", None);
    let reply = refresh(addr, &pair.refresh_token, &[&proof]).await;
    let token = assert_pair(&reply, "DPoP", Some(key.thumbprint().as_str()));
    // The family itself stays unbound: a bearer refresh still works.
    assert_pair(&refresh(addr, &token, &[]).await, "Bearer", None);
}

async fn a_bad_proof_is_invalid_dpop_proof_and_rotates_nothing<S: RefreshStore + Clone>(store: S) {
    let (issuer, key, pair) = bound_session(store).await;
    let addr = serve_endpoint(&issuer, DpopVerifier::new(BASE).unwrap()).await;
    let wrong_htu = proof(&key, "/elsewhere", None);
    let reply = refresh(addr, &pair.refresh_token, &[&wrong_htu]).await;
    assert_error(&reply, "invalid_dpop_proof");
    assert_eq!(
        body(&reply)["error_description"],
        "dpop proof htu does not match the request"
    );
    let (a, b) = (
        proof(&key, "/oauth/token", None),
        proof(&key, "/oauth/token", None),
    );
    assert_error(
        &refresh(addr, &pair.refresh_token, &[&a, &b]).await,
        "invalid_dpop_proof",
    );
    // A proof used once is a replay the second time.
    let once = proof(&key, "/oauth/token", None);
    let token = assert_pair(
        &refresh(addr, &pair.refresh_token, &[&once]).await,
        "DPoP",
        Some(key.thumbprint().as_str()),
    );
    assert_error(&refresh(addr, &token, &[&once]).await, "invalid_dpop_proof");
}

async fn nonces_answer_use_dpop_nonce_then_succeed<S: RefreshStore + Clone>(store: S) {
    let issuer = issuer(store);
    let key = DpopKey::generate().unwrap();
    let pair = issuer.issue("alice", &()).await.unwrap();
    let verifier = DpopVerifier::new(BASE)
        .unwrap()
        .nonces(DpopNonces::random().unwrap());
    let addr = serve_endpoint(&issuer, verifier).await;
    let without = proof(&key, "/oauth/token", None);
    let reply = refresh(addr, &pair.refresh_token, &[&without]).await;
    assert_error(&reply, "use_dpop_nonce");
    let nonce = reply.headers["dpop-nonce"].to_str().unwrap().to_owned();
    let with = proof(&key, "/oauth/token", Some(&nonce));
    let reply = refresh(addr, &pair.refresh_token, &[&with]).await;
    assert_pair(&reply, "DPoP", Some(key.thumbprint().as_str()));
    // RFC 9449 §8.2: the success carries the current nonce too.
    assert_eq!(reply.headers["dpop-nonce"].to_str().unwrap(), nonce);
}

async fn a_request_refused_for_its_body_does_not_spend_its_proof<S: RefreshStore + Clone>(
    store: S,
) {
    let issuer = issuer(store);
    let key = DpopKey::generate().unwrap();
    let jkt = key.thumbprint().as_str().to_owned();
    let pair = issuer
        .issue_bound("alice", &(), &login_proof(&key).await)
        .await
        .unwrap();
    let addr = serve_endpoint(&issuer, DpopVerifier::new(BASE).unwrap()).await;
    let proof = proof(&key, "/oauth/token", None);
    // The wrong grant type: refused before the proof is checked.
    let req = Request::post(format!("http://{addr}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("dpop", &proof)
        .body(Full::from(format!(
            "grant_type=password&refresh_token={}",
            pair.refresh_token
        )))
        .unwrap();
    assert_error(&send(&client(), req).await, "unsupported_grant_type");
    // The same proof still works once: its `jti` was not spent by the refusal.
    let reply = refresh(addr, &pair.refresh_token, &[&proof]).await;
    assert_pair(&reply, "DPoP", Some(&jkt));
    let again = refresh(addr, &pair.refresh_token, &[&proof]).await;
    assert_error(&again, "invalid_dpop_proof");
}

/// A replay store that never answers.
struct Hanging;

impl tower_jwt_refresh::server::dpop::replay::ReplayStore for Hanging {
    fn check(
        &self,
        _: &tower_jwt_refresh::server::dpop::replay::ReplayKey,
        _: u64,
        _: u64,
    ) -> tower_jwt_refresh::server::dpop::replay::ReplayCheck {
        tower_jwt_refresh::server::dpop::replay::ReplayCheck::pending(std::future::pending())
    }
}

async fn a_hanging_replay_store_is_503_and_rotates_nothing<S: RefreshStore + Clone>(store: S) {
    let (issuer, key, pair) = bound_session(store).await;
    let hanging = DpopVerifier::new(BASE).unwrap().replay_store(Hanging);
    let endpoint = issuer
        .refresh_endpoint()
        .dpop(hanging)
        .replay_check_timeout(std::time::Duration::from_millis(300));
    let addr = serve(Router::new().route_service("/oauth/token", endpoint)).await;
    let started = std::time::Instant::now();
    let proof = proof(&key, "/oauth/token", None);
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        refresh(addr, &pair.refresh_token, &[&proof]),
    )
    .await
    .expect("answered, not left hanging");
    assert_eq!(reply.status, 503, "{}", reply.body);
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(300)
            && waited < std::time::Duration::from_secs(2),
        "{waited:?}"
    );
    // Nothing rotated: the refresh token still works where the replay store answers.
    let addr = serve_endpoint(&issuer, DpopVerifier::new(BASE).unwrap()).await;
    let reply = refresh(addr, &pair.refresh_token, &[&proof]).await;
    assert_pair(&reply, "DPoP", Some(key.thumbprint().as_str()));
}

/// One `#[tokio::test]` per behaviour, on the store `$store` (an async expression; `None`
/// skips).
macro_rules! on_every_store {
    ($store:expr) => {
        on_every_store!(@each $store;
            a_login_with_a_proof_binds_both_tokens,
            a_bound_refresh_token_needs_a_proof_from_its_key,
            an_unbound_session_refreshed_with_a_proof_gets_a_bound_access_token,
            a_bad_proof_is_invalid_dpop_proof_and_rotates_nothing,
            nonces_answer_use_dpop_nonce_then_succeed,
            a_request_refused_for_its_body_does_not_spend_its_proof,
            a_hanging_replay_store_is_503_and_rotates_nothing,
        );
    };
    (@each $store:expr; $($behaviour:ident,)+) => {
        $(
            #[tokio::test]
            async fn $behaviour() {
                if let Some(store) = $store.await {
                    super::$behaviour(store).await;
                }
            }
        )+
    };
}

mod memory {
    use tower_jwt_refresh::issuer::MemoryStore;

    async fn store() -> Option<MemoryStore> {
        Some(MemoryStore::new())
    }

    on_every_store!(store());
}

#[cfg(feature = "redis")]
mod redis {
    use tower_jwt_refresh::issuer::RedisStore;

    async fn store() -> Option<RedisStore> {
        super::support::redis_store().await
    }

    on_every_store!(store());
}
