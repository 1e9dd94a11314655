//! `cargo run --example reqwest_client --features reqwest -- [options]`: `examples/client.rs`
//! over reqwest. Logs in, waits for the access token to expire, fires concurrent requests
//! across the expiry through a reqwest client with `RefreshMiddleware`, and prints one JSON
//! line `{"ok":…,"failed":…,"refreshes":…,"ms":…}`. Exits non-zero if any request failed.
//!
//! The options are `examples/client.rs`'s: `--base-url` (default http://127.0.0.1:3000),
//! `--user`/`--password` (admin/admin), `-n` (50), `--refresh-style oauth|seed-get|seed-post`
//! (seed-post; `oauth` refreshes over reqwest too), `--auth bearer|raw`.

mod common;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::client::main(true).await
}
