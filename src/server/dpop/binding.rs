//! The layer's side of DPoP: which schemes it takes, and the proof checked after the token.

use std::sync::Arc;

use http::{HeaderMap, Request};
use serde::de::DeserializeOwned;

use crate::server::claims::Claims;
use crate::server::decision::{Auth, Outcome};
use crate::server::dpop::future::VerifyFuture;
use crate::server::dpop::{DpopError, DpopVerifier, VerifiedProof};
use crate::server::rejection::{DpopProofError, Rejection, TokenError};

/// Which tokens a [`JwtAuthLayer`](crate::server::JwtAuthLayer) with
/// [`dpop`](crate::server::JwtAuthLayer::dpop) accepts. Without `dpop`, a layer accepts
/// bearer tokens only.
///
/// Whatever the mode, a DPoP-bound token (one with `cnf.jkt`) is accepted only as
/// `Authorization: DPoP` with a proof from its key, and an unbound one never is.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::keys::{Algorithm, Key};
/// use tower_jwt_refresh::server::JwtAuthLayer;
/// use tower_jwt_refresh::server::dpop::{DpopMode, DpopVerifier};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let key = Key::hmac(Algorithm::HS256, [7u8; 32])?;
/// let verifier = DpopVerifier::new("https://api.example.com")?;
/// let layer = JwtAuthLayer::new(key).dpop(verifier, DpopMode::Required);
/// # let _ = layer; Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DpopMode {
    /// Bearer tokens and DPoP-bound tokens with their proofs.
    Allowed,
    /// DPoP-bound tokens with their proofs only; a bearer token counts as no credentials.
    Required,
}

/// The layer's DPoP configuration.
#[derive(Debug, Clone)]
pub(crate) struct DpopSettings {
    pub(crate) verifier: DpopVerifier,
    pub(crate) mode: DpopMode,
}

impl<C> Auth<C>
where
    C: DeserializeOwned + Send + Sync + 'static,
{
    /// `outcome` is the verdict on a token presented as `Authorization: DPoP`; once the token
    /// has passed, its proof is verified (with `ath`) and bound to its `cnf.jkt`. A refused
    /// token never reaches the replay store, so its proof's `jti` stays unused.
    pub(crate) fn with_proof<B>(
        self: &Arc<Self>,
        outcome: Outcome<C>,
        req: &Request<B>,
        token: &str,
    ) -> Outcome<C> {
        let Some(dpop) = &self.dpop else {
            // Unreachable: the DPoP scheme is read only with settings.
            return Outcome::Reject(Rejection::MissingToken);
        };
        match outcome {
            Outcome::Pass(Some(claims)) => {
                let proof =
                    dpop.verifier
                        .verify(req.method(), req.uri(), req.headers(), Some(token));
                self.after_proof(proof, claims)
            }
            Outcome::Pass(None) => Outcome::Pass(None),
            Outcome::Reject(rejection) => Outcome::Reject(rejection),
            Outcome::Pending(check) => {
                // The token needs I/O first: keep what the proof check reads.
                let this = Arc::clone(self);
                let verifier = dpop.verifier.clone();
                let (method, uri) = (req.method().clone(), req.uri().clone());
                let mut headers = HeaderMap::new();
                for value in req.headers().get_all("dpop") {
                    headers.append("dpop", value.clone());
                }
                let token = token.to_owned();
                Outcome::Pending(Box::pin(async move {
                    let Some(claims) = check.await? else {
                        return Ok(None);
                    };
                    let proof = verifier.verify(&method, &uri, &headers, Some(&token));
                    this.after_proof(proof, claims).resolve().await
                }))
            }
        }
    }

    /// The verdict on a proof, waiting (bounded in time and in number) for the replay store
    /// if it did not answer at once.
    fn after_proof(self: &Arc<Self>, proof: VerifyFuture, claims: Claims<C>) -> Outcome<C> {
        let proof = match proof.into_ready() {
            Ok(result) => {
                return match bound(result, &claims) {
                    Ok(()) => Outcome::Pass(Some(claims)),
                    Err(rejection) => Outcome::Reject(rejection),
                };
            }
            Err(pending) => pending,
        };
        let Some(parked) = self.check_waits.take() else {
            return Outcome::Reject(Rejection::DpopUnavailable);
        };
        let io_timeout = self.io_timeout;
        Outcome::Pending(Box::pin(async move {
            let _parked = parked;
            let result = tokio::time::timeout(io_timeout, proof)
                .await
                .map_err(|_| Rejection::DpopUnavailable)?;
            bound(result, &claims)?;
            Ok(Some(claims))
        }))
    }
}

/// The proof's verdict, then its key against the token's `cnf.jkt`.
fn bound<C>(result: Result<VerifiedProof, DpopError>, claims: &Claims<C>) -> Result<(), Rejection> {
    let proof = result.map_err(rejection)?;
    let jkt = claims.registered().cnf_jkt.as_deref();
    let jkt = jkt.ok_or(Rejection::InvalidToken(TokenError::NotDpopBound))?;
    proof.check_binding(jkt).map_err(rejection)
}

fn rejection(error: DpopError) -> Rejection {
    match error {
        DpopError::UseNonce => Rejection::UseDpopNonce,
        DpopError::Store(error) => {
            tracing::warn!(%error, "dpop replay check failed");
            Rejection::DpopUnavailable
        }
        other => Rejection::InvalidDpopProof(DpopProofError(other.description())),
    }
}
