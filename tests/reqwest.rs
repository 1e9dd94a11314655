//! `RefreshMiddleware` over real sockets: a reqwest client against an axum server behind
//! `JwtAuthLayer`, with the issuer as the refresher. One session also serves a tower client
//! and a tonic channel at the same time, and the three share one refresh.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::echo::{connect, say_via, serve_echo};
use tokio::sync::Semaphore;
use tower::{ServiceBuilder, ServiceExt};
use tower_jwt_refresh::client::{
    Error, RefreshFailure, RefreshLayer, RefreshMiddleware, Refresher, Session, Tokens,
    refresher_fn,
};
use tower_jwt_refresh::issuer::{AccessTokenIssuer, MemoryStore, TokenIssuer};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};
use tower_jwt_refresh::server::JwtAuthLayer;

const SECRET: &[u8] = b"the reqwest test secret, 32 bytes!";

/// The issuer and verifier of one test, and where its HTTP server listens.
struct World {
    issuer: TokenIssuer<MemoryStore>,
    http: String,
    grpc: std::net::SocketAddr,
    /// Refreshes so far.
    refreshes: Arc<AtomicUsize>,
}

impl World {
    async fn start() -> Self {
        let key = SigningKey::hmac(Algorithm::HS256, SECRET).unwrap();
        let access = AccessTokenIssuer::new(key.clone()).lifetime(Duration::from_secs(600));
        let issuer = TokenIssuer::new(access, MemoryStore::new());
        let auth = JwtAuthLayer::new(key.verification_key()).leeway(Duration::ZERO);
        let app = Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route("/echo", post(|body: Bytes| async move { body }))
            .layer(auth.clone());
        let http = format!("http://{}", support::serve(app).await);
        let grpc = serve_echo(auth).await;
        Self {
            issuer,
            http,
            grpc,
            refreshes: Arc::default(),
        }
    }

    /// A session logged in with a refresh token the issuer knows and an access token the
    /// server refuses (signed with another key), so every first request is rejected.
    async fn session(&self) -> Session {
        let pair = self.issuer.issue("alice", &()).await.unwrap();
        let session = Session::new();
        let forged = forged_access_token();
        session
            .login(Tokens::new(forged, pair.refresh_token))
            .unwrap();
        session
    }

    /// Rotates with the issuer after `gate` lets it (at once without one), counting calls.
    fn refresher(&self, gate: Option<Arc<Semaphore>>) -> impl Refresher + Clone {
        let (issuer, count) = (self.issuer.clone(), Arc::clone(&self.refreshes));
        refresher_fn(move |refresh: String| {
            let (issuer, gate) = (issuer.clone(), gate.clone());
            count.fetch_add(1, Ordering::SeqCst);
            async move {
                if let Some(gate) = gate {
                    gate.acquire().await.unwrap().forget();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                let pair = issuer
                    .rotate(&refresh)
                    .await
                    .map_err(RefreshFailure::permanent)?;
                Ok(Tokens::new(pair.access_token, pair.refresh_token))
            }
        })
    }

    fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }
}

fn forged_access_token() -> String {
    let other = SigningKey::hmac(Algorithm::HS256, b"not the server's key, 32 bytes long").unwrap();
    let access = AccessTokenIssuer::new(other);
    access.mint("alice", "sid", &()).unwrap().token
}

fn reqwest_client(layer: RefreshLayer) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(RefreshMiddleware::new(layer))
        .build()
}

/// Our error inside reqwest-middleware's.
fn ours(error: &reqwest_middleware::Error) -> &Error {
    match error {
        reqwest_middleware::Error::Middleware(e) => e.downcast_ref::<Error>().expect("ours"),
        other => panic!("not a middleware error: {other:?}"),
    }
}

#[tokio::test]
async fn a_storm_of_rejections_is_refreshed_once_and_every_request_replayed() {
    let world = World::start().await;
    let session = world.session().await;
    let client = reqwest_client(RefreshLayer::new(session.clone(), world.refresher(None)));
    let requests = (0..100).map(|i| {
        let (client, url) = (client.clone(), format!("{}/echo", world.http));
        tokio::spawn(async move {
            let response = client.post(url).body(format!("body {i}")).send().await?;
            Ok::<_, reqwest_middleware::Error>((response.status(), response.text().await?, i))
        })
    });
    for request in requests.collect::<Vec<_>>() {
        let (status, body, i) = request.await.unwrap().unwrap();
        assert_eq!((status.as_u16(), body), (200, format!("body {i}")));
    }
    assert_eq!(world.refreshes(), 1);
    let stats = session.stats();
    assert_eq!((stats.refreshes, stats.replays), (1, 100));
}

#[tokio::test]
async fn a_tower_client_a_tonic_channel_and_reqwest_share_one_session_and_one_refresh() {
    let world = World::start().await;
    let session = world.session().await;
    // The refresh is held until every front end's first request has been rejected.
    let gate = Arc::new(Semaphore::new(0));
    let layer = RefreshLayer::new(session.clone(), world.refresher(Some(Arc::clone(&gate))));
    // Under each front end's refresh, the rejections it meets are counted.
    let rejected = Arc::new(AtomicUsize::new(0));
    let reqwest = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(RefreshMiddleware::new(layer.clone()))
        .with(CountRejections(Arc::clone(&rejected)))
        .build();
    let count = Arc::clone(&rejected);
    let hyper = ServiceBuilder::new()
        .layer(layer.clone())
        .map_response(move |response: http::Response<_>| {
            if response.status() == 401 {
                count.fetch_add(1, Ordering::SeqCst);
            }
            response
        })
        .service(support::client());
    let count = Arc::clone(&rejected);
    let channel = ServiceBuilder::new()
        .layer(layer.tee_bodies(64 * 1024, tonic::body::Body::new))
        .map_response(move |response: http::Response<_>| {
            if response
                .headers()
                .get("grpc-status")
                .is_some_and(|s| s == "16")
            {
                count.fetch_add(1, Ordering::SeqCst);
            }
            response
        })
        .service(connect(world.grpc).await);

    let url = format!("{}/hello", world.http);
    let by_reqwest = tokio::spawn({
        let (client, url) = (reqwest.clone(), url.clone());
        async move { client.get(url).send().await.unwrap().text().await }
    });
    let by_tower = tokio::spawn({
        let request = http::Request::get(&url)
            .body(Full::<Bytes>::default())
            .unwrap();
        async move {
            let response = hyper.oneshot(request).await.unwrap();
            response.into_body().collect().await.unwrap().to_bytes()
        }
    });
    let by_tonic = tokio::spawn(say_via(channel, None, "hi"));
    while rejected.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gate.add_permits(1);
    assert_eq!(by_reqwest.await.unwrap().unwrap(), "hello");
    assert_eq!(by_tower.await.unwrap(), "hello");
    assert_eq!(by_tonic.await.unwrap().unwrap(), "alice: hi");
    assert_eq!(world.refreshes(), 1, "one refresh for all three front ends");
    assert_eq!(session.stats().replays, 3);
}

/// Counts the 401s that come back through it.
struct CountRejections(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for CountRejections {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let response = next.run(request, extensions).await?;
        if response.status() == 401 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        Ok(response)
    }
}

#[tokio::test]
async fn a_streaming_body_gets_its_401_after_the_refresh() {
    let world = World::start().await;
    let session = world.session().await;
    let client = reqwest_client(RefreshLayer::new(session.clone(), world.refresher(None)));
    let url = format!("{}/echo", world.http);
    let stream = reqwest::Body::wrap(Full::new(Bytes::from_static(b"streamed")));
    let response = client.post(&url).body(stream).send().await.unwrap();
    assert_eq!(
        response.status(),
        401,
        "a body that cannot be cloned is not replayed"
    );
    assert_eq!(world.refreshes(), 1, "the refresh still happened");
    let response = client.post(&url).body("again").send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "again");
}

#[tokio::test]
async fn a_request_is_never_sent_with_the_next_logins_tokens() {
    let world = World::start().await;
    let session = world.session().await;
    let gate = Arc::new(Semaphore::new(0));
    let layer = RefreshLayer::new(session.clone(), world.refresher(Some(Arc::clone(&gate))));
    let client = reqwest_client(layer);
    let url = format!("{}/hello", world.http);
    let waiting = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        async move { client.get(url).send().await }
    });
    while world.refreshes() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let bob = world.issuer.issue("bob", &()).await.unwrap();
    session
        .login(Tokens::new(bob.access_token, bob.refresh_token))
        .unwrap();
    gate.add_permits(1);
    let error = waiting.await.unwrap().unwrap_err();
    assert!(matches!(ours(&error), Error::SessionChanged), "{error:?}");
    // A request made after the login goes out as bob.
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_hung_refresh_ends_the_wait_at_its_bound() {
    let world = World::start().await;
    let session = world.session().await;
    let gate = Arc::new(Semaphore::new(0));
    let layer = RefreshLayer::new(session, world.refresher(Some(gate)))
        .wait_timeout(Duration::from_millis(200));
    let error = reqwest_client(layer)
        .get(format!("{}/hello", world.http))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(ours(&error), Error::WaitTimeout), "{error:?}");
}

#[tokio::test]
async fn past_the_prefetch_point_requests_go_out_at_once_on_the_valid_token() {
    let world = World::start().await;
    // A valid access token that the client believes lives 4 s, with a 2 s early window: its
    // prefetch point lies 1 to 2 s before expiry, and the stale point 10 ms before.
    let pair = world.issuer.issue("alice", &()).await.unwrap();
    let session = Session::new();
    let tokens = Tokens::new(pair.access_token, pair.refresh_token);
    session
        .login(tokens.expires_in(Duration::from_secs(4)))
        .unwrap();
    // The refresh never ends: a request that waited for it would fail.
    let gate = Arc::new(Semaphore::new(0));
    let layer = RefreshLayer::new(session.clone(), world.refresher(Some(gate)))
        .early_refresh(Duration::from_secs(2))
        .stale_margin(Duration::from_millis(10))
        .wait_timeout(Duration::from_millis(500));
    let client = reqwest_client(layer);
    tokio::time::sleep(Duration::from_millis(3050)).await;
    for _ in 0..20 {
        let response = client.get(format!("{}/hello", world.http)).send().await;
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_eq!(world.refreshes(), 1, "one background refresh");
    assert_eq!(session.stats().waits, 0);
}
