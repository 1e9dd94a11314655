//! Remote JWKS against a real HTTP server on loopback that rotates its keys mid-test.

mod support;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use support::*;
use tokio::sync::{Semaphore, oneshot, watch};
use tower_jwt_refresh::BoxError;
use tower_jwt_refresh::keys::{Key, KeySet, RemoteJwks, RemoteJwksBuilder};
use tower_jwt_refresh::server::{
    DenyCheck, JwtAuthLayer, RegisteredClaims, Rejection, TokenError, TokenStatus,
};

/// The JWKS server's state: the document it serves, how often it was fetched, and a gate that
/// can hold responses back.
#[derive(Clone)]
struct Jwks {
    doc: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl Jwks {
    fn new(keys: Vec<Value>) -> Self {
        Self {
            doc: Arc::new(Mutex::new(json!({ "keys": keys }))),
            hits: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
        }
    }

    fn rotate(&self, keys: Vec<Value>) {
        *self.doc.lock().unwrap() = json!({ "keys": keys });
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    async fn serve(&self) -> String {
        async fn handler(State(jwks): State<Jwks>) -> axum::Json<Value> {
            jwks.hits.fetch_add(1, Ordering::SeqCst);
            let _permit = jwks.gate.acquire().await.unwrap();
            axum::Json(jwks.doc.lock().unwrap().clone())
        }
        let app = Router::new()
            .route("/jwks.json", get(handler))
            .with_state(self.clone());
        format!("http://{}/jwks.json", serve(app).await)
    }
}

/// One scripted fetch: the document served, and a gate the answer waits for, if any.
type Step = (Value, Option<oneshot::Receiver<()>>);

/// A JWKS client that answers from a script, one step per fetch in the order fetches start,
/// and counts the fetches started.
#[derive(Clone)]
struct Script {
    steps: Arc<Mutex<VecDeque<Step>>>,
    started: Arc<watch::Sender<usize>>,
}

impl Script {
    fn new(steps: Vec<Step>) -> Self {
        Self {
            steps: Arc::new(Mutex::new(steps.into())),
            started: Arc::new(watch::channel(0).0),
        }
    }

    /// A builder fetching with this script.
    fn builder(&self) -> RemoteJwksBuilder {
        let script = self.clone();
        let client = tower::service_fn(move |_: Request<Empty<Bytes>>| {
            // The document is the one served when the fetch starts.
            let step = script.steps.lock().unwrap().pop_front();
            script.started.send_modify(|n| *n += 1);
            async move {
                let (document, gate) = step.ok_or("a fetch the script did not expect")?;
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                Ok::<_, BoxError>(Response::new(Bytes::from(document.to_string())))
            }
        });
        RemoteJwks::builder("https://auth.test/jwks.json".parse().unwrap())
            .client(client)
            .allow_symmetric_keys()
            .fetch_timeout(Duration::from_secs(3600))
    }

    /// Waits until `n` fetches have started.
    async fn started(&self, n: usize) {
        let mut started = self.started.subscribe();
        started.wait_for(|&s| s >= n).await.unwrap();
    }
}

fn kids(jwks: &RemoteJwks) -> Vec<String> {
    let keys = jwks.current();
    keys.iter()
        .filter_map(|k| k.kid().map(str::to_owned))
        .collect()
}

/// A builder for the test server's JWKS: plain http on loopback, HMAC keys allowed.
fn loopback(url: &str) -> RemoteJwksBuilder {
    RemoteJwks::builder(url.parse().unwrap())
        .allow_http()
        .allow_symmetric_keys()
}

/// An HMAC JWK with its own secret, and a token signer for it.
fn hmac_jwk(kid: &str) -> (Value, impl Fn(Value) -> String) {
    let secret: Vec<u8> = kid.bytes().cycle().take(32).collect();
    let jwk = json!({"kty": "oct", "kid": kid, "alg": "HS256", "use": "sig",
        "k": URL_SAFE_NO_PAD.encode(&secret)});
    let kid = kid.to_owned();
    let signer = move |claims: Value| {
        sign_with(
            Algorithm::HS256,
            &EncodingKey::from_secret(&secret),
            &at_header("HS256", &kid),
            &claims,
        )
    };
    (jwk, signer)
}

/// An RS256 JWK for the fixture key pair in `tests/keys/{file}_private.pem`, and a token
/// signer for it.
fn rsa_jwk(file: &str, kid: &str) -> (Value, impl Fn(Value) -> String) {
    tower_jwt_refresh::keys::install_crypto_provider();
    let private = EncodingKey::from_rsa_pem(&key_file(&format!("{file}_private.pem"))).unwrap();
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&private, Algorithm::RS256).unwrap();
    let mut jwk = serde_json::to_value(jwk).unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    let kid = kid.to_owned();
    let signer = move |claims: Value| {
        sign_with(
            Algorithm::RS256,
            &private,
            &at_header("RS256", &kid),
            &claims,
        )
    };
    (jwk, signer)
}

/// An HMAC JWK whose secret (8 bytes) is too short for HS256.
fn short_oct_jwk(kid: &str) -> Value {
    json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": URL_SAFE_NO_PAD.encode([7u8; 8])})
}

fn claims() -> Value {
    json!({"sub": "alice", "exp": now() + 60})
}

#[tokio::test]
async fn rotation_is_picked_up_on_the_first_unknown_kid_and_retired_keys_stop_working() {
    let (jwk_a, sign_a) = hmac_jwk("a");
    let (jwk_b, sign_b) = hmac_jwk("b");
    let server = Jwks::new(vec![jwk_a]);
    let url = server.serve().await;
    let jwks = loopback(&url)
        .min_refetch_interval(Duration::ZERO)
        .build()
        .await
        .unwrap();
    assert_eq!(server.hits(), 1);
    let layer = JwtAuthLayer::new(jwks.clone());

    // Refetching an unchanged document keeps the same set (and so the cache's verdicts).
    let before = jwks.current();
    jwks.refresh().await.unwrap();
    assert!(Arc::ptr_eq(&before, &jwks.current()));
    assert_eq!(server.hits(), 2);

    let token_a = sign_a(claims());
    assert!(layer.verify(&token_a).await.is_ok());
    // Cached now; a second verification does not fetch.
    assert!(layer.verify(&token_a).await.is_ok());
    assert_eq!(server.hits(), 2);

    // The issuer rotates: b replaces a.
    server.rotate(vec![jwk_b]);
    let token_b = sign_b(claims());
    let claims_b = layer
        .verify(&token_b)
        .await
        .expect("b is fetched on first sight");
    assert_eq!(claims_b.subject(), Some("alice"));
    assert_eq!(server.hits(), 3);
    assert_eq!(jwks.current().iter().next().unwrap().kid(), Some("b"));

    // a was cached, but its key is retired: refused.
    assert_eq!(
        layer.verify(&token_a).await.unwrap_err(),
        Rejection::InvalidToken(TokenError::UnknownKey)
    );
}

#[tokio::test]
async fn unknown_kids_refetch_single_flight_and_rate_limited() {
    let (jwk_a, _) = hmac_jwk("a");
    let (_, sign_x) = hmac_jwk("x"); // never published
    let server = Jwks::new(vec![jwk_a]);
    let url = server.serve().await;
    let jwks = loopback(&url)
        .min_refetch_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let layer = JwtAuthLayer::new(jwks.clone());
    let token_x = sign_x(claims());

    // 50 concurrent requests with an unknown kid share one fetch.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let layer = layer.clone();
            let token = token_x.clone();
            tokio::spawn(async move { layer.verify(&token).await })
        })
        .collect();
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err, Rejection::InvalidToken(TokenError::UnknownKey));
    }
    assert_eq!(
        server.hits(),
        2,
        "one initial fetch plus exactly one refetch"
    );

    // Inside the rate-limit window, more unknown kids cause no fetch at all.
    for _ in 0..20 {
        assert!(layer.verify(&token_x).await.is_err());
    }
    assert_eq!(server.hits(), 2);
    assert_eq!(jwks.fetches(), 2);
}

#[tokio::test]
async fn known_keys_never_wait_on_a_fetch() {
    let (jwk_a, sign_a) = hmac_jwk("a");
    let (_, sign_x) = hmac_jwk("x");
    let server = Jwks::new(vec![jwk_a]);
    let url = server.serve().await;
    let jwks = loopback(&url)
        .min_refetch_interval(Duration::ZERO)
        .build()
        .await
        .unwrap();
    let layer = JwtAuthLayer::new(jwks).io_timeout(Duration::from_secs(30));

    // Hold every JWKS response from now on.
    let held = server
        .gate
        .acquire_many(Semaphore::MAX_PERMITS as u32)
        .await
        .unwrap();
    let stuck = tokio::spawn({
        let layer = layer.clone();
        let token = sign_x(claims());
        async move { layer.verify(&token).await }
    });
    // Wait until the refetch has reached the server and is being held there.
    while server.hits() < 2 {
        tokio::task::yield_now().await;
    }
    // A token with a known key verifies while the fetch is stuck. The timeout only turns a
    // regression into a failure instead of a hang.
    let known = tokio::time::timeout(Duration::from_secs(10), layer.verify(&sign_a(claims())))
        .await
        .expect("verification with a known key waited on the fetch");
    assert!(known.is_ok());
    assert!(!stuck.is_finished());
    drop(held);
    assert!(stuck.await.unwrap().is_err());
}

#[tokio::test]
async fn a_refetch_that_overruns_the_bound_refuses_without_hanging() {
    let (jwk_a, _) = hmac_jwk("a");
    let (_, sign_x) = hmac_jwk("x");
    let server = Jwks::new(vec![jwk_a]);
    let url = server.serve().await;
    let jwks = loopback(&url)
        .min_refetch_interval(Duration::ZERO)
        .fetch_timeout(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let layer = JwtAuthLayer::new(jwks).io_timeout(Duration::from_millis(100));
    let _held = server
        .gate
        .acquire_many(Semaphore::MAX_PERMITS as u32)
        .await
        .unwrap();
    let err = layer.verify(&sign_x(claims())).await.unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::UnknownKey));
}

#[tokio::test]
async fn a_bad_first_fetch_fails_construction_and_later_failures_keep_the_keys() {
    let (jwk_a, sign_a) = hmac_jwk("a");
    let server = Jwks::new(vec![json!({"kty": "oct", "alg": "HS256", "k": "%%%"})]);
    let url = server.serve().await;
    assert!(loopback(&url).build().await.is_err());

    server.rotate(vec![jwk_a]);
    let jwks = loopback(&url).build().await.unwrap();
    server.rotate(vec![json!("not a key")]);
    assert!(jwks.refresh().await.is_err());
    let layer = JwtAuthLayer::new(jwks.clone());
    assert!(layer.verify(&sign_a(claims())).await.is_ok());

    // Plain http needs the opt-in; symmetric keys too.
    assert!(
        RemoteJwks::builder(url.parse().unwrap())
            .build()
            .await
            .is_err()
    );
    let no_oct = RemoteJwks::builder(url.parse().unwrap())
        .allow_http()
        .build()
        .await;
    assert!(
        no_oct.is_err(),
        "a JWKS of only HMAC keys has no usable key by default"
    );
    // A document with no keys at all is refused rather than replacing working keys.
    server.rotate(vec![]);
    assert!(jwks.refresh().await.is_err());
    assert!(layer.verify(&sign_a(claims())).await.is_ok());

    let missing = format!("{}-missing", url);
    let err = RemoteJwks::builder(missing.parse().unwrap())
        .allow_http()
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test]
async fn over_http_the_layer_serves_with_remote_keys() {
    let (jwk_a, sign_a) = hmac_jwk("a");
    let server = Jwks::new(vec![jwk_a]);
    let url = server.serve().await;
    let jwks = loopback(&url).build().await.unwrap();
    let addr = support::serve(app(JwtAuthLayer::new(jwks))).await;
    let reply = get_bearer(&client(), addr, &sign_a(claims())).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "hello alice")
    );
}

#[tokio::test]
async fn a_jwks_answered_with_any_2xx_is_read() {
    // A transforming proxy answers 203 Non-Authoritative Information; the document is good.
    let (jwk, sign) = hmac_jwk("p");
    let document = json!({ "keys": [jwk] });
    let app = Router::new().route(
        "/jwks.json",
        get(move || async move {
            (
                StatusCode::NON_AUTHORITATIVE_INFORMATION,
                axum::Json(document),
            )
        }),
    );
    let url = format!("http://{}/jwks.json", serve(app).await);
    let jwks = loopback(&url)
        .build()
        .await
        .expect("a 203 document is read");
    let layer = JwtAuthLayer::new(jwks);
    assert!(layer.verify(&sign(claims())).await.is_ok());
}

#[tokio::test]
async fn a_key_the_crate_cannot_use_does_not_freeze_rotation() {
    let (jwk_old, sign_old) = rsa_jwk("rsa2", "old");
    let (jwk_new, sign_new) = rsa_jwk("rsa", "new");
    let rotated = vec![jwk_new, short_oct_jwk("short")];

    // Parsed directly: the short secret is left out, the new key is loaded.
    let set = KeySet::from_jwks(json!({ "keys": rotated }).to_string()).unwrap();
    assert_eq!(set.iter().map(Key::kid).collect::<Vec<_>>(), [Some("new")]);

    // Through a refresh that also removes the old (say, compromised) key.
    let server = Jwks::new(vec![jwk_old]);
    let url = server.serve().await;
    let jwks = loopback(&url).build().await.unwrap();
    let layer = JwtAuthLayer::new(jwks.clone());
    let old_token = sign_old(claims());
    assert!(layer.verify(&old_token).await.is_ok());
    server.rotate(rotated);
    jwks.refresh()
        .await
        .expect("a document with one usable key loads");
    assert_eq!(
        layer.verify(&old_token).await.unwrap_err(),
        Rejection::InvalidToken(TokenError::UnknownKey),
        "the removed key stopped verifying"
    );
    assert!(layer.verify(&sign_new(claims())).await.is_ok());
}

#[tokio::test]
async fn a_fetch_that_started_before_a_rotation_cannot_bring_back_the_removed_key() {
    let (jwk_a, sign_a) = hmac_jwk("a");
    let (jwk_k, sign_k) = hmac_jwk("k"); // compromised: the issuer removes it
    let (_, sign_x) = hmac_jwk("x"); // never published
    let before = json!({ "keys": [jwk_a.clone(), jwk_k] });
    let after = json!({ "keys": [jwk_a] });
    let (release, gate) = oneshot::channel();
    let script = Script::new(vec![
        (before.clone(), None),
        (before, Some(gate)), // the second fetch is slow
        (after, None),
    ]);
    let jwks = script
        .builder()
        .min_refetch_interval(Duration::ZERO)
        .build()
        .await
        .unwrap();
    let layer = JwtAuthLayer::new(jwks.clone()).io_timeout(Duration::from_secs(3600));
    let token_k = sign_k(claims());
    assert!(layer.verify(&token_k).await.is_ok());

    // An unknown kid starts a refetch, answered with the document from before the rotation,
    // but slowly.
    let waiting = tokio::spawn({
        let (layer, token) = (layer.clone(), sign_x(claims()));
        async move { layer.verify(&token).await }
    });
    script.started(2).await;
    // The issuer removes k; a fetch started after that one finishes first.
    jwks.refresh().await.unwrap();
    assert_eq!(kids(&jwks), ["a"]);

    // The older answer arrives last, and is dropped.
    release.send(()).unwrap();
    let unknown = Rejection::InvalidToken(TokenError::UnknownKey);
    assert_eq!(waiting.await.unwrap().unwrap_err(), unknown);
    assert_eq!(jwks.fetches(), 3, "every scripted fetch has finished");
    assert_eq!(kids(&jwks), ["a"], "the older document did not come back");
    assert_eq!(layer.verify(&token_k).await.unwrap_err(), unknown);
    assert!(layer.verify(&sign_a(claims())).await.is_ok());
}

/// A deny-list hook that always answers asynchronously, as `RedisStore`'s does.
fn async_deny_list(claims: &RegisteredClaims) -> DenyCheck {
    let _ = claims;
    DenyCheck::pending(async { Ok(TokenStatus::Active) })
}

#[tokio::test]
async fn unverified_tokens_waiting_on_a_refetch_cannot_take_a_verified_tokens_place() {
    let (jwk_a, sign_a) = hmac_jwk("a");
    let document = json!({ "keys": [jwk_a] });
    let (_hold, slow) = oneshot::channel(); // the refetch never answers during the test
    let script = Script::new(vec![(document.clone(), None), (document, Some(slow))]);
    let jwks = script.builder().build().await.unwrap();
    let layer = JwtAuthLayer::new(jwks)
        .deny_list(async_deny_list)
        .max_pending_checks(4)
        .io_timeout(Duration::from_secs(3600));

    // A flood of garbage tokens naming unknown kids, each polled once: they start the
    // refetch, then wait on it.
    let mut flood = Vec::new();
    for i in 0..64 {
        let (layer, token) = (layer.clone(), hmac_jwk(&format!("x{i}")).1(claims()));
        let mut request = Box::pin(async move { layer.verify(&token).await });
        match futures_util::poll!(&mut request) {
            Poll::Pending => flood.push(request),
            Poll::Ready(refused) => assert_eq!(
                refused.unwrap_err(),
                Rejection::InvalidToken(TokenError::UnknownKey)
            ),
        }
    }
    script.started(2).await;
    assert!(!flood.is_empty(), "the flood waits on the refetch");

    // A valid token, whose deny-list check is asynchronous, is served all the same.
    let addr = serve(app(layer.clone())).await;
    let client = client();
    let token = sign_a(claims());
    for _ in 0..8 {
        let reply = get_bearer(&client, addr, &token).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "hello alice")
        );
    }
    assert_eq!(script.started.borrow().to_owned(), 2, "still one refetch");
}

#[tokio::test]
async fn a_request_holds_one_waiting_place_at_a_time_and_each_budget_is_its_own() {
    let (jwk_a, _) = hmac_jwk("a");
    let (jwk_b, sign_b) = hmac_jwk("b"); // published after the layer started
    let (_, sign_x) = hmac_jwk("x"); // never published
    let (_hold, slow) = oneshot::channel();
    let script = Script::new(vec![
        (json!({ "keys": [jwk_a.clone()] }), None),
        (json!({ "keys": [jwk_a.clone(), jwk_b.clone()] }), None),
        (json!({ "keys": [jwk_a, jwk_b] }), Some(slow)),
    ]);
    let jwks = script
        .builder()
        .min_refetch_interval(Duration::ZERO)
        .build()
        .await
        .unwrap();
    // The deny list holds every check until released, and counts the checks begun.
    let (checks, release) = (Arc::new(watch::channel(0).0), Arc::new(Semaphore::new(0)));
    let hook = {
        let (checks, release) = (Arc::clone(&checks), Arc::clone(&release));
        move |_: &RegisteredClaims| {
            checks.send_modify(|n| *n += 1);
            let release = Arc::clone(&release);
            DenyCheck::pending(async move {
                let _permit = release.acquire().await;
                Ok(TokenStatus::Active)
            })
        }
    };
    let layer = JwtAuthLayer::new(jwks)
        .deny_list(hook)
        .max_pending_checks(1)
        .max_unknown_kid_waits(1)
        .io_timeout(Duration::from_secs(3600));

    // b's kid is unknown: it waits on a refetch, which finds it, then on its deny-list check.
    let verified = tokio::spawn({
        let (layer, token) = (layer.clone(), sign_b(claims()));
        async move { layer.verify(&token).await }
    });
    checks.subscribe().wait_for(|&n| n >= 1).await.unwrap();

    // It left the refetch budget before its check: another unknown kid finds a place there
    // (and starts a refetch) ...
    let mut unknown = Box::pin({
        let (layer, token) = (layer.clone(), sign_x(claims()));
        async move { layer.verify(&token).await }
    });
    assert!(futures_util::poll!(&mut unknown).is_pending(), "refused");
    script.started(3).await;
    // ... which is now full: a further unknown kid is refused at once.
    let refused = Rejection::InvalidToken(TokenError::UnknownKey);
    assert_eq!(layer.verify(&sign_x(claims())).await.unwrap_err(), refused);
    // The deny-list budget is b's alone, and full: a verified token gets 503 at once.
    let other = hmac_jwk("a").1(claims());
    assert_eq!(
        layer.verify(&other).await.unwrap_err(),
        Rejection::DenyListUnavailable
    );

    release.add_permits(Semaphore::MAX_PERMITS);
    assert_eq!(verified.await.unwrap().unwrap().subject(), Some("alice"));
    assert!(layer.verify(&other).await.is_ok());
}
