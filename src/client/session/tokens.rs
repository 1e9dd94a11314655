//! The tokens a session holds: [`Tokens`] to log in with, [`CurrentTokens`] as requests read them,
//! and the access token's lifetime, read from the JWT when the server gave none.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::HeaderValue;
use tokio::time::Instant;

/// Tokens handed to the session: at [`login`](super::Session::login), and as a
/// [`Refresher`](crate::client::Refresher)'s result.
///
/// At login, tokens without a refresh token ([`access_only`](Self::access_only)) make a
/// session that ends when its access token does. From a refresher, they keep the current
/// refresh token, for servers that do not rotate it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tokens {
    /// The access token.
    pub access_token: String,
    /// The refresh token. Without one, a login cannot be refreshed, and a refresh keeps the
    /// current one.
    pub refresh_token: Option<String>,
    /// The access token's lifetime, if the server said (`expires_in`); otherwise it is read
    /// from the JWT's `exp` claim, without verification.
    pub expires_in: Option<Duration>,
    /// The token type the server named (`token_type`: `Bearer` or `DPoP`), if it did. A
    /// layer with a [DPoP key](crate::client::RefreshLayer::dpop) sends every access token
    /// as `DPoP` unless its type says otherwise; without a key, the type is not read.
    pub token_type: Option<String>,
}

impl Tokens {
    /// Tokens with an access token and a refresh token.
    pub fn new(access_token: impl Into<String>, refresh_token: impl Into<String>) -> Self {
        Self {
            access_token: access_token.into(),
            refresh_token: Some(refresh_token.into()),
            expires_in: None,
            token_type: None,
        }
    }

    /// Tokens with only an access token: at login, nothing to refresh with; from a refresher,
    /// the current refresh token stays.
    pub fn access_only(access_token: impl Into<String>) -> Self {
        Self {
            access_token: access_token.into(),
            refresh_token: None,
            expires_in: None,
            token_type: None,
        }
    }

    /// Sets the access token's lifetime.
    #[must_use]
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_in = Some(lifetime);
        self
    }

    /// Sets the token type (`Bearer` or `DPoP`, as the token response's `token_type`).
    #[must_use]
    pub fn token_type(mut self, token_type: impl Into<String>) -> Self {
        self.token_type = Some(token_type.into());
        self
    }

    /// What a refresh returned; `spent` stays the refresh token unless the server rotated it.
    pub(crate) fn refreshed(new: Tokens, spent: String) -> Self {
        Self {
            access_token: new.access_token,
            refresh_token: Some(new.refresh_token.unwrap_or(spent)),
            expires_in: new.expires_in,
            token_type: new.token_type,
        }
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_in", &self.expires_in)
            .field("token_type", &self.token_type)
            .finish()
    }
}

/// The access token cannot be sent: it has characters an HTTP header cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnusableToken;

impl fmt::Display for UnusableToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("access token has characters a header cannot carry")
    }
}

impl std::error::Error for UnusableToken {}

/// The session's current tokens, as the application reads them (to persist them, say).
#[derive(Clone)]
pub struct CurrentTokens(pub(crate) Arc<TokenState>);

/// What a [`CurrentTokens`] shares: the tokens, their prebuilt header values and their expiry.
pub(crate) struct TokenState {
    /// `Bearer <access token>`, built once and shared by every request.
    bearer: HeaderValue,
    /// The bare token, for legacy servers (a slice of the same bytes).
    raw: HeaderValue,
    access_token: String,
    refresh_token: Option<String>,
    /// Whether the server said the token is a bearer token (`token_type: Bearer`): sent as
    /// one even by a layer with a DPoP key.
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    pub(crate) bearer_only: bool,
    /// `DPoP <access token>`, built at its first use.
    #[cfg(feature = "dpop")]
    dpop: std::sync::OnceLock<HeaderValue>,
    pub(crate) expires_at: Option<Instant>,
    pub(crate) lifetime: Option<Duration>,
    /// A random fraction in `[0, 1)`, drawn once per token set: where in the early window this
    /// set's prefetch point falls, so that clients that logged in together spread out.
    pub(crate) jitter: f64,
}

impl TokenState {
    /// Whether there is a refresh token to refresh with.
    pub(crate) fn can_refresh(&self) -> bool {
        self.refresh_token.is_some()
    }

    /// The `Authorization` value: `Bearer <token>`, or the bare token.
    pub(crate) fn header(&self, raw: bool) -> &HeaderValue {
        if raw { &self.raw } else { &self.bearer }
    }

    /// The access token.
    #[cfg(feature = "dpop")]
    pub(crate) fn access_token(&self) -> &str {
        &self.access_token
    }

    /// The `Authorization` value under the DPoP scheme: `DPoP <token>`.
    #[cfg(feature = "dpop")]
    pub(crate) fn dpop_header(&self) -> &HeaderValue {
        self.dpop.get_or_init(|| {
            // The token made a valid `Bearer` value: the same bytes make a `DPoP` one.
            let mut value = HeaderValue::try_from(format!("DPoP {}", self.access_token))
                .unwrap_or_else(|_| self.bearer.clone());
            value.set_sensitive(true);
            value
        })
    }
}

impl CurrentTokens {
    pub(super) fn new(tokens: Tokens) -> Result<Self, UnusableToken> {
        let bytes = Bytes::from(format!("Bearer {}", tokens.access_token));
        let value = |bytes: Bytes| {
            let mut value = HeaderValue::from_maybe_shared(bytes).map_err(|_| UnusableToken)?;
            value.set_sensitive(true);
            Ok::<_, UnusableToken>(value)
        };
        let (bearer, raw) = (value(bytes.slice(..))?, value(bytes.slice(7..))?);
        let lifetime = lifetime(tokens.expires_in, &tokens.access_token);
        let bearer_only = tokens
            .token_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"));
        Ok(Self(Arc::new(TokenState {
            bearer,
            raw,
            bearer_only,
            #[cfg(feature = "dpop")]
            dpop: std::sync::OnceLock::new(),
            expires_at: lifetime.map(|l| Instant::now() + l),
            lifetime,
            jitter: jitter(&tokens.access_token),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
        })))
    }

    /// The access token.
    pub fn access_token(&self) -> &str {
        &self.0.access_token
    }

    /// The refresh token, if any.
    pub fn refresh_token(&self) -> Option<&str> {
        self.0.refresh_token.as_deref()
    }

    /// When the access token expires, if known.
    pub fn expires_at(&self) -> Option<Instant> {
        self.0.expires_at
    }
}

impl fmt::Debug for CurrentTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentTokens")
            .field("access_token", &"[redacted]")
            .field("expires_at", &self.0.expires_at)
            .finish()
    }
}

/// A random fraction in `[0, 1)`: the token hashed with a freshly seeded SipHash key (std's
/// `RandomState`, seeded from the OS), so no two clients (nor two sets) draw alike.
fn jitter(token: &str) -> f64 {
    use std::hash::BuildHasher as _;
    let bits = std::collections::hash_map::RandomState::new().hash_one(token) >> 11;
    // 53 random bits: exactly representable, below 1.
    bits as f64 / (1u64 << 53) as f64
}

/// The longest lifetime a token is taken to have (about 31 years).
const MAX_LIFETIME: Duration = Duration::from_secs(1_000_000_000);

/// The access token's lifetime, counted from its receipt on the monotonic clock.
///
/// The server's `expires_in` if it gave one (zero means "unknown": a server that sends it
/// means nothing by it), else the JWT's `exp - iat`: both are durations, so neither the
/// client's wall clock nor its skew against the server's changes them. Anything above
/// `MAX_LIFETIME` is capped, so no deadline overflows.
fn lifetime(expires_in: Option<Duration>, access_token: &str) -> Option<Duration> {
    expires_in
        .filter(|l| !l.is_zero())
        .or_else(|| jwt_lifetime(access_token))
        .map(|l| l.min(MAX_LIFETIME))
}

/// Reads a JWT's `exp` and `iat` without verifying anything: `exp - iat`, the lifetime the
/// server gave it. Only a JWT without `iat` falls back on the wall clock (`exp - now`), the
/// one case where a skewed client clock shortens or lengthens what it sees.
fn jwt_lifetime(token: &str) -> Option<Duration> {
    #[derive(serde::Deserialize)]
    struct Exp {
        exp: f64,
        iat: Option<f64>,
    }
    let payload = token.split('.').nth(1)?;
    if payload.len() > 16 * 1024 {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let Exp { exp, iat } = serde_json::from_slice(&json).ok()?;
    let left = match iat {
        Some(iat) if iat.is_finite() => exp - iat,
        _ => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
            exp - now.as_secs_f64()
        }
    };
    (left.is_finite() && left > 0.0)
        .then(|| Duration::from_secs_f64(left.min(MAX_LIFETIME.as_secs_f64())))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An unsigned JWT expiring at `exp`, for lifetime tests.
    pub(in crate::client::session) fn jwt(exp: u64) -> String {
        let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
        format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig")
    }

    /// The wall clock in Unix seconds.
    pub(in crate::client::session) fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn lifetime_comes_from_expires_in_or_the_jwt() {
        let now = unix_now();
        let from_jwt = jwt_lifetime(&jwt(now + 100)).unwrap();
        assert!((98..=100).contains(&from_jwt.as_secs()), "{from_jwt:?}");
        assert_eq!(jwt_lifetime(&jwt(now - 5)), None);
        assert_eq!(jwt_lifetime("opaque"), None);
        assert_eq!(jwt_lifetime("a.!!!.c"), None);
    }

    #[test]
    fn a_jwt_lifetime_is_exp_minus_iat_whatever_the_client_clock() {
        let now = unix_now();
        // The server's clock an hour ahead of the client's, or an hour behind: the token lives
        // one minute either way.
        for skew in [now + 3600, now - 3600] {
            let claims = format!(r#"{{"iat":{skew},"exp":{}}}"#, skew + 60);
            let payload = URL_SAFE_NO_PAD.encode(claims);
            let lifetime = jwt_lifetime(&format!("e30.{payload}.sig")).unwrap();
            assert_eq!(lifetime.as_secs(), 60);
        }
    }
}
