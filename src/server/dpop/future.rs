//! [`VerifyFuture`]: a DPoP verification waiting for its replay check.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::BoxError;
use crate::server::dpop::error::DpopError;
use crate::server::dpop::replay::{Check, JtiStatus, ReplayCheck};
use crate::server::dpop::verifier::VerifiedProof;

/// The future [`DpopVerifier::verify`](crate::server::dpop::DpopVerifier::verify) returns:
/// ready at once when the proof failed a check or the replay store answered directly (the
/// memory store), otherwise waiting on the store.
///
/// # Example
///
/// ```
/// use http::{HeaderMap, Method, Uri};
/// use tower_jwt_refresh::server::dpop::future::VerifyFuture;
/// use tower_jwt_refresh::server::dpop::{DpopError, DpopVerifier};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let verifier = DpopVerifier::new("https://api.example.com")?;
/// let uri = Uri::from_static("/");
/// // A nameable future, for a service's own future to hold.
/// let future: VerifyFuture = verifier.verify(&Method::GET, &uri, &HeaderMap::new(), None);
/// assert!(matches!(future.await, Err(DpopError::Missing)));
/// # Ok(()) }
/// ```
pub struct VerifyFuture {
    state: State,
}

enum State {
    Done(Option<Result<VerifiedProof, DpopError>>),
    Pending {
        check: Pin<Box<dyn Future<Output = Result<JtiStatus, BoxError>> + Send>>,
        verified: Option<VerifiedProof>,
    },
}

impl fmt::Debug for VerifyFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Done(_) => "Done",
            State::Pending { .. } => "Pending",
        };
        f.debug_struct("VerifyFuture")
            .field("state", &state)
            .finish()
    }
}

fn judged(
    status: Result<JtiStatus, BoxError>,
    verified: VerifiedProof,
) -> Result<VerifiedProof, DpopError> {
    match status {
        Ok(JtiStatus::Fresh) => Ok(verified),
        Ok(JtiStatus::Replayed) => Err(DpopError::Replayed),
        Err(e) => Err(DpopError::Store(e)),
    }
}

impl VerifyFuture {
    pub(crate) fn new(check: ReplayCheck, verified: VerifiedProof) -> Self {
        let state = match check.0 {
            Check::Ready(status) => State::Done(Some(judged(status, verified))),
            Check::Pending(check) => State::Pending {
                check,
                verified: Some(verified),
            },
        };
        Self { state }
    }

    /// The verdict if it is known without waiting (a failed check, or a replay store that
    /// answered at once), else the future itself.
    pub(crate) fn into_ready(self) -> Result<Result<VerifiedProof, DpopError>, Self> {
        match self.state {
            State::Done(Some(result)) => Ok(result),
            state => Err(Self { state }),
        }
    }

    pub(crate) fn failed(error: DpopError) -> Self {
        Self {
            state: State::Done(Some(Err(error))),
        }
    }
}

impl Future for VerifyFuture {
    type Output = Result<VerifiedProof, DpopError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Done(result) => {
                Poll::Ready(result.take().expect("VerifyFuture polled after completion"))
            }
            State::Pending { check, verified } => {
                let status = ready!(check.as_mut().poll(cx));
                let verified = verified
                    .take()
                    .expect("VerifyFuture polled after completion");
                self.state = State::Done(None);
                Poll::Ready(judged(status, verified))
            }
        }
    }
}
