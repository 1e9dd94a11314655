//! `cargo run --release --example load -- [--seconds S] [--connections C]`: requests/s and
//! latency of `GET /aaa` with a valid token (HS256, cache on) through an axum router with
//! `JwtAuthLayer`, against the identical router without it, in the same run on loopback. Both
//! get the same request, `Authorization` header included: the layer is the only difference.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_jwt_refresh::issuer::AccessTokenIssuer;
use tower_jwt_refresh::keys::{Algorithm, SigningKey};
use tower_jwt_refresh::server::JwtAuthLayer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one target did.
struct Measured {
    requests: usize,
    rps: f64,
    p50: Duration,
    p99: Duration,
}

async fn measure(
    url: String,
    token: String,
    seconds: u64,
    connections: usize,
) -> Result<Measured, BoxError> {
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    // Warm the connections and the token cache.
    for _ in 0..connections {
        send(&http, &url, &token).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (http, url, token, stop) =
                (http.clone(), url.clone(), token.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(65_536);
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    send(&http, &url, &token).await?;
                    latencies.push(sent.elapsed());
                }
                Ok::<_, BoxError>(latencies)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    if latencies.is_empty() {
        return Err("no request completed".into());
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok(Measured {
        requests: latencies.len(),
        rps: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    })
}

async fn send(
    http: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    token: &str,
) -> Result<(), BoxError> {
    let request = http::Request::get(url).header("authorization", format!("Bearer {token}"));
    let response = http.request(request.body(Full::default())?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() || body != "aaa" {
        return Err(format!("unexpected answer {status}").into());
    }
    Ok(())
}

async fn serve(router: Router) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut seconds = 5;
    let mut connections = 32;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().ok_or("--seconds needs a value")?.parse()?,
            "--connections" => {
                connections = args.next().ok_or("--connections needs a value")?.parse()?
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let key = SigningKey::hmac(Algorithm::HS256, b"load-test-secret-load-test-secret!!")?;
    let token = AccessTokenIssuer::new(key.clone())
        .lifetime(Duration::from_secs(3600))
        .mint("admin", "load", &())?
        .token;
    // One router, built twice: the layer is the only difference.
    let router = || Router::new().route("/aaa", get(|| async { "aaa" }));
    let open = serve(router()).await?;
    let authed = serve(router().layer(JwtAuthLayer::new(key.verification_key()))).await?;

    println!(
        "GET /aaa, {connections} connections, {seconds} s each, client and server in one process"
    );
    let url = |addr: SocketAddr| format!("http://{addr}/aaa");
    let without = measure(url(open), token.clone(), seconds, connections).await?;
    let with = measure(url(authed), token, seconds, connections).await?;
    println!("| route | requests | requests/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for (name, m) in [
        ("no auth layer", &without),
        ("JwtAuthLayer, HS256, cache on", &with),
    ] {
        println!(
            "| {name} | {} | {:.0} | {:?} | {:?} |",
            m.requests, m.rps, m.p50, m.p99
        );
    }
    println!(
        "throughput ratio (auth / no auth): {:.3}",
        with.rps / without.rps
    );
    Ok(())
}
