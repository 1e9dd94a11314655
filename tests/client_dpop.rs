//! DPoP (RFC 9449) on the client, end to end over real sockets: `RefreshLayer::dpop` over a
//! hyper-util client and `RefreshMiddleware` over reqwest, against an API behind
//! `JwtAuthLayer` (DPoP required, server nonces) and an authorization server whose
//! `RefreshEndpoint` binds what it issues. The API and the authorization server listen on
//! two ports, two origins, as they usually are two hosts: each has its own nonces.
//!
//! Every request carries a fresh proof; a `use_dpop_nonce` challenge is answered by one more
//! send with the new nonce, never by a refresh, and never counted as a replay.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request as AxumRequest;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};
use tower_jwt_refresh::client::dpop::DpopKey;
use tower_jwt_refresh::client::{
    Error, OAuthRefresher, RefreshFailure, RefreshLayer, RefreshMiddleware, Session, Tokens,
    refresher_fn,
};
use tower_jwt_refresh::issuer::{AccessTokenIssuer, MemoryStore, TokenIssuer};
use tower_jwt_refresh::keys::{Algorithm, KeySet, SigningKey};
use tower_jwt_refresh::server::JwtAuthLayer;
use tower_jwt_refresh::server::dpop::{DpopMode, DpopNonces, DpopVerifier};

type HttpClient = support::HttpClient;

/// What the servers answered, by path and status, and how many answers were
/// `use_dpop_nonce` challenges.
#[derive(Default)]
struct Counts {
    answers: Mutex<HashMap<(String, u16), usize>>,
    nonce_challenges: Mutex<HashMap<String, usize>>,
}

impl Counts {
    fn answers(&self, path: &str, status: u16) -> usize {
        let answers = self.answers.lock().unwrap();
        answers
            .get(&(path.to_owned(), status))
            .copied()
            .unwrap_or(0)
    }

    fn nonce_challenges(&self, path: &str) -> usize {
        let challenges = self.nonce_challenges.lock().unwrap();
        challenges.get(path).copied().unwrap_or(0)
    }

    /// Middleware that counts every answer.
    async fn count(counts: Arc<Self>, request: AxumRequest, next: Next) -> AxumResponse {
        let path = request.uri().path().to_owned();
        let response = next.run(request).await;
        let challenged = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .any(|v| v.to_str().unwrap_or("").contains("use_dpop_nonce"))
            // The token endpoint's challenge: a 400 with a new nonce (a refusal for any other
            // reason carries none).
            || (response.status() == StatusCode::BAD_REQUEST
                && response.headers().contains_key("dpop-nonce"));
        let status = response.status().as_u16();
        *counts
            .answers
            .lock()
            .unwrap()
            .entry((path.clone(), status))
            .or_default() += 1;
        if challenged {
            *counts
                .nonce_challenges
                .lock()
                .unwrap()
                .entry(path)
                .or_default() += 1;
        }
        response
    }
}

/// The API and the authorization server, on two ports.
struct Servers {
    api: String,
    auth: String,
    counts: Arc<Counts>,
}

async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    (listener, base)
}

fn spawn(listener: tokio::net::TcpListener, router: Router) {
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
}

/// Access tokens living `ttl`; with `nonce_lifetime`, both servers require nonces that
/// change that often (a nonce is accepted in its window and the next).
async fn servers(ttl: Duration, nonce_lifetime: Option<Duration>) -> Servers {
    let counts = Arc::new(Counts::default());
    let (api_listener, api) = listen().await;
    let (auth_listener, auth) = listen().await;
    let verifier = |base: &str| {
        let verifier = DpopVerifier::new(base).unwrap();
        match nonce_lifetime {
            Some(lifetime) => verifier.nonces(DpopNonces::random().unwrap().lifetime(lifetime)),
            None => verifier,
        }
    };
    let key = SigningKey::hmac(Algorithm::HS256, [9u8; 32]).unwrap();
    let keys = KeySet::try_from_keys(vec![key.verification_key()]).unwrap();
    let issuer = TokenIssuer::new(
        AccessTokenIssuer::new(key).lifetime(ttl),
        MemoryStore::new(),
    );

    let auth_layer = JwtAuthLayer::new(keys)
        .leeway(Duration::ZERO)
        .dpop(verifier(&api), DpopMode::Required);
    let api_router = Router::new()
        .route("/aaa", get(|| async { "aaa" }))
        .layer(auth_layer)
        .layer(middleware::from_fn({
            let counts = Arc::clone(&counts);
            move |req, next| Counts::count(Arc::clone(&counts), req, next)
        }));
    spawn(api_listener, api_router);

    // One verifier for the authorization server's origin: its login and its token endpoint
    // share nonces and the replay store.
    let auth_verifier = verifier(&auth);
    let login_verifier = auth_verifier.clone();
    let auth_router = Router::new()
        .route(
            "/login",
            post({
                let issuer = issuer.clone();
                move |headers: HeaderMap| login(issuer.clone(), login_verifier.clone(), headers)
            }),
        )
        .route_service(
            "/oauth/token",
            issuer.refresh_endpoint().dpop(auth_verifier),
        )
        .layer(middleware::from_fn({
            let counts = Arc::clone(&counts);
            move |req, next| Counts::count(Arc::clone(&counts), req, next)
        }));
    spawn(auth_listener, auth_router);
    Servers { api, auth, counts }
}

/// `POST /login` with a `DPoP` proof: tokens bound to its key, or 400 `use_dpop_nonce`.
async fn login(
    issuer: TokenIssuer<MemoryStore>,
    verifier: DpopVerifier,
    headers: HeaderMap,
) -> AxumResponse {
    let uri = Uri::from_static("/login");
    match verifier.verify(&Method::POST, &uri, &headers, None).await {
        Ok(proof) => {
            let tokens = issuer.issue_bound("alice", &(), &proof).await.unwrap();
            axum::Json(json!({
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token,
                "token_type": tokens.token_type,
                "expires_in": tokens.expires_in,
            }))
            .into_response()
        }
        Err(error) => {
            let mut response = (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": error.error_code()})),
            )
                .into_response();
            if let Some(nonce) = verifier.current_nonce() {
                response
                    .headers_mut()
                    .insert("dpop-nonce", nonce.parse().unwrap());
            }
            response
        }
    }
}

/// Logs in with a proof by `key`, answering one `use_dpop_nonce` refusal.
async fn log_in(http: &HttpClient, auth: &str, key: &DpopKey) -> Tokens {
    let uri: Uri = format!("{auth}/login").parse().unwrap();
    for _ in 0..2 {
        let proof = key.proof(&Method::POST, &uri).sign().unwrap();
        let request = Request::post(uri.clone())
            .header("dpop", proof)
            .body(Full::default())
            .unwrap();
        let response = http.request(request).await.unwrap();
        key.remember_nonce(&uri, response.headers());
        let status = response.status();
        let body: Value =
            serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes())
                .unwrap();
        if status == StatusCode::BAD_REQUEST && body["error"] == "use_dpop_nonce" {
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        return Tokens::new(
            body["access_token"].as_str().unwrap(),
            body["refresh_token"].as_str().unwrap(),
        )
        .token_type("DPoP")
        .expires_in(Duration::from_secs(body["expires_in"].as_u64().unwrap()));
    }
    panic!("the login kept asking for a nonce")
}

/// The client under test: a tower client or reqwest, both over `layer`.
#[derive(Clone, Copy, Debug)]
enum Front {
    Tower,
    Reqwest,
}

type Get = Arc<
    dyn Fn(String) -> futures_util::future::BoxFuture<'static, Result<(u16, String), String>>
        + Send
        + Sync,
>;

fn front(front: Front, layer: RefreshLayer, http: &HttpClient) -> Get {
    match front {
        Front::Tower => {
            let client = ServiceBuilder::new().layer(layer).service(http.clone());
            Arc::new(move |url: String| {
                let client = client.clone();
                Box::pin(async move {
                    let request = Request::get(url).body(Full::default()).unwrap();
                    let response = client.oneshot(request).await.map_err(|e| e.to_string())?;
                    let status = response.status().as_u16();
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    Ok((status, String::from_utf8_lossy(&body).into_owned()))
                })
            })
        }
        Front::Reqwest => {
            let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
                .with(RefreshMiddleware::new(layer))
                .build();
            Arc::new(move |url: String| {
                let client = client.clone();
                Box::pin(async move {
                    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
                    let status = response.status().as_u16();
                    Ok((status, response.text().await.unwrap()))
                })
            })
        }
    }
}

/// A session logged in with `key`, and its layer: proofs on requests and refreshes.
async fn dpop_client(servers: &Servers, key: &DpopKey) -> (Session, RefreshLayer, HttpClient) {
    let http = support::client();
    let session = Session::new();
    session
        .login(log_in(&http, &servers.auth, key).await)
        .unwrap();
    let token_url = format!("{}/oauth/token", servers.auth).parse().unwrap();
    let refresher = OAuthRefresher::new(http.clone(), token_url).dpop(key.clone());
    let layer = RefreshLayer::new(session.clone(), refresher).dpop(key.clone());
    (session, layer, http)
}

/// A storm of `n` requests across the access token's expiry, with nonces that change every
/// second: every request answered, one refresh; nonce challenges answered without refreshes
/// or replays when the refresh comes first.
async fn storm_across_an_expiry(front: Front, early: bool) {
    let servers = servers(Duration::from_secs(2), Some(Duration::from_secs(1))).await;
    let key = DpopKey::generate().unwrap();
    let (session, layer, http) = dpop_client(&servers, &key).await;
    let layer = if early {
        layer
    } else {
        layer.no_early_refresh()
    };
    let get = self::front(front, layer, &http);
    let url = format!("{}/aaa", servers.api);
    // One request while the token is young: the API's nonce is learnt (after a challenge).
    assert_eq!(get(url.clone()).await.unwrap(), (200, "aaa".into()));
    assert_eq!(servers.counts.nonce_challenges("/aaa"), 1);
    let expires_at = session.tokens().unwrap().expires_at().unwrap();
    tokio::time::sleep_until(expires_at + Duration::from_millis(50)).await;

    let n = 200;
    let requests: Vec<_> = (0..n).map(|_| tokio::spawn(get(url.clone()))).collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), Ok((200, "aaa".into())), "{front:?}");
    }
    let stats = session.stats();
    assert_eq!(stats.refreshes, 1, "{front:?} early {early}");
    assert_eq!(servers.counts.answers("/oauth/token", 200), 1);
    // Two seconds on, both servers' nonces have changed: the refresh and the API requests
    // were challenged, and answered.
    assert!(servers.counts.nonce_challenges("/oauth/token") >= 1);
    assert!(servers.counts.nonce_challenges("/aaa") >= 2, "{front:?}");
    if early {
        // The refresh came first: nothing was rejected, so nothing was replayed, however many
        // nonce challenges there were.
        assert_eq!(
            (stats.replays, servers.counts.answers("/aaa", 401)),
            (0, servers.counts.nonce_challenges("/aaa"))
        );
        // Each challenge at the API was answered by one retry (the token endpoint's by the
        // refresher, which the session does not count).
        assert_eq!(
            stats.dpop_nonce_retries,
            servers.counts.nonce_challenges("/aaa") as u64
        );
    } else {
        // The expired token's requests were rejected and replayed once each.
        assert!(stats.replays >= 1 && stats.replays <= n as u64, "{stats:?}");
    }
    // Every 200 at the API went with a bound token and a proof: n + 1 of them.
    assert_eq!(servers.counts.answers("/aaa", 200), n + 1);
}

#[tokio::test]
async fn a_tower_storm_across_an_expiry_with_changing_nonces_refreshes_once_and_fails_nothing() {
    storm_across_an_expiry(Front::Tower, true).await;
    storm_across_an_expiry(Front::Tower, false).await;
}

#[tokio::test]
async fn a_reqwest_storm_across_an_expiry_with_changing_nonces_refreshes_once_and_fails_nothing() {
    storm_across_an_expiry(Front::Reqwest, true).await;
    storm_across_an_expiry(Front::Reqwest, false).await;
}

/// The first request to the API has no nonce for it: one challenge, one more send, no
/// refresh, no replay; the next request carries the nonce at once.
async fn a_nonce_challenge_is_one_more_send(front: Front, max_replays: usize) {
    let servers = servers(Duration::from_secs(60), Some(Duration::from_secs(120))).await;
    let key = DpopKey::generate().unwrap();
    let (session, layer, http) = dpop_client(&servers, &key).await;
    let get = self::front(front, layer.max_replays(max_replays), &http);
    let url = format!("{}/aaa", servers.api);
    assert_eq!(get(url.clone()).await.unwrap(), (200, "aaa".into()));
    assert_eq!(
        (
            servers.counts.answers("/aaa", 401),
            servers.counts.nonce_challenges("/aaa"),
            servers.counts.answers("/aaa", 200),
        ),
        (1, 1, 1),
        "{front:?}"
    );
    assert_eq!(get(url).await.unwrap(), (200, "aaa".into()));
    assert_eq!(
        servers.counts.answers("/aaa", 401),
        1,
        "the nonce was remembered"
    );
    let stats = session.stats();
    assert_eq!((stats.refreshes, stats.replays, stats.waits), (0, 0, 0));
    assert_eq!(stats.dpop_nonce_retries, 1);
    let api: Uri = servers.api.parse().unwrap();
    assert!(key.nonce(&api).is_some());
}

#[tokio::test]
async fn a_use_dpop_nonce_challenge_is_answered_by_one_more_send_not_a_refresh() {
    for front in [Front::Tower, Front::Reqwest] {
        a_nonce_challenge_is_one_more_send(front, 1).await;
        // Replays off: the nonce challenge is still answered (it is not a token rejection).
        a_nonce_challenge_is_one_more_send(front, 0).await;
    }
}

/// The API hands out its current nonce with every success (RFC 9449 §8.2) and the client
/// keeps it: requests spread over several nonce lifetimes are challenged only at first
/// contact.
#[tokio::test]
async fn nonces_handed_out_with_successes_spare_later_challenges() {
    let servers = servers(Duration::from_secs(60), Some(Duration::from_secs(1))).await;
    let key = DpopKey::generate().unwrap();
    let (session, layer, http) = dpop_client(&servers, &key).await;
    let get = self::front(Front::Tower, layer, &http);
    let url = format!("{}/aaa", servers.api);
    for _ in 0..6 {
        assert_eq!(get(url.clone()).await.unwrap(), (200, "aaa".into()));
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // 3.6 s: the nonce of the first contact has long expired, yet only it was challenged.
    assert_eq!(servers.counts.nonce_challenges("/aaa"), 1);
    assert_eq!(servers.counts.answers("/aaa", 200), 6);
    assert_eq!(session.stats().refreshes, 0);
}

/// A server whose `GET /` answers its `n`th request (from 0) with `answer(n)`, and the
/// count of requests it saw.
fn counting<F>(answer: F) -> (Router, Arc<std::sync::atomic::AtomicUsize>)
where
    F: Fn(usize) -> AxumResponse + Clone + Send + Sync + 'static,
{
    let sends = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::clone(&sends);
    let handler = move || {
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(answer(n))
    };
    (Router::new().route("/", get(handler)), sends)
}

/// A 401 with these headers.
fn unauthorized(headers: &[(&'static str, String)]) -> AxumResponse {
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    for (name, value) in headers {
        response.headers_mut().insert(*name, value.parse().unwrap());
    }
    response
}

/// A refused proof (`invalid_dpop_proof`) is the server's answer: the token passed, so the
/// client neither refreshes nor replays; nor does a `use_dpop_nonce` without a usable nonce,
/// which a second send could not satisfy.
#[tokio::test]
async fn a_refused_proof_or_a_challenge_without_a_nonce_is_the_answer() {
    const REFUSED: &[(&str, &str)] = &[(
        "www-authenticate",
        r#"DPoP error="invalid_dpop_proof", algs="ES256""#,
    )];
    const NO_NONCE: &[(&str, &str)] = &[("www-authenticate", r#"DPoP error="use_dpop_nonce""#)];
    for front in [Front::Tower, Front::Reqwest] {
        for headers in [REFUSED, NO_NONCE] {
            let owned: Vec<_> = headers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
            let (router, sends) = counting(move |n| match n {
                0 => unauthorized(&owned),
                _ => "ok".into_response(),
            });
            let addr = support::serve(router).await;
            let session = Session::new();
            session.login(Tokens::new("access", "refresh")).unwrap();
            let refresher = refresher_fn(|_| async { Ok(Tokens::new("new", "r2")) });
            let layer =
                RefreshLayer::new(session.clone(), refresher).dpop(DpopKey::generate().unwrap());
            let get = self::front(front, layer, &support::client());
            let (status, _) = get(format!("http://{addr}/")).await.unwrap();
            assert_eq!(status, 401, "{front:?} {headers:?}");
            assert_eq!(sends.load(std::sync::atomic::Ordering::SeqCst), 1);
            let stats = session.stats();
            assert_eq!(
                (stats.refreshes, stats.replays, stats.dpop_nonce_retries),
                (0, 0, 0),
                "{front:?} {headers:?}"
            );
        }
    }
}

/// A server that challenges every request with a new nonce: the second challenge is the
/// answer, after exactly two sends, and no refresh.
#[tokio::test]
async fn a_server_that_keeps_asking_for_a_new_nonce_gets_two_sends_and_its_answer() {
    for front in [Front::Tower, Front::Reqwest] {
        let (router, sends) = counting(|n| {
            unauthorized(&[
                (
                    "www-authenticate",
                    r#"DPoP error="use_dpop_nonce""#.to_owned(),
                ),
                ("dpop-nonce", format!("nonce-{n}")),
            ])
        });
        let addr = support::serve(router).await;
        let session = Session::new();
        session.login(Tokens::new("access", "refresh")).unwrap();
        let refresher = refresher_fn(|_| async { Err(RefreshFailure::transient("never called")) });
        let key = DpopKey::generate().unwrap();
        let layer = RefreshLayer::new(session.clone(), refresher).dpop(key.clone());
        let get = self::front(front, layer, &support::client());
        let (status, _) = get(format!("http://{addr}/")).await.unwrap();
        assert_eq!(status, 401, "{front:?}");
        assert_eq!(
            sends.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "{front:?}"
        );
        let stats = session.stats();
        assert_eq!((stats.refreshes, stats.replays), (0, 0), "{front:?}");
        assert_eq!(stats.dpop_nonce_retries, 1, "one retry, not a loop");
        let origin: Uri = format!("http://{addr}").parse().unwrap();
        assert_eq!(key.nonce(&origin).as_deref(), Some("nonce-1"));
    }
}

/// A bound refresh token cannot be used without its key: a refresher without a key, or with
/// another one, gets `invalid_grant` (a permanent failure), and the session's own key still
/// refreshes afterwards (the refusals changed nothing).
#[tokio::test]
async fn a_bound_session_refreshed_without_its_key_is_refused() {
    let servers = servers(Duration::from_secs(60), None).await;
    let key = DpopKey::generate().unwrap();
    let http = support::client();
    let tokens = log_in(&http, &servers.auth, &key).await;
    let token_url = format!("{}/oauth/token", servers.auth).parse().unwrap();
    let keyless = OAuthRefresher::new(http.clone(), token_url);
    let refused = tower_jwt_refresh::client::Refresher::refresh(
        &keyless,
        tokens.refresh_token.as_deref().unwrap(),
    )
    .await;
    assert!(
        matches!(refused, Err(RefreshFailure::Permanent(_))),
        "{refused:?}"
    );
    // Another key is refused too.
    let token_url = format!("{}/oauth/token", servers.auth).parse().unwrap();
    let thief = OAuthRefresher::new(http.clone(), token_url).dpop(DpopKey::generate().unwrap());
    let refused = tower_jwt_refresh::client::Refresher::refresh(
        &thief,
        tokens.refresh_token.as_deref().unwrap(),
    )
    .await;
    assert!(
        matches!(refused, Err(RefreshFailure::Permanent(_))),
        "{refused:?}"
    );
    assert_eq!(servers.counts.answers("/oauth/token", 200), 0);
    let token_url = format!("{}/oauth/token", servers.auth).parse().unwrap();
    let owner = OAuthRefresher::new(http, token_url).dpop(key);
    let refreshed = tower_jwt_refresh::client::Refresher::refresh(
        &owner,
        tokens.refresh_token.as_deref().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(refreshed.token_type.as_deref(), Some("DPoP"));
}

// ----- what each request carries, seen by an echo service -----

/// Echoes the request's `Authorization` and `DPoP` headers; a 401 for the first `reject`
/// requests.
fn echo(
    reject: usize,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    service_fn(move |request: Request<Full<Bytes>>| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let header = |name| {
                request
                    .headers()
                    .get(name)
                    .map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned())
            };
            let body = json!({"authorization": header("authorization"), "dpop": header("dpop")});
            let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
            if n < reject {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
            }
            Ok(response)
        }
    })
}

fn claims(proof: &str) -> Value {
    let payload = proof.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn ath(token: &str) -> String {
    use sha2::Digest as _;
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()))
}

async fn echoed(
    service: impl tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Error>,
    method: Method,
    uri: &str,
) -> Result<Value, Error> {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::default())
        .unwrap();
    let response = service.oneshot(request).await?;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok(serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn every_send_carries_a_fresh_proof_of_its_request_and_token() {
    let session = Session::new();
    session.login(Tokens::new("old-token", "r1")).unwrap();
    let refresher = refresher_fn(|_| async { Ok(Tokens::new("new-token", "r2")) });
    let key = DpopKey::generate().unwrap();
    let layer = RefreshLayer::new(session, refresher).dpop(key.clone());
    // The first send is rejected: the replay goes with the new token and a new proof.
    let seen = echoed(
        layer.layer(echo(1)),
        Method::POST,
        "https://API.example.com:8443/orders?page=2",
    )
    .await
    .unwrap();
    assert_eq!(seen["authorization"], "DPoP new-token");
    let proof = claims(seen["dpop"].as_str().unwrap());
    assert_eq!(proof["htm"], "POST");
    assert_eq!(proof["htu"], "https://API.example.com:8443/orders");
    assert_eq!(proof["ath"], ath("new-token"));
    // Two requests, two `jti`s.
    let again = echoed(
        layer.layer(echo(0)),
        Method::GET,
        "https://api.example.com/",
    )
    .await
    .unwrap();
    let again = claims(again["dpop"].as_str().unwrap());
    assert_ne!(again["jti"], proof["jti"]);
    assert_eq!(
        (again["htm"].as_str(), again["htu"].as_str()),
        (Some("GET"), Some("https://api.example.com/"))
    );
}

#[tokio::test]
async fn bearer_typed_tokens_go_out_as_bearer_without_a_proof() {
    let session = Session::new();
    session
        .login(Tokens::new("plain", "r1").token_type("bearer"))
        .unwrap();
    let refresher = refresher_fn(|_| async { Err(RefreshFailure::transient("unused")) });
    let layer = RefreshLayer::new(session, refresher).dpop(DpopKey::generate().unwrap());
    let seen = echoed(
        layer.layer(echo(0)),
        Method::GET,
        "https://api.example.com/",
    )
    .await
    .unwrap();
    assert_eq!(seen["authorization"], "Bearer plain");
    assert_eq!(seen["dpop"], Value::Null);
}

#[tokio::test]
async fn a_path_only_request_needs_an_origin_for_its_proof() {
    let session = Session::new();
    session.login(Tokens::new("token", "r1")).unwrap();
    let refresher = refresher_fn(|_| async { Err(RefreshFailure::transient("unused")) });
    let layer = RefreshLayer::new(session, refresher).dpop(DpopKey::generate().unwrap());
    // A tonic client's request URI inside its channel: a path only.
    let failed = echoed(
        layer.layer(echo(0)),
        Method::POST,
        "/greeter.Greeter/SayHello",
    )
    .await;
    assert!(matches!(failed, Err(Error::DpopProof(_))), "{failed:?}");
    let layer = layer.dpop_origin(Uri::from_static("https://grpc.example.com"));
    let seen = echoed(
        layer.layer(echo(0)),
        Method::POST,
        "/greeter.Greeter/SayHello",
    )
    .await
    .unwrap();
    let proof = claims(seen["dpop"].as_str().unwrap());
    assert_eq!(
        proof["htu"],
        "https://grpc.example.com/greeter.Greeter/SayHello"
    );
}

// ----- gRPC: a real tonic client and server -----

/// A tonic channel behind `RefreshLayer::dpop` (its requests carry only a path: the layer is
/// told the origin), against a tonic server behind `JwtAuthLayer` requiring DPoP and nonces:
/// the first call's nonce challenge, a gRPC `UNAUTHENTICATED` carrying the DPoP challenge, is
/// answered with one more send; the token's expiry with one refresh and a replay; no call
/// fails.
#[tokio::test]
async fn a_tonic_client_answers_nonce_challenges_and_crosses_an_expiry() {
    use support::echo::{connect, say_via, serve_echo};

    const ORIGIN: &str = "http://grpc.test";
    let verifier = || {
        DpopVerifier::new(ORIGIN)
            .unwrap()
            .nonces(DpopNonces::new([3u8; 32]).unwrap())
    };
    let key = SigningKey::hmac(Algorithm::HS256, [4u8; 32]).unwrap();
    let keys = KeySet::try_from_keys(vec![key.verification_key()]).unwrap();
    let issuer = TokenIssuer::new(
        AccessTokenIssuer::new(key).lifetime(Duration::from_secs(2)),
        MemoryStore::new(),
    );
    let auth = JwtAuthLayer::new(keys)
        .leeway(Duration::ZERO)
        .dpop(verifier(), DpopMode::Required);
    let addr = serve_echo(auth).await;

    // The client's key; its login and refreshes go to an authorization service standing in
    // for one over HTTP: the issuer, given proofs verified as its endpoint would.
    let dpop = DpopKey::generate().unwrap();
    let signer = dpop.clone();
    let verified = move |path: &'static str| {
        let (dpop, verifier) = (signer.clone(), verifier());
        async move {
            let uri: Uri = format!("{ORIGIN}{path}").parse().unwrap();
            let nonce = verifier.current_nonce().unwrap();
            let proof = dpop
                .proof(&Method::POST, &uri)
                .nonce(&nonce)
                .sign()
                .unwrap();
            let mut headers = HeaderMap::new();
            headers.insert("dpop", proof.parse().unwrap());
            let path = Uri::from_static(path);
            verifier
                .verify(&Method::POST, &path, &headers, None)
                .await
                .unwrap()
        }
    };
    let pair = issuer
        .issue_bound("alice", &(), &verified("/login").await)
        .await
        .unwrap();
    let session = Session::new();
    session
        .login(Tokens::new(pair.access_token, pair.refresh_token).token_type("DPoP"))
        .unwrap();
    let refresher = refresher_fn(move |refresh: String| {
        let (issuer, proof) = (issuer.clone(), verified("/token"));
        async move {
            let pair = issuer
                .rotate_bound(&refresh, &proof.await)
                .await
                .map_err(RefreshFailure::permanent)?;
            Ok(Tokens::new(pair.access_token, pair.refresh_token).token_type(pair.token_type))
        }
    });
    let layer = RefreshLayer::new(session.clone(), refresher)
        .no_early_refresh()
        .tee_bodies(64 * 1024, tonic::body::Body::new)
        .dpop(dpop.clone())
        .dpop_origin(Uri::from_static(ORIGIN));
    let channel = ServiceBuilder::new()
        .layer(layer)
        .service(connect(addr).await);

    let origin = Uri::from_static(ORIGIN);
    assert_eq!(dpop.nonce(&origin), None);
    let reply = say_via(channel.clone(), None, "first").await.unwrap();
    assert_eq!(reply, "alice: first");
    // The challenge's nonce was learnt from the gRPC answer, and answered without a refresh.
    assert!(dpop.nonce(&origin).is_some());
    assert_eq!((session.stats().refreshes, session.stats().replays), (0, 0));

    let expires_at = session.tokens().unwrap().expires_at().unwrap();
    tokio::time::sleep_until(expires_at + Duration::from_millis(100)).await;
    for n in 0..5 {
        let reply = say_via(channel.clone(), None, &format!("call {n}")).await;
        assert_eq!(reply.unwrap(), format!("alice: call {n}"));
    }
    let stats = session.stats();
    assert_eq!(stats.refreshes, 1);
    assert_eq!(stats.replays, 1, "the expired token's call, replayed once");
}
