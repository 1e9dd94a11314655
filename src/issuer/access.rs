//! [`AccessTokenIssuer`]: mints RFC 9068 access tokens that [`JwtAuthLayer`] accepts.
//!
//! [`JwtAuthLayer`]: crate::server::JwtAuthLayer

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::Clock;
use crate::issuer::error::IssueError;
use crate::issuer::util::{random_bytes, whole_seconds_up};
use crate::keys::SigningKey;

/// Claim names the issuer sets itself; custom claims may not use them.
const REGISTERED: [&str; 8] = ["sub", "iss", "aud", "exp", "iat", "nbf", "jti", "sid"];

/// A freshly minted access token.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessToken {
    /// The compact JWS.
    pub token: String,
    /// Its `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// Its lifetime in seconds, for an RFC 6749 `expires_in`.
    pub expires_in: u64,
    /// Its `jti`.
    pub jti: String,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("jti", &self.jti)
            .finish()
    }
}

/// Mints access tokens: header `typ: at+jwt`, claims `sub`, `iss`, `aud`, `exp`, `iat`,
/// `jti`, `sid` and your own claims, flattened.
///
/// A [`JwtAuthLayer`](crate::server::JwtAuthLayer) built from
/// [`SigningKey::verification_key`] with the same issuer and audience accepts them.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_jwt_refresh::issuer::AccessTokenIssuer;
/// use tower_jwt_refresh::keys::{Algorithm, SigningKey};
/// use tower_jwt_refresh::server::JwtAuthLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = SigningKey::hmac(Algorithm::HS256, [42u8; 32])?;
/// let issuer = AccessTokenIssuer::new(key.clone())
///     .issuer("https://auth.example")
///     .audience("api")
///     .lifetime(Duration::from_secs(300));
/// let token = issuer.mint("alice", "session-1", &serde_json::json!({"role": "admin"}))?;
///
/// let layer = JwtAuthLayer::new(key.verification_key())
///     .issuer("https://auth.example")
///     .audience("api");
/// let claims = layer.verify(&token.token).await?;
/// assert_eq!(claims.registered().sid.as_deref(), Some("session-1"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AccessTokenIssuer {
    key: SigningKey,
    /// The base64url header, computed once.
    header: String,
    issuer: Option<String>,
    audience: Vec<String>,
    lifetime: Duration,
    clock: Clock,
}

impl fmt::Debug for AccessTokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokenIssuer")
            .field("key", &self.key)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl AccessTokenIssuer {
    /// Mints with `key`; tokens live 5 minutes unless [`lifetime`](Self::lifetime) says otherwise.
    #[must_use]
    pub fn new(key: SigningKey) -> Self {
        let mut header = serde_json::json!({ "alg": key.algorithm(), "typ": "at+jwt" });
        if let Some(kid) = key.kid() {
            header["kid"] = kid.into();
        }
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        Self {
            key,
            header,
            issuer: None,
            audience: Vec::new(),
            lifetime: Duration::from_secs(300),
            clock: Clock::system(),
        }
    }

    /// The `iss` of every token.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Adds an audience to every token's `aud`.
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience.push(audience.into());
        self
    }

    /// How long tokens live: whole seconds, as `exp` is (a fraction rounds up); at least one,
    /// at most a year.
    #[must_use]
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Duration::from_secs(whole_seconds_up(lifetime))
            .clamp(Duration::from_secs(1), Duration::from_secs(366 * 24 * 3600));
        self
    }

    /// The wall clock for `iat` and `exp` (default: the system clock). A
    /// [`TokenIssuer`](crate::issuer::TokenIssuer) sets it to its own.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// How long tokens live, as [`lifetime`](Self::lifetime) set it.
    pub(crate) fn configured_lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Mints a token for `subject` in session `sid`, with `claims` (any value serializing to
    /// a JSON object, or `()` for none) flattened in.
    pub fn mint<C: Serialize + ?Sized>(
        &self,
        subject: &str,
        sid: &str,
        claims: &C,
    ) -> Result<AccessToken, IssueError> {
        self.mint_bound(subject, sid, claims, None)
    }

    /// [`mint`](Self::mint), bound to the key of thumbprint `jkt` when given: the token
    /// carries `cnf: {"jkt": …}` (RFC 9449 §6.1).
    pub(crate) fn mint_bound<C: Serialize + ?Sized>(
        &self,
        subject: &str,
        sid: &str,
        claims: &C,
        jkt: Option<&str>,
    ) -> Result<AccessToken, IssueError> {
        let mut payload = custom_claims(claims)?;
        if let Some(jkt) = jkt {
            payload.insert("cnf".into(), serde_json::json!({ "jkt": jkt }));
        }
        let now = self.clock.now();
        let expires_in = self.lifetime.as_secs();
        let expires_at = now.saturating_add(expires_in);
        let jti = URL_SAFE_NO_PAD.encode(random_bytes::<16>()?);
        payload.insert("sub".into(), subject.into());
        if let Some(iss) = &self.issuer {
            payload.insert("iss".into(), iss.as_str().into());
        }
        match self.audience.as_slice() {
            [] => {}
            [one] => {
                payload.insert("aud".into(), one.as_str().into());
            }
            many => {
                payload.insert("aud".into(), many.into());
            }
        }
        payload.insert("exp".into(), expires_at.into());
        payload.insert("iat".into(), now.into());
        payload.insert("jti".into(), jti.as_str().into());
        payload.insert("sid".into(), sid.into());
        Ok(AccessToken {
            token: self.sign(&payload)?,
            expires_at,
            expires_in,
            jti,
        })
    }

    /// The compact JWS of `payload` under the precomputed header.
    fn sign(&self, payload: &Map<String, Value>) -> Result<String, IssueError> {
        let body = serde_json::to_vec(payload).map_err(IssueError::Claims)?;
        let mut input = String::with_capacity(self.header.len() + 1 + body.len() * 4 / 3 + 4);
        input.push_str(&self.header);
        input.push('.');
        URL_SAFE_NO_PAD.encode_string(body, &mut input);
        self.key.sign_jws(input).map_err(IssueError::Signing)
    }
}

/// `claims` as a JSON object (`()` as an empty one), none of whose names the issuer sets.
fn custom_claims<C: Serialize + ?Sized>(claims: &C) -> Result<Map<String, Value>, IssueError> {
    let payload = match serde_json::to_value(claims).map_err(IssueError::Claims)? {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        _ => {
            return Err(IssueError::Claims(serde::ser::Error::custom(
                "not an object",
            )));
        }
    };
    match REGISTERED.iter().find(|name| payload.contains_key(**name)) {
        Some(name) => Err(IssueError::ReservedClaim((*name).to_owned())),
        None => Ok(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Algorithm;
    use crate::server::{JwtAuthLayer, Rejection, TokenError};

    #[tokio::test]
    async fn reserved_names_and_non_objects_are_refused() {
        let issuer = AccessTokenIssuer::new(SigningKey::hmac(Algorithm::HS256, [1u8; 32]).unwrap());
        let err = issuer
            .mint("a", "s", &serde_json::json!({"exp": 1}))
            .unwrap_err();
        assert!(
            matches!(err, IssueError::ReservedClaim(ref n) if n == "exp"),
            "{err}"
        );
        assert!(matches!(
            issuer.mint("a", "s", &[1, 2]),
            Err(IssueError::Claims(_))
        ));
        assert!(issuer.mint("a", "s", &()).is_ok());
    }

    #[tokio::test]
    async fn tokens_expire_after_the_ttl() {
        fn at_zero() -> u64 {
            1_000_000
        }
        let key = SigningKey::hmac(Algorithm::HS256, [1u8; 32]).unwrap();
        let issuer = AccessTokenIssuer::new(key.clone())
            .lifetime(Duration::from_secs(60))
            .clock(Clock::from_fn(at_zero));
        let token = issuer.mint("a", "s", &()).unwrap();
        assert_eq!((token.expires_at, token.expires_in), (1_000_060, 60));
        let layer = JwtAuthLayer::new(key.verification_key()).leeway(Duration::ZERO);
        let err = layer.verify(&token.token).await.unwrap_err();
        assert_eq!(err, Rejection::InvalidToken(TokenError::Expired));
    }

    #[test]
    fn ids_are_random_and_sized() {
        let issuer = AccessTokenIssuer::new(SigningKey::hmac(Algorithm::HS256, [1u8; 32]).unwrap());
        let a = issuer.mint("a", "s", &()).unwrap().jti;
        assert_eq!(a.len(), 22);
        assert_ne!(a, issuer.mint("a", "s", &()).unwrap().jti);
    }
}
