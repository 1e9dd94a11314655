//! Keeping request bodies so a rejected request can be sent again.
//!
//! [`CloneBodies`] (the default) keeps a clone: right for `Full<Bytes>`, `String` and the other
//! cheap `Clone` bodies. [`TeeBodies`] wraps a streaming body (tonic's, for one) so that
//! what the first attempt reads is recorded, up to a cap, and a replay sends it again and then
//! goes on with the rest of the stream. [`NoReplay`] keeps nothing: a rejected request gets
//! its 401 back, after the refresh it triggered.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// How a [`Refresh`](super::Refresh) service keeps request bodies for a replay.
pub trait ReplayPolicy<B>: Clone + Send + Sync + 'static {
    /// What is kept of a body.
    type Kept: Send + 'static;

    /// Splits `body` into the one to send now and, if it can be kept, what rebuilds it.
    fn keep(&self, body: B) -> (B, Option<Self::Kept>);

    /// A body for the replay, if what was kept still allows one.
    fn rebuild(&self, kept: Self::Kept) -> Option<B>;
}

/// Replays `Clone` bodies by cloning them (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneBodies;

impl<B: Clone + Send + 'static> ReplayPolicy<B> for CloneBodies {
    type Kept = B;

    fn keep(&self, body: B) -> (B, Option<B>) {
        (body.clone(), Some(body))
    }

    fn rebuild(&self, kept: B) -> Option<B> {
        Some(kept)
    }
}

/// Keeps nothing: a rejected request gets its 401 back, after the refresh it triggered, so
/// the next request succeeds.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplay;

impl<B> ReplayPolicy<B> for NoReplay {
    type Kept = ();

    fn keep(&self, body: B) -> (B, Option<()>) {
        (body, None)
    }

    fn rebuild(&self, (): ()) -> Option<B> {
        None
    }
}

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
    type Kept = Arc<Mutex<Tee<B>>>;

    fn keep(&self, body: B) -> (B, Option<Self::Kept>) {
        let tee = Arc::new(Mutex::new(Tee {
            stream: Some(Box::pin(body)),
            chunks: Vec::new(),
            recorded: 0,
            cap: self.cap,
            overflowed: false,
            failed: false,
            trailers: None,
            ended: false,
            epoch: 0,
        }));
        let first = (self.rebuild)(ReplayBody::reader(Arc::clone(&tee), 0));
        (first, Some(tee))
    }

    fn rebuild(&self, tee: Self::Kept) -> Option<B> {
        let epoch = {
            let mut state = tee.lock().unwrap_or_else(PoisonError::into_inner);
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

/// The shared state of a teed body.
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

/// A body read through a tee: recorded chunks first, then the rest of the original stream.
///
/// Each attempt reads the whole body in order. Only the latest attempt reads at all: when a
/// replay is built, the attempt it replaces ends (its request was answered already).
pub struct ReplayBody<B> {
    tee: Arc<Mutex<Tee<B>>>,
    cursor: usize,
    trailers_sent: bool,
    epoch: u64,
}

impl<B> ReplayBody<B> {
    fn reader(tee: Arc<Mutex<Tee<B>>>, epoch: u64) -> Self {
        Self {
            tee,
            cursor: 0,
            trailers_sent: false,
            epoch,
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("cursor", &self.cursor)
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
        let this = &mut *self;
        // The lock is held for one poll, never across an await.
        let mut tee = this.tee.lock().unwrap_or_else(PoisonError::into_inner);
        if this.epoch != tee.epoch || tee.failed {
            return Poll::Ready(None);
        }
        if let Some(chunk) = tee.chunks.get(this.cursor) {
            this.cursor += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if tee.ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(trailers) = tee.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
            return Poll::Ready(None);
        }
        let Some(stream) = tee.stream.as_mut() else {
            return Poll::Ready(None);
        };
        match stream.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        if !tee.overflowed {
                            tee.recorded += data.len();
                            if tee.recorded > tee.cap {
                                // Too big to replay: stop recording and free what was kept.
                                tee.overflowed = true;
                                tee.chunks = Vec::new();
                            } else {
                                tee.chunks.push(data.clone());
                                this.cursor = tee.chunks.len();
                            }
                        }
                        Frame::data(data)
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => {
                            tee.trailers = Some(trailers.clone());
                            tee.ended = true;
                            tee.stream = None;
                            this.trailers_sent = true;
                            Frame::trailers(trailers)
                        }
                        Err(other) => other,
                    },
                };
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                tee.ended = true;
                tee.stream = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // Never polled again: a replay of a broken body would send it truncated.
                tee.failed = true;
                tee.stream = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let tee = self.tee.lock().unwrap_or_else(PoisonError::into_inner);
        if self.epoch != tee.epoch || tee.failed {
            return true;
        }
        let recorded_left = self.cursor < tee.chunks.len();
        let trailers_left = !self.trailers_sent && tee.trailers.is_some();
        match &tee.stream {
            _ if recorded_left || trailers_left => false,
            Some(stream) => stream.is_end_stream(),
            None => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        let tee = self.tee.lock().unwrap_or_else(PoisonError::into_inner);
        let recorded: u64 = tee
            .chunks
            .get(self.cursor..)
            .unwrap_or_default()
            .iter()
            .map(|c| c.len() as u64)
            .sum();
        match &tee.stream {
            Some(stream) => {
                let rest = stream.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + recorded);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + recorded);
                }
                hint
            }
            None => SizeHint::with_exact(recorded),
        }
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

    #[test]
    fn clone_and_no_replay() {
        let (sent, kept) = CloneBodies.keep(String::from("x"));
        assert_eq!(
            (sent.as_str(), CloneBodies.rebuild(kept.unwrap()).as_deref()),
            ("x", Some("x"))
        );
        let (sent, kept) = ReplayPolicy::<String>::keep(&NoReplay, String::from("x"));
        assert_eq!((sent.as_str(), kept), ("x", None));
    }
}
