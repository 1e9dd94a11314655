//! A fleet, by hand: a Redis Cluster, three server instances, and a client storm spread over
//! them.
//!
//! ```text
//! cargo run --release --features redis,axum --example fleet -- [--clients 100] [--seconds 20]
//!     [--per-request]
//! ```
//!
//! - **The cluster**: three primaries with a replica each, started with
//!   `scripts/redis-cluster` in a temporary directory and stopped at the end (or the one
//!   `REDIS_CLUSTER_URLS` names, left running).
//! - **Three instances**: this binary with `--serve`, three processes, each the example server
//!   (`examples/common/server.rs`) on its own port with its own `RedisStore` on the cluster,
//!   and its revocations propagated (`PROPAGATE_REVOCATIONS=1`); `--per-request` asks Redis on
//!   every request instead, for comparison.
//! - **The storm**: `--clients` clients for `--seconds`. Each session logs in on a random
//!   instance, then calls `GET /aaa` and refreshes (`POST /refresh`) on random instances, and
//!   ends one of two ways: a logout (`POST /logout`), or a replay of a refresh token two
//!   rotations old, which the issuer detects as reuse and answers by revoking the session.
//!   Then the client measures the **propagation delay**: from the logout's (or the refused
//!   replay's) answer to the first 401 for the session's access token, on each of the other
//!   instances (asked in a loop).
//!
//! It prints a JSON summary: logins, requests, refreshes, logouts, reuse detections, the
//! propagation delays (count, p50, p90, p99, max, in ms) and the failures by kind: any answer
//! other than the one expected (a valid token refused, a 503, a refresh refused, a replay
//! accepted), any error, and any revocation not refused everywhere within 5 s.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::{Http, pair, send_json};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SECRET: &str = "fleet-secret-fleet-secret-fleet-secret!";
/// How long a revocation may take to be refused everywhere before it counts as a failure.
const PROPAGATION_BOUND: Duration = Duration::from_secs(5);
/// Requests and refreshes per session, before it ends.
const ROUNDS: usize = 3;

struct Args {
    clients: usize,
    seconds: u64,
    propagate: bool,
}

fn args() -> Result<Args, BoxError> {
    let mut parsed = Args {
        clients: 100,
        seconds: 20,
        propagate: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--clients" => parsed.clients = value()?.parse()?,
            "--seconds" => parsed.seconds = value()?.parse()?,
            "--per-request" => parsed.propagate = false,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(parsed)
}

/// The server child: `--serve ADDR REDIS_URLS PROPAGATE`.
async fn serve_child(mut args: impl Iterator<Item = String>) -> Result<(), BoxError> {
    let addr: SocketAddr = args.next().ok_or("addr")?.parse()?;
    let urls = args.next().ok_or("urls")?;
    let propagate = args.next().ok_or("propagate")? == "1";
    let config = common::server::Config {
        addr,
        secret: Some(SECRET.as_bytes().to_vec()),
        // Long enough that no access token expires during its session's checks.
        access_ttl: Duration::from_secs(300),
        redis_url: Some(urls),
        propagate,
        ..common::server::Config::default()
    };
    let server = common::server::bind(config).await?;
    common::server::serve(server, std::future::pending()).await?;
    Ok(())
}

/// The cluster: started here (and stopped on drop), or given.
struct Cluster {
    urls: String,
    dir: Option<std::path::PathBuf>,
}

impl Cluster {
    fn start() -> Result<Self, BoxError> {
        if let Ok(urls) = std::env::var("REDIS_CLUSTER_URLS") {
            return Ok(Self { urls, dir: None });
        }
        let dir = std::env::temp_dir().join(format!("fleet-cluster-{}", std::process::id()));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/redis-cluster");
        let output = Command::new(script).arg("start").arg(&dir).output()?;
        // Stopped on drop from here on, whatever fails next.
        let mut cluster = Self {
            urls: String::new(),
            dir: Some(dir),
        };
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned().into());
        }
        let printed = String::from_utf8(output.stdout)?;
        let urls = printed
            .lines()
            .find_map(|line| line.strip_prefix("export REDIS_CLUSTER_URLS="))
            .ok_or("scripts/redis-cluster printed no URLs")?;
        cluster.urls = urls.to_owned();
        Ok(cluster)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/redis-cluster");
            let _ = Command::new(script).arg("stop").arg(dir).status();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A server instance, killed on drop.
struct Instance {
    base: String,
    child: Child,
}

impl Instance {
    fn spawn(urls: &str, propagate: bool) -> Result<Self, BoxError> {
        let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = Command::new(std::env::current_exe()?)
            .arg("--serve")
            .arg(addr.to_string())
            .arg(urls)
            .arg(if propagate { "1" } else { "0" })
            .spawn()?;
        let instance = Self {
            base: format!("http://{addr}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err("an instance did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(instance)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the storm counted.
#[derive(Default)]
struct Tally {
    logins: u64,
    requests: u64,
    refreshes: u64,
    logouts: u64,
    reuse_detected: u64,
    /// Propagation delays, in microseconds.
    delays: Vec<u64>,
    failures: BTreeMap<String, u64>,
}

impl Tally {
    fn fail(&mut self, kind: impl Into<String>) {
        *self.failures.entry(kind.into()).or_default() += 1;
    }
}

/// A tiny xorshift, seeded per client: which instance, which ending.
struct Dice(u64);

impl Dice {
    fn pick(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// `GET /aaa` on `base` with `access`, to its status.
async fn get(http: &Http, base: &str, access: &str) -> Result<StatusCode, BoxError> {
    let request = Request::get(format!("{base}/aaa"))
        .header("authorization", format!("Bearer {access}"))
        .body(Full::new(Bytes::new()))?;
    Ok(http.request(request).await?.status())
}

/// One session, from login to its end and the propagation of that end.
async fn session(http: &Http, bases: &[String], dice: &mut Dice, tally: &Mutex<Tally>) {
    let count = |f: &dyn Fn(&mut Tally)| f(&mut tally.lock().unwrap());
    let login = json!({"username": "admin", "password": "admin"});
    let at = &bases[dice.pick(bases.len())];
    let (access, refresh) = match send_json(http, Method::POST, format!("{at}/login"), login).await
    {
        Ok((status, body)) if status.is_success() => match pair(&body) {
            Ok(pair) => pair,
            Err(_) => return count(&|t| t.fail("login: malformed answer")),
        },
        Ok((status, _)) => return count(&|t| t.fail(format!("login: {status}"))),
        Err(_) => return count(&|t| t.fail("login: error")),
    };
    count(&|t| t.logins += 1);
    let (mut access, mut tokens) = (access, vec![refresh]);
    for _ in 0..ROUNDS {
        let at = &bases[dice.pick(bases.len())];
        match get(http, at, &access).await {
            Ok(StatusCode::OK) => count(&|t| t.requests += 1),
            Ok(status) => return count(&|t| t.fail(format!("valid token answered {status}"))),
            Err(_) => return count(&|t| t.fail("request: error")),
        }
        let at = &bases[dice.pick(bases.len())];
        let body = json!({"refreshToken": tokens.last().unwrap()});
        match send_json(http, Method::POST, format!("{at}/refresh"), body).await {
            Ok((StatusCode::OK, body)) => match pair(&body) {
                Ok((a, r)) => {
                    access = a;
                    tokens.push(r);
                    count(&|t| t.refreshes += 1);
                }
                Err(_) => return count(&|t| t.fail("refresh: malformed answer")),
            },
            Ok((status, _)) => return count(&|t| t.fail(format!("refresh: {status}"))),
            Err(_) => return count(&|t| t.fail("refresh: error")),
        }
    }
    // The end: a logout, or a replay of a token two rotations old (past the grace window's
    // one-step retry), which is reuse.
    let ender = dice.pick(bases.len());
    let at = &bases[ender];
    if dice.pick(2) == 0 {
        let request = Request::post(format!("{at}/logout"))
            .header("authorization", format!("Bearer {access}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                json!({"refreshToken": tokens.last().unwrap()}).to_string(),
            )));
        match async { Ok::<_, BoxError>(http.request(request?).await?.status()) }.await {
            Ok(StatusCode::OK) => count(&|t| t.logouts += 1),
            Ok(status) => return count(&|t| t.fail(format!("logout: {status}"))),
            Err(_) => return count(&|t| t.fail("logout: error")),
        }
    } else {
        let old = &tokens[tokens.len() - 3];
        let body = json!({"refreshToken": old});
        match send_json(http, Method::POST, format!("{at}/refresh"), body).await {
            Ok((StatusCode::UNAUTHORIZED, _)) => count(&|t| t.reuse_detected += 1),
            Ok((status, _)) => return count(&|t| t.fail(format!("replay: {status}"))),
            Err(_) => return count(&|t| t.fail("replay: error")),
        }
    }
    let ended = Instant::now();
    // Every other instance, until it refuses the session's access token.
    let others = (0..bases.len()).filter(|&i| i != ender).map(|i| {
        let (http, base, access) = (http.clone(), bases[i].clone(), access.clone());
        async move {
            loop {
                match get(&http, &base, &access).await {
                    Ok(StatusCode::UNAUTHORIZED) => return Ok(ended.elapsed()),
                    Ok(StatusCode::OK) if ended.elapsed() < PROPAGATION_BOUND => {}
                    Ok(StatusCode::OK) => return Err("revocation not refused within 5 s".into()),
                    Ok(status) => return Err(format!("revoked token answered {status}")),
                    Err(_) => return Err("request: error".to_owned()),
                }
            }
        }
    });
    for result in futures_util::future::join_all(others).await {
        match result {
            Ok(delay) => count(&|t| t.delays.push(delay.as_micros() as u64)),
            Err(kind) => count(&|t| t.fail(kind.clone())),
        }
    }
}

/// The `q` quantile of sorted `values`, in milliseconds.
fn ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index] as f64 / 1000.0
}

async fn storm(args: &Args, bases: Vec<String>) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let bases = Arc::new(bases);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let (tally, bases) = (Arc::clone(&tally), Arc::clone(&bases));
            tokio::spawn(async move {
                let http: Http = Client::builder(TokioExecutor::new()).build_http();
                let mut dice = Dice(0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) * 0x2545_f491));
                while Instant::now() < deadline {
                    session(&http, &bases, &mut dice, &tally).await;
                }
            })
        })
        .collect();
    for client in clients {
        let _ = client.await;
    }
    Arc::try_unwrap(tally)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default()
}

async fn run() -> Result<(), BoxError> {
    let mut raw = std::env::args().skip(1).peekable();
    if raw.peek().map(String::as_str) == Some("--serve") {
        raw.next();
        return serve_child(raw).await;
    }
    let args = args()?;
    let cluster = Cluster::start()?;
    eprintln!("fleet: Redis Cluster at {}", cluster.urls);
    let instances = (0..3)
        .map(|_| Instance::spawn(&cluster.urls, args.propagate))
        .collect::<Result<Vec<_>, _>>()?;
    let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();
    eprintln!(
        "fleet: instances at {}; {} clients for {} s",
        bases.join(", "),
        args.clients,
        args.seconds
    );
    let started = Instant::now();
    let mut tally = storm(&args, bases).await;
    let elapsed = started.elapsed().as_secs_f64();
    tally.delays.sort_unstable();
    let delays = &tally.delays;
    let summary = json!({
        "instances": instances.len(),
        "revocations": if args.propagate { "propagated" } else { "per-request EXISTS" },
        "clients": args.clients,
        "seconds": (elapsed * 10.0).round() / 10.0,
        "logins": tally.logins,
        "requests": tally.requests,
        "refreshes": tally.refreshes,
        "logouts": tally.logouts,
        "reuse_detected": tally.reuse_detected,
        "propagation_ms": {
            "count": delays.len(),
            "p50": ms(delays, 0.5),
            "p90": ms(delays, 0.9),
            "p99": ms(delays, 0.99),
            "max": ms(delays, 1.0),
        },
        "failures": tally.failures,
    });
    println!("{summary}");
    drop(instances);
    drop(cluster);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fleet: {error}");
            ExitCode::FAILURE
        }
    }
}
