//! `RefreshMiddleware`'s cost where reqwest users feel it: a `GET` over a loopback socket to
//! an axum server with a no-op handler, through a reqwest client with the middleware and a
//! valid token, against the same client without it, in the same run. Run with
//! `cargo bench --features reqwest --bench reqwest`.
//!
//! - `bare_reqwest`: `reqwest::Client` alone;
//! - `middleware_chain_empty`: reqwest-middleware with no middleware (its own cost);
//! - `refresh_middleware`: with `RefreshMiddleware`, the token valid and fresh (the hot path:
//!   the token attached, a replay copy kept, the answer checked).
//!
//! A socket round trip is tens of microseconds and noisy on a shared machine, so the
//! `in_process` rows measure the middleware alone: the same chains ending in a middleware that
//! answers 200 at once, without a socket.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use tower_jwt_refresh::client::{RefreshLayer, RefreshMiddleware, Session, Tokens, refresher_fn};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/aaa", get(|| async { "aaa" }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/aaa")
    });
    let bare = reqwest::Client::new();
    let empty = reqwest_middleware::ClientBuilder::new(bare.clone()).build();
    let session = Session::new();
    let tokens = Tokens::new("a-valid-access-token", "r").expires_in(Duration::from_secs(3600));
    session.login(tokens).unwrap();
    let refresher = refresher_fn(|_| async { Ok(Tokens::new("new", "r2")) });
    let layer = rt.block_on(async { RefreshLayer::new(session, refresher) });
    let with = reqwest_middleware::ClientBuilder::new(bare.clone())
        .with(RefreshMiddleware::new(layer))
        .build();

    let mut group = c.benchmark_group("reqwest");
    group.bench_function("bare_reqwest", |b| {
        b.to_async(&rt).iter(|| async {
            let response = bare.get(&url).send().await.unwrap();
            assert!(response.status().is_success());
            response.bytes().await.unwrap()
        });
    });
    group.bench_function("middleware_chain_empty", |b| {
        b.to_async(&rt).iter(|| async {
            let response = empty.get(&url).send().await.unwrap();
            assert!(response.status().is_success());
            response.bytes().await.unwrap()
        });
    });
    group.bench_function("refresh_middleware", |b| {
        b.to_async(&rt).iter(|| async {
            let response = with.get(&url).send().await.unwrap();
            assert!(response.status().is_success());
            response.bytes().await.unwrap()
        });
    });
    group.finish();

    let alone = reqwest_middleware::ClientBuilder::new(bare.clone())
        .with(Answer)
        .build();
    let session = Session::new();
    let tokens = Tokens::new("a-valid-access-token", "r").expires_in(Duration::from_secs(3600));
    session.login(tokens).unwrap();
    let refresher = refresher_fn(|_| async { Ok(Tokens::new("new", "r2")) });
    let layer = rt.block_on(async { RefreshLayer::new(session, refresher) });
    let refreshing = reqwest_middleware::ClientBuilder::new(bare.clone())
        .with(RefreshMiddleware::new(layer))
        .with(Answer)
        .build();
    let mut group = c.benchmark_group("in_process");
    for (name, client) in [("answer_only", &alone), ("refresh_middleware", &refreshing)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let response = client.get(&url).send().await.unwrap();
                assert!(response.status().is_success());
            });
        });
    }
    group.finish();
}

/// Answers 200 at once, without a socket: the end of the `in_process` chains.
struct Answer;

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for Answer {
    async fn handle(
        &self,
        _: reqwest::Request,
        _: &mut http::Extensions,
        _: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        Ok(reqwest::Response::from(http::Response::new("")))
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
