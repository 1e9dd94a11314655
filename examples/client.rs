//! `cargo run --example client -- [options]`: logs in, waits for the access token to expire,
//! fires concurrent requests across the expiry through `RefreshLayer`, and prints one JSON
//! line `{"ok":…,"failed":…,"refreshes":…,"ms":…}`. Exits non-zero if any request failed.
//!
//! Options: `--base-url` (default http://127.0.0.1:3000), `--user`/`--password` (admin/admin),
//! `-n` (50), `--refresh-style oauth|seed-get|seed-post` (seed-post), `--auth bearer|raw`.
//! Against the NestJS write-up's backend itself (see `examples/common/server.rs`): `--refresh-style seed-get --auth raw`.

mod common;

use std::io::IsTerminal;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut options = match common::client::Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    options.progress = std::io::stdout().is_terminal();
    match common::client::run(&options, |event| eprintln!("{event}")).await {
        Ok(summary) => {
            println!("{}", summary.json());
            if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
