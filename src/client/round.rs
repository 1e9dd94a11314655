//! One request's round, the same for every front end: refresh first when the token is about
//! to expire, send with the session's token, and after a rejection refresh once and replay.
//!
//! The tower service ([`Refresh`](super::Refresh), through `recovery.rs`) and the reqwest
//! middleware are thin adapters: each says how a request is sent ([`Sender`]) and how it is
//! copied for a replay ([`Copies`]). The decisions (the stale rule, the identity epoch, the
//! number of replays, when a failed early refresh may still send) are made here only.

use std::future::Future;

use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use super::config::Config;
use super::error::Error;
use super::proofs::Verdict;
use super::session::{Joined, Session};

/// How a front end sends one request.
pub(crate) trait Sender {
    type Request;
    type Response;
    /// The front end's error: its own transport errors, and ours converted.
    type Error: From<Error>;

    /// Sends `request` with the session's current token, read ([`Config::current`])
    /// only once the sender is ready to send, if the session is still in identity `epoch`;
    /// remembers the answer's DPoP nonce ([`Config::remember`]). Returns the answer and the
    /// tokens' generation.
    fn send(
        &mut self,
        config: &Config,
        epoch: u64,
        request: Self::Request,
    ) -> impl Future<Output = Result<(Self::Response, u64), Self::Error>> + Send;

    /// The answer's status and headers, which tell a rejection.
    fn head(response: &Self::Response) -> (StatusCode, &HeaderMap);
}

/// What a request kept of itself for replays.
pub(crate) trait Copies {
    type Request;

    /// The request to send again; first keeps another copy when `again` (another replay may
    /// follow). `None` when it cannot be rebuilt.
    fn next(&mut self, again: bool) -> Option<Self::Request>;
}

/// Waits until the session holds tokens newer than generation `seen`: at once if it does,
/// else by joining or starting the refresh.
pub(crate) async fn refresh_after(config: &Config, seen: u64) -> Result<(), Error> {
    match config.session.join(seen, &config.settings)? {
        Joined::Newer => Ok(()),
        Joined::Wait(waiter) => config.session.wait(waiter, &config.settings).await,
    }
}

fn verdict<T: Sender>(config: &Config, response: &T::Response) -> Verdict {
    let (status, headers) = T::head(response);
    config.verdict(status, headers)
}

/// After an answer that did not stand (`verdict`): for a rejected token, get newer tokens (a
/// stale rejection needs no refresh) and replay the kept copy, through the sender its
/// factory makes, at most `max_replays` times; for a `use_dpop_nonce` challenge, send the
/// copy once more at once, with the nonce the challenge carried (no refresh, not counted as
/// a replay). Without a copy, a rejection still refreshes, so the next request succeeds, and
/// the answer is returned.
pub(crate) async fn recover<T, K, F>(
    config: &Config,
    kept: Option<(K, F)>,
    (mut seen, epoch): (u64, u64),
    mut rejected: T::Response,
    mut verdict: Verdict,
) -> Result<T::Response, T::Error>
where
    T: Sender,
    K: Copies<Request = T::Request>,
    F: FnOnce() -> T,
{
    let Some((mut kept, sender)) = kept else {
        if verdict == Verdict::Rejected {
            refresh_after(config, seen).await?;
        }
        return Ok(rejected);
    };
    // Made only now that a replay is likely: for tower, a clone of the inner service.
    let mut sender = sender();
    let (mut replays, mut nonce_retried) = (0, !config.proofs.is_on());
    loop {
        let refresh = match verdict {
            Verdict::Accepted => return Ok(rejected),
            Verdict::Nonce if !nonce_retried => {
                nonce_retried = true;
                false
            }
            // A second challenge: the server's answer stands.
            Verdict::Nonce => return Ok(rejected),
            Verdict::Rejected if replays < config.max_replays => {
                replays += 1;
                true
            }
            Verdict::Rejected => {
                if config.max_replays == 0 {
                    refresh_after(config, seen).await?;
                }
                return Ok(rejected);
            }
        };
        // Another copy if another send may follow.
        let again = replays < config.max_replays || !nonce_retried;
        let Some(request) = kept.next(again) else {
            // Nothing to replay: still refresh, so the next request succeeds.
            if refresh {
                refresh_after(config, seen).await?;
            }
            return Ok(rejected);
        };
        // The answer will not be returned: let its connection go before waiting.
        drop(rejected);
        if refresh {
            let stale = config.session.load().generation > seen;
            refresh_after(config, seen).await?;
            config.session.count_replay(stale);
            tracing::debug!(stale, "replaying a rejected request");
        } else {
            config.session.count_nonce_retry();
            tracing::debug!("sending a request again with the server's dpop nonce");
        }
        let (response, generation) = sender.send(config, epoch, request).await?;
        seen = generation;
        verdict = self::verdict::<T>(config, &response);
        rejected = response;
    }
}

/// The token is about to expire: refresh first, then send through `sender`, keeping a copy
/// with `keep` for a replay. If the refresh fails but the token is still valid, send with it
/// anyway. Replays go through the sender `replays` makes.
pub(crate) async fn refresh_first<T, K>(
    config: &Config,
    mut sender: T,
    request: T::Request,
    keep: impl FnOnce(T::Request) -> (T::Request, Option<K>),
    replays: impl FnOnce(T) -> T,
    (seen, epoch): (u64, u64),
) -> Result<T::Response, T::Error>
where
    T: Sender,
    K: Copies<Request = T::Request>,
{
    if let Err(error) = refresh_after(config, seen).await {
        if matches!(error, Error::SessionExpired | Error::NotAuthenticated)
            || !still_valid(&config.session)
        {
            return Err(error.into());
        }
        tracing::debug!(%error, "early refresh failed; sending with the current token");
    }
    let (request, kept) = if config.max_replays > 0 || config.proofs.is_on() {
        keep(request)
    } else {
        (request, None)
    };
    let (response, generation) = sender.send(config, epoch, request).await?;
    let verdict = verdict::<T>(config, &response);
    if verdict == Verdict::Accepted {
        return Ok(response);
    }
    let kept = kept.map(|kept| (kept, move || replays(sender)));
    recover(config, kept, (generation, epoch), response, verdict).await
}

/// Whether the session's access token may still be sent: not expired, and its expiry (when
/// known) still ahead.
fn still_valid(session: &Session) -> bool {
    let state = session.load();
    !state.expired
        && state
            .tokens
            .as_ref()
            .is_some_and(|t| t.0.expires_at.is_none_or(|at| Instant::now() < at))
}
