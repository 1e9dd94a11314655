//! Why a request is refused, and the HTTP or gRPC answer for it.
//!
//! Every refusal is a response, never a service error: RFC 6750 for HTTP, a trailers-only
//! status for gRPC. Descriptions are fixed texts; nothing from the request is echoed.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::http_util::{oauth_error_body, retry_soon};
use crate::server::body::AuthBody;

/// Why a request was refused.
///
/// Each variant maps to one RFC 6750 answer; see [`Rejection::status`] and
/// [`Rejection::error_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No bearer credentials at all (including a request that uses another scheme, such as
    /// `Basic`): 401 with a bare `WWW-Authenticate: Bearer realm="…"`.
    MissingToken,
    /// Malformed or duplicated credentials: 400 `invalid_request`.
    InvalidRequest(RequestError),
    /// A token that is not valid: 401 `invalid_token`.
    InvalidToken(TokenError),
    /// A valid token without a required scope: 403 `insufficient_scope`.
    InsufficientScope,
    /// The deny-list check could not answer, so the token's status is unknown: 503.
    DenyListUnavailable,
    /// A DPoP proof (RFC 9449) that is missing, malformed, or fails a check, with a token
    /// presented as `Authorization: DPoP`: 401 with `WWW-Authenticate: DPoP
    /// error="invalid_dpop_proof"` and the accepted `algs`.
    InvalidDpopProof(DpopProofError),
    /// The layer requires server nonces and the proof has none, or a stale one: 401 with
    /// `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a fresh `DPoP-Nonce` header.
    UseDpopNonce,
    /// The DPoP replay store could not answer, so the proof's `jti` could not be checked: 503.
    DpopUnavailable,
}

/// Why a DPoP proof was refused ([`Rejection::InvalidDpopProof`]): a fixed description.
///
/// [`DpopVerifier::verify`](crate::server::dpop::DpopVerifier::verify) gives the full
/// [`DpopError`](crate::server::dpop::DpopError) to code that verifies proofs itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DpopProofError(pub(crate) &'static str);

impl DpopProofError {
    /// The fixed `error_description` sent for this error.
    pub fn description(self) -> &'static str {
        self.0
    }
}

/// What was wrong with the request's credentials (400 `invalid_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// More than one `Authorization` header, cookie, header or parameter carried a token.
    MultipleCredentials,
    /// A token was found in more than one enabled source.
    MultipleSources,
    /// `Bearer` with nothing, or only whitespace, after it.
    EmptyToken,
    /// Characters outside RFC 6750's `b64token`.
    InvalidCharacters,
    /// A form body (RFC 6750 §2.2) that was too large or could not be read.
    FormBody,
}

/// Why a token is not valid (401 `invalid_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Its `exp` has passed, beyond the leeway. The only variant that a client should answer by
    /// refreshing.
    Expired,
    /// Longer than the configured cap; refused before any decoding.
    TooLarge,
    /// Not a compact JWS: wrong segment count, bad base64url, or a header or payload that is
    /// not a JSON object.
    Malformed,
    /// Its `alg` is `none`, unknown, not the algorithm of the key its `kid` names, or (without
    /// a `kid`) the algorithm of no key.
    Algorithm,
    /// No key matches its `kid` (or the key set is empty).
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// A header parameter this crate refuses: `crit`, `jwk`, `jku`, `x5u`, `x5c`, `b64`, or an
    /// empty `kid`.
    Header,
    /// Its `typ` is missing or not an accepted type (access tokens are `at+jwt`).
    Type,
    /// Its `nbf` or `iat` lies in the future, beyond the leeway.
    NotYetValid,
    /// Its `iss` is missing, of the wrong type, or not accepted.
    Issuer,
    /// Its `aud` is missing, of the wrong type, or does not contain an accepted audience.
    Audience,
    /// A required claim is missing.
    MissingClaim,
    /// A claim has the wrong JSON type or an impossible value.
    Claims,
    /// The deny-list check says the token, or its session, is revoked.
    Revoked,
    /// The token is DPoP-bound (it has a `cnf.jkt`) and was presented as a bearer token.
    DpopBound,
    /// The token was presented as `Authorization: DPoP` but is not DPoP-bound (it has no
    /// `cnf.jkt`).
    NotDpopBound,
}

impl TokenError {
    /// The fixed `error_description` sent for this error.
    pub fn description(self) -> &'static str {
        match self {
            Self::Expired => "token expired",
            Self::TooLarge => "token too large",
            Self::Malformed => "token malformed",
            Self::Algorithm => "token algorithm not accepted",
            Self::UnknownKey => "token signing key not recognised",
            Self::Signature => "token signature invalid",
            Self::Header => "token header not accepted",
            Self::Type => "token type not accepted",
            Self::NotYetValid => "token not yet valid",
            Self::Issuer => "token issuer not accepted",
            Self::Audience => "token audience not accepted",
            Self::MissingClaim => "token lacks a required claim",
            Self::Claims => "token claims invalid",
            Self::Revoked => "token revoked",
            Self::DpopBound => "token is dpop-bound: present it with a dpop proof",
            Self::NotDpopBound => "token is not dpop-bound",
        }
    }
}

impl RequestError {
    /// The fixed `error_description` sent for this error.
    pub fn description(self) -> &'static str {
        match self {
            Self::MultipleCredentials => "more than one bearer credential",
            Self::MultipleSources => "bearer token sent by more than one method",
            Self::EmptyToken => "empty bearer token",
            Self::InvalidCharacters => "malformed bearer credential",
            Self::FormBody => "form body too large or unreadable",
        }
    }
}

impl Rejection {
    /// The HTTP status: 400, 401, 403 or 503.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingToken
            | Self::InvalidToken(_)
            | Self::InvalidDpopProof(_)
            | Self::UseDpopNonce => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::InsufficientScope => StatusCode::FORBIDDEN,
            Self::DenyListUnavailable | Self::DpopUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The RFC 6750 (or RFC 9449) error code, `None` for a request without credentials.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            Self::MissingToken => None,
            Self::InvalidRequest(_) => Some("invalid_request"),
            Self::InvalidToken(_) => Some("invalid_token"),
            Self::InsufficientScope => Some("insufficient_scope"),
            Self::DenyListUnavailable | Self::DpopUnavailable => Some("temporarily_unavailable"),
            Self::InvalidDpopProof(_) => Some("invalid_dpop_proof"),
            Self::UseDpopNonce => Some("use_dpop_nonce"),
        }
    }

    /// The fixed human-readable description.
    pub fn description(&self) -> &'static str {
        match self {
            Self::MissingToken => "bearer token required",
            Self::InvalidRequest(e) => e.description(),
            Self::InvalidToken(e) => e.description(),
            Self::InsufficientScope => "token lacks a required scope",
            Self::DenyListUnavailable => "token status could not be checked",
            Self::InvalidDpopProof(e) => e.description(),
            Self::UseDpopNonce => "dpop proof needs the server's current nonce",
            Self::DpopUnavailable => "dpop replay check unavailable",
        }
    }

    /// The gRPC status code: 16 `UNAUTHENTICATED`, 7 `PERMISSION_DENIED` for scope, 14
    /// `UNAVAILABLE` when revocation or a DPoP replay check could not be done.
    pub fn grpc_code(&self) -> u16 {
        match self {
            Self::InsufficientScope => 7,
            Self::DenyListUnavailable | Self::DpopUnavailable => 14,
            _ => 16,
        }
    }

    /// Whether a client should refresh its access token and retry.
    pub fn is_expired(&self) -> bool {
        matches!(self, Self::InvalidToken(TokenError::Expired))
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for Rejection {}

/// Replaces the body of HTTP rejections: returns the `Content-Type` and the body.
pub(crate) type BodyHandler = Arc<dyn Fn(&Rejection) -> (HeaderValue, Bytes) + Send + Sync>;

/// The nonce to send in a `DPoP-Nonce` header now.
pub(crate) type NonceSource = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What a `WWW-Authenticate: DPoP` challenge needs: set when the layer accepts DPoP.
#[derive(Clone)]
pub(crate) struct DpopChallenge {
    /// `algs="…"`, already quoted.
    pub(crate) algs: Box<str>,
    /// DPoP only: no Bearer challenge at all.
    pub(crate) only: bool,
    pub(crate) nonce: NonceSource,
}

/// What a rejection response needs from the configuration.
#[derive(Clone)]
pub(crate) struct Responder {
    /// `realm="…"`, already quoted.
    realm: Box<str>,
    /// `scope="…"` for 403 answers, already quoted; empty when no scope is required.
    scope: Box<str>,
    body: Option<BodyHandler>,
    dpop: Option<DpopChallenge>,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("realm", &self.realm)
            .field("scope", &self.scope)
            .field("body", &self.body.as_ref().map(|_| "custom"))
            .field("dpop_algs", &self.dpop.as_ref().map(|d| &d.algs))
            .finish()
    }
}

/// gRPC's `grpc-message` is percent-encoded outside printable ASCII, and `%` itself.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

impl Responder {
    pub(crate) fn new(realm: &str) -> Self {
        Self {
            realm: quoted(realm).into(),
            scope: "".into(),
            body: None,
            dpop: None,
        }
    }

    /// DPoP challenges with the accepted `algs`; `only` drops the Bearer challenge.
    #[cfg(feature = "dpop")]
    pub(crate) fn set_dpop(&mut self, algs: &str, only: bool, nonce: NonceSource) {
        self.dpop = Some(DpopChallenge {
            algs: quoted(algs).into(),
            only,
            nonce,
        });
    }

    /// Where DPoP nonces come from, when the layer takes DPoP.
    #[cfg(feature = "dpop")]
    pub(crate) fn nonce_source(&self) -> Option<&NonceSource> {
        self.dpop.as_ref().map(|d| &d.nonce)
    }

    pub(crate) fn set_realm(&mut self, realm: &str) {
        self.realm = quoted(realm).into();
    }

    pub(crate) fn set_scope(&mut self, scope: &str) {
        self.scope = if scope.is_empty() {
            "".into()
        } else {
            quoted(scope).into()
        };
    }

    pub(crate) fn set_body(&mut self, body: BodyHandler) {
        self.body = Some(body);
    }

    /// Builds the answer for `rejection`, as gRPC when the request was gRPC.
    pub(crate) fn respond<B>(&self, rejection: Rejection, grpc: bool) -> Response<AuthBody<B>> {
        let mut response = if grpc {
            let mut response = grpc_response(rejection);
            // A gRPC client cannot read the error from a challenge-less status: a DPoP error
            // carries its challenge too, so a client tells `use_dpop_nonce` from a rejected
            // token.
            if is_dpop_error(rejection) {
                let challenge = self.challenge("DPoP", Some(rejection));
                response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
            }
            response
        } else {
            self.http_response(rejection)
        };
        if rejection == Rejection::UseDpopNonce
            && let Some(nonce) = self.dpop.as_ref().and_then(|d| (d.nonce)())
            && let Ok(nonce) = HeaderValue::try_from(nonce)
        {
            response.headers_mut().insert("dpop-nonce", nonce);
        }
        // A refusal is about one request's credentials: no cache may keep it (RFC 6750 §3 asks
        // the same of responses that carry tokens).
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    fn http_response<B>(&self, rejection: Rejection) -> Response<AuthBody<B>> {
        let (content_type, body) = match &self.body {
            Some(handler) => handler(&rejection),
            None => (
                HeaderValue::from_static("application/json"),
                json_body(rejection),
            ),
        };
        let mut response = Response::new(AuthBody::full(body));
        *response.status_mut() = rejection.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, content_type);
        if matches!(
            rejection,
            Rejection::DenyListUnavailable | Rejection::DpopUnavailable
        ) {
            retry_soon(headers);
            return response;
        }
        // RFC 9449 §7.1: a DPoP error, or a layer that takes DPoP only, gets a DPoP challenge;
        // a layer that takes both answers other errors with both challenges (§7.2).
        let dpop_error = is_dpop_error(rejection);
        let only = self.dpop.as_ref().is_some_and(|d| d.only);
        if dpop_error || only {
            headers.insert(WWW_AUTHENTICATE, self.challenge("DPoP", Some(rejection)));
        } else {
            headers.insert(WWW_AUTHENTICATE, self.challenge("Bearer", Some(rejection)));
            if self.dpop.is_some() {
                headers.append(WWW_AUTHENTICATE, self.challenge("DPoP", None));
            }
        }
        response
    }

    /// A `scheme` challenge, with the error of `rejection` if any; a DPoP one lists `algs`.
    fn challenge(&self, scheme: &str, rejection: Option<Rejection>) -> HeaderValue {
        let mut value = format!("{scheme} realm={}", self.realm);
        if let Some(rejection) = rejection {
            self.error_params(&mut value, rejection);
        }
        if scheme == "DPoP"
            && let Some(dpop) = &self.dpop
        {
            value.push_str(", algs=");
            value.push_str(&dpop.algs);
        }
        // Every part is printable ASCII: fixed texts, or quoted() output.
        HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }

    fn error_params(&self, value: &mut String, rejection: Rejection) {
        if let Some(code) = rejection.error_code() {
            value.push_str(", error=\"");
            value.push_str(code);
            value.push_str("\", error_description=\"");
            value.push_str(rejection.description());
            value.push('"');
        }
        if rejection == Rejection::InsufficientScope && !self.scope.is_empty() {
            value.push_str(", scope=");
            value.push_str(&self.scope);
        }
    }
}

/// Whether `rejection` is about DPoP: it gets a DPoP challenge (RFC 9449 §7.1).
fn is_dpop_error(rejection: Rejection) -> bool {
    matches!(
        rejection,
        Rejection::InvalidDpopProof(_)
            | Rejection::UseDpopNonce
            | Rejection::InvalidToken(TokenError::DpopBound | TokenError::NotDpopBound)
    )
}

fn json_body(rejection: Rejection) -> Bytes {
    let code = rejection.error_code().unwrap_or("unauthorized");
    oauth_error_body(code, rejection.description())
}

fn grpc_response<B>(rejection: Rejection) -> Response<AuthBody<B>> {
    let mut response = Response::new(AuthBody::full(Bytes::new()));
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(rejection.grpc_code()));
    let message = utf8_percent_encode(rejection.description(), GRPC_MESSAGE).to_string();
    if let Ok(message) = HeaderValue::try_from(message) {
        headers.insert("grpc-message", message);
    }
    response
}

/// An RFC 9110 quoted-string of the printable ASCII in `s`.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Whether the request is gRPC (`content-type: application/grpc*`).
pub(crate) fn is_grpc(method: &Method, headers: &HeaderMap) -> bool {
    // What gRPC clients send: every call is a POST with a gRPC content type. A GET that merely
    // claims the content type is answered as HTTP, so no REST route ever answers a refusal
    // with 200.
    method == Method::POST
        && headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(response: Response<AuthBody<http_body_util::Empty<Bytes>>>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn expired_is_told_apart_in_header_and_body() {
        let r = Responder::new("api");
        let res = r.respond(Rejection::InvalidToken(TokenError::Expired), false);
        assert_eq!(res.status(), 401);
        assert_eq!(
            res.headers()[WWW_AUTHENTICATE],
            r#"Bearer realm="api", error="invalid_token", error_description="token expired""#
        );
        assert_eq!(
            body_of(res).await,
            r#"{"error":"invalid_token","error_description":"token expired"}"#
        );
    }

    #[test]
    fn missing_token_has_no_error_code() {
        let res = Responder::new("api").respond::<()>(Rejection::MissingToken, false);
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()[WWW_AUTHENTICATE], r#"Bearer realm="api""#);
    }

    #[test]
    fn scope_and_realm_are_quoted() {
        let mut r = Responder::new(r#"my "realm"\"#);
        r.set_scope("read write");
        let res = r.respond::<()>(Rejection::InsufficientScope, false);
        assert_eq!(res.status(), 403);
        let v = res.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_owned();
        assert!(
            v.starts_with(r#"Bearer realm="my \"realm\"\\", error="insufficient_scope""#),
            "{v}"
        );
        assert!(v.ends_with(r#"scope="read write""#), "{v}");
    }

    #[test]
    fn grpc_answers_trailers_only() {
        let res =
            Responder::new("api").respond::<()>(Rejection::InvalidToken(TokenError::Expired), true);
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "16");
        assert_eq!(res.headers()["grpc-message"], "token expired");
        assert_eq!(res.headers()[CONTENT_TYPE], "application/grpc");
        let res = Responder::new("api").respond::<()>(Rejection::InsufficientScope, true);
        assert_eq!(res.headers()["grpc-status"], "7");
        // A bearer refusal carries no challenge over gRPC.
        assert!(res.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[cfg(feature = "dpop")]
    #[test]
    fn grpc_dpop_refusals_carry_their_challenge_and_nonce() {
        let mut r = Responder::new("api");
        r.set_dpop("ES256", false, Arc::new(|| Some("n-1".into())));
        let res = r.respond::<()>(Rejection::UseDpopNonce, true);
        assert_eq!(res.headers()["grpc-status"], "16");
        let challenge = res.headers()[WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            challenge.starts_with("DPoP ") && challenge.contains(r#"error="use_dpop_nonce""#),
            "{challenge}"
        );
        assert_eq!(res.headers()["dpop-nonce"], "n-1");
        // A token refusal stays challenge-free, as for bearer-only layers.
        let res = r.respond::<()>(Rejection::InvalidToken(TokenError::Expired), true);
        assert!(res.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn revocation_outage_is_503_with_retry_after() {
        let res = Responder::new("api").respond::<()>(Rejection::DenyListUnavailable, false);
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");
    }
}
