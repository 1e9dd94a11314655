//! `cargo run --example grpc`: a tonic server behind `JwtAuthLayer` and a tonic client behind
//! `RefreshLayer`, in one process, with tonic's manual codegen (no protoc). Unary calls keep
//! going across an access-token expiry, with one refresh.

mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let outcome = common::grpc::run(|line| println!("{line}")).await?;
    println!(
        "{}/{} calls ok, {} refresh, {} replay",
        outcome.ok, outcome.calls, outcome.refreshes, outcome.replays
    );
    if outcome.ok != outcome.calls {
        return Err("some calls failed".into());
    }
    Ok(())
}
