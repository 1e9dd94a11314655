//! `cargo run --example client -- [options]`: logs in, waits for the access token to expire,
//! fires concurrent requests across the expiry through `RefreshLayer`, and prints one JSON
//! line `{"ok":…,"failed":…,"refreshes":…,"ms":…}`. Exits non-zero if any request failed.
//!
//! Options: `--base-url` (default http://127.0.0.1:3000), `--user`/`--password` (admin/admin),
//! `-n` (50), `--refresh-style oauth|seed-get|seed-post` (seed-post), `--auth bearer|raw`, and
//! `--dpop`: log in with a DPoP proof (RFC 9449), so the tokens are bound to a key made for
//! the run, and send every request and refresh with a proof (refreshing at `/oauth/token`,
//! answering the server's nonce challenges); run the server with `DPOP_NONCE=1` to require
//! nonces.
//! Against the NestJS write-up's backend itself (see `examples/common/server.rs`): `--refresh-style seed-get --auth raw`.

mod common;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::client::main(false).await
}
