//! [`TeeBodies`]: streaming bodies recorded as they are read, so a replay can send them again.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::ReplayPolicy;

/// Tees streaming bodies: what the first attempt reads is recorded, up to `cap` bytes, and a
/// replay sends it again, then the rest of the stream. A body that outgrew the cap is not
/// replayed.
///
/// `rebuild` turns the teeing [`ReplayBody`] back into the body type the inner service takes,
/// such as `tonic::body::Body::new`.
#[derive(Clone)]
pub struct TeeBodies<F> {
    cap: usize,
    rebuild: F,
}

impl<F> fmt::Debug for TeeBodies<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TeeBodies")
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl<F> TeeBodies<F> {
    /// Records up to `cap` bytes per request, wrapping bodies with `rebuild`.
    pub fn new(cap: usize, rebuild: F) -> Self {
        Self { cap, rebuild }
    }
}

impl<B, F> ReplayPolicy<B> for TeeBodies<F>
where
    B: Body<Data = Bytes> + Send + 'static,
    F: Fn(ReplayBody<B>) -> B + Clone + Send + Sync + 'static,
{
    /// The tee's shared state; its type cannot be named outside this crate.
    type Kept = Arc<Mutex<Tee<B>>>;

    fn keep(&self, body: B) -> (B, Option<Self::Kept>) {
        let tee = Arc::new(Mutex::new(Tee::new(body, self.cap)));
        let first = (self.rebuild)(ReplayBody::reader(Arc::clone(&tee), 0));
        (first, Some(tee))
    }

    fn rebuild(&self, tee: Self::Kept) -> Option<B> {
        let epoch = {
            let mut state = lock(&tee);
            if state.overflowed || state.failed {
                return None;
            }
            // The attempt being replaced is detached: from now on it reads nothing more, so
            // exactly one reader pulls from the stream and no chunk is lost to it.
            state.epoch += 1;
            state.epoch
        };
        Some((self.rebuild)(ReplayBody::reader(tee, epoch)))
    }
}

/// The shared state of a teed body: the source stream and what has been read of it.
///
/// Public only because [`TeeBodies`]' `Kept` type names it; this module is private, so users
/// cannot name it.
pub struct Tee<B> {
    stream: Option<Pin<Box<B>>>,
    chunks: Vec<Bytes>,
    recorded: usize,
    cap: usize,
    overflowed: bool,
    failed: bool,
    trailers: Option<HeaderMap>,
    ended: bool,
    /// The live reader's epoch; older readers are detached.
    epoch: u64,
}

impl<B> fmt::Debug for Tee<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tee")
            .field("recorded", &self.recorded)
            .field("overflowed", &self.overflowed)
            .field("failed", &self.failed)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// The lock is held for one poll at most, never across an await; nothing panics under it,
/// so a poisoned lock is recovered rather than failing every reader.
fn lock<B>(tee: &Mutex<Tee<B>>) -> MutexGuard<'_, Tee<B>> {
    tee.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B: Body<Data = Bytes>> Tee<B> {
    fn new(body: B, cap: usize) -> Self {
        Self {
            stream: Some(Box::pin(body)),
            chunks: Vec::new(),
            recorded: 0,
            cap,
            overflowed: false,
            failed: false,
            trailers: None,
            ended: false,
            epoch: 0,
        }
    }

    /// Records what the source stream yielded, for the reader at `at`.
    fn record(
        &mut self,
        polled: Option<Result<Frame<Bytes>, B::Error>>,
        at: &mut Position,
    ) -> Option<Result<Frame<Bytes>, B::Error>> {
        match polled {
            Some(Ok(frame)) => Some(Ok(self.record_frame(frame, at))),
            None => {
                self.end();
                None
            }
            Some(Err(e)) => {
                // Never polled again: a replay of a broken body would send it truncated.
                self.failed = true;
                self.stream = None;
                Some(Err(e))
            }
        }
    }

    fn record_frame(&mut self, frame: Frame<Bytes>, at: &mut Position) -> Frame<Bytes> {
        match frame.into_data() {
            Ok(data) => {
                self.record_data(&data, at);
                Frame::data(data)
            }
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    self.trailers = Some(trailers.clone());
                    self.end();
                    at.trailers_sent = true;
                    Frame::trailers(trailers)
                }
                Err(other) => other,
            },
        }
    }

    fn record_data(&mut self, data: &Bytes, at: &mut Position) {
        if self.overflowed {
            return;
        }
        self.recorded += data.len();
        if self.recorded > self.cap {
            // Too big to replay: stop recording and free what was kept.
            self.overflowed = true;
            self.chunks = Vec::new();
        } else {
            self.chunks.push(data.clone());
            at.chunk = self.chunks.len();
        }
    }

    fn end(&mut self) {
        self.ended = true;
        self.stream = None;
    }
}

/// A body read through a tee: recorded chunks first, then the rest of the original stream.
///
/// Each attempt reads the whole body in order. Only the latest attempt reads at all: when a
/// replay is built, the attempt it replaces ends (its request was answered already).
pub struct ReplayBody<B> {
    tee: Arc<Mutex<Tee<B>>>,
    at: Position,
    epoch: u64,
}

/// How far one reader has read.
#[derive(Default)]
struct Position {
    /// The next recorded chunk to send.
    chunk: usize,
    trailers_sent: bool,
}

impl<B> ReplayBody<B> {
    fn reader(tee: Arc<Mutex<Tee<B>>>, epoch: u64) -> Self {
        Self {
            tee,
            at: Position::default(),
            epoch,
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("cursor", &self.at.chunk)
            .finish_non_exhaustive()
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let Self { tee, at, epoch } = &mut *self;
        let mut tee = lock(tee);
        if *epoch != tee.epoch || tee.failed {
            return Poll::Ready(None);
        }
        if let Some(chunk) = tee.chunks.get(at.chunk) {
            at.chunk += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if tee.ended {
            let trailers = (!at.trailers_sent).then(|| tee.trailers.clone()).flatten();
            at.trailers_sent = true;
            return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
        }
        let Some(stream) = tee.stream.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = ready!(stream.as_mut().poll_frame(cx));
        Poll::Ready(tee.record(polled, at))
    }

    fn is_end_stream(&self) -> bool {
        let tee = lock(&self.tee);
        if self.epoch != tee.epoch || tee.failed {
            return true;
        }
        let recorded_left = self.at.chunk < tee.chunks.len();
        let trailers_left = !self.at.trailers_sent && tee.trailers.is_some();
        match &tee.stream {
            _ if recorded_left || trailers_left => false,
            Some(stream) => stream.is_end_stream(),
            None => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        let tee = lock(&self.tee);
        let recorded: u64 = tee
            .chunks
            .get(self.at.chunk..)
            .unwrap_or_default()
            .iter()
            .map(|c| c.len() as u64)
            .sum();
        let Some(stream) = &tee.stream else {
            return SizeHint::with_exact(recorded);
        };
        // What is left of the stream, plus the recorded chunks this reader has yet to send.
        let mut hint = stream.size_hint();
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + recorded);
        }
        hint.set_lower(hint.lower() + recorded);
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::convert::Infallible;

    type Chunked = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
    >;

    fn chunked(parts: &[&'static str]) -> Chunked {
        let frames: Vec<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

    fn tee(cap: usize) -> TeeBodies<fn(ReplayBody<Boxed>) -> Boxed> {
        TeeBodies::new(cap, Boxed::new)
    }

    async fn read<B: Body<Data = Bytes>>(body: B) -> Bytes
    where
        B::Error: fmt::Debug,
    {
        body.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_replay_is_byte_identical_whatever_the_first_attempt_read() {
        let policy = tee(64);
        // The first attempt reads everything.
        let (first, kept) = policy.keep(chunked(&["ab", "cd", "ef"]).boxed_unsync());
        assert_eq!(read(first).await, "abcdef");
        let replay = policy.rebuild(kept.unwrap()).unwrap();
        assert_eq!(read(replay).await, "abcdef");

        // The first attempt reads one chunk and is dropped (an early 401).
        let (mut first, kept) = policy.keep(chunked(&["ab", "cd", "ef"]).boxed_unsync());
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        drop(first);
        let replay = policy.rebuild(kept.unwrap()).unwrap();
        assert_eq!(read(replay).await, "abcdef");
    }

    #[tokio::test]
    async fn a_replay_detaches_the_attempt_it_replaces() {
        let policy = tee(64);
        let (mut first, kept) = policy.keep(chunked(&["ab", "cd", "ef"]).boxed_unsync());
        assert_eq!(
            first.frame().await.unwrap().unwrap().into_data().unwrap(),
            "ab"
        );
        let replay = policy.rebuild(kept.unwrap()).unwrap();
        // A connection still pumping the first attempt gets nothing more, and takes nothing
        // from the replay.
        assert!(first.frame().await.is_none());
        assert!(first.is_end_stream());
        assert_eq!(read(replay).await, "abcdef");
    }

    #[tokio::test]
    async fn a_body_that_failed_is_not_replayed() {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err(std::io::Error::other("reset")),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let policy = TeeBodies::new(
            64,
            http_body_util::combinators::UnsyncBoxBody::<Bytes, std::io::Error>::new,
        );
        let (mut first, kept) = policy.keep(body.boxed_unsync());
        assert!(first.frame().await.unwrap().is_ok());
        assert!(first.frame().await.unwrap().is_err());
        assert!(
            first.frame().await.is_none(),
            "the broken source is not polled again"
        );
        assert!(policy.rebuild(kept.unwrap()).is_none());
    }

    #[tokio::test]
    async fn an_empty_body_ends_at_once() {
        let policy = tee(64);
        let (first, _) = policy.keep(
            http_body_util::Empty::<Bytes>::new()
                .map_err(|n| match n {})
                .boxed_unsync(),
        );
        assert!(first.is_end_stream());
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_not_replayed() {
        let policy = tee(3);
        let (first, kept) = policy.keep(chunked(&["ab", "cd"]).boxed_unsync());
        assert_eq!(
            read(first).await,
            "abcd",
            "the first attempt still gets everything"
        );
        assert!(policy.rebuild(kept.unwrap()).is_none());
    }
}
