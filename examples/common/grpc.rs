//! The gRPC example's flow: a tonic server behind `JwtAuthLayer` and a tonic client behind
//! `RefreshLayer`, unary calls across one access-token expiry.

use std::time::{Duration, Instant};

use tower::ServiceBuilder;
use tower_jwt_refresh::client::{
    RefreshFailure, RefreshLayer, Session, SessionEvent, Tokens, refresher_fn,
};
use tower_jwt_refresh::issuer::{AccessTokenIssuer, MemoryStore, TokenIssuer};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};
use tower_jwt_refresh::server::JwtAuthLayer;

use super::echo::{connect, say_via, serve_echo};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub calls: usize,
    pub ok: usize,
    pub refreshes: u64,
    pub replays: u64,
}

/// Calls every 100 ms until half a second after the first expiry was survived, telling `log`
/// what happens.
pub async fn run(mut log: impl FnMut(&str)) -> Result<Outcome, BoxError> {
    let started = Instant::now();
    let at = move || format!("[{:>5.2} s]", started.elapsed().as_secs_f64());

    // The server: 2 s access tokens, refused the moment they expire.
    let key = SigningKey::hmac(Algorithm::HS256, b"grpc-demo-secret-grpc-demo-secret!")?;
    let access = AccessTokenIssuer::new(key.clone()).lifetime(Duration::from_secs(2));
    let issuer = TokenIssuer::new(access, MemoryStore::new());
    let addr = serve_echo(JwtAuthLayer::new(key.verification_key()).leeway(Duration::ZERO)).await;
    log(&format!("{} gRPC server on {addr}", at()));

    // The client: a session, a refresher (the issuer itself, standing in for an auth
    // service), and the channel behind RefreshLayer; tonic's streaming bodies are teed.
    let session = Session::new();
    let pair = issuer.issue("alice", &()).await?;
    session.login(Tokens::new(pair.access_token, pair.refresh_token))?;
    let refresher = refresher_fn(move |refresh: String| {
        let issuer = issuer.clone();
        async move {
            let pair = issuer
                .rotate(&refresh)
                .await
                .map_err(RefreshFailure::permanent)?;
            Ok(Tokens::new(pair.access_token, pair.refresh_token))
        }
    });
    let layer = RefreshLayer::new(session.clone(), refresher)
        .no_early_refresh()
        .tee_bodies(64 * 1024, tonic::body::Body::new);
    let channel = ServiceBuilder::new()
        .layer(layer)
        .service(connect(addr).await);

    let mut events = session.subscribe();
    let (mut ok, mut calls) = (0, 0);
    let mut refreshed_at: Option<Instant> = None;
    while refreshed_at.is_none_or(|at| at.elapsed() < Duration::from_millis(500)) {
        calls += 1;
        match say_via(channel.clone(), None, &format!("call {calls}")).await {
            Ok(reply) => {
                ok += 1;
                if calls % 5 == 1 {
                    log(&format!("{} {reply}", at()));
                }
            }
            Err(status) => log(&format!("{} call {calls} failed: {status}", at())),
        }
        if events.has_changed().unwrap_or(false)
            && *events.borrow_and_update() == SessionEvent::Refreshed
        {
            log(&format!(
                "{} the access token expired: refreshed once, the rejected call replayed",
                at()
            ));
            refreshed_at = Some(Instant::now());
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("no expiry within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = session.stats();
    Ok(Outcome {
        calls,
        ok,
        refreshes: stats.refreshes,
        replays: stats.replays,
    })
}
