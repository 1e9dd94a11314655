//! [`TokenIssuer`]: access tokens plus rotating refresh tokens, on a [`RefreshStore`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Clock;
use crate::issuer::access::AccessTokenIssuer;
use crate::issuer::error::{GrantError, IssueError, RefreshError};
use crate::issuer::refresh_token::{self as rt, RefreshToken};
use crate::issuer::store::{
    FamilyInfo, NewFamily, RefreshStore, Rotation, RotationOutcome, StoreError,
};
use crate::issuer::util::whole_seconds_up;
use crate::metrics::StoreOp;
use crate::server::RegisteredClaims;
use crate::server::{DenyCheck, DenyList};

/// The grace window by default: it covers the client's default refresh timeout (10 s) with
/// margin, and is the common industry default.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// The longest grace window accepted.
const MAX_GRACE: Duration = Duration::from_secs(60);

/// The longest family lifetime or idle timeout accepted: ten years, far from any overflow.
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// An RFC 6749 §5.1 token response.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IssuedTokens {
    /// The access token (a JWT).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// The access token's lifetime in seconds.
    pub expires_in: u64,
    /// The refresh token (opaque).
    pub refresh_token: String,
}

impl fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &"[redacted]")
            .finish()
    }
}

/// Issues token pairs and rotates refresh tokens.
///
/// - [`issue`](Self::issue) starts a family (a login session);
/// - [`rotate`](Self::rotate) trades a refresh token for a new pair, atomically in the store:
///   a token presented after it was rotated out revokes the whole family, except that inside
///   the grace window (default 30 s, at most 60 s) the immediately previous token gets the
///   same successor again;
/// - [`revoke`](Self::revoke) ends a family (logout); [`deny_list`](Self::deny_list) is the
///   verifier hook that refuses that family's access tokens from the next request on.
///
/// Refresh tokens are opaque (`<family>.<256-bit secret>`, never a JWT) and the store keeps
/// only their SHA-256. Cloning is cheap. The default grace window covers the client's default
/// refresh timeout (10 s) with margin, so a client whose rotation response was lost retries
/// and gets the same successor instead of being logged out; see
/// [`grace_period`](Self::grace_period).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_jwt_refresh::issuer::{AccessTokenIssuer, MemoryStore, TokenIssuer};
/// use tower_jwt_refresh::keys::{Algorithm, SigningKey};
/// use tower_jwt_refresh::server::JwtAuthLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = SigningKey::hmac(Algorithm::HS256, [42u8; 32])?;
/// let issuer = TokenIssuer::new(AccessTokenIssuer::new(key.clone()), MemoryStore::new())
///     .idle_timeout(Duration::from_secs(30 * 24 * 3600));
/// let layer = JwtAuthLayer::new(key.verification_key()).deny_list(issuer.deny_list());
///
/// let pair = issuer.issue("alice", &serde_json::json!({"role": "admin"})).await?;
/// assert!(layer.verify(&pair.access_token).await.is_ok());
/// issuer.revoke(&pair.refresh_token).await?;
/// assert!(layer.verify(&pair.access_token).await.is_err()); // refused at once
/// # Ok(()) }
/// ```
pub struct TokenIssuer<S> {
    inner: Arc<Inner<S>>,
}

#[derive(Clone)]
struct Inner<S> {
    access: AccessTokenIssuer,
    store: S,
    lifetime: Duration,
    idle_timeout: Option<Duration>,
    grace: Duration,
    revocation_ttl: Option<Duration>,
    clock: Clock,
    metrics: crate::metrics::Issuer,
}

impl<S> Clone for TokenIssuer<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for TokenIssuer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("access", &self.inner.access)
            .field("store", &self.inner.store)
            .field("lifetime", &self.inner.lifetime)
            .field("idle_timeout", &self.inner.idle_timeout)
            .field("grace", &self.inner.grace)
            .finish()
    }
}

impl<S: RefreshStore> TokenIssuer<S> {
    /// Mints access tokens with `access` and keeps families in `store`: a 7-day absolute
    /// lifetime, no idle timeout, a 30 s grace window.
    #[must_use]
    pub fn new(access: AccessTokenIssuer, store: S) -> Self {
        Self {
            inner: Arc::new(Inner {
                access,
                store,
                lifetime: Duration::from_secs(7 * 24 * 3600),
                idle_timeout: None,
                grace: DEFAULT_GRACE,
                revocation_ttl: None,
                clock: Clock::system(),
                metrics: crate::metrics::Issuer::new(),
            }),
        }
    }

    #[must_use]
    fn with(mut self, f: impl FnOnce(&mut Inner<S>)) -> Self
    where
        S: Clone,
    {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// How long a family lives at most, however often it rotates (default 7 days; at most ten
    /// years).
    #[must_use]
    pub fn refresh_lifetime(self, lifetime: Duration) -> Self
    where
        S: Clone,
    {
        self.with(|i| i.lifetime = lifetime.min(MAX_LIFETIME))
    }

    /// End a family that has not rotated for `timeout` (default: never; at most ten years).
    #[must_use]
    pub fn idle_timeout(self, timeout: Duration) -> Self
    where
        S: Clone,
    {
        self.with(|i| i.idle_timeout = Some(timeout.min(MAX_LIFETIME)))
    }

    /// How long after a rotation the previous token may be presented again, getting the same
    /// successor (default 30 s). Counted in whole seconds, rounded up; at most 60 s, longer
    /// values (up to `Duration::MAX`) are cut to 60 s.
    ///
    /// The window is inclusive, in the issuer's whole seconds ([`clock`](Self::clock)): a
    /// token rotated out at second `t` gets the same successor when presented again at any
    /// second from `t` to `t + grace`, both included, and is reuse from `t + grace + 1` on.
    /// Every store applies this one rule ([`RefreshStore::rotate`]).
    ///
    /// A client whose refresh response was lost (a dropped connection, a proxy's timeout, a
    /// 503 after the store committed) retries with the token that was just rotated out. Inside
    /// the window that retry gets the same successor, and the session survives. The default
    /// covers the client's default refresh timeout (`RefreshLayer::refresh_timeout`, 10 s)
    /// with 20 s to spare for the retry; keep the window longer than your clients' refresh
    /// timeout.
    ///
    /// What the window allows: a retry with the *immediately previous* token, within the
    /// window after its rotation, gets the successor already issued, whoever presents it. So a
    /// thief holding a token rotated out less than the window ago gets the same successor as
    /// its owner. A token two rotations back, or the previous one after the window, is reuse
    /// and revokes the family. With 0, the strictest setting, any retry of a lost rotation is
    /// reuse and ends the session (the issuer still retries a rotation whose *store* reply was
    /// lost itself).
    #[must_use]
    pub fn grace_period(self, grace: Duration) -> Self
    where
        S: Clone,
    {
        let grace = Duration::from_secs(whole_seconds_up(grace));
        self.with(|i| i.grace = grace.min(MAX_GRACE))
    }

    /// How long a revoked family is remembered, so its access tokens are refused (default: the
    /// access tokens' lifetime plus 60 s). It must cover the verifier's leeway: raise it if
    /// `JwtAuthLayer::leeway` is over 60 s.
    #[must_use]
    pub fn revocation_ttl(self, ttl: Duration) -> Self
    where
        S: Clone,
    {
        self.with(|i| i.revocation_ttl = Some(ttl.min(MAX_LIFETIME)))
    }

    /// The wall clock (default: the system clock). The issuer hands it to its access-token
    /// issuer and its store, so one call moves all three; give the verifying
    /// [`JwtAuthLayer`](crate::server::JwtAuthLayer) the same one.
    #[must_use]
    pub fn clock(self, clock: Clock) -> Self
    where
        S: Clone,
    {
        self.with(|i| {
            i.access = i.access.clone().clock(clock.clone());
            i.store.set_clock(clock.clone());
            i.clock = clock;
        })
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The access-token issuer.
    pub fn access_issuer(&self) -> &AccessTokenIssuer {
        &self.inner.access
    }

    /// How long revocations are remembered: as long as an access token of the family may
    /// still be valid.
    fn tombstone_ttl(&self) -> u64 {
        let ttl = self.inner.revocation_ttl;
        ttl.unwrap_or_else(|| {
            self.inner
                .access
                .configured_lifetime()
                .saturating_add(Duration::from_secs(60))
        })
        .as_secs()
        .max(1)
    }

    /// Starts a family for `subject` whose access tokens carry `claims` (any value serializing
    /// to a JSON object, or `()`), and returns its first pair. Nothing is handed out that the
    /// store did not record: when it cannot answer, this fails with
    /// [`IssueError::Unavailable`].
    pub async fn issue<C: Serialize + ?Sized>(
        &self,
        subject: &str,
        claims: &C,
    ) -> Result<IssuedTokens, IssueError> {
        self.issue_for(subject, claims, None).await
    }

    /// [`issue`](Self::issue), bound to the key of a verified DPoP proof (RFC 9449): the
    /// access tokens carry its thumbprint as `cnf.jkt`, and the family's refresh tokens
    /// rotate only with a proof from that key ([`rotate_bound`](Self::rotate_bound)). The
    /// pair's `token_type` is `DPoP`.
    #[cfg(feature = "dpop")]
    pub async fn issue_bound<C: Serialize + ?Sized>(
        &self,
        subject: &str,
        claims: &C,
        proof: &crate::server::dpop::VerifiedProof,
    ) -> Result<IssuedTokens, IssueError> {
        self.issue_for(subject, claims, Some(proof.thumbprint().as_str()))
            .await
    }

    async fn issue_for<C: Serialize + ?Sized>(
        &self,
        subject: &str,
        claims: &C,
        jkt: Option<&str>,
    ) -> Result<IssuedTokens, IssueError> {
        let inner = &self.inner;
        let family = rt::new_family()?;
        // Mint first: it checks the claims before anything is recorded.
        let access = inner.access.mint_bound(subject, &family, claims, jkt)?;
        let mut claims = serde_json::to_string(claims).map_err(IssueError::Claims)?;
        if claims == "null" {
            claims = "{}".to_owned();
        }
        let refresh = rt::format(&family, &rt::new_secret()?);
        let now = inner.clock.now();
        let hash = rt::hash(&refresh);
        let create = inner.store.create(NewFamily {
            id: &family,
            token_hash: &hash,
            subject,
            claims: &claims,
            now,
            expires_at: now.saturating_add(inner.lifetime.as_secs()),
            idle_timeout: inner.idle_timeout.map_or(0, |d| d.as_secs().max(1)),
            tombstone_ttl: self.tombstone_ttl(),
            jkt: jkt.unwrap_or(""),
        });
        inner.metrics.store(StoreOp::Create, create).await?;
        inner.metrics.issued();
        Ok(pair(
            access.token,
            access.expires_in,
            refresh,
            jkt.is_some(),
        ))
    }

    /// Trades `refresh_token` for a new pair. Only a token the store recorded is ever
    /// returned. A token bound to a DPoP key is refused ([`GrantError::WrongKey`]): use
    /// [`rotate_bound`](Self::rotate_bound).
    pub async fn rotate(&self, refresh_token: &str) -> Result<IssuedTokens, RefreshError> {
        self.rotate_for(refresh_token, None).await
    }

    /// [`rotate`](Self::rotate) with a verified DPoP proof: a bound family rotates only when
    /// the proof's key is its key (otherwise [`GrantError::WrongKey`], and nothing changes);
    /// the new access token is bound to the proof's key either way (RFC 9449 §5), with
    /// `token_type` `DPoP`.
    #[cfg(feature = "dpop")]
    pub async fn rotate_bound(
        &self,
        refresh_token: &str,
        proof: &crate::server::dpop::VerifiedProof,
    ) -> Result<IssuedTokens, RefreshError> {
        self.rotate_for(refresh_token, Some(proof.thumbprint().as_str()))
            .await
    }

    async fn rotate_for(
        &self,
        refresh_token: &str,
        jkt: Option<&str>,
    ) -> Result<IssuedTokens, RefreshError> {
        let presented = RefreshToken::parse(refresh_token).ok_or(GrantError::Malformed)?;
        let successor = rt::new_secret()?;
        let successor_hash = rt::hash(&rt::format(presented.family, &successor));
        let sealed = rt::seal(&successor, &presented.secret);
        let presented_hash = rt::hash(refresh_token);
        let rotation = Rotation {
            family: presented.family,
            presented: &presented_hash,
            successor: &successor_hash,
            sealed_successor: &sealed,
            now: self.inner.clock.now(),
            grace: self.inner.grace.as_secs(),
            tombstone_ttl: self.tombstone_ttl(),
            jkt: jkt.unwrap_or(""),
        };
        let outcome = self.apply(rotation).await;
        self.inner.metrics.rotation(&outcome);
        let (info, secret) = settle(outcome?, &presented, successor)?;
        let claims: Value = serde_json::from_str(&info.claims).map_err(IssueError::Claims)?;
        let access = self
            .inner
            .access
            .mint_bound(&info.subject, presented.family, &claims, jkt)?;
        let refresh = rt::format(presented.family, &secret);
        Ok(pair(
            access.token,
            access.expires_in,
            refresh,
            jkt.is_some(),
        ))
    }

    /// Applies `rotation` in the store. When the reply was lost, the rotation may have
    /// happened: the same rotation again is either applied now or recognised as done.
    async fn apply(&self, rotation: Rotation<'_>) -> Result<RotationOutcome, StoreError> {
        let inner = &self.inner;
        let store = |rotation| {
            inner
                .metrics
                .store(StoreOp::Rotate, inner.store.rotate(rotation))
        };
        match store(rotation.clone()).await {
            Err(e) if e.is_ambiguous() => store(rotation).await,
            other => other,
        }
    }

    /// Ends the family of `refresh_token` (logout). Succeeds for unknown tokens too, as RFC
    /// 7009 asks; returns whether a family was revoked.
    pub async fn revoke(&self, refresh_token: &str) -> Result<bool, StoreError> {
        let Some(token) = RefreshToken::parse(refresh_token) else {
            return Ok(false);
        };
        let hash = rt::hash(refresh_token);
        self.end(token.family, Some(&hash)).await
    }

    /// Ends the session `sid` (an access token's `sid` claim) without its refresh token: for
    /// "log out everywhere" and administrators.
    pub async fn revoke_session(&self, sid: &str) -> Result<bool, StoreError> {
        self.end(sid, None).await
    }

    /// Revokes `family` in the store (if `token_hash` is its current token, when given).
    async fn end(&self, family: &str, token_hash: Option<&str>) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let revoke = inner.store.revoke(family, token_hash, self.tombstone_ttl());
        let revoked = inner.metrics.store(StoreOp::Revoke, revoke).await;
        inner.metrics.revoked(&revoked);
        revoked
    }

    /// The verifier hook that refuses access tokens of revoked families (by their `sid`).
    #[must_use]
    pub fn deny_list(&self) -> StoreDenyList<S> {
        StoreDenyList {
            issuer: self.clone(),
        }
    }
}

/// The family and the secret of the refresh token to hand out, for a rotation's outcome:
/// `successor` when it was installed now, the sealed one for a retry inside the grace window.
fn settle(
    outcome: RotationOutcome,
    presented: &RefreshToken<'_>,
    successor: [u8; rt::SECRET_BYTES],
) -> Result<(FamilyInfo, [u8; rt::SECRET_BYTES]), GrantError> {
    match outcome {
        RotationOutcome::Rotated(info) => Ok((info, successor)),
        RotationOutcome::Retried {
            info,
            sealed,
            current,
        } => {
            // Only a token the store recorded is returned.
            let secret = rt::open(&sealed, &presented.secret)
                .filter(|s| rt::hash(&rt::format(presented.family, s)) == current)
                .ok_or(GrantError::Unknown)?;
            Ok((info, secret))
        }
        RotationOutcome::Reused => {
            tracing::warn!(
                family = presented.family,
                "refresh token reused; family revoked"
            );
            Err(GrantError::Reused)
        }
        RotationOutcome::Expired => Err(GrantError::Expired),
        RotationOutcome::Revoked => Err(GrantError::Revoked),
        RotationOutcome::Unknown => Err(GrantError::Unknown),
        RotationOutcome::WrongKey => Err(GrantError::WrongKey),
    }
}

/// The pair to hand out; `bound` when its access token is DPoP-bound.
fn pair(access_token: String, expires_in: u64, refresh_token: String, bound: bool) -> IssuedTokens {
    IssuedTokens {
        access_token,
        token_type: if bound { "DPoP" } else { "Bearer" }.to_owned(),
        expires_in,
        refresh_token,
    }
}

/// The deny-list hook of a [`TokenIssuer`]: refuses access tokens whose `sid` names a
/// revoked family. Tokens without `sid` pass. Built by [`TokenIssuer::deny_list`].
pub struct StoreDenyList<S> {
    issuer: TokenIssuer<S>,
}

impl<S> fmt::Debug for StoreDenyList<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreDenyList").finish_non_exhaustive()
    }
}

impl<S: RefreshStore> DenyList for StoreDenyList<S> {
    fn check(&self, claims: &RegisteredClaims) -> DenyCheck {
        match &claims.sid {
            Some(sid) => self.issuer.inner.store.is_revoked(sid),
            None => DenyCheck::active(),
        }
    }
}
