//! `REDIS_URL=redis://127.0.0.1:6379/ cargo run --release --all-features --example propagation
//! -- [--revocations N]`: how long a revocation takes to reach another instance. Instance A
//! revokes a session; instance B, a store with its own connections whose revocations are
//! propagated, answers requests with that session's access token until it refuses one. The
//! time from `revoke` returning on A to B's first refusal, over N revocations (1,000 by
//! default), in percentiles.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tower::{Service, ServiceExt};
use tower_jwt_refresh::issuer::{AccessTokenIssuer, RedisStore, TokenIssuer};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};
use tower_jwt_refresh::server::JwtAuthLayer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// No refusal after this long counts as lost, and ends the run.
const GIVE_UP: Duration = Duration::from_secs(5);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("REDIS_URL").map_err(|_| "set REDIS_URL")?;
    let mut args = std::env::args().skip(1);
    let mut revocations = 1_000usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--revocations" => revocations = args.next().ok_or("a count")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let prefix = format!("propagation-example-{}", std::process::id());
    let key = SigningKey::hmac(Algorithm::HS256, [5u8; 32])?;
    let a_store = RedisStore::connect(&url).await?.prefix(&prefix);
    let a = TokenIssuer::new(AccessTokenIssuer::new(key.clone()), a_store);
    let b_store = RedisStore::connect(&url)
        .await?
        .prefix(&prefix)
        .propagate_revocations(redis::Client::open(url.as_str())?)
        .await?;
    let b = TokenIssuer::new(AccessTokenIssuer::new(key.clone()), b_store);
    let mut service = tower::ServiceBuilder::new()
        .layer(JwtAuthLayer::new(key.verification_key()).deny_list(b.deny_list()))
        .service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::default()))
        });

    let mut delays = Vec::with_capacity(revocations);
    for _ in 0..revocations {
        let pair = a.issue("alice", &()).await?;
        let request = || {
            Request::get("/")
                .header("authorization", format!("Bearer {}", pair.access_token))
                .body(Full::default())
        };
        // B accepts the token (and caches its verification) before the revocation.
        let status = service.ready().await?.call(request()?).await?.status();
        if status != StatusCode::OK {
            return Err(format!("a fresh token answered {status}").into());
        }
        a.revoke(&pair.refresh_token).await?;
        let revoked = Instant::now();
        loop {
            let status = service.ready().await?.call(request()?).await?.status();
            if status == StatusCode::UNAUTHORIZED {
                delays.push(revoked.elapsed());
                break;
            }
            if revoked.elapsed() > GIVE_UP {
                return Err(format!("no refusal {GIVE_UP:?} after a revocation").into());
            }
            tokio::task::yield_now().await;
        }
    }
    delays.sort();
    let at =
        |p: f64| delays[((delays.len() as f64 * p).ceil() as usize).clamp(1, delays.len()) - 1];
    println!("| revocations | p50 | p90 | p99 | max | synced at the end |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {:?} | {:?} | {:?} | {:?} | {} |",
        delays.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0),
        b.store().revocations_synced()
    );
    Ok(())
}
