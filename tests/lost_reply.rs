//! A refresh whose reply is lost after the server committed the rotation, over real sockets,
//! on every store: the client's retry presents the token that was just rotated out, and the
//! issuer's grace window (30 s by default) answers it with the same successor, so the session
//! survives. Without a grace window (the old default) that retry is reuse and ends it.
//!
//! The loss is a TCP proxy in front of the token endpoint: it passes the first refresh on,
//! waits for the server's answer to begin (the rotation is committed by then), and closes the
//! connection without passing any of it back. Real time: the access tokens live 6 s, and the
//! client refreshes in the second half of that. The Redis half needs the `redis` feature and
//! `REDIS_URL` (`scripts/test` provides both); without `REDIS_URL` it is skipped with a notice,
//! and under `CI=true` it fails.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tower::{ServiceBuilder, ServiceExt};
use tower_jwt_refresh::client::{Error, OAuthRefresher, RefreshLayer, Session, Tokens};
use tower_jwt_refresh::issuer::store::RefreshStore;
use tower_jwt_refresh::issuer::{AccessTokenIssuer, TokenIssuer};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};
use tower_jwt_refresh::server::JwtAuthLayer;

/// A TCP proxy to `upstream` that loses the reply of its first connection; every later
/// connection passes both ways.
struct LossyProxy {
    addr: SocketAddr,
    /// Replies lost after the server had begun to answer.
    lost: Arc<AtomicUsize>,
}

impl LossyProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lost = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&lost);
        tokio::spawn(async move {
            let mut first = true;
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(upstream).await.unwrap();
                if std::mem::take(&mut first) {
                    tokio::spawn(lose_the_reply(client, server, Arc::clone(&counter)));
                } else {
                    tokio::spawn(async move {
                        let (mut client, mut server) = (client, server);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                }
            }
        });
        Self { addr, lost }
    }

    fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

/// Passes the request on; once the server's answer begins, closes both sides and counts the
/// reply as lost.
async fn lose_the_reply(client: TcpStream, server: TcpStream, lost: Arc<AtomicUsize>) {
    let (mut from_client, to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let forward =
        tokio::spawn(async move { tokio::io::copy(&mut from_client, &mut to_server).await });
    let mut first_byte = [0u8; 1];
    // The endpoint answers only after the store has committed the rotation.
    if from_server.read(&mut first_byte).await.unwrap_or(0) > 0 {
        lost.fetch_add(1, Ordering::SeqCst);
    }
    forward.abort();
    drop((to_client, from_server));
}

/// What a run saw.
struct Run {
    /// Every request's outcome, in order.
    outcomes: Vec<Result<StatusCode, Error>>,
    lost: usize,
    session: Session,
    /// The first login's access token.
    first_access: String,
    addr: SocketAddr,
}

/// Serves `issuer`'s refresh endpoint and an API behind its deny list, logs a client in, and
/// sends requests (paced, as an application would) until the client has refreshed, or a
/// request has seen its session end, or 15 s have passed. The first refresh reply is lost.
async fn lose_the_first_refresh_reply<S: RefreshStore + Clone>(issuer: TokenIssuer<S>) -> Run {
    let auth = JwtAuthLayer::new(verification_key())
        .leeway(Duration::ZERO)
        .deny_list(issuer.deny_list());
    let app = Router::new()
        .route("/aaa", get(|| async { "aaa" }).layer(auth))
        .route_service("/oauth/token", issuer.refresh_endpoint());
    let addr = support::serve(app).await;
    let proxy = LossyProxy::start(addr).await;

    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let pair = issuer.issue("alice", &()).await.unwrap();
    let session = Session::new();
    let tokens = Tokens::new(pair.access_token.clone(), pair.refresh_token)
        .expires_in(Duration::from_secs(pair.expires_in));
    session.login(tokens).unwrap();
    let token_url = format!("http://{}/oauth/token", proxy.addr)
        .parse()
        .unwrap();
    // The client's defaults: a 10 s refresh timeout, refreshing early.
    let layer = RefreshLayer::new(
        session.clone(),
        OAuthRefresher::new(http.clone(), token_url),
    );
    let client = ServiceBuilder::new().layer(layer).service(http);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut outcomes = Vec::new();
    // Until the client has refreshed, or a request has seen the session end (which a
    // background refresh may decide between two requests), or time is up.
    while session.stats().refreshes == 0 && tokio::time::Instant::now() < deadline {
        let request = Request::get(format!("http://{addr}/aaa"))
            .body(Full::default())
            .unwrap();
        let outcome = client.clone().oneshot(request).await.map(|r| r.status());
        let ended = matches!(outcome, Err(Error::SessionExpired));
        outcomes.push(outcome);
        if ended {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Run {
        outcomes,
        lost: proxy.lost(),
        session,
        first_access: pair.access_token,
        addr,
    }
}

fn verification_key() -> tower_jwt_refresh::keys::Key {
    signing_key().verification_key()
}

fn signing_key() -> SigningKey {
    SigningKey::hmac(Algorithm::HS256, [7u8; 32]).unwrap()
}

/// An issuer of 6 s access tokens on `store`, with the default grace window.
fn issuer<S: RefreshStore + Clone>(store: S) -> TokenIssuer<S> {
    let access = AccessTokenIssuer::new(signing_key()).lifetime(Duration::from_secs(6));
    TokenIssuer::new(access, store)
}

/// `GET /aaa` with `access_token`, straight to the server.
async fn get_with(addr: SocketAddr, access_token: &str) -> StatusCode {
    let request = Request::get(format!("http://{addr}/aaa"))
        .header("authorization", format!("Bearer {access_token}"))
        .body(Full::default())
        .unwrap();
    support::send(&support::client(), request).await.status
}

/// With the default grace window, the session survives the lost reply.
async fn survives<S: RefreshStore + Clone>(store: S) {
    let issuer = issuer(store);
    let run = lose_the_first_refresh_reply(issuer.clone()).await;
    assert_eq!(
        run.lost, 1,
        "the first refresh reply was lost after the server answered"
    );
    let stats = run.session.stats();
    assert_eq!(
        (stats.refresh_failures, stats.refreshes),
        (1, 1),
        "one lost refresh, then one retried with the same token"
    );
    // No request is refused or logged out. A request whose token expires while the client
    // backs off from the lost reply may see that transient failure (a loaded machine can
    // stretch the run that far); the session itself survives.
    for outcome in &run.outcomes {
        assert!(
            matches!(outcome, Ok(StatusCode::OK) | Err(Error::RefreshFailed(_))),
            "{outcome:?}"
        );
    }
    assert!(run.outcomes.iter().any(|o| matches!(o, Ok(StatusCode::OK))));
    assert!(!run.session.is_expired());
    // The family lives: the new access token is accepted, and the refresh token the retry
    // got is the current one, which rotates.
    let current = run.session.tokens().unwrap();
    assert_eq!(
        get_with(run.addr, current.access_token()).await,
        StatusCode::OK
    );
    issuer
        .rotate(current.refresh_token().unwrap())
        .await
        .expect("the retry got the family's current refresh token");
}

/// Without a grace window, the retry of the lost refresh is reuse: the family is revoked and
/// the session ends. This is what the old default did.
async fn ends_without_grace<S: RefreshStore + Clone>(store: S) {
    let issuer = issuer(store).grace_period(Duration::ZERO);
    let run = lose_the_first_refresh_reply(issuer).await;
    assert_eq!(run.lost, 1);
    assert!(run.session.is_expired());
    assert!(
        run.outcomes
            .iter()
            .any(|o| matches!(o, Err(Error::SessionExpired))),
        "{:?}",
        run.outcomes
    );
    // Reuse revoked the whole family: even the first access token, still unexpired, is refused.
    assert_eq!(
        get_with(run.addr, &run.first_access).await,
        StatusCode::UNAUTHORIZED
    );
}

mod memory {
    use tower_jwt_refresh::issuer::MemoryStore;

    #[tokio::test]
    async fn a_lost_refresh_reply_is_retried_inside_the_grace_window_and_the_session_survives() {
        super::survives(MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn without_a_grace_window_a_lost_refresh_reply_ends_the_session() {
        super::ends_without_grace(MemoryStore::new()).await;
    }
}

#[cfg(feature = "redis")]
mod redis {
    use tower_jwt_refresh::issuer::RedisStore;

    /// The store on `REDIS_URL`, or `None` (with a notice) when it is not set outside CI.
    async fn store() -> Option<RedisStore> {
        super::support::redis_store().await
    }

    #[tokio::test]
    async fn a_lost_refresh_reply_is_retried_inside_the_grace_window_and_the_session_survives() {
        if let Some(store) = store().await {
            super::survives(store).await;
        }
    }

    #[tokio::test]
    async fn without_a_grace_window_a_lost_refresh_reply_ends_the_session() {
        if let Some(store) = store().await {
            super::ends_without_grace(store).await;
        }
    }
}
