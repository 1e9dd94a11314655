//! What counts as "token rejected": a 401 (optionally only with `error="invalid_token"`), a
//! trailers-only gRPC `UNAUTHENTICATED`, or whatever the user's predicate says.

use std::sync::Arc;

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderName, StatusCode};

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// A user's "token rejected" predicate.
pub(crate) type Predicate = Arc<dyn Fn(StatusCode, &HeaderMap) -> bool + Send + Sync>;

/// The rule that tells a rejected token from any other answer.
#[derive(Clone)]
pub(crate) struct RejectionRule {
    pub(crate) require_invalid_token: bool,
    pub(crate) grpc: bool,
    pub(crate) predicate: Option<Predicate>,
}

impl RejectionRule {
    /// Any 401, and gRPC `UNAUTHENTICATED` in the headers.
    pub(crate) fn new() -> Self {
        Self {
            require_invalid_token: false,
            grpc: true,
            predicate: None,
        }
    }

    /// Whether `response` says the token was rejected.
    #[cfg(test)]
    pub(crate) fn matches<B>(&self, response: &http::Response<B>) -> bool {
        self.matches_head(response.status(), response.headers())
    }

    /// Whether an answer with this status and these headers says the token was rejected.
    pub(crate) fn matches_head(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        if self.predicate.as_ref().is_some_and(|p| p(status, headers)) {
            return true;
        }
        if status == StatusCode::UNAUTHORIZED {
            return !self.require_invalid_token
                || headers
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .any(|v| says_error(v.as_bytes(), b"invalid_token"));
        }
        self.grpc && is_grpc_unauthenticated(status, headers)
    }
}

/// A trailers-only gRPC answer (HTTP 200) carries its status in the headers.
fn is_grpc_unauthenticated(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::OK && headers.get(GRPC_STATUS).is_some_and(|s| s == "16")
}

/// A 401, or a trailers-only gRPC `UNAUTHENTICATED`.
pub(crate) fn is_unauthenticated(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::UNAUTHORIZED || is_grpc_unauthenticated(status, headers)
}

/// Whether a `WWW-Authenticate` value carries `error="<code>"` (quoted or not, any case:
/// RFC 7235 auth-params), whatever else it holds. `code` is lower case.
pub(crate) fn says_error(value: &[u8], code: &[u8]) -> bool {
    let value = value.to_ascii_lowercase();
    let mut at = 0;
    while let Some(found) = value[at..].windows(5).position(|w| w == b"error") {
        let start = at + found;
        at = start + 5;
        let boundary = start == 0 || matches!(value[start - 1], b' ' | b',' | b'\t');
        let rest = value[at..].trim_ascii_start();
        let Some(rest) = rest.strip_prefix(b"=") else {
            continue;
        };
        let rest = rest.trim_ascii_start();
        let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
        if boundary
            && rest.starts_with(code)
            && rest
                .get(code.len())
                .is_none_or(|c| matches!(c, b'"' | b',' | b' ' | b'\t'))
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{RefreshFailure, RefreshLayer, Session, refresher_fn};

    fn rule(layer: RefreshLayer) -> RejectionRule {
        layer.config().rejection.clone()
    }

    fn layer() -> RefreshLayer {
        let refresher = refresher_fn(|_| async { Err(RefreshFailure::transient("unused")) });
        RefreshLayer::new(Session::new(), refresher)
    }

    fn response(status: u16, headers: &[(&'static str, &[u8])]) -> http::Response<()> {
        let mut response = http::Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            response
                .headers_mut()
                .append(*name, http::HeaderValue::from_bytes(value).unwrap());
        }
        response
    }

    #[test]
    fn a_401_is_a_rejection_unless_invalid_token_is_required() {
        let any = rule(layer());
        assert!(any.matches(&response(401, &[])));
        assert!(!any.matches(&response(403, &[])));
        assert!(!any.matches(&response(200, &[])));
        let strict = rule(layer().require_invalid_token());
        assert!(!strict.matches(&response(401, &[])));
        for (challenge, rejected) in [
            (&b"Bearer realm=\"api\", error=\"invalid_token\""[..], true),
            (b"Bearer error=invalid_token", true),
            (b"BEARER ERROR = \"INVALID_TOKEN\"", true),
            (
                b"Bearer error=\"invalid_token\", error_description=\"\xe4\xbb\xa4\xe7\x89\x8c\"",
                true,
            ),
            (b"Bearer error=\"invalid_request\"", false),
            (b"Bearer error_description=\"invalid_token\"", false),
            (b"Bearer error=\"invalid_token_type\"", false),
            (b"Bearer realm=\"myerror=invalid_token\"", false),
        ] {
            let challenged = response(401, &[("www-authenticate", challenge)]);
            assert_eq!(strict.matches(&challenged), rejected, "{challenge:?}");
        }
    }

    #[test]
    fn grpc_unauthenticated_in_headers_and_the_predicate() {
        let rule = self::rule(layer());
        assert!(rule.matches(&response(200, &[("grpc-status", b"16")])));
        assert!(!rule.matches(&response(200, &[("grpc-status", b"7")])));
        let deaf = self::rule(layer().ignore_grpc_status());
        assert!(!deaf.matches(&response(200, &[("grpc-status", b"16")])));
        let custom = self::rule(layer().rejected_when(|status, _| status == StatusCode::FORBIDDEN));
        assert!(custom.matches(&response(403, &[])));
    }
}
