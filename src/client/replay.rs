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
            trailers: None,
            ended: false,
        }));
        let first = (self.rebuild)(ReplayBody {
            tee: Arc::clone(&tee),
            cursor: 0,
            trailers_sent: false,
        });
        (first, Some(tee))
    }

    fn rebuild(&self, tee: Self::Kept) -> Option<B> {
        let overflowed = tee.lock().map_or(true, |t| t.overflowed);
        (!overflowed).then(|| {
            (self.rebuild)(ReplayBody {
                tee,
                cursor: 0,
                trailers_sent: false,
            })
        })
    }
}

/// The shared state of a teed body.
pub struct Tee<B> {
    stream: Option<Pin<Box<B>>>,
    chunks: Vec<Bytes>,
    recorded: usize,
    cap: usize,
    overflowed: bool,
    trailers: Option<HeaderMap>,
    ended: bool,
}

impl<B> fmt::Debug for Tee<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tee")
            .field("recorded", &self.recorded)
            .field("overflowed", &self.overflowed)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// A body read through a tee: recorded chunks first, then the rest of the original stream.
///
/// Every reader of one tee (the first attempt, then the replay) sees the whole body, in
/// order, whoever pulled each chunk from the stream.
pub struct ReplayBody<B> {
    tee: Arc<Mutex<Tee<B>>>,
    cursor: usize,
    trailers_sent: bool,
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
        // Behind the recording only after an overflow; then this reader streams on alone.
        let overflowed = tee.overflowed;
        let Some(stream) = tee.stream.as_mut() else {
            return Poll::Ready(None);
        };
        match stream.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        if !overflowed {
                            tee.recorded += data.len();
                            if tee.recorded > tee.cap {
                                tee.overflowed = true;
                                tee.chunks = Vec::new();
                            } else {
                                tee.chunks.push(data.clone());
                                this.cursor += 1;
                            }
                        }
                        Frame::data(data)
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => {
                            tee.trailers = Some(trailers.clone());
                            tee.ended = true;
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
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let tee = self.tee.lock().unwrap_or_else(PoisonError::into_inner);
        tee.ended
            && self.cursor >= tee.chunks.len()
            && (self.trailers_sent || tee.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let tee = self.tee.lock().unwrap_or_else(PoisonError::into_inner);
        let recorded: usize = tee.chunks[self.cursor.min(tee.chunks.len())..]
            .iter()
            .map(Bytes::len)
            .sum();
        match &tee.stream {
            Some(stream) => {
                let rest = stream.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + recorded as u64);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + recorded as u64);
                }
                hint
            }
            None => SizeHint::with_exact(recorded as u64),
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
