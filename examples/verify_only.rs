//! `cargo run --example verify_only`: the resource server alone. An axum API that only
//! verifies access tokens; something else (here, `examples/server.rs` started with the same
//! `JWT_SECRET`) issues them. Settings: `ADDR` (default 127.0.0.1:3001) and `JWT_SECRET`.
//!
//! ```sh
//! JWT_SECRET=an-example-secret-of-32-bytes!!! cargo run --example verify_only
//! ```

use axum::{Router, routing::get};
use tower_jwt_refresh::keys::{Algorithm, Key};
use tower_jwt_refresh::server::{Claims, JwtAuthLayer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The API: `GET /me` answers with the token's subject; anything without a valid token gets
/// an RFC 6750 401.
pub(crate) fn app(secret: &[u8]) -> Result<Router, BoxError> {
    let key = Key::hmac(Algorithm::HS256, secret)?;
    Ok(Router::new()
        .route(
            "/me",
            get(|claims: Claims| async move {
                format!("hello {}", claims.subject().unwrap_or("anonymous"))
            }),
        )
        .layer(JwtAuthLayer::new(key)))
}

#[allow(dead_code)] // the tests use `app` alone
#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let secret = std::env::var("JWT_SECRET").map_err(|_| "set JWT_SECRET (32 bytes or more)")?;
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(secret.as_bytes())?).await?;
    Ok(())
}
