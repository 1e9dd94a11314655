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
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use tower_service::Service;

use crate::http_util::form_decode;
use crate::issuer::store::RefreshStore;
use crate::issuer::token_issuer::{RefreshError, TokenIssuer};

/// Request limits shared by both endpoints.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_body: usize,
    read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 16 * 1024,
            read_timeout: Duration::from_secs(10),
        }
    }
}

/// An RFC 6749 §5.2 error response.
struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: &'static str,
}

impl OAuthError {
    const fn bad_request(code: &'static str, description: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            description,
        }
    }

    fn server_error() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "server_error",
            description: "tokens could not be issued",
        }
    }

    fn unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "temporarily_unavailable",
            description: "token store unavailable; retry shortly",
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let body = format!(
            r#"{{"error":"{}","error_description":"{}"}}"#,
            self.code, self.description
        );
        let mut response = json_response(self.status, Bytes::from(body));
        match self.status {
            StatusCode::SERVICE_UNAVAILABLE => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("POST"));
            }
            _ => {}
        }
        response
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The parameters both endpoints read. Unknown ones are ignored.
#[derive(Debug, Default, Deserialize)]
struct Params {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    token: Option<String>,
}

/// Checks method and content type, reads the body within the limits, parses it.
async fn read_params<B>(req: Request<B>, limits: Limits) -> Result<Params, OAuthError>
where
    B: Body<Data = Bytes>,
{
    if req.method() != Method::POST {
        return Err(OAuthError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "invalid_request",
            description: "use POST",
        });
    }
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let json = match content_type.as_deref() {
        Some("application/x-www-form-urlencoded") => false,
        Some("application/json") => true,
        _ => {
            return Err(OAuthError::bad_request(
                "invalid_request",
                "content type must be application/x-www-form-urlencoded or application/json",
            ));
        }
    };
    let too_large = OAuthError::bad_request("invalid_request", "request body too large");
    let unreadable = OAuthError::bad_request("invalid_request", "request body could not be read");
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body as u64) {
        return Err(too_large);
    }
    let mut body = Box::pin(req.into_body());
    let mut buf = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(unreadable);
            };
            // Trailers carry no parameters.
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limits.max_body {
                    return Err(too_large);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    tokio::time::timeout(limits.read_timeout, read)
        .await
        .map_err(|_| {
            OAuthError::bad_request("invalid_request", "request body not received in time")
        })??;
    let malformed = OAuthError::bad_request("invalid_request", "malformed request parameters");
    let params: Params = if json {
        // Derived deserialization refuses duplicate members and non-string values.
        serde_json::from_slice(&buf).map_err(|_| malformed)?
    } else {
        parse_form(&buf).ok_or(malformed)?
    };
    // RFC 6749 §3.2: a parameter sent without a value is treated as omitted.
    let present = |v: Option<String>| v.filter(|v| !v.is_empty());
    Ok(Params {
        grant_type: present(params.grant_type),
        refresh_token: present(params.refresh_token),
        token: present(params.token),
    })
}

/// `application/x-www-form-urlencoded`; a parameter given twice is malformed (RFC 6749 §3.1).
fn parse_form(body: &[u8]) -> Option<Params> {
    let body = std::str::from_utf8(body).ok()?;
    let mut params = Params::default();
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match &*form_decode(key) {
            "grant_type" => &mut params.grant_type,
            "refresh_token" => &mut params.refresh_token,
            "token" => &mut params.token,
            _ => continue,
        };
        if slot.replace(form_decode(value).into_owned()).is_some() {
            return None;
        }
    }
    Some(params)
}

type EndpointFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

/// The refresh endpoint: `grant_type=refresh_token` (RFC 6749 §6) in, an RFC 6749 §5.1 token
/// response out. Built by [`TokenIssuer::refresh_endpoint`].
///
/// - 200 with the new pair;
/// - 400 `invalid_grant` for an expired, revoked, reused, unknown or malformed token (an
///   access token included);
/// - 400 `invalid_request` for a missing parameter, another content type, a body over 16 KiB
///   or one not read within 10 s; 400 `unsupported_grant_type`;
/// - 405 for methods other than `POST`;
/// - 503 `temporarily_unavailable` with `Retry-After` when the store cannot answer;
/// - 500 `server_error` when the access token cannot be minted.
///
/// Every `invalid_grant` carries the same description: a token's family id is public, so the
/// answer must not tell a revoked session from a forged token. The reason is logged at debug
/// level.
///
/// Client authentication (for confidential clients) is not performed; put it in front.
pub struct RefreshEndpoint<S> {
    issuer: TokenIssuer<S>,
    limits: Limits,
}

/// The RFC 7009 revocation endpoint: `token=<refresh token>` ends its family. It answers 200
/// for unknown tokens too, as RFC 7009 requires (and for access tokens, which expire on their
/// own). Built by [`TokenIssuer::revocation_endpoint`].
pub struct RevocationEndpoint<S> {
    issuer: TokenIssuer<S>,
    limits: Limits,
}

macro_rules! endpoint_common {
    ($name:ident) => {
        impl<S> Clone for $name<S> {
            fn clone(&self) -> Self {
                Self {
                    issuer: self.issuer.clone(),
                    limits: self.limits,
                }
            }
        }

        impl<S> fmt::Debug for $name<S> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("limits", &self.limits)
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
            pub fn read_timeout(mut self, timeout: Duration) -> Self {
                self.limits.read_timeout = timeout;
                self
            }
        }
    };
}

endpoint_common!(RefreshEndpoint);
endpoint_common!(RevocationEndpoint);

impl<S: RefreshStore> TokenIssuer<S> {
    /// The refresh endpoint for this issuer.
    pub fn refresh_endpoint(&self) -> RefreshEndpoint<S> {
        RefreshEndpoint {
            issuer: self.clone(),
            limits: Limits::default(),
        }
    }

    /// The RFC 7009 revocation endpoint for this issuer.
    pub fn revocation_endpoint(&self) -> RevocationEndpoint<S> {
        RevocationEndpoint {
            issuer: self.clone(),
            limits: Limits::default(),
        }
    }
}

impl<S, B> Service<Request<B>> for RefreshEndpoint<S>
where
    S: RefreshStore,
    B: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> EndpointFuture {
        let (issuer, limits) = (self.issuer.clone(), self.limits);
        Box::pin(async move {
            let response = match refresh(&issuer, req, limits).await {
                Ok(response) => response,
                Err(error) => error.into_response(),
            };
            Ok(response)
        })
    }
}

async fn refresh<S, B>(
    issuer: &TokenIssuer<S>,
    req: Request<B>,
    limits: Limits,
) -> Result<Response<Full<Bytes>>, OAuthError>
where
    S: RefreshStore,
    B: Body<Data = Bytes>,
{
    let params = read_params(req, limits).await?;
    match params.grant_type.as_deref() {
        Some("refresh_token") => {}
        Some(_) => {
            return Err(OAuthError::bad_request(
                "unsupported_grant_type",
                "only grant_type=refresh_token is supported",
            ));
        }
        None => {
            return Err(OAuthError::bad_request(
                "invalid_request",
                "grant_type is missing",
            ));
        }
    }
    let Some(token) = params.refresh_token else {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "refresh_token is missing",
        ));
    };
    match issuer.rotate(&token).await {
        Ok(pair) => {
            // Cannot fail (strings and a number); were it to, the rotation has happened, so
            // "try again" would be wrong.
            let body = serde_json::to_vec(&pair).map_err(|_| OAuthError::server_error())?;
            Ok(json_response(StatusCode::OK, Bytes::from(body)))
        }
        // One description for every reason: the family id in a token is public (it is the
        // access tokens' `sid`), so the answer must not tell a revoked session from a forgery.
        Err(RefreshError::InvalidGrant(reason)) => {
            tracing::debug!(reason = reason.description(), "refresh refused");
            Err(OAuthError::bad_request(
                "invalid_grant",
                "refresh token is invalid, expired or revoked",
            ))
        }
        Err(RefreshError::Unavailable(error)) => {
            tracing::warn!(%error, "refresh failed");
            Err(OAuthError::unavailable())
        }
        Err(error) => {
            tracing::error!(%error, "tokens could not be issued");
            Err(OAuthError::server_error())
        }
    }
}

impl<S, B> Service<Request<B>> for RevocationEndpoint<S>
where
    S: RefreshStore,
    B: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> EndpointFuture {
        let (issuer, limits) = (self.issuer.clone(), self.limits);
        Box::pin(async move {
            let outcome = async {
                let params = read_params(req, limits).await?;
                let Some(token) = params.token else {
                    return Err(OAuthError::bad_request(
                        "invalid_request",
                        "token is missing",
                    ));
                };
                issuer.revoke(&token).await.map_err(|error| {
                    tracing::warn!(%error, "revocation failed");
                    OAuthError::unavailable()
                })?;
                Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}")))
            };
            Ok(outcome.await.unwrap_or_else(OAuthError::into_response))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_parameters_are_decoded_and_never_repeated() {
        let p = parse_form(b"grant_type=refresh_token&refresh_token=a%2Eb&x=1").unwrap();
        assert_eq!(p.grant_type.as_deref(), Some("refresh_token"));
        assert_eq!(p.refresh_token.as_deref(), Some("a.b"));
        assert!(parse_form(b"refresh_token=a&refresh_token=a").is_none());
        assert!(parse_form(&[0xff, b'=']).is_none());
        assert!(parse_form(b"").unwrap().refresh_token.is_none());
    }
}
