//! The per-request decision: extract, look up the cache, verify, check the deny list and scope.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use serde::de::DeserializeOwned;

use crate::Clock;
use crate::keys::KeySource;
use crate::server::cache::TokenCache;
use crate::server::claims::Claims;
use crate::server::deny_list::{Check, DenyList, TokenStatus};
use crate::server::rejection::{Rejection, Responder, TokenError};
use crate::server::sources::Sources;
use crate::server::verify::Validation;

/// The verdict for one request.
pub(crate) enum Outcome<C> {
    /// Go on, with the claims (or without, in optional mode).
    Pass(Option<Claims<C>>),
    Reject(Rejection),
    /// The verdict needs I/O: a deny-list backend or a key refetch.
    Pending(PendingCheck<C>),
}

/// How a token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// `Authorization: Bearer`, or any other source.
    Bearer,
    /// `Authorization: DPoP`, with a proof (RFC 9449).
    #[cfg(feature = "dpop")]
    Dpop,
}

/// A decided request: its claims (none in optional mode), or why it is refused.
pub(crate) type Verdict<C> = Result<Option<Claims<C>>, Rejection>;

/// A verdict that needs I/O first.
pub(crate) type PendingCheck<C> = Pin<Box<dyn Future<Output = Verdict<C>> + Send>>;

/// A request waiting on I/O; frees its place when dropped, however the wait ends.
pub(crate) struct Parked(Arc<AtomicUsize>);

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The places for requests waiting on one kind of I/O, shared by a layer and its clones.
///
/// Each kind of wait has a budget of its own, so that requests of one kind cannot take the
/// places of another: a token that has not passed its signature (waiting on a key refetch)
/// never takes the place of one that has (waiting on its deny-list check).
#[derive(Clone)]
pub(crate) struct WaitBudget {
    waiting: Arc<AtomicUsize>,
    /// The most requests that may wait at once.
    pub(crate) max: usize,
}

impl WaitBudget {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            waiting: Arc::default(),
            max,
        }
    }

    /// A place, if one is free.
    pub(crate) fn take(&self) -> Option<Parked> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Parked(Arc::clone(&self.waiting)))
    }
}

/// Everything the layer was configured with, shared by every service it builds.
pub(crate) struct Auth<C> {
    pub(crate) keys: KeySource,
    pub(crate) validation: Validation,
    pub(crate) sources: Sources,
    pub(crate) cache: Option<Arc<TokenCache<C>>>,
    pub(crate) deny_list: Option<Arc<dyn DenyList>>,
    /// Every one of these scopes is required.
    pub(crate) scopes: Vec<Box<str>>,
    pub(crate) optional: bool,
    pub(crate) responder: Responder,
    /// How long a deny-list check or a key refetch may take.
    pub(crate) io_timeout: Duration,
    /// Verified tokens waiting on an asynchronous deny-list check.
    pub(crate) check_waits: WaitBudget,
    /// Unverified tokens (their `kid` unknown) waiting on a key refetch.
    pub(crate) refetch_waits: WaitBudget,
    pub(crate) clock: Clock,
    pub(crate) metrics: crate::metrics::Server,
    #[cfg(feature = "dpop")]
    pub(crate) dpop: Option<crate::server::dpop::DpopSettings>,
}

impl<C> Clone for Auth<C> {
    fn clone(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            validation: self.validation.clone(),
            sources: self.sources.clone(),
            cache: self.cache.clone(),
            deny_list: self.deny_list.clone(),
            scopes: self.scopes.clone(),
            optional: self.optional,
            responder: self.responder.clone(),
            io_timeout: self.io_timeout,
            check_waits: self.check_waits.clone(),
            refetch_waits: self.refetch_waits.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            #[cfg(feature = "dpop")]
            dpop: self.dpop.clone(),
        }
    }
}

impl<C> fmt::Debug for Auth<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Auth");
        d.field("keys", &self.keys)
            .field("validation", &self.validation)
            .field("sources", &self.sources)
            .field("cache", &self.cache)
            .field("deny_list", &self.deny_list.as_ref().map(|_| "hook"))
            .field("scopes", &self.scopes)
            .field("optional", &self.optional)
            .field("responder", &self.responder)
            .field("io_timeout", &self.io_timeout)
            .field("max_pending_checks", &self.check_waits.max)
            .field("max_unknown_kid_waits", &self.refetch_waits.max);
        #[cfg(feature = "dpop")]
        d.field("dpop", &self.dpop);
        d.finish()
    }
}

impl<C> Auth<C>
where
    C: DeserializeOwned + Send + Sync + 'static,
{
    pub(crate) fn authenticate<B>(self: &Arc<Self>, req: &Request<B>) -> Outcome<C> {
        if !self.dpop_required()
            && let Some(claims) = self.cached_bearer(req)
        {
            return self.after_verify(claims, Scheme::Bearer);
        }
        let token = match self.sources.extract(req, self.validation.max_len) {
            Ok(Some(token)) => token,
            Ok(None) => return self.anonymous(),
            Err(rejection) => return Outcome::Reject(rejection),
        };
        #[cfg(feature = "dpop")]
        if self.dpop.is_some() && crate::server::sources::is_dpop(req) {
            let outcome = self.check_token(Cow::Borrowed(&token), Scheme::Dpop);
            return self.with_proof(outcome, req, &token);
        }
        if self.dpop_required() {
            // A bearer token is no credential here.
            return self.anonymous();
        }
        self.check_token(token, Scheme::Bearer)
    }

    /// A request without (acceptable) credentials.
    fn anonymous(&self) -> Outcome<C> {
        // Required scopes make a route non-optional: an anonymous caller has none.
        if self.optional && self.scopes.is_empty() {
            Outcome::Pass(None)
        } else {
            Outcome::Reject(Rejection::MissingToken)
        }
    }

    /// Whether the layer takes DPoP-bound tokens only.
    fn dpop_required(&self) -> bool {
        #[cfg(feature = "dpop")]
        if let Some(dpop) = &self.dpop {
            return dpop.mode == crate::server::dpop::DpopMode::Required;
        }
        false
    }

    /// The hot path: a bearer token this layer verified before, answered from the cache before
    /// its characters are checked (byte for byte it is a token that passed the checks when it
    /// was verified). Only when the `Authorization` header is the one source, and only for a
    /// request that extraction would read the same way; anything else takes the full path.
    ///
    /// The clock is read cheaply and never early, so a token in its last second or two misses
    /// here and is verified in full, with the precise clock and the leeway.
    fn cached_bearer<B>(&self, req: &Request<B>) -> Option<Claims<C>> {
        let cache = self.cache.as_ref()?;
        let token = self.sources.sole_bearer(req, self.validation.max_len)?;
        let claims = cache.get(token, self.clock.now_or_later(), self.keys.epoch())?;
        self.metrics.cache_hit();
        Some(claims)
    }

    /// Everything after extraction, for a token found in a request or handed in directly.
    ///
    /// The token has passed the length cap (in extraction, or in `JwtAuthLayer::verify`), so
    /// nothing here hashes or decodes an oversized one.
    pub(crate) fn check_token(self: &Arc<Self>, token: Cow<'_, str>, scheme: Scheme) -> Outcome<C> {
        match self.verify(&token) {
            Ok(claims) => self.after_verify(claims, scheme),
            // A fixed key set cannot learn the `kid`: no refetch, no second attempt.
            Err(TokenError::UnknownKey) if !self.keys.is_fixed() => {
                self.after_unknown_kid(token, scheme)
            }
            Err(e) => Outcome::Reject(Rejection::InvalidToken(e)),
        }
    }

    /// A remote key set does not know the token's `kid`: wait for a refetch, then verify again.
    ///
    /// The token has not passed its signature, so it waits in a budget of its own, and leaves
    /// it before its deny-list check: a request holds one place at a time.
    fn after_unknown_kid(self: &Arc<Self>, token: Cow<'_, str>, scheme: Scheme) -> Outcome<C> {
        // Too many requests already wait: refuse rather than queue without bound (and before
        // starting a refetch that no one would wait for).
        let Some(parked) = self.refetch_waits.take() else {
            return Outcome::Reject(Rejection::InvalidToken(TokenError::UnknownKey));
        };
        let Some(refetch) = self.keys.unknown_kid() else {
            drop(parked);
            // Rate-limited; but a refetch may have landed since the first attempt.
            return match self.verify(&token) {
                Ok(claims) => self.after_verify(claims, scheme),
                Err(e) => Outcome::Reject(Rejection::InvalidToken(e)),
            };
        };
        let this = Arc::clone(self);
        let token = token.into_owned();
        Outcome::Pending(Box::pin(async move {
            // A refetch that overruns its bound leaves the old keys in place.
            let _ = tokio::time::timeout(this.io_timeout, refetch).await;
            drop(parked);
            let claims = this.verify(&token).map_err(Rejection::InvalidToken)?;
            this.after_verify(claims, scheme).resolve().await
        }))
    }

    /// The token's claims, from the cache or by full verification.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims<C>, TokenError> {
        let now = self.clock.now();
        let keys = self.keys.load();
        if let Some(cache) = &self.cache {
            let found = cache.get(token.as_bytes(), now, keys.epoch());
            self.metrics.cache(&found);
            if let Some(claims) = found {
                return Ok(claims);
            }
        }
        let verified = self.validation.verify::<C>(token, &keys, now)?;
        // Inside the leeway after `exp` a token still verifies, but is not worth caching; nor is
        // one the cheap clock of the hot path already counts as expired.
        if let Some(cache) = &self.cache
            && self.clock.now_or_later() < verified.claims.registered().exp
        {
            cache.insert(
                token,
                verified.claims.clone(),
                verified.payload_len,
                keys.epoch(),
            );
        }
        Ok(verified.claims)
    }

    fn after_verify(self: &Arc<Self>, claims: Claims<C>, scheme: Scheme) -> Outcome<C> {
        // RFC 9449 §7.2: a bound token is never a bearer token; DPoP is for bound tokens only.
        match (scheme, claims.registered().cnf_jkt.is_some()) {
            (Scheme::Bearer, true) => {
                return Outcome::Reject(Rejection::InvalidToken(TokenError::DpopBound));
            }
            #[cfg(feature = "dpop")]
            (Scheme::Dpop, false) => {
                return Outcome::Reject(Rejection::InvalidToken(TokenError::NotDpopBound));
            }
            _ => {}
        }
        let Some(deny_list) = &self.deny_list else {
            return self.check_scope(claims);
        };
        match deny_list.check(claims.registered()).0 {
            Check::Ready(status) => match self.deny_list_verdict(status) {
                Ok(()) => self.check_scope(claims),
                Err(rejection) => Outcome::Reject(rejection),
            },
            Check::Pending(check) => {
                let Some(parked) = self.check_waits.take() else {
                    self.metrics.revocation_unanswered(false);
                    return Outcome::Reject(Rejection::DenyListUnavailable);
                };
                let this = Arc::clone(self);
                Outcome::Pending(Box::pin(async move {
                    let _parked = parked;
                    let status =
                        tokio::time::timeout(this.io_timeout, check)
                            .await
                            .map_err(|_| {
                                this.metrics.revocation_unanswered(true);
                                Rejection::DenyListUnavailable
                            })?;
                    this.deny_list_verdict(status)?;
                    this.check_scope(claims).resolve().await
                }))
            }
        }
    }

    fn check_scope(&self, claims: Claims<C>) -> Outcome<C> {
        if self.scopes.iter().all(|scope| claims.has_scope(scope)) {
            Outcome::Pass(Some(claims))
        } else {
            Outcome::Reject(Rejection::InsufficientScope)
        }
    }
}

impl<C> Outcome<C> {
    /// The verdict, waiting for the I/O it needs if any.
    pub(crate) async fn resolve(self) -> Verdict<C> {
        match self {
            Outcome::Pass(claims) => Ok(claims),
            Outcome::Reject(rejection) => Err(rejection),
            Outcome::Pending(check) => check.await,
        }
    }
}

impl<C> Auth<C> {
    /// Where the `DPoP-Nonce` of the answer to a DPoP request that passed comes from, when
    /// the layer requires nonces (RFC 9449 §8.2): the client keeps up with the nonce without
    /// being challenged when it changes. Read when the answer is ready, so a slow handler
    /// does not hand out a nonce already old.
    #[inline]
    pub(crate) fn success_nonce<B>(
        &self,
        request: &http::Request<B>,
    ) -> Option<crate::server::rejection::NonceSource> {
        #[cfg(feature = "dpop")]
        if let Some(dpop) = &self.dpop
            && dpop.verifier.requires_nonces()
            && request.headers().contains_key("dpop")
        {
            return self.responder.nonce_source().cloned();
        }
        let _ = request;
        None
    }

    fn deny_list_verdict(
        &self,
        status: Result<TokenStatus, crate::BoxError>,
    ) -> Result<(), Rejection> {
        self.metrics.revocation(&status);
        deny_list_verdict(status)
    }
}

fn deny_list_verdict(status: Result<TokenStatus, crate::BoxError>) -> Result<(), Rejection> {
    match status {
        Ok(TokenStatus::Active) => Ok(()),
        Ok(TokenStatus::Revoked) => Err(Rejection::InvalidToken(TokenError::Revoked)),
        Err(error) => {
            tracing::warn!(%error, "deny-list check failed");
            Err(Rejection::DenyListUnavailable)
        }
    }
}
