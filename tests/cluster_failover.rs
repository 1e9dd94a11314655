//! A Redis Cluster primary killed (SIGKILL) while sessions rotate their refresh tokens through
//! the refresh endpoint, and its replica promoted: every rotation that fails is a 503 with
//! `Retry-After` (never a 500, never a hang), rotation recovers by itself once the replica
//! has taken over, and the test counts the tokens that were handed out (a 200) but are
//! unknown afterwards: acknowledged writes the failover lost. It runs twice, without and with
//! `RedisStore::wait_for_replicas`; with it, no acknowledged token may be lost. An instance
//! propagating revocations (`RevocationSubscriber::cluster`) watches throughout: after the
//! failover it must be synchronised again, on the new slot map, and hear a revocation made on
//! the promoted replica.
//!
//! It runs on the cluster `scripts/test` starts (`REDIS_CLUSTER_URLS`, `REDIS_CLUSTER_PORTS`,
//! `REDIS_CLUSTER_DIR`, from `scripts/redis-cluster`, whose nodes fail over after 1.5 s), and
//! leaves it as healthy as it found it: the killed node is started again from its
//! configuration and rejoins as the new primary's replica. Without the variables it is
//! skipped with a notice, or fails under `CI=true`. Run it with `--nocapture` to see the
//! figures SECURITY.md reports.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use redis::aio::MultiplexedConnection;
use serde_json::Value;
use support::{HttpClient, client, send, serve};
use tower_jwt_refresh::issuer::store::RefreshStore;
use tower_jwt_refresh::issuer::{
    AccessTokenIssuer, IssuedTokens, RedisStore, RevocationSubscriber, TokenIssuer,
};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};

/// Concurrent sessions, all on the primary that is killed.
const SESSIONS: usize = 16;

/// The cluster `scripts/test` started.
struct Cluster {
    urls: Vec<String>,
    ports: Vec<u16>,
    dir: String,
}

impl Cluster {
    fn from_env() -> Option<Self> {
        let urls = support::redis_cluster_urls()?;
        let var = |name: &str| {
            std::env::var(name)
                .unwrap_or_else(|_| panic!("REDIS_CLUSTER_URLS is set, {name} is not"))
        };
        let ports = var("REDIS_CLUSTER_PORTS")
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect();
        Some(Self {
            urls,
            ports,
            dir: var("REDIS_CLUSTER_DIR"),
        })
    }

    /// The primaries and, for each, its replica's port.
    async fn primaries(&self) -> Vec<(u16, u16)> {
        let mut pairs = Vec::new();
        for &port in &self.ports {
            let Some(role) = role(port).await else {
                continue;
            };
            if let Role::Replica { of } = role {
                pairs.push((of, port));
            }
        }
        pairs.sort();
        pairs
    }

    /// Waits (bounded, 30 s) until every node is up, says `cluster_state:ok`, and three
    /// primaries each have one replica whose link is up.
    async fn healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ok = true;
            let mut linked = 0;
            for &port in &self.ports {
                let state = info(port, &["CLUSTER", "INFO"]).await;
                ok &= state.is_some_and(|i| i.contains("cluster_state:ok"));
                let replication = info(port, &["INFO", "replication"]).await;
                if replication.is_some_and(|r| r.contains("master_link_status:up")) {
                    linked += 1;
                }
            }
            let primaries = self.primaries().await;
            let mut distinct: Vec<u16> = primaries.iter().map(|(p, _)| *p).collect();
            distinct.dedup();
            if ok && linked == 3 && distinct.len() == 3 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster is not healthy: {primaries:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill(&self, port: u16) {
        let pid = std::fs::read_to_string(format!("{}/{port}/redis.pid", self.dir)).unwrap();
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Starts a killed node again from its configuration (it daemonizes).
    fn restart(&self, port: u16) {
        let status = Command::new("redis-server")
            .arg(format!("{}/{port}/redis.conf", self.dir))
            .status()
            .unwrap();
        assert!(status.success());
    }
}

enum Role {
    Primary,
    Replica { of: u16 },
}

async fn node(port: u16) -> Option<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .ok()
}

/// A node's answer to an `INFO`-like command, `None` if it is down.
async fn info(port: u16, command: &[&str]) -> Option<String> {
    let mut connection = node(port).await?;
    redis::cmd(command[0])
        .arg(&command[1..])
        .query_async(&mut connection)
        .await
        .ok()
}

async fn role(port: u16) -> Option<Role> {
    let mut connection = node(port).await?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut connection).await.ok()?;
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::Int(i) => i.to_string(),
        _ => String::new(),
    };
    match text(&role[0]).as_str() {
        "master" => Some(Role::Primary),
        "slave" => Some(Role::Replica {
            of: text(&role[2]).parse().ok()?,
        }),
        _ => None,
    }
}

/// What the sessions saw.
#[derive(Debug, Default)]
struct Tally {
    /// Rotations answered 200.
    rotated: usize,
    /// Rotations answered 503 (each with `Retry-After`).
    unavailable: usize,
    /// Tokens answered 200, then refused (400 `invalid_grant`): acknowledged writes lost.
    lost: usize,
    /// Sessions that rotated again after the replica took over.
    recovered: usize,
}

async fn refresh(
    client: &HttpClient,
    addr: std::net::SocketAddr,
    token: &str,
) -> (StatusCode, Value, bool) {
    let req = Request::post(format!("http://{addr}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!(
            "grant_type=refresh_token&refresh_token={token}"
        ))))
        .unwrap();
    // The store's own bounds (2 s a call, one resend) are far shorter.
    let reply = tokio::time::timeout(Duration::from_secs(10), send(client, req))
        .await
        .expect("no rotation hangs");
    let body = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
    (
        reply.status,
        body,
        reply.headers.contains_key("retry-after"),
    )
}

/// How long a write waits for its replica with `wait_for_replicas`: long enough that a loaded
/// machine's replication lag is not mistaken for a lost replica outside the failover.
const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// A login, if the store handed out its tokens. Outside the failover a refusal can still
/// happen on a loaded machine (a replica slower than `REPLICA_WAIT` makes the write
/// ambiguous, and the issuer hands out nothing, as documented); the caller logs in again.
/// Fails the test after 100 refusals in a row.
async fn handed_out<S: RefreshStore>(issuer: &TokenIssuer<S>) -> Option<IssuedTokens> {
    static REFUSED: AtomicUsize = AtomicUsize::new(0);
    match issuer.issue("alice", &()).await {
        Ok(pair) => {
            REFUSED.store(0, Ordering::SeqCst);
            Some(pair)
        }
        Err(error) => {
            let refused = REFUSED.fetch_add(1, Ordering::SeqCst) + 1;
            assert!(
                refused < 100,
                "the store refused 100 logins in a row: {error}"
            );
            None
        }
    }
}

/// Kills the primary the sessions rotate on, waits for its replica to take over, starts the
/// killed node again (it rejoins as the new primary's replica), and waits until every session
/// has rotated again. Returns what the sessions saw.
async fn failover(cluster: &Cluster, wait: bool) -> Tally {
    cluster.healthy().await;
    let (victim, replica) = cluster.primaries().await[0];
    let key = SigningKey::hmac(Algorithm::HS256, [7u8; 32]).unwrap();
    let mut store = RedisStore::connect_cluster(&cluster.urls).await.unwrap();
    if wait {
        store = store.wait_for_replicas(1, REPLICA_WAIT);
    }
    let issuer = TokenIssuer::new(AccessTokenIssuer::new(key), store);
    let watcher = RedisStore::connect_cluster(&cluster.urls)
        .await
        .unwrap()
        .propagate_revocations(RevocationSubscriber::cluster(&cluster.urls))
        .await
        .unwrap();
    let app = Router::new().route_service("/oauth/token", issuer.refresh_endpoint());
    let addr = serve(app).await;

    // Sessions whose family lives on the victim (it answers for the key, not MOVED).
    let mut on_victim = node(victim).await.unwrap();
    let mut tokens = Vec::new();
    while tokens.len() < SESSIONS {
        let Some(pair) = handed_out(&issuer).await else {
            continue;
        };
        let family = pair.refresh_token.split('.').next().unwrap().to_owned();
        let here: redis::RedisResult<bool> = redis::cmd("EXISTS")
            .arg(support::family_key("tjr", &family))
            .query_async(&mut on_victim)
            .await;
        if here == Ok(true) {
            tokens.push(pair.refresh_token);
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let promoted = Arc::new(AtomicBool::new(false));
    let recovered = Arc::new(AtomicUsize::new(0));
    let sessions: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let (issuer, stop) = (issuer.clone(), stop.clone());
            let (promoted, recovered) = (promoted.clone(), recovered.clone());
            tokio::spawn(
                async move { session(addr, issuer, token, &stop, &promoted, &recovered).await },
            )
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(victim);
    let killed = Instant::now();
    while !matches!(role(replica).await, Some(Role::Primary)) {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "no failover in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let promotion = killed.elapsed();
    promoted.store(true, Ordering::SeqCst);
    // The killed node comes back, now as the new primary's replica.
    cluster.restart(victim);
    while recovered.load(Ordering::SeqCst) < SESSIONS {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "{} of {SESSIONS} sessions rotate again 30 s after the kill",
            recovered.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovery = killed.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut tally = Tally::default();
    for session in sessions {
        let seen = session.await.unwrap();
        tally.rotated += seen.rotated;
        tally.unavailable += seen.unavailable;
        tally.lost += seen.lost;
    }
    tally.recovered = recovered.load(Ordering::SeqCst);
    cluster.healthy().await;
    propagation_resumes(&issuer, &watcher, replica).await;
    eprintln!(
        "failover {}: replica promoted {} ms after the kill, every session rotating again \
         after {} ms; {} rotations answered 200, {} answered 503, {} acknowledged tokens \
         unknown afterwards",
        if wait {
            "with wait_for_replicas(1, 1 s)"
        } else {
            "without WAIT"
        },
        promotion.as_millis(),
        recovery.as_millis(),
        tally.rotated,
        tally.unavailable,
        tally.lost,
    );
    tally
}

/// After the failover, `watcher` is synchronised again and hears a revocation of a family on
/// `promoted` (the former replica) from memory: its check answers at once, without asking
/// Redis.
async fn propagation_resumes(
    issuer: &TokenIssuer<RedisStore<redis::cluster_async::ClusterConnection>>,
    watcher: &RedisStore<redis::cluster_async::ClusterConnection>,
    promoted: u16,
) {
    assert!(
        watcher
            .wait_for_revocation_sync(Duration::from_secs(20))
            .await,
        "the watcher never resynchronised after the failover"
    );
    let mut on_promoted = node(promoted).await.unwrap();
    let (pair, family) = loop {
        let Some(pair) = handed_out(issuer).await else {
            continue;
        };
        let family = pair.refresh_token.split('.').next().unwrap().to_owned();
        let here: redis::RedisResult<bool> = redis::cmd("EXISTS")
            .arg(support::family_key("tjr", &family))
            .query_async(&mut on_promoted)
            .await;
        if here == Ok(true) {
            break (pair, family);
        }
    };
    assert_eq!(
        format!("{:?}", watcher.is_revoked(&family)),
        "Ready(Ok(Active))",
        "answered from memory"
    );
    assert!(issuer.revoke(&pair.refresh_token).await.unwrap());
    let started = Instant::now();
    while format!("{:?}", watcher.is_revoked(&family)) != "Ready(Ok(Revoked))" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the revocation never reached the watcher"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One client session: rotates until told to stop, keeping the last token it was given; a
/// 503 is retried with the same token, a token refused after it was handed out is counted as
/// lost and the session logs in again.
async fn session(
    addr: std::net::SocketAddr,
    issuer: TokenIssuer<RedisStore<redis::cluster_async::ClusterConnection>>,
    mut token: String,
    stop: &AtomicBool,
    promoted: &AtomicBool,
    recovered: &AtomicUsize,
) -> Tally {
    let client = client();
    let mut seen = Tally::default();
    let mut after_promotion = false;
    loop {
        let done = stop.load(Ordering::SeqCst);
        let (status, body, retry_after) = refresh(&client, addr, &token).await;
        match status {
            StatusCode::OK => {
                token = body["refresh_token"].as_str().unwrap().to_owned();
                seen.rotated += 1;
                if !after_promotion && promoted.load(Ordering::SeqCst) {
                    after_promotion = true;
                    recovered.fetch_add(1, Ordering::SeqCst);
                }
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry_after, "a 503 without Retry-After");
                seen.unavailable += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            StatusCode::BAD_REQUEST => {
                assert_eq!(body["error"], "invalid_grant", "{body}");
                seen.lost += 1;
                // The client logs in again.
                token = loop {
                    if let Ok(pair) = issuer.issue("alice", &()).await {
                        break pair.refresh_token;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
            }
            other => panic!("a rotation answered {other}: {body}"),
        }
        // The last round checks the token handed out last, after the failover.
        if done && status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_with_503s_and_wait_for_replicas_loses_no_token() {
    let Some(cluster) = Cluster::from_env() else {
        return;
    };
    for wait in [false, true] {
        let tally = failover(&cluster, wait).await;
        // The failover was seen: rotations failed while the primary was gone...
        assert!(tally.unavailable > 0, "{tally:?}");
        // ... and every session rotated again once its replica had taken over.
        assert_eq!(tally.recovered, SESSIONS, "{tally:?}");
        if wait {
            assert_eq!(tally.lost, 0, "an acknowledged token was lost: {tally:?}");
        }
    }
}
