//! The README's first command: `cargo run --example demo`.
//!
//! Starts an axum server behind `JwtAuthLayer` on an ephemeral loopback port and walks
//! through what the layer answers: no token, a valid token, an expired one (told apart so a
//! client knows to refresh), a forged one, and a gRPC caller. The client side (silent
//! refresh) joins this demo when it lands.

use std::time::Duration;

use axum::{Extension, Router, routing::get};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_jwt_refresh::server::{
    AccessTokenIssuer, Algorithm, Claims, JwtAuthLayer, SigningKey, unix_time,
};

const SECRET: &[u8] = b"demo-secret-demo-secret-demo-secret!";

/// An hour ago, to mint a token that has already expired.
fn an_hour_ago() -> u64 {
    unix_time() - 3600
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let key = SigningKey::hmac(Algorithm::HS256, SECRET)?;
    let issuer = AccessTokenIssuer::new(key.clone())
        .issuer("demo")
        .audience("api");
    let auth = JwtAuthLayer::new(key.verification_key())
        .issuer("demo")
        .audience("api")
        .leeway(Duration::ZERO);
    let app = Router::new()
        .route(
            "/aaa",
            get(|Extension(c): Extension<Claims>| async move {
                format!("aaa for {}", c.subject().unwrap_or("?"))
            }),
        )
        .layer(auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("server listening on http://{addr}\n");

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let valid = issuer.mint("zhangsan", "session-1", &())?.token;
    let expired = issuer
        .clone()
        .clock(an_hour_ago)
        .mint("zhangsan", "session-1", &())?
        .token;
    let forger = SigningKey::hmac(Algorithm::HS256, b"another-secret-another-secret-12345")?;
    let forged = AccessTokenIssuer::new(forger)
        .issuer("demo")
        .audience("api");
    let forged = forged.mint("zhangsan", "session-1", &())?.token;
    let cases = [
        ("no token", None, false),
        ("valid token", Some(valid), false),
        ("expired token", Some(expired.clone()), false),
        ("forged signature", Some(forged), false),
        ("gRPC caller, expired token", Some(expired), true),
    ];
    for (label, bearer, grpc) in cases {
        let mut req = http::Request::get(format!("http://{addr}/aaa"));
        if let Some(t) = &bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if grpc {
            req = req.header("content-type", "application/grpc");
        }
        let res = client.request(req.body(Empty::new())?).await?;
        let status = res.status();
        let challenge = res.headers().get("www-authenticate").cloned();
        let grpc_status = res.headers().get("grpc-status").cloned();
        let grpc_message = res.headers().get("grpc-message").cloned();
        let body = res.into_body().collect().await?.to_bytes();
        println!("{label:>28}: {status}");
        if let Some(c) = challenge {
            println!("{:>28}  WWW-Authenticate: {}", "", c.to_str()?);
        }
        if let (Some(s), Some(m)) = (grpc_status, grpc_message) {
            println!(
                "{:>28}  grpc-status: {} grpc-message: {}",
                "",
                s.to_str()?,
                m.to_str()?
            );
        }
        if !body.is_empty() {
            println!("{:>28}  {}", "", String::from_utf8_lossy(&body));
        }
    }
    println!("\nAn expired token says \"token expired\", so a client refreshes exactly then.");
    Ok(())
}
