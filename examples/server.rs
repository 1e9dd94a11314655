//! `cargo run --example server`: a drop-in for the NestJS write-up's backend, built from this
//! crate. See `examples/common/server.rs` for that backend and the routes; settings come from
//! the environment:
//! `ADDR` (default 127.0.0.1:3000), `JWT_SECRET`, `JWT_ISSUER`, `JWT_AUDIENCE`, `JWT_JWKS`,
//! `ACCESS_TTL` (default 3.6 s), `REFRESH_TTL` (default 7 days), `REDIS_URL` (with
//! `--features redis`: one Redis, `redis://host:port/`, or a Redis Cluster, its nodes' URLs
//! comma-separated), `PROPAGATE_REVOCATIONS=1` (with Redis: revoked sessions kept in a local
//! set fed by the store's revocation feed, instead of asking Redis on every request),
//! `METRICS=1` (with `--features metrics`) to serve `GET /metrics` in Prometheus text format,
//! `PUBLIC_URL` (the URL clients address the server by, which DPoP proofs name; default
//! `http://<ADDR>`), and `DPOP_NONCE=1` to require the server's nonce in DPoP proofs.
//!
//! A `POST /login` carrying a `DPoP` proof gets tokens bound to the proof's key (RFC 9449):
//! they then work only with proofs from that key, at `/aaa`, `/bbb`, `/refresh` and
//! `/oauth/token`. `cargo run --example client -- --dpop` does that.

mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut config = common::server::Config::from_env()?;
    // Installed before the server is built: its instruments bind to the recorder then.
    if std::env::var("METRICS").is_ok_and(|v| v == "1") {
        config.metrics = Some(common::server::install_metrics()?);
    }
    let server = common::server::bind(config).await?;
    for notice in &server.notices {
        eprintln!("note: {notice}");
    }
    println!("listening on http://{}", server.listener.local_addr()?);
    common::server::serve(server, async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("shutting down");
    })
    .await?;
    Ok(())
}
