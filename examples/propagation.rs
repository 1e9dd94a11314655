//! `REDIS_URL=redis://127.0.0.1:6379/ cargo run --release --all-features --example propagation
//! -- [--revocations N]`: how long a revocation takes to reach another instance. Instance A
//! revokes a session; another instance, a store with connections of its own, answers requests
//! with that session's access token until it refuses one. The time from `revoke` returning on
//! A to that first refusal, over N revocations (1,000 by default), in percentiles: for an
//! instance whose revocations are propagated (B), and, in the same run, for one that asks
//! Redis on every request (C, the `EXISTS` check). A `REDIS_URL` listing several URLs,
//! comma-separated, is a Redis Cluster's nodes (`SPUBLISH`/`SSUBSCRIBE`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use redis::aio::ConnectionLike;
use tower::{Service, ServiceExt};
use tower_jwt_refresh::issuer::{AccessTokenIssuer, RedisStore, RevocationSubscriber, TokenIssuer};
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
    if url.contains(',') {
        let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
        let store = || async {
            Ok::<_, BoxError>(RedisStore::connect_cluster(&nodes).await?.prefix(&prefix))
        };
        let b = store()
            .await?
            .propagate_revocations(RevocationSubscriber::cluster(&nodes))
            .await?;
        compare(store().await?, b, store().await?, &key, revocations).await
    } else {
        let store =
            || async { Ok::<_, BoxError>(RedisStore::connect(&url).await?.prefix(&prefix)) };
        let b = store()
            .await?
            .propagate_revocations(redis::Client::open(url.as_str())?)
            .await?;
        compare(store().await?, b, store().await?, &key, revocations).await
    }
}

/// Prints the delays of `b` (propagated) and `c` (asking Redis), `a` revoking.
async fn compare<C>(
    a: RedisStore<C>,
    b: RedisStore<C>,
    c: RedisStore<C>,
    key: &SigningKey,
    revocations: usize,
) -> Result<(), BoxError>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let issuer = |store| TokenIssuer::new(AccessTokenIssuer::new(key.clone()), store);
    let (a, b, c) = (issuer(a), issuer(b), issuer(c));
    println!("| instance | revocations | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    for (name, instance) in [("B, propagated", &b), ("C, `EXISTS` per request", &c)] {
        let mut delays = delays(&a, instance, key, revocations).await?;
        delays.sort();
        let at = |p: f64| {
            let rank = (delays.len() as f64 * p).ceil() as usize;
            delays[rank.clamp(1, delays.len()) - 1]
        };
        println!(
            "| {name} | {} | {:?} | {:?} | {:?} | {:?} |",
            delays.len(),
            at(0.50),
            at(0.90),
            at(0.99),
            at(1.0),
        );
    }
    println!(
        "B's revocations synchronised at the end: {}",
        b.store().revocations_synced()
    );
    Ok(())
}

/// For each of `n` sessions issued on `a`: the time from `a`'s `revoke` returning to the
/// first request `instance` refuses.
async fn delays<C>(
    a: &TokenIssuer<RedisStore<C>>,
    instance: &TokenIssuer<RedisStore<C>>,
    key: &SigningKey,
    n: usize,
) -> Result<Vec<Duration>, BoxError>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let mut service = tower::ServiceBuilder::new()
        .layer(JwtAuthLayer::new(key.verification_key()).deny_list(instance.deny_list()))
        .service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::default()))
        });
    let mut delays = Vec::with_capacity(n);
    for _ in 0..n {
        let pair = a.issue("alice", &()).await?;
        let request = || {
            Request::get("/")
                .header("authorization", format!("Bearer {}", pair.access_token))
                .body(Full::default())
        };
        // The instance accepts the token (and caches its verification) before the revocation.
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
    Ok(delays)
}
