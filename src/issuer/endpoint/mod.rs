//! The refresh endpoint (RFC 6749 §6) and the revocation endpoint (RFC 7009), as tower
//! services.
//!
//! Both take `POST` with `application/x-www-form-urlencoded` or JSON bodies, capped in size
//! and read within a timeout. Every response carries `Cache-Control: no-store`. Mount them with
//! axum's `route_service`:
//!
//! ```
//! use axum::Router;
//! use tower_jwt_refresh::issuer::{AccessTokenIssuer, MemoryStore, TokenIssuer};
//! use tower_jwt_refresh::keys::{Algorithm, SigningKey};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = SigningKey::hmac(Algorithm::HS256, [42u8; 32])?;
//! let issuer = TokenIssuer::new(AccessTokenIssuer::new(key), MemoryStore::new());
//! let app: Router = Router::new()
//!     .route_service("/oauth/token", issuer.refresh_endpoint())
//!     .route_service("/oauth/revoke", issuer.revocation_endpoint());
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::http_util::{oauth_error_body, retry_soon};

/// The parts both endpoints share: the constructor on [`TokenIssuer`], a `Clone` and `Debug`
/// that need no `S: Clone`, the request-limit builders, and the `Service` impl, which reads
/// the parameters and hands them to the endpoint's own `handle`. Defined before the modules
/// that use it.
macro_rules! endpoint_common {
    ($name:ident, $constructor:ident, $doc:literal) => {
        impl<S: RefreshStore> TokenIssuer<S> {
            #[doc = $doc]
            #[must_use]
            pub fn $constructor(&self) -> $name<S> {
                $name {
                    issuer: self.clone(),
                    limits: super::Limits::default(),
                    dpop: super::Dpop::default(),
                }
            }
        }

        impl<S, B> tower_service::Service<http::Request<B>> for $name<S>
        where
            S: RefreshStore,
            B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        {
            type Response = http::Response<http_body_util::Full<bytes::Bytes>>;
            type Error = std::convert::Infallible;
            type Future = super::EndpointFuture;

            fn poll_ready(
                &mut self,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), std::convert::Infallible>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, req: http::Request<B>) -> super::EndpointFuture {
                let (issuer, limits) = (self.issuer.clone(), self.limits);
                let proof = self.dpop.start(&req, limits.replay_check_timeout);
                Box::pin(async move {
                    let outcome = async {
                        let params = super::params::read_params(req, limits).await?;
                        Self::handle(issuer, proof, params).await
                    };
                    Ok(outcome
                        .await
                        .unwrap_or_else(super::OAuthError::into_response))
                })
            }
        }

        impl<S> Clone for $name<S> {
            fn clone(&self) -> Self {
                Self {
                    issuer: self.issuer.clone(),
                    limits: self.limits,
                    dpop: self.dpop.clone(),
                }
            }
        }

        impl<S> std::fmt::Debug for $name<S> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("limits", &self.limits)
                    .field("dpop", &self.dpop)
                    .finish()
            }
        }

        impl<S> $name<S> {
            /// The largest request body accepted (default 16 KiB).
            #[must_use]
            pub fn max_body(mut self, bytes: usize) -> Self {
                self.limits.max_body = bytes;
                self
            }

            /// How long reading the request body may take (default 10 s).
            #[must_use]
            pub fn read_timeout(mut self, timeout: std::time::Duration) -> Self {
                self.limits.read_timeout = timeout;
                self
            }
        }
    };
}

mod params;
mod refresh;
mod revocation;

pub use refresh::RefreshEndpoint;
pub use revocation::RevocationEndpoint;

/// Request limits shared by both endpoints.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_body: usize,
    read_timeout: Duration,
    /// How long a DPoP replay check may take before the answer is 503.
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    replay_check_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 16 * 1024,
            read_timeout: Duration::from_secs(10),
            // As long as `JwtAuthLayer`'s default `io_timeout`.
            replay_check_timeout: Duration::from_secs(2),
        }
    }
}

/// The DPoP verifier of an endpoint that takes proofs (the refresh endpoint's, when set).
#[derive(Debug, Clone, Default)]
struct Dpop(#[cfg(feature = "dpop")] Option<crate::server::dpop::DpopVerifier>);

/// A request's DPoP proof, to verify once its body has been read, when the endpoint takes
/// proofs and the request has a `DPoP` header.
#[derive(Default)]
struct Proof(#[cfg(feature = "dpop")] Option<PendingProof>);

/// What verifying a proof needs of its request: kept while the body is read, so that a
/// request refused for its body spends nothing of its proof (its `jti` stays unseen).
#[cfg(feature = "dpop")]
struct PendingProof {
    verifier: crate::server::dpop::DpopVerifier,
    timeout: Duration,
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
}

#[cfg(feature = "dpop")]
impl PendingProof {
    /// Verifies the proof, its `jti` recorded last; the refusal answered if it fails. With
    /// the proof, the server's current nonce, if it requires them, for the answer's
    /// `DPoP-Nonce` header (RFC 9449 §8.2: the client keeps up with the nonce without being
    /// challenged).
    async fn verify(
        self,
    ) -> Result<(crate::server::dpop::VerifiedProof, Option<HeaderValue>), OAuthError> {
        let Self {
            verifier,
            timeout,
            method,
            uri,
            headers,
        } = self;
        let proof = verifier.verify(&method, &uri, &headers, None);
        let Ok(proof) = tokio::time::timeout(timeout, proof).await else {
            tracing::warn!("dpop replay check timed out");
            return Err(OAuthError::unavailable());
        };
        let proof = proof.map_err(|e| refresh::dpop_error(&e, &verifier))?;
        let nonce = verifier
            .current_nonce()
            .and_then(|n| HeaderValue::try_from(n).ok());
        Ok((proof, nonce))
    }
}

impl Dpop {
    /// Takes what the request's proof needs, to verify it once the body is read.
    fn start<B>(&self, req: &http::Request<B>, timeout: Duration) -> Proof {
        #[cfg(feature = "dpop")]
        if let Some(verifier) = &self.0
            && req.headers().contains_key("dpop")
        {
            // Only the `DPoP` values: the verifier reads nothing else (and counts them).
            let mut headers = http::HeaderMap::new();
            for proof in req.headers().get_all("dpop") {
                headers.append("dpop", proof.clone());
            }
            return Proof(Some(PendingProof {
                verifier: verifier.clone(),
                timeout,
                method: req.method().clone(),
                uri: req.uri().clone(),
                headers,
            }));
        }
        let _ = (req, timeout);
        Proof::default()
    }
}

/// What both endpoints' `call` returns.
type EndpointFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

/// An RFC 6749 §5.2 error response.
struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: &'static str,
    /// A `DPoP-Nonce` header, with `use_dpop_nonce`.
    dpop_nonce: Option<HeaderValue>,
}

impl OAuthError {
    const fn bad_request(code: &'static str, description: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            description,
            dpop_nonce: None,
        }
    }

    /// 400 `invalid_request`: a missing or malformed parameter, or an unreadable body.
    const fn invalid_request(description: &'static str) -> Self {
        Self::bad_request("invalid_request", description)
    }

    /// 405, with `Allow: POST`.
    const fn method_not_allowed() -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "invalid_request",
            description: "use POST",
            dpop_nonce: None,
        }
    }

    const fn server_error() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "server_error",
            description: "tokens could not be issued",
            dpop_nonce: None,
        }
    }

    /// 503, with `Retry-After: 1`.
    const fn unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "temporarily_unavailable",
            description: "token store unavailable; retry shortly",
            dpop_nonce: None,
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let body = oauth_error_body(self.code, self.description);
        let mut response = json_response(self.status, body);
        let headers = response.headers_mut();
        match self.status {
            StatusCode::SERVICE_UNAVAILABLE => retry_soon(headers),
            StatusCode::METHOD_NOT_ALLOWED => {
                headers.insert(ALLOW, HeaderValue::from_static("POST"));
            }
            _ => {}
        }
        if let Some(nonce) = self.dpop_nonce {
            headers.insert("dpop-nonce", nonce);
        }
        response
    }
}

/// A JSON response that no cache keeps (RFC 6749 §5.1).
fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
