//! What every [`Refresh`](super::Refresh) service of one layer shares, and the per-request
//! plan read from it: refresh first, or send (keeping a copy for a replay or not).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode, Uri};
use tokio::time::Instant;

use super::error::Error;
use super::proofs::{Proofs, Verdict};
use super::rejection::RejectionRule;
use super::session::{CurrentTokens, RefreshSettings, Session, State, TokenState};

/// Everything a [`Refresh`](super::Refresh) service shares: the configuration and the replay
/// policy, apart so that changing the policy moves the rest whole.
#[derive(Clone)]
pub(crate) struct Shared<P> {
    pub(crate) config: Config,
    pub(crate) policy: P,
}

/// The layer's configuration, but for the replay policy.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) session: Session,
    pub(crate) settings: Arc<RefreshSettings>,
    pub(crate) early: Early,
    /// The stale margin before expiry inside which requests wait for the refresh (at most a
    /// tenth of the lifetime and half the early window).
    pub(crate) stale: Duration,
    pub(crate) max_replays: usize,
    pub(crate) rejection: RejectionRule,
    pub(crate) pass_through: bool,
    pub(crate) raw_authorization: bool,
    pub(crate) replay_window: bool,
    /// DPoP proofs, when the layer has a key.
    pub(crate) proofs: Proofs,
}

/// When to refresh before the access token expires.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Early {
    /// The larger of 30 s and a tenth of the lifetime.
    Auto,
    Fixed(Duration),
    Off,
}

/// What [`Config::decide`] says to do with a request.
pub(crate) enum Decision<'a> {
    Fail(Error),
    /// No tokens, and the layer lets such requests through as they are.
    PassThrough,
    /// Refresh first; the tokens' generation and identity epoch.
    RefreshFirst((u64, u64)),
    /// Send now with `tokens`, keeping a copy for a replay or not.
    Send {
        seen: (u64, u64),
        keep: bool,
        tokens: &'a TokenState,
    },
}

/// What to do with a request, decided from its tokens.
pub(crate) enum Plan {
    /// Past the stale point: wait for the refresh, then send.
    Refresh,
    /// Send now; `keep` a copy of the request for a replay. Past the prefetch point,
    /// `prefetch` starts a background refresh first (if none runs).
    Send { keep: bool, prefetch: bool },
}

impl Config {
    /// What to do with a request carrying `tokens`, as AWS's `CachedSupplier` does with two
    /// thresholds: past the jittered prefetch point (in the early window), send at once and
    /// refresh in the background; past the stale point (a few seconds before expiry), wait for
    /// the refresh. Reads the clock only when the tokens' expiry is known.
    pub(crate) fn plan(&self, tokens: &TokenState) -> Plan {
        // With DPoP, a `use_dpop_nonce` challenge may come at any time, and is answered by
        // sending the copy again.
        let keep = self.max_replays > 0 || self.proofs.is_on();
        let (Some(expires_at), Some(lifetime)) = (tokens.expires_at, tokens.lifetime) else {
            // Unknown expiry: a rejection may come any time.
            return Plan::Send {
                keep,
                prefetch: false,
            };
        };
        let now = Instant::now();
        // Never more than half the lifetime, so short-lived tokens are not refreshed on every
        // request.
        let early = match self.early {
            Early::Off => None,
            Early::Auto => Some(Duration::from_secs(30).max(lifetime / 10)),
            Early::Fixed(early) => Some(early),
        }
        .filter(|_| tokens.can_refresh()) // An access-only session uses its token to the end.
        .map(|early| early.min(lifetime / 2));
        let mut prefetch = false;
        if let Some(early) = early
            && now + early >= expires_at
        {
            let stale = self.stale.min(lifetime / 10).min(early / 2);
            if now + stale >= expires_at {
                return Plan::Refresh;
            }
            // The prefetch point: from the start of the early window to its middle.
            prefetch = now + early.mul_f64(1.0 - tokens.jitter / 2.0) >= expires_at;
        }
        // With the opt-in window, a copy only in the second half of the token's lifetime.
        let keep = keep
            && (!self.replay_window || self.proofs.is_on() || now + lifetime / 2 >= expires_at);
        Plan::Send { keep, prefetch }
    }

    /// What to do with a request about to go out with the session in `state`: fail, pass it
    /// through, refresh first, or send (starting a prefetch first when one is due). Every
    /// front end decides here.
    pub(crate) fn decide<'a>(&self, state: &'a State) -> Decision<'a> {
        let Some(tokens) = &state.tokens else {
            return if self.pass_through {
                Decision::PassThrough
            } else {
                Decision::Fail(Error::NotAuthenticated)
            };
        };
        if state.expired {
            return Decision::Fail(Error::SessionExpired);
        }
        let seen = (state.generation, state.epoch);
        match self.plan(&tokens.0) {
            Plan::Refresh => Decision::RefreshFirst(seen),
            Plan::Send { keep, prefetch } => {
                if prefetch {
                    self.session.prefetch(state.generation, &self.settings);
                }
                Decision::Send {
                    seen,
                    keep,
                    tokens: &tokens.0,
                }
            }
        }
    }

    /// The session's current tokens and their generation, if the session is still in
    /// identity `epoch` and holds unexpired tokens.
    pub(crate) fn current(&self, epoch: u64) -> Result<(CurrentTokens, u64), Error> {
        let state = self.session.load();
        if state.epoch != epoch {
            return Err(Error::SessionChanged);
        }
        if state.expired {
            return Err(Error::SessionExpired);
        }
        let Some(tokens) = &state.tokens else {
            return Err(Error::NotAuthenticated);
        };
        Ok((tokens.clone(), state.generation))
    }

    /// Sets the credentials of a request (`method`, `uri`) from `tokens`.
    pub(crate) fn attach(
        &self,
        tokens: &TokenState,
        request: (&Method, Option<&Uri>),
        headers: &mut HeaderMap,
    ) -> Result<(), Error> {
        self.proofs
            .attach(tokens, self.raw_authorization, request, headers)
    }

    /// Sets the credentials of `request` from `tokens`; with DPoP, returns the URI the
    /// request goes to, whose answer's nonce is to be remembered.
    pub(crate) fn attach_request<B>(
        &self,
        tokens: &TokenState,
        request: &mut http::Request<B>,
    ) -> Result<Option<Box<Uri>>, Error> {
        if !self.proofs.is_on() {
            let authorization = tokens.header(self.raw_authorization).clone();
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, authorization);
            return Ok(None);
        }
        let (method, uri) = (request.method().clone(), request.uri().clone());
        self.attach(tokens, (&method, Some(&uri)), request.headers_mut())?;
        Ok(Some(Box::new(uri)))
    }

    /// Remembers the DPoP nonce of an answer to a request sent to `uri`.
    pub(crate) fn remember(&self, uri: Option<&Uri>, headers: &HeaderMap) {
        self.proofs.remember(uri, headers);
    }

    /// What an answer says.
    #[inline]
    pub(crate) fn verdict(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        if self.proofs.is_on()
            && let Some(verdict) = self.proofs.dpop_verdict(status, headers)
        {
            verdict
        } else if self.rejection.matches_head(status, headers) {
            Verdict::Rejected
        } else {
            Verdict::Accepted
        }
    }
}
