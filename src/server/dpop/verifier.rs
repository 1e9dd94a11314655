//! [`DpopVerifier`]: the checks of RFC 9449 §4.3, configured once.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Uri};
use jsonwebtoken::Algorithm;
use sha2::{Digest, Sha256};

use crate::Clock;
use crate::keys::{Thumbprint, access_token_hash};
use crate::server::dpop::error::DpopError;
use crate::server::dpop::future::VerifyFuture;
use crate::server::dpop::htu::normalize;
use crate::server::dpop::nonce::DpopNonces;
use crate::server::dpop::proof::{self, Proof};
use crate::server::dpop::replay::{MemoryReplayStore, ReplayKey, ReplayStore};

/// Verifies DPoP proofs (RFC 9449 §4.3) and returns the thumbprint of the key that made them.
///
/// Per request, [`verify`](Self::verify) checks, in this order: one `DPoP` header of at most
/// [`max_proof_len`](Self::max_proof_len) bytes; a compact JWS of canonical base64url JSON
/// objects with distinct members; `typ: dpop+jwt`; an asymmetric `alg` on the
/// [allow-list](Self::algorithms); a public `jwk` (no `d` or other private member, no `oct`
/// key) that fits `alg`; the signature under that `jwk`; the claims `jti`, `htm`, `htu` and
/// `iat`; `htm` equal to the method; `htu` equal to the request URI (see below); `ath` equal
/// to the hash of the access token, when one is presented; the server nonce, when
/// [required](Self::nonces); `iat` within the [window](Self::max_age); and last, the `jti`
/// unseen in the [replay store](Self::replay_store), which then remembers it. It answers
/// the proof's [`Thumbprint`], for the caller to compare with the token's `cnf.jkt`
/// ([`VerifiedProof::check_binding`]).
///
/// # The request URI behind a proxy
///
/// `htu` is the URI the client called, which the server cannot learn from the request alone:
/// a proxy or load balancer may terminate TLS, rewrite the host or strip a path prefix, and
/// the `Host` header is the client's to choose. So the verifier is given its external base URL
/// once: `https://api.example.com`, or `https://example.com/api` when a proxy strips `/api`.
/// The expected `htu` is that base followed by the request's path; the request's own scheme
/// and authority are never trusted. Both sides are normalised per RFC 3986 §6.2.2 and §6.2.3
/// (case, percent-encoding, dot segments, default ports) and their query and fragment ignored,
/// as RFC 9449 §4.3 says. A service reached under several names needs one verifier per name.
///
/// Cloning is cheap (a reference-count bump).
///
/// # Example
///
/// ```
/// use http::{HeaderMap, Method, Uri};
/// use tower_jwt_refresh::client::dpop::DpopKey;
/// use tower_jwt_refresh::server::dpop::{DpopError, DpopVerifier};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let verifier = DpopVerifier::new("https://api.example.com")?;
///
/// // What a client sends.
/// let key = DpopKey::generate()?;
/// let called = Uri::from_static("https://api.example.com/orders?page=2");
/// let proof = key.proof(&Method::GET, &called).access_token("token").sign()?;
/// let mut headers = HeaderMap::new();
/// headers.insert("dpop", proof.parse()?);
///
/// // What the server sees: the path only.
/// let uri = Uri::from_static("/orders?page=2");
/// let verified = verifier.verify(&Method::GET, &uri, &headers, Some("token")).await?;
/// assert_eq!(verified.thumbprint(), key.thumbprint());
///
/// // The same proof again is a replay.
/// let again = verifier.verify(&Method::GET, &uri, &headers, Some("token")).await;
/// assert!(matches!(again, Err(DpopError::Replayed)));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DpopVerifier {
    config: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    /// The normalised external base URL, without a trailing `/`.
    base: String,
    algorithms: Vec<Algorithm>,
    max_age: u64,
    future_skew: u64,
    max_len: usize,
    store: Arc<dyn ReplayStore>,
    nonces: Option<DpopNonces>,
    clock: Clock,
}

impl fmt::Debug for DpopVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.config;
        f.debug_struct("DpopVerifier")
            .field("base", &c.base)
            .field("algorithms", &c.algorithms)
            .field("max_age", &c.max_age)
            .field("future_skew", &c.future_skew)
            .field("max_proof_len", &c.max_len)
            .field("nonces", &c.nonces)
            .finish_non_exhaustive()
    }
}

/// The base URL given to [`DpopVerifier::new`] is not an absolute `http` or `https` URL
/// without user information, query or fragment.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::server::dpop::{DpopVerifier, InvalidBaseUrl};
///
/// assert_eq!(DpopVerifier::new("/api").unwrap_err(), InvalidBaseUrl);
/// assert!(DpopVerifier::new("https://example.com/api").is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidBaseUrl;

impl fmt::Display for InvalidBaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dpop base url must be an absolute http(s) url without query or fragment")
    }
}

impl std::error::Error for InvalidBaseUrl {}

/// A proof that passed every check: who made it.
///
/// # Example
///
/// ```
/// # use http::{HeaderMap, Method, Uri};
/// # use tower_jwt_refresh::client::dpop::DpopKey;
/// # use tower_jwt_refresh::server::dpop::{DpopError, DpopVerifier};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let verifier = DpopVerifier::new("https://api.example.com")?;
/// # let key = DpopKey::generate()?;
/// # let uri = Uri::from_static("https://api.example.com/");
/// # let mut headers = HeaderMap::new();
/// # headers.insert("dpop", key.proof(&Method::GET, &uri).sign()?.parse()?);
/// let verified = verifier.verify(&Method::GET, &uri, &headers, None).await?;
/// // The access token's `cnf.jkt`, as the token verifier read it.
/// let cnf_jkt = key.thumbprint().as_str();
/// verified.check_binding(cnf_jkt)?;
/// assert!(matches!(verified.check_binding("another key"), Err(DpopError::KeyMismatch)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct VerifiedProof {
    thumbprint: Thumbprint,
    algorithm: Algorithm,
    issued_at: u64,
}

impl VerifiedProof {
    /// The RFC 7638 thumbprint of the proof's key: what a token bound to it carries as
    /// `cnf.jkt`, and what an issuer binding a new token writes there.
    pub fn thumbprint(&self) -> &Thumbprint {
        &self.thumbprint
    }

    /// The proof's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The proof's `iat`, in Unix seconds.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }

    /// Checks that the proof's key is the one a token is bound to: `jkt` is the token's
    /// `cnf.jkt`. [`DpopError::KeyMismatch`] otherwise.
    pub fn check_binding(&self, jkt: &str) -> Result<(), DpopError> {
        if self.thumbprint.matches(jkt) {
            Ok(())
        } else {
            Err(DpopError::KeyMismatch)
        }
    }
}

/// A proof checked in everything but its `jti`.
pub(crate) struct Checked {
    pub(crate) verified: VerifiedProof,
    pub(crate) replay_key: ReplayKey,
    pub(crate) now: u64,
    pub(crate) expires_at: u64,
}

impl DpopVerifier {
    /// The default allow-list: every asymmetric algorithm the crate verifies.
    pub const DEFAULT_ALGORITHMS: &'static [Algorithm] = &[
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
    ];

    /// The largest proof accepted by default, in bytes: room for an RSA-4096 key.
    pub const DEFAULT_MAX_PROOF_LEN: usize = 8 * 1024;

    /// A verifier for requests that clients address under `base_url` (see the type's docs),
    /// with the defaults: every asymmetric algorithm, `iat` at most 60 s old and 10 s ahead,
    /// proofs of at most 8 KiB, a [`MemoryReplayStore`], no server nonces, the system clock.
    pub fn new(base_url: &str) -> Result<Self, InvalidBaseUrl> {
        if base_url.contains(['?', '#']) {
            return Err(InvalidBaseUrl);
        }
        let base = normalize(base_url).ok_or(InvalidBaseUrl)?;
        let base = base.trim_end_matches('/').to_owned();
        Ok(Self {
            config: Arc::new(Config {
                base,
                algorithms: Self::DEFAULT_ALGORITHMS.to_vec(),
                max_age: 60,
                future_skew: 10,
                max_len: Self::DEFAULT_MAX_PROOF_LEN,
                store: Arc::new(MemoryReplayStore::new()),
                nonces: None,
                clock: Clock::system(),
            }),
        })
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The algorithms proofs may use. Symmetric ones (`HS*`) are refused whatever the list
    /// says: a proof must be verifiable by anyone holding only its public key.
    #[must_use]
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.config().algorithms = algorithms.into_iter().collect();
        self
    }

    /// How old a proof's `iat` may be (60 s by default; whole seconds). The replay store
    /// remembers each `jti` this long after its `iat`.
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.config().max_age = max_age.as_secs();
        self
    }

    /// How far ahead of the server's clock a proof's `iat` may be (10 s by default; whole
    /// seconds).
    #[must_use]
    pub fn future_skew(mut self, skew: Duration) -> Self {
        self.config().future_skew = skew.as_secs();
        self
    }

    /// The largest `DPoP` header accepted, in bytes (8 KiB by default); checked before any
    /// decoding.
    #[must_use]
    pub fn max_proof_len(mut self, bytes: usize) -> Self {
        self.config().max_len = bytes;
        self
    }

    /// Where `jti`s are remembered ([`MemoryReplayStore`] by default; one shared by every
    /// instance behind a load balancer, such as
    /// [`RedisReplayStore`](crate::server::dpop::replay::RedisReplayStore), when there are
    /// several).
    #[must_use]
    pub fn replay_store(mut self, store: impl ReplayStore) -> Self {
        self.config().store = Arc::new(store);
        self
    }

    /// Requires server nonces: a proof without the current (or the previous) nonce is refused
    /// with [`DpopError::UseNonce`]; hand out [`current_nonce`](Self::current_nonce).
    #[must_use]
    pub fn nonces(mut self, nonces: DpopNonces) -> Self {
        self.config().nonces = Some(nonces);
        self
    }

    /// The clock `iat` and nonces are judged by (the system clock by default).
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.config().clock = clock;
        self
    }

    /// The allow-list, for the `algs` parameter of a `WWW-Authenticate: DPoP` challenge.
    pub fn allowed_algorithms(&self) -> &[Algorithm] {
        &self.config.algorithms
    }

    /// Whether proofs must carry the server's nonce.
    pub(crate) fn requires_nonces(&self) -> bool {
        self.config.nonces.is_some()
    }

    /// The nonce to send in a `DPoP-Nonce` header now, when nonces are required.
    pub fn current_nonce(&self) -> Option<String> {
        let c = &*self.config;
        c.nonces.as_ref().map(|n| n.nonce_at(c.clock.now()))
    }

    /// Verifies the request's `DPoP` proof. `uri` is the request's URI as the server sees it
    /// (its path is used, see the type's docs); `access_token` is the token presented with
    /// the proof (`Authorization: DPoP <token>`), if any, whose hash `ath` must be.
    ///
    /// Everything but the replay check happens before this returns; the future waits only
    /// for the replay store.
    pub fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        access_token: Option<&str>,
    ) -> VerifyFuture {
        match self.check(method, uri, headers, access_token) {
            Ok(checked) => {
                let check =
                    self.config
                        .store
                        .check(&checked.replay_key, checked.now, checked.expires_at);
                VerifyFuture::new(check, checked.verified)
            }
            Err(e) => VerifyFuture::failed(e),
        }
    }

    /// Every check but the replay store's.
    pub(crate) fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        access_token: Option<&str>,
    ) -> Result<Checked, DpopError> {
        let c = &*self.config;
        let Proof { alg, jwk, claims } = proof::read(self.one_proof(headers)?, &c.algorithms)?;
        if claims.htm != method.as_str() {
            return Err(DpopError::Method);
        }
        self.check_htu(&claims.htu, uri)?;
        if let Some(token) = access_token {
            let ath = claims.ath.as_deref();
            if ath.ok_or(DpopError::MissingClaim("ath"))? != access_token_hash(token) {
                return Err(DpopError::AccessTokenHash);
            }
        }
        let now = c.clock.now();
        self.check_time(&claims, now)?;
        let thumbprint = jwk.thumbprint();
        let replay_key = {
            let mut hash = Sha256::new();
            hash.update(thumbprint.as_str());
            hash.update(b" ");
            hash.update(claims.jti.as_bytes());
            ReplayKey::from_bytes(hash.finalize().into())
        };
        Ok(Checked {
            verified: VerifiedProof {
                thumbprint,
                algorithm: alg,
                issued_at: claims.iat,
            },
            replay_key,
            now,
            // A replay at `iat + max_age` is still in the window; one later is stale.
            expires_at: claims.iat.saturating_add(c.max_age).saturating_add(1),
        })
    }

    /// The one `DPoP` header's value, within the size cap.
    fn one_proof<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, DpopError> {
        let mut values = headers.get_all("dpop").iter();
        let value = values.next().ok_or(DpopError::Missing)?;
        if values.next().is_some() {
            return Err(DpopError::Multiple);
        }
        if value.len() > self.config.max_len {
            return Err(DpopError::TooLarge);
        }
        value.to_str().map_err(|_| DpopError::Malformed)
    }

    /// The server nonce, when required, then `iat` within the window.
    fn check_time(&self, claims: &proof::Claims, now: u64) -> Result<(), DpopError> {
        let c = &*self.config;
        if let Some(nonces) = &c.nonces {
            let nonce = claims.nonce.as_deref();
            if !nonce.is_some_and(|n| nonces.is_valid(n, now)) {
                return Err(DpopError::UseNonce);
            }
        }
        if claims.iat.saturating_add(c.max_age) < now {
            return Err(DpopError::Stale);
        }
        if claims.iat > now.saturating_add(c.future_skew) {
            return Err(DpopError::FromTheFuture);
        }
        Ok(())
    }

    fn check_htu(&self, htu: &str, uri: &Uri) -> Result<(), DpopError> {
        let path = match uri.path() {
            "" => "/",
            path => path,
        };
        let expected = normalize(&format!("{}{path}", self.config.base));
        match (normalize(htu), expected) {
            (Some(htu), Some(expected)) if htu == expected => Ok(()),
            _ => Err(DpopError::Uri),
        }
    }
}
