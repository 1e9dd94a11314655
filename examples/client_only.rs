//! `cargo run --example client_only`: the client alone. A hyper-util client behind
//! `RefreshLayer` logs in to a running `examples/server.rs`, then calls `/aaa` every 500 ms
//! for 10 s, across several access-token expiries, without ever seeing a 401. Settings:
//! `BASE_URL` (default http://127.0.0.1:3000).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tower::{ServiceBuilder, ServiceExt};
use tower_jwt_refresh::client::{OAuthRefresher, RefreshLayer, Session, Tokens};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Logs in to `base_url`, then makes `calls` requests `every` apart; returns their statuses.
pub(crate) async fn run(
    base_url: &str,
    calls: usize,
    every: Duration,
) -> Result<Vec<u16>, BoxError> {
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let login = http::Request::post(format!("{base_url}/login"))
        .header("content-type", "application/json")
        .body(Full::from(r#"{"username":"admin","password":"admin"}"#))?;
    let body = http.request(login).await?.into_body().collect().await?;
    let body: serde_json::Value = serde_json::from_slice(&body.to_bytes())?;
    let (Some(access), Some(refresh)) =
        (body["accessToken"].as_str(), body["refreshToken"].as_str())
    else {
        return Err(format!("login failed: {body}").into());
    };

    let session = Session::new();
    session.login(Tokens::new(access, refresh))?;
    let refresher = OAuthRefresher::new(http.clone(), format!("{base_url}/oauth/token").parse()?);
    let api = ServiceBuilder::new()
        .layer(RefreshLayer::new(session, refresher))
        .service(http);

    let mut statuses = Vec::with_capacity(calls);
    for _ in 0..calls {
        let request = http::Request::get(format!("{base_url}/aaa")).body(Full::default())?;
        statuses.push(api.clone().oneshot(request).await?.status().as_u16());
        tokio::time::sleep(every).await;
    }
    Ok(statuses)
}

#[allow(dead_code)] // the tests use `run` alone
#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let base_url = std::env::var("BASE_URL").unwrap_or_else(|_| "http://127.0.0.1:3000".into());
    let statuses = run(&base_url, 20, Duration::from_millis(500)).await?;
    println!("statuses: {statuses:?}");
    Ok(())
}
