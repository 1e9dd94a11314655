//! The replay body under arbitrary chunking and read patterns: a replay is byte-identical to
//! the original, or (over the cap) not made at all.
#![no_main]

use std::convert::Infallible;
use std::sync::OnceLock;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use libfuzzer_sys::fuzz_target;
use tower_jwt_refresh::client::{ReplayPolicy, TeeBodies};

type Boxed = UnsyncBoxBody<Bytes, Infallible>;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    // Byte 0: the cap; byte 1: how many frames the first attempt reads; then chunk lengths
    // and payload, interleaved.
    let [cap, first_reads, rest @ ..] = data else { return };
    let mut chunks = Vec::new();
    let mut original = Vec::new();
    let mut input = rest;
    while let Some((&len, tail)) = input.split_first() {
        let len = usize::from(len % 16).min(tail.len());
        chunks.push(Bytes::copy_from_slice(&tail[..len]));
        original.extend_from_slice(&tail[..len]);
        input = &tail[len..];
    }
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
    let body = Boxed::new(StreamBody::new(futures_util::stream::iter(frames)));
    let policy = TeeBodies::new(usize::from(*cap), Boxed::new as fn(_) -> Boxed);
    runtime().block_on(async {
        let (mut first, kept) = policy.keep(body);
        let mut read = 0;
        for _ in 0..*first_reads {
            match first.frame().await {
                Some(Ok(frame)) => read += frame.into_data().map_or(0, |d| d.len()),
                _ => break,
            }
        }
        match policy.rebuild(kept.unwrap()) {
            Some(replay) => {
                assert!(read <= usize::from(*cap), "replay allowed after reading past the cap");
                let replayed = replay.collect().await.unwrap().to_bytes();
                assert_eq!(replayed, original.as_slice(), "replay differs from the original");
            }
            None => assert!(read > usize::from(*cap), "replay refused under the cap"),
        }
    });
});
