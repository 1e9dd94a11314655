//! Our `JwtAuth` against peer crates, per algorithm, in one run, with the six-claim access
//! token of the main crate's `benches/verify.rs`: (a) bare `jsonwebtoken::decode` with
//! equivalent validation, (b) `JwtAuth` with the cache off, (c) `JwtAuth` on a cache hit, and
//! (d) the peers over the same inner service. Run with `cargo bench` in this folder.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "../support/fixture.rs"]
mod fixture;
#[path = "../support/harness.rs"]
mod harness;
mod peers;

use fixture::{ALGORITHMS, bench_noop, bench_ours, keys, token};
use harness::runtime;

/// The main crate's test keys, for `fixture`.
const KEY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/keys");

fn algorithms(c: &mut Criterion) {
    let rt = runtime();
    bench_noop(c, &rt);
    for alg in ALGORITHMS {
        let (encoding, _, _) = keys(alg);
        let valid = token(alg, &encoding, 3600, "at+jwt");
        bench_ours(c, &rt, alg, &valid);
        peers::bench(c, &rt, alg, &valid);
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = algorithms }
criterion_main!(benches);
