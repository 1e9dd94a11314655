//! The README's first command: `cargo run --example demo`.
//!
//! Starts the example server in-process on an ephemeral port (2 s access tokens, the memory
//! store), logs in, lets the access token expire, storms the server with requests, and prints
//! the timeline: the requests are held while exactly one refresh runs, then all succeed.

mod common;

use std::time::{Duration, Instant};

use common::client::{Options, RefreshStyle};
use common::server::Config;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let started = Instant::now();
    let config = Config {
        addr: "127.0.0.1:0".parse()?,
        secret: Some(b"demo-secret-demo-secret-demo-secret!".to_vec()),
        access_ttl: Duration::from_secs(2),
        ..Config::default()
    };
    let server = common::server::bind(config).await?;
    let addr = server.listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(common::server::serve(server, async {
        let _ = stopped.await;
    }));
    let at = move || format!("[{:>5.2} s]", started.elapsed().as_secs_f64());
    println!(
        "{} server listening on http://{addr} (access tokens live 2 s)",
        at()
    );

    let options = Options {
        base_url: format!("http://{addr}"),
        requests: 200,
        refresh_style: RefreshStyle::OAuth,
        // Let the requests meet the expiry: their 401s are held and replayed. A refresh
        // takes 150 ms here, as it might across a network.
        early_refresh: false,
        refresh_delay: Some(Duration::from_millis(150)),
        ..Options::default()
    };
    let summary = common::client::run(&options, |event| println!("{} {event}", at())).await?;
    println!("{} all done: {}", at(), summary.json());
    println!(
        "\n{} requests crossed the expiry; {} refresh served them all, and the caller saw no 401.",
        summary.ok + summary.failed,
        summary.refreshes
    );

    let _ = stop.send(());
    serving.await??;
    if summary.failed > 0 || summary.refreshes != 1 {
        return Err("the demo expected every request to succeed with exactly one refresh".into());
    }
    Ok(())
}
