//! Redis going away mid-test, for real: the refresh endpoint answers 503 with `Retry-After`
//! and hands out nothing, verification of access tokens keeps working, and once the same
//! server is back (with its append-only file) refresh recovers without restarting anything,
//! with no session lost and reuse detection intact.
//!
//! The test runs its own `redis-server` on a free loopback port, so stopping it disturbs no
//! other test. Without the binary it is skipped with a notice, or fails under `CI=true`.
//!
//! A store whose revocations are propagated goes through the same restart: what it knows
//! stays refused, and its subscription comes back and resynchronises by itself.
//!
//! Then the deny-list circuit breaker, on a scripted connection (the store is generic over
//! it) and paused time: one slow answer does not open it, consecutive failures do, an answer
//! closes it, and fail-closed answers 503 through the layer while it is open.

mod support;

use std::collections::VecDeque;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use redis::aio::ConnectionLike;
use serde_json::Value;
use support::{HttpClient, Reply, client, get_bearer, send, serve};
use tower::ServiceExt;
use tower_jwt_refresh::issuer::{AccessTokenIssuer, IssueError, RedisStore, TokenIssuer};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};
use tower_jwt_refresh::server::{Claims, JwtAuthLayer};

/// A redis-server of our own, killed (and its files removed) when dropped.
struct Server {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            support::skip_or_fail("redis-server is not installed", "scripts/test installs it");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("tjr-fault-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server on the same port and directory, so its append-only file is replayed.
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (bounded) until the server answers.
    async fn ready(&self) {
        for _ in 0..100 {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut connection) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "redis-server on port {} did not come up within 5 s",
            self.port
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn refresh(client: &HttpClient, addr: std::net::SocketAddr, token: &str) -> Reply {
    let req = Request::post(format!("http://{addr}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!(
            "grant_type=refresh_token&refresh_token={token}"
        ))))
        .unwrap();
    // The bound turns a hang into a failure; the store's own timeouts are far shorter.
    tokio::time::timeout(Duration::from_secs(10), send(client, req))
        .await
        .expect("no hang")
}

#[tokio::test]
async fn redis_outage_and_recovery() {
    let Some(mut redis) = Server::start() else {
        return;
    };
    redis.ready().await;
    let key = SigningKey::hmac(Algorithm::HS256, [3u8; 32]).unwrap();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let issuer = TokenIssuer::new(AccessTokenIssuer::new(key.clone()), store);
    let auth = JwtAuthLayer::new(key.verification_key()).deny_list(issuer.deny_list());
    let app = Router::new()
        .route(
            "/",
            get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }).layer(auth),
        )
        .route_service("/oauth/token", issuer.refresh_endpoint());
    let addr = serve(app).await;
    let client = client();

    let first = issuer.issue("alice", &()).await.unwrap();
    let reply = refresh(&client, addr, &first.refresh_token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let pair: Value = serde_json::from_str(&reply.body).unwrap();
    let (access, current) = (
        pair["access_token"].as_str().unwrap(),
        pair["refresh_token"].as_str().unwrap(),
    );

    redis.stop();
    let reply = refresh(&client, addr, current).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(reply.headers["retry-after"], "1");
    // Two more failures (three in a row, the default threshold) open the store's breaker:
    // the next call fails at once instead of waiting out the connection's timeouts again.
    for _ in 0..2 {
        let reply = refresh(&client, addr, current).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let asked = std::time::Instant::now();
    let reply = refresh(&client, addr, current).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        !reply.body.contains("refresh_token\":"),
        "nothing is handed out: {}",
        reply.body
    );
    // Verification keeps working without the store.
    let reply = get_bearer(&client, addr, access).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "alice")
    );
    // Nor is a new session started that the store did not record.
    assert!(matches!(
        issuer.issue("bob", &()).await,
        Err(IssueError::Unavailable(_))
    ));

    redis.spawn();
    redis.ready().await;
    // The client retries as Retry-After says; the connection comes back by itself.
    let mut recovered = None;
    for _ in 0..50 {
        let reply = refresh(&client, addr, current).await;
        if reply.status == StatusCode::OK {
            recovered = Some(reply);
            break;
        }
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = recovered.expect("refresh recovers once redis is back");
    let pair: Value = serde_json::from_str(&reply.body).unwrap();
    // The session survived, and so did reuse detection: the first token is still rotated out.
    let reply = get_bearer(&client, addr, pair["access_token"].as_str().unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = refresh(&client, addr, &first.refresh_token).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    // That reuse revoked the family: the recovered pair is dead too.
    let recovered_refresh = pair["refresh_token"].as_str().unwrap();
    assert_eq!(
        refresh(&client, addr, recovered_refresh).await.status,
        StatusCode::BAD_REQUEST
    );
    let reply = get_bearer(&client, addr, pair["access_token"].as_str().unwrap()).await;
    assert_eq!(reply.description(), "token revoked");
}

/// A propagating instance through a Redis restart: while Redis is down, the revocations it
/// already knows stay refused (from its local set) and the other tokens follow the fallback
/// (fail open here); once Redis is back, the subscription comes back by itself and
/// resynchronises, and new revocations propagate again.
#[tokio::test]
async fn propagated_revocations_through_a_redis_restart() {
    let Some(mut redis) = Server::start() else {
        return;
    };
    redis.ready().await;
    let key = SigningKey::hmac(Algorithm::HS256, [3u8; 32]).unwrap();
    let issuer = |store| TokenIssuer::new(AccessTokenIssuer::new(key.clone()), store);
    let a = issuer(RedisStore::connect(&redis.url()).await.unwrap());
    let b = issuer(
        RedisStore::connect(&redis.url())
            .await
            .unwrap()
            .propagate_revocations(redis::Client::open(redis.url()).unwrap())
            .await
            .unwrap(),
    );
    let layer = JwtAuthLayer::new(key.verification_key()).deny_list(b.deny_list());
    let revoked = a.issue("alice", &()).await.unwrap();
    let live = a.issue("bob", &()).await.unwrap();
    assert!(a.revoke(&revoked.refresh_token).await.unwrap());
    until_status(&layer, &revoked.access_token, StatusCode::UNAUTHORIZED).await;

    redis.stop();
    let noticed = tokio::time::timeout(Duration::from_secs(10), async {
        while b.store().revocations_synced() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(noticed.is_ok(), "the lost subscription was noticed");
    assert_eq!(
        status(&layer, &revoked.access_token).await,
        StatusCode::UNAUTHORIZED,
        "known revocations hold while Redis is down"
    );
    assert_eq!(status(&layer, &live.access_token).await, StatusCode::OK);

    redis.spawn();
    redis.ready().await;
    assert!(
        b.store()
            .wait_for_revocation_sync(Duration::from_secs(10))
            .await
    );
    // A's connection comes back by itself; its first call may still see the old one fail.
    let mut revoked_live = false;
    for _ in 0..50 {
        if let Ok(done) = a.revoke(&live.refresh_token).await {
            revoked_live = done;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(revoked_live, "a revocation succeeds once redis is back");
    until_status(&layer, &live.access_token, StatusCode::UNAUTHORIZED).await;
}

/// Waits, bounded, until `layer` answers `token` with `expected`.
async fn until_status(layer: &JwtAuthLayer, token: &str, expected: StatusCode) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while status(layer, token).await != expected {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never answered {expected}");
}

/// What the scripted connection answers to the next command.
#[derive(Clone, Copy)]
enum Answer {
    /// `EXISTS` answered: whether the family is revoked.
    Exists(bool),
    /// No answer for 10 s (past any check timeout).
    Slow,
    /// The connection is refused.
    Refused,
}

/// A Redis connection that answers as scripted, counting the commands it was sent.
#[derive(Clone, Default)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    sent: Arc<AtomicUsize>,
}

impl Scripted {
    fn script(&self, answers: &[Answer]) {
        self.answers.lock().unwrap().extend(answers);
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }
}

impl ConnectionLike for Scripted {
    fn req_packed_command<'a>(
        &'a mut self,
        _: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        let answer = self.answers.lock().unwrap().pop_front();
        Box::pin(async move {
            match answer.expect("a scripted answer for every command sent") {
                Answer::Exists(revoked) => Ok(redis::Value::Int(i64::from(revoked))),
                Answer::Slow => {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok(redis::Value::Int(0))
                }
                Answer::Refused => {
                    Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
                }
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        _: &'a redis::Pipeline,
        _: usize,
        _: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async { Err(std::io::Error::other("no pipelines in this script").into()) })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// The status a protected route answers to `token`, behind `layer`.
async fn status(layer: &JwtAuthLayer, token: &str) -> StatusCode {
    let service = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::default()))
        });
    let request = Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    service.oneshot(request).await.unwrap().status()
}

/// A layer whose deny list is `store`'s, and an access token of one session.
fn protected(store: RedisStore<Scripted>) -> (JwtAuthLayer, String) {
    let key = SigningKey::hmac(Algorithm::HS256, [3u8; 32]).unwrap();
    let access = AccessTokenIssuer::new(key.clone());
    let token = access.mint("alice", "session", &()).unwrap().token;
    let issuer = TokenIssuer::new(access, store);
    let layer = JwtAuthLayer::new(key.verification_key()).deny_list(issuer.deny_list());
    (layer, token)
}

#[tokio::test(start_paused = true)]
async fn one_slow_deny_list_check_does_not_open_the_breaker() {
    let redis = Scripted::default();
    let (layer, token) = protected(RedisStore::with_connection(redis.clone()));
    redis.script(&[Answer::Slow, Answer::Exists(true)]);
    // The slow check lets the token through (fail open)...
    assert_eq!(status(&layer, &token).await, StatusCode::OK);
    // ... and the next one still asks Redis, which says revoked.
    assert_eq!(status(&layer, &token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(redis.sent(), 2);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_open_the_breaker_and_an_answer_closes_it() {
    let redis = Scripted::default();
    let (layer, token) = protected(RedisStore::with_connection(redis.clone()));
    redis.script(&[Answer::Slow, Answer::Refused, Answer::Slow]);
    for _ in 0..3 {
        assert_eq!(status(&layer, &token).await, StatusCode::OK);
    }
    assert_eq!(redis.sent(), 3);
    // Open: checks skip Redis (even though it would now say revoked).
    redis.script(&[Answer::Exists(true), Answer::Exists(false)]);
    assert_eq!(status(&layer, &token).await, StatusCode::OK);
    assert_eq!(redis.sent(), 3);
    // A second later the next check asks again; the answer closes the breaker.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(status(&layer, &token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&layer, &token).await, StatusCode::OK);
    assert_eq!(redis.sent(), 5);
}

#[tokio::test(start_paused = true)]
async fn the_threshold_is_configurable() {
    let redis = Scripted::default();
    let store = RedisStore::with_connection(redis.clone()).breaker_threshold(5);
    let (layer, token) = protected(store);
    redis.script(&[Answer::Refused; 5]);
    for _ in 0..5 {
        assert_eq!(status(&layer, &token).await, StatusCode::OK);
    }
    assert_eq!(status(&layer, &token).await, StatusCode::OK);
    assert_eq!(redis.sent(), 5);
}

#[tokio::test(start_paused = true)]
async fn fail_closed_answers_503_while_the_breaker_is_open() {
    let redis = Scripted::default();
    let store = RedisStore::with_connection(redis.clone()).fail_closed(true);
    let (layer, token) = protected(store);
    redis.script(&[Answer::Slow, Answer::Refused, Answer::Slow]);
    // Each failed check answers 503; the third opens the breaker.
    for _ in 0..3 {
        assert_eq!(
            status(&layer, &token).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    // Open: 503 without asking Redis.
    redis.script(&[Answer::Exists(false)]);
    assert_eq!(
        status(&layer, &token).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(redis.sent(), 3);
    // Redis answers again: the token passes.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(status(&layer, &token).await, StatusCode::OK);
    assert_eq!(redis.sent(), 4);
}

#[tokio::test(start_paused = true)]
async fn duration_max_check_timeout_still_checks() {
    let redis = Scripted::default();
    let store = RedisStore::with_connection(redis.clone()).check_timeout(Duration::MAX);
    let (layer, token) = protected(store);
    redis.script(&[Answer::Exists(true)]);
    assert_eq!(status(&layer, &token).await, StatusCode::UNAUTHORIZED);
}
