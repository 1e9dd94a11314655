//! Keeping request bodies so a rejected request can be sent again.
//!
//! [`CloneBodies`] (the default) keeps a clone: right for `Full<Bytes>`, `String` and the other
//! cheap `Clone` bodies. [`TeeBodies`] wraps a streaming body (tonic's, for one) so that
//! what the first attempt reads is recorded, up to a cap, and a replay sends it again and then
//! goes on with the rest of the stream. [`NoReplay`] keeps nothing: a rejected request gets
//! its 401 back, after the refresh it triggered.
//!
//! The head goes into a [`Head`]: the headers copied into one buffer, so that keeping a copy
//! of every request costs one allocation at most.

mod head;
mod tee;

pub(crate) use self::head::Head;
pub use self::tee::{ReplayBody, TeeBodies};

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

#[cfg(test)]
mod tests {
    use super::*;

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
