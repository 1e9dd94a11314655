//! The client layer over real sockets, against this crate's own server side: a tonic client
//! calling a tonic server across an access-token expiry, and a hyper-util client storming an
//! axum server across one. Real time here: the tokens live one or two seconds.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::echo::{connect, say_via, serve_echo};
use tower::{ServiceBuilder, ServiceExt};
use tower_jwt_refresh::client::{
    OAuthRefresher, RefreshFailure, RefreshLayer, Session, Stats, Tokens, refresher_fn,
};
use tower_jwt_refresh::issuer::{AccessTokenIssuer, MemoryStore, TokenIssuer};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};
use tower_jwt_refresh::server::{Claims, JwtAuthLayer};

fn issuer(ttl: Duration) -> (SigningKey, TokenIssuer<MemoryStore>) {
    let key = SigningKey::hmac(Algorithm::HS256, [8u8; 32]).unwrap();
    let access = AccessTokenIssuer::new(key.clone()).lifetime(ttl);
    (key.clone(), TokenIssuer::new(access, MemoryStore::new()))
}

#[tokio::test]
async fn grpc_calls_across_an_expiry_all_succeed_with_one_refresh() {
    let (key, issuer) = issuer(Duration::from_secs(2));
    // No leeway: the server refuses the token the moment it expires.
    let auth = JwtAuthLayer::new(key.verification_key()).leeway(Duration::ZERO);
    let channel = connect(serve_echo(auth).await).await;

    let session = Session::new();
    let pair = issuer.issue("alice", &()).await.unwrap();
    session
        .login(Tokens::new(pair.access_token, pair.refresh_token))
        .unwrap();
    let rotating = issuer.clone();
    let refresher = refresher_fn(move |refresh: String| {
        let issuer = rotating.clone();
        async move {
            let pair = issuer
                .rotate(&refresh)
                .await
                .map_err(RefreshFailure::permanent)?;
            Ok(Tokens::new(pair.access_token, pair.refresh_token))
        }
    });
    // Only the server's UNAUTHENTICATED triggers the refresh here, so the 401 path and the
    // replay of tonic's streaming body are what this exercises.
    let layer = RefreshLayer::new(session.clone(), refresher)
        .no_early_refresh()
        .tee_bodies(64 * 1024, tonic::body::Body::new);
    let client = ServiceBuilder::new().layer(layer).service(channel);

    let mut calls = 0;
    let mut after_refresh = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Batches of concurrent unary calls until the token has expired, been refreshed, and the
    // new one has served a few more batches.
    while after_refresh < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refresh within 10 s"
        );
        let batch: Vec<_> = (0..8)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { say_via(client, None, &format!("call {i}")).await })
            })
            .collect();
        for (i, call) in batch.into_iter().enumerate() {
            assert_eq!(call.await.unwrap().unwrap(), format!("alice: call {i}"));
            calls += 1;
        }
        if session.stats().refreshes > 0 {
            after_refresh += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(session.stats().refreshes, 1, "after {calls} calls");
    assert!(
        session.stats().replays >= 1,
        "the expiry was seen and recovered from"
    );
}

/// 200 requests across an expiry, refreshed early or (`early = false`) after their 401s.
async fn http_storm(early: bool) {
    // `exp` is whole seconds, so a fresh token lives between one and two seconds: long enough
    // to outlive the storm.
    let (key, issuer) = issuer(Duration::from_secs(2));
    let auth = JwtAuthLayer::new(key.verification_key()).leeway(Duration::ZERO);
    let app = Router::new()
        .route(
            "/aaa",
            get(|c: Claims| async move { format!("aaa for {}", c.subject().unwrap_or_default()) })
                .layer(auth),
        )
        .route_service("/oauth/token", issuer.refresh_endpoint());
    let addr = support::serve(app).await;

    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let session = Session::new();
    let pair = issuer.issue("alice", &()).await.unwrap();
    let original_refresh = pair.refresh_token.clone();
    let tokens = Tokens::new(pair.access_token, pair.refresh_token)
        .expires_in(Duration::from_secs(pair.expires_in));
    session.login(tokens).unwrap();
    let token_url = format!("http://{addr}/oauth/token").parse().unwrap();
    let layer = RefreshLayer::new(
        session.clone(),
        OAuthRefresher::new(http.clone(), token_url),
    );
    let layer = if early {
        layer
    } else {
        layer.no_early_refresh()
    };
    let client = ServiceBuilder::new().layer(layer).service(http);

    // Let the access token expire, then storm.
    let expires_at = session.tokens().unwrap().expires_at().unwrap();
    tokio::time::sleep_until(expires_at + Duration::from_millis(10)).await;
    let storm: Vec<_> = (0..200)
        .map(|_| {
            let client = client.clone();
            let request = http::Request::get(format!("http://{addr}/aaa"))
                .body(Full::default())
                .unwrap();
            tokio::spawn(client.oneshot(request))
        })
        .collect();
    for response in storm {
        assert_eq!(response.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(session.stats().refreshes, 1);
    if !early {
        // The requests met the expiry: their 401s were held and replayed over hyper-util.
        assert!(session.stats().replays >= 1, "{:?}", session.stats());
    }
    // The refresh went through the real endpoint, which rotated the refresh token.
    let current = session.tokens().unwrap();
    assert_ne!(current.refresh_token(), Some(original_refresh.as_str()));
    assert!(current.expires_at().unwrap() > expires_at);
}

#[tokio::test]
async fn an_http_storm_across_an_expiry_gets_one_refresh_and_200_successes() {
    http_storm(true).await;
}

#[tokio::test]
async fn an_http_storm_meeting_the_expiry_is_replayed_with_one_refresh() {
    http_storm(false).await;
}

#[tokio::test]
async fn a_refused_refresh_over_http_expires_the_session() {
    let (key, issuer) = issuer(Duration::from_secs(60));
    let auth = JwtAuthLayer::new(key.verification_key());
    let app = Router::new()
        .route("/aaa", get(|| async { "aaa" }).layer(auth))
        .route_service("/oauth/token", issuer.refresh_endpoint());
    let addr = support::serve(app).await;
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let session = Session::new();
    // A token the server rejects, with a refresh token it never issued.
    session
        .login(Tokens::new(
            "not-a-jwt",
            "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ))
        .unwrap();
    let token_url = format!("http://{addr}/oauth/token").parse().unwrap();
    let client = ServiceBuilder::new()
        .layer(RefreshLayer::new(
            session.clone(),
            OAuthRefresher::new(http.clone(), token_url),
        ))
        .service(http);
    let request = http::Request::get(format!("http://{addr}/aaa"))
        .body(Full::default())
        .unwrap();
    let error = client.oneshot(request).await.unwrap_err();
    assert!(
        matches!(error, tower_jwt_refresh::client::Error::SessionExpired),
        "{error}"
    );
    assert!(session.is_expired());
}

/// Tokens minted by an issuer whose clock is `skew_secs` ahead of (or behind) the client's,
/// with no `expires_in`: the client reads `exp - iat` from receipt on its monotonic clock.
async fn refreshes_in_half_an_hour_with_issuer_skew(ahead: bool) -> (usize, Stats) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    let skewed = tower_jwt_refresh::Clock::from_fn(move || {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if ahead { now + 300 } else { now - 300 }
    });
    let key = SigningKey::hmac(Algorithm::HS256, [8u8; 32]).unwrap();
    let minter = AccessTokenIssuer::new(key)
        .lifetime(Duration::from_secs(600))
        .clock(skewed);
    let mint = move || minter.mint("alice", "sid", &()).unwrap().token;
    let session = Session::new();
    session.login(Tokens::new(mint(), "r0")).unwrap();
    let refreshes = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&refreshes);
    let refresher = refresher_fn(move |_refresh: String| {
        count.fetch_add(1, Ordering::SeqCst);
        let token = mint();
        async move { Ok(Tokens::new(token, "r")) }
    });
    // A server that accepts every token: only the client's own timing refreshes.
    let ok = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::default()))
    });
    let client = ServiceBuilder::new()
        .layer(RefreshLayer::new(session.clone(), refresher))
        .service(ok);
    // A request every 10 s for 30 minutes: three 10-minute lifetimes.
    for _ in 0..180 {
        let request = http::Request::get("/").body(Full::default()).unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    (refreshes.load(Ordering::SeqCst), session.stats())
}

#[tokio::test(start_paused = true)]
async fn an_issuer_clock_ahead_or_behind_gets_one_refresh_per_lifetime() {
    for ahead in [true, false] {
        let (refreshes, stats) = refreshes_in_half_an_hour_with_issuer_skew(ahead).await;
        assert_eq!(refreshes, 3, "issuer ahead: {ahead}");
        assert_eq!((stats.refresh_failures, stats.replays), (0, 0));
    }
}
