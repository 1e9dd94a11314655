//! Soak and fault runs against the example server, in release mode, by hand:
//!
//! ```text
//! cargo run --release --example soak -- [--clients 500] [--seconds 60] [--access-ttl 2]
//!     [--fault none|redis|slow-refresh|lost-reply|server-restart] [--grace S]
//! ```
//!
//! The server runs as a child process (this binary with `--serve`), so a fault can kill it for
//! real. Each client logs in, then loops requests through `RefreshLayer` (RFC 6749 refresh at
//! `/oauth/token`), logging in again only if its session expires. At the end it prints a
//! JSON summary: requests, failures (by error), refreshes per client, relogins, the slowest
//! request, and the resident memory of both processes at 20 s, half way and at the end.
//!
//! Faults, from a third to a half of the run:
//! - `redis`: the server's store is a `redis-server` this run starts (append-only file, so a
//!   restart keeps every family); it is stopped, then started again.
//! - `slow-refresh`: the refresh endpoint answers after 5 s; clients bound their waits at 3 s.
//! - `lost-reply`: the refresh endpoint rotates at once, then holds its answer 5 s, past the
//!   clients' 2 s refresh bound: every rotation is committed and its reply lost. Clients retry
//!   with the rotated-out token, which the issuer's grace window (30 s by default) answers
//!   with the same successor; no session is lost. `--grace 0` (the issuer's old default)
//!   shows what happens without a grace window.
//! - `server-restart`: the server is killed and started again on the same port, with the
//!   same store (`--redis` keeps sessions; memory loses them and clients log in again).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::client::{Http, pair, send_json};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};
use tower_jwt_refresh::client::{Error, OAuthRefresher, RefreshLayer, Session, Tokens};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SECRET: &str = "soak-secret-soak-secret-soak-secret!";
/// What a client waits at most for a refresh, and the refresh itself.
const WAIT: Duration = Duration::from_secs(3);
const REFRESH: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    None,
    Redis,
    SlowRefresh,
    LostReply,
    ServerRestart,
}

struct Args {
    clients: usize,
    seconds: u64,
    access_ttl: u64,
    fault: Fault,
    redis: bool,
    /// The server's grace window in seconds; `None` keeps the issuer's default.
    grace: Option<u64>,
}

fn args() -> Result<Args, BoxError> {
    let mut parsed = Args {
        clients: 500,
        seconds: 60,
        access_ttl: 2,
        fault: Fault::None,
        redis: false,
        grace: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--clients" => parsed.clients = value()?.parse()?,
            "--seconds" => parsed.seconds = value()?.parse()?,
            "--access-ttl" => parsed.access_ttl = value()?.parse()?,
            "--redis" => parsed.redis = true,
            "--grace" => parsed.grace = Some(value()?.parse()?),
            "--fault" => {
                parsed.fault = match value()?.as_str() {
                    "none" => Fault::None,
                    "redis" => Fault::Redis,
                    "slow-refresh" => Fault::SlowRefresh,
                    "lost-reply" => Fault::LostReply,
                    "server-restart" => Fault::ServerRestart,
                    other => return Err(format!("unknown fault {other}").into()),
                }
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if parsed.fault == Fault::Redis {
        parsed.redis = true;
    }
    Ok(parsed)
}

/// The server child: `--serve ADDR ACCESS_TTL [REDIS_URL] [--slow-refresh|--lost-reply FROM
/// TO] [--grace S]`.
async fn serve_child(mut args: impl Iterator<Item = String>) -> Result<(), BoxError> {
    let addr: SocketAddr = args.next().ok_or("addr")?.parse()?;
    let ttl: u64 = args.next().ok_or("ttl")?.parse()?;
    let mut redis_url = None;
    let mut slow = None;
    let mut grace = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--grace" => grace = Some(Duration::from_secs(args.next().ok_or("grace")?.parse()?)),
            "--slow-refresh" | "--lost-reply" => {
                let from: u64 = args.next().ok_or("from")?.parse()?;
                let to: u64 = args.next().ok_or("to")?.parse()?;
                let window = (Duration::from_secs(from), Duration::from_secs(to));
                slow = Some((window, arg == "--lost-reply"));
            }
            url => redis_url = Some(url.to_owned()),
        }
    }
    let config = common::server::Config {
        addr,
        secret: Some(SECRET.as_bytes().to_vec()),
        access_ttl: Duration::from_secs(ttl),
        redis_url,
        grace,
        ..common::server::Config::default()
    };
    let mut server = common::server::bind(config).await?;
    if let Some(((from, to), after)) = slow {
        server.router = delay_refreshes(server.router, from, to, after);
    }
    common::server::serve(server, std::future::pending()).await?;
    Ok(())
}

/// The refresh endpoint, from `from` to `to` into the run, answering 5 s late: delayed before
/// it rotates (`slow-refresh`), or `after` it has rotated (`lost-reply`: the rotation is
/// committed, and the client has given up on the answer by the time it comes).
fn delay_refreshes(
    router: axum::Router,
    from: Duration,
    to: Duration,
    after: bool,
) -> axum::Router {
    let started = Instant::now();
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            let at = started.elapsed();
            let delay = req.uri().path() == "/oauth/token" && at >= from && at < to;
            if delay && !after {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            let response = next.run(req).await;
            if delay && after {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            response
        },
    ))
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Resident memory of `pid`, in KiB.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Redis {
    port: u16,
    dir: std::path::PathBuf,
    child: Child,
}

impl Redis {
    fn start(port: u16, dir: std::path::PathBuf) -> Result<Self, BoxError> {
        let child = Self::spawn(port, &dir)?;
        Ok(Self { port, dir, child })
    }

    /// A redis-server on `port` keeping its append-only file in `dir`, once it accepts.
    fn spawn(port: u16, dir: &std::path::Path) -> Result<Child, BoxError> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e} (scripts/test installs it)"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(child)
    }

    fn stop(&mut self) -> Result<(), BoxError> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts again on the same port and files.
    fn resume(&mut self) -> Result<(), BoxError> {
        self.child = Self::spawn(self.port, &self.dir)?;
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_server(addr: SocketAddr, args: &Args, redis: Option<&Redis>) -> Result<Child, BoxError> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("--serve")
        .arg(addr.to_string())
        .arg(args.access_ttl.to_string());
    if let Some(redis) = redis {
        command.arg(format!("redis://127.0.0.1:{}/", redis.port));
    }
    if matches!(args.fault, Fault::SlowRefresh | Fault::LostReply) {
        let (from, to) = fault_window(args.seconds);
        let flag = if args.fault == Fault::LostReply {
            "--lost-reply"
        } else {
            "--slow-refresh"
        };
        command
            .arg(flag)
            .arg(from.as_secs().to_string())
            .arg(to.as_secs().to_string());
    }
    if let Some(grace) = args.grace {
        command.arg("--grace").arg(grace.to_string());
    }
    let child = command.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err("the server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// From a third to a half of the run.
fn fault_window(seconds: u64) -> (Duration, Duration) {
    (
        Duration::from_secs(seconds / 3),
        Duration::from_secs(seconds / 2),
    )
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    failed_outside_fault: AtomicU64,
    refresh_failed: AtomicU64,
    wait_timeout: AtomicU64,
    session_expired: AtomicU64,
    other: AtomicU64,
    relogins: AtomicU64,
    slowest_ms: AtomicU64,
    /// The first few failures, described.
    samples: std::sync::Mutex<Vec<String>>,
}

async fn login(http: &Http, base: &str) -> Result<Session, BoxError> {
    let body = json!({"username": "admin", "password": "admin"});
    let (status, body) = send_json(http, Method::POST, format!("{base}/login"), body).await?;
    if !status.is_success() {
        return Err(format!("login: {status}").into());
    }
    let (access, refresh) = pair(&body).map_err(|e| format!("{e:?}"))?;
    let session = Session::new();
    session.login(Tokens::new(access, refresh))?;
    Ok(session)
}

async fn client(
    base: String,
    until: Instant,
    window: Option<(Instant, Instant)>,
    tally: Arc<Tally>,
) -> Result<u64, BoxError> {
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let mut refreshes = 0;
    'session: while Instant::now() < until {
        let session = match login(&http, &base).await {
            Ok(session) => session,
            // The server may be down (a restart): try again shortly.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let refresher = OAuthRefresher::new(http.clone(), format!("{base}/oauth/token").parse()?);
        let layer = RefreshLayer::new(session.clone(), refresher)
            .wait_timeout(WAIT)
            .refresh_timeout(REFRESH);
        let service = ServiceBuilder::new().layer(layer).service(http.clone());
        while Instant::now() < until {
            let sent = Instant::now();
            let request = Request::get(format!("{base}/aaa")).body(Full::default())?;
            let mut described = String::new();
            let outcome = match service.clone().oneshot(request).await {
                Ok(response) if response.status().is_success() => {
                    let body = response.into_body().collect().await?.to_bytes();
                    if body == "aaa" {
                        Ok(())
                    } else {
                        described = format!("200 with {body:?}");
                        Err(None)
                    }
                }
                Ok(response) => {
                    described = format!("{} {:?}", response.status(), response.headers());
                    Err(None)
                }
                Err(error) => {
                    described = format!("{error}: {:?}", std::error::Error::source(&error));
                    Err(Some(error))
                }
            };
            let took = sent.elapsed().as_millis() as u64;
            tally.slowest_ms.fetch_max(took, Ordering::Relaxed);
            match outcome {
                Ok(()) => {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut samples = tally.samples.lock().unwrap();
                        if samples.len() < 5 {
                            samples.push(format!("after {took} ms: {described}"));
                        }
                    }
                    // A fault's effects may outlast its window by a bound or two.
                    let in_fault = window.is_some_and(|(from, to)| {
                        sent + WAIT + REFRESH >= from && sent <= to + WAIT + REFRESH
                    });
                    if !in_fault {
                        tally.failed_outside_fault.fetch_add(1, Ordering::Relaxed);
                    }
                    let counter = match &error {
                        Some(Error::RefreshFailed(_)) => &tally.refresh_failed,
                        Some(Error::WaitTimeout) => &tally.wait_timeout,
                        Some(Error::SessionExpired) => &tally.session_expired,
                        _ => &tally.other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if matches!(error, Some(Error::SessionExpired)) {
                        refreshes += session.stats().refreshes;
                        tally.relogins.fetch_add(1, Ordering::Relaxed);
                        continue 'session;
                    }
                    if error.is_some() {
                        // The server may be down: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        refreshes += session.stats().refreshes;
    }
    Ok(refreshes)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("--serve") {
        argv.next();
        return serve_child(argv).await;
    }
    let args = args()?;
    let mut redis = if args.redis {
        let dir = std::env::temp_dir().join(format!("soak-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Some(Redis::start(free_port()?, dir)?)
    } else {
        None
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut server = spawn_server(addr, &args, redis.as_ref())?;
    let base = format!("http://{addr}");

    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let (from, to) = fault_window(args.seconds);
    let window = (args.fault != Fault::None).then_some((started + from, started + to));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..args.clients)
        .map(|_| tokio::spawn(client(base.clone(), until, window, Arc::clone(&tally))))
        .collect();

    let mut rss_at_20 = None;
    let mut rss_at_half = None;
    let mut fault_started = false;
    let mut fault_ended = false;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let at = started.elapsed();
        if rss_at_20.is_none() && at >= Duration::from_secs(20) {
            rss_at_20 = Some((rss(std::process::id()), rss(server.id())));
        }
        if rss_at_half.is_none() && at >= Duration::from_secs(args.seconds / 2) {
            rss_at_half = Some((rss(std::process::id()), rss(server.id())));
        }
        if !fault_started && at >= from && args.fault != Fault::None {
            fault_started = true;
            match args.fault {
                Fault::Redis => {
                    redis.as_mut().ok_or("no redis")?.stop()?;
                }
                Fault::ServerRestart => {
                    server.kill()?;
                    server.wait()?;
                }
                Fault::SlowRefresh | Fault::LostReply | Fault::None => {}
            }
        }
        if fault_started && !fault_ended && at >= to {
            fault_ended = true;
            match args.fault {
                Fault::Redis => {
                    redis.as_mut().ok_or("no redis")?.resume()?;
                }
                Fault::ServerRestart => server = spawn_server(addr, &args, redis.as_ref())?,
                Fault::SlowRefresh | Fault::LostReply | Fault::None => {}
            }
        }
    }
    let rss_end = (rss(std::process::id()), rss(server.id()));
    // Every client stops within its bounds after `until`.
    let mut per_client = Vec::new();
    let mut hung = 0;
    for client in clients {
        match tokio::time::timeout(WAIT + REFRESH + Duration::from_secs(5), client).await {
            Ok(Ok(Ok(refreshes))) => per_client.push(refreshes),
            _ => hung += 1,
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    per_client.sort_unstable();
    // The early refresh renews a token at half its lifetime.
    let expiries = args.seconds * 2 / args.access_ttl.max(1);
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let rss_20 = rss_at_20.unwrap_or((0, 0));
    let rss_half = rss_at_half.unwrap_or((0, 0));
    println!(
        "{}",
        json!({
            "clients": args.clients,
            "seconds": args.seconds,
            "access_ttl_s": args.access_ttl,
            "fault": format!("{:?}", args.fault),
            "store": if args.redis { "redis" } else { "memory" },
            "grace_s": args.grace,
            "ok": load(&tally.ok),
            "failed": load(&tally.failed),
            "failed_outside_fault": load(&tally.failed_outside_fault),
            "errors": {
                "refresh_failed": load(&tally.refresh_failed),
                "wait_timeout": load(&tally.wait_timeout),
                "session_expired": load(&tally.session_expired),
                "other": load(&tally.other),
            },
            "relogins": load(&tally.relogins),
            "failure_samples": tally.samples.lock().unwrap().clone(),
            "hung_clients": hung,
            "slowest_request_ms": load(&tally.slowest_ms),
            "token_generations_expected": expiries,
            "refreshes_per_client": {
                "min": per_client.first(),
                "median": per_client.get(per_client.len() / 2),
                "max": per_client.last(),
            },
            "rss_kib": {
                "client_at_20s": rss_20.0, "client_at_half": rss_half.0,
                "client_at_end": rss_end.0,
                "server_at_20s": rss_20.1, "server_at_half": rss_half.1,
                "server_at_end": rss_end.1,
            },
        })
    );
    drop(redis);
    Ok(())
}
