//! Finding the bearer token in a request (RFC 6750 §2).
//!
//! The default source is `Authorization: Bearer <b64token>`, the scheme matched
//! case-insensitively. Cookies, a custom header, a scheme-less `Authorization` value (legacy
//! clients), the query string and form bodies are opt-in. A token found twice, in one source
//! or across sources, is a 400 `invalid_request`; the size cap applies before any decoding.
//! A layer that accepts DPoP (RFC 9449) reads `Authorization: DPoP <token>` the same way.

use std::borrow::Cow;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderName, HeaderValue, Request};

use crate::server::form::FormAccessToken;
use crate::server::rejection::{Rejection, RequestError, TokenError};

/// The enabled token sources.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sources {
    pub(crate) raw_authorization: bool,
    pub(crate) cookie: Option<Box<str>>,
    pub(crate) header: Option<HeaderName>,
    pub(crate) query: Option<Box<str>>,
    pub(crate) form: bool,
    /// Also read `Authorization: DPoP <token>` (its proof is checked after the token).
    pub(crate) dpop: bool,
}

impl Sources {
    /// The request's one bearer token, `None` when it carries none.
    pub(crate) fn extract<'r, B>(
        &self,
        req: &'r Request<B>,
        max_len: usize,
    ) -> Result<Option<Cow<'r, str>>, Rejection> {
        let mut found = self.authorization(req, max_len)?.map(Cow::Borrowed);
        if let Some(name) = &self.cookie {
            let token = cookie(req, name, max_len)?.map(Cow::Borrowed);
            found = merge(found, token)?;
        }
        if let Some(name) = &self.header {
            let token = header(req, name, max_len)?.map(Cow::Borrowed);
            found = merge(found, token)?;
        }
        if let Some(name) = &self.query {
            found = merge(found, query(req, name, max_len)?)?;
        }
        if self.form {
            match req.extensions().get::<FormAccessToken>() {
                Some(FormAccessToken::Token(token)) => {
                    found = merge(
                        found,
                        Some(Cow::Borrowed(check(token.as_bytes(), max_len)?)),
                    )?;
                }
                // A form that could not be read is only fatal when no other source had a token.
                Some(FormAccessToken::Invalid(RequestError::FormBody)) if found.is_some() => {}
                Some(FormAccessToken::Invalid(error)) => {
                    return Err(Rejection::InvalidRequest(*error));
                }
                None => {}
            }
        }
        Ok(found)
    }

    /// The bearer token of a request whose only credential source is one `Authorization:
    /// Bearer` header, capped but not checked against the `b64token` grammar: for a cache
    /// lookup, which can only match a token that passed [`extract`](Self::extract) before.
    /// `None` whenever [`extract`](Self::extract) might read the request differently.
    pub(crate) fn sole_bearer<'r, B>(
        &self,
        req: &'r Request<B>,
        max_len: usize,
    ) -> Option<&'r [u8]> {
        if self.cookie.is_some() || self.header.is_some() || self.query.is_some() || self.form {
            return None;
        }
        let value = single(req.headers().get_all(AUTHORIZATION).iter()).ok()??;
        let bytes = value.as_bytes();
        // The usual form, `Bearer <token>` with one space, in one comparison.
        if let Some((head, rest)) = bytes.split_first_chunk::<8>()
            && (u64::from_le_bytes(*head) | BEARER_CASE) & SEVEN_BYTES == BEARER_SPACE
            && head[7] != b' '
            && rest.len() < max_len
        {
            return Some(&bytes[7..]);
        }
        let space = bytes.iter().position(|&b| b == b' ')?;
        if !bytes[..space].eq_ignore_ascii_case(b"bearer") {
            return None;
        }
        let rest = &bytes[space..];
        let token = &rest[rest.iter().take_while(|&&b| b == b' ').count()..];
        (!token.is_empty() && token.len() <= max_len).then_some(token)
    }

    fn authorization<'r, B>(
        &self,
        req: &'r Request<B>,
        max_len: usize,
    ) -> Result<Option<&'r str>, Rejection> {
        let Some(value) = single(req.headers().get_all(AUTHORIZATION).iter())? else {
            return Ok(None);
        };
        let bytes = value.as_bytes();
        match bytes.iter().position(|&b| b == b' ') {
            Some(space)
                if bytes[..space].eq_ignore_ascii_case(b"bearer")
                    || (self.dpop && bytes[..space].eq_ignore_ascii_case(b"dpop")) =>
            {
                let rest = &bytes[space..];
                let token = &rest[rest.iter().take_while(|&&b| b == b' ').count()..];
                check(token, max_len).map(Some)
            }
            // Another scheme, such as Basic: no bearer credentials.
            Some(_) => Ok(None),
            None if bytes.eq_ignore_ascii_case(b"bearer") => {
                Err(Rejection::InvalidRequest(RequestError::EmptyToken))
            }
            None if self.raw_authorization => check(bytes, max_len).map(Some),
            None => Ok(None),
        }
    }
}

/// Whether the request's `Authorization` header uses the `DPoP` scheme (RFC 9449 §7.1).
#[cfg(feature = "dpop")]
pub(crate) fn is_dpop<B>(req: &Request<B>) -> bool {
    req.headers().get(AUTHORIZATION).is_some_and(|value| {
        let bytes = value.as_bytes();
        bytes.len() > 5 && bytes[..5].eq_ignore_ascii_case(b"dpop ")
    })
}

fn merge<'r>(
    found: Option<Cow<'r, str>>,
    next: Option<Cow<'r, str>>,
) -> Result<Option<Cow<'r, str>>, Rejection> {
    match (found, next) {
        (Some(_), Some(_)) => Err(Rejection::InvalidRequest(RequestError::MultipleSources)),
        (a, b) => Ok(a.or(b)),
    }
}

/// At most one value; two is a 400.
/// `bearer ` in its first seven bytes, lower-cased by [`BEARER_CASE`] and cut to seven bytes
/// by [`SEVEN_BYTES`].
const BEARER_SPACE: u64 = u64::from_le_bytes(*b"bearer \0");
/// Lower-cases the six letters of `bearer` (ASCII letters differ from their capitals in this
/// bit alone) and leaves the space as it is.
const BEARER_CASE: u64 = u64::from_le_bytes([0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0, 0]);
const SEVEN_BYTES: u64 = u64::from_le_bytes([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);

fn single<'a>(
    mut values: impl Iterator<Item = &'a HeaderValue>,
) -> Result<Option<&'a HeaderValue>, Rejection> {
    let first = values.next();
    if values.next().is_some() {
        return Err(Rejection::InvalidRequest(RequestError::MultipleCredentials));
    }
    Ok(first)
}

/// Applies the size cap, then RFC 6750's `b64token` grammar:
/// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn check(token: &[u8], max_len: usize) -> Result<&str, Rejection> {
    if token.len() > max_len {
        return Err(Rejection::InvalidToken(TokenError::TooLarge));
    }
    if token.iter().all(|&b| b == b' ' || b == b'\t') {
        return Err(Rejection::InvalidRequest(RequestError::EmptyToken));
    }
    let body = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    // No early exit and no branch per byte: this runs on every request.
    let valid = body > 0
        && token[..body]
            .iter()
            .fold(true, |valid, &b| valid & is_b64token_char(b));
    if !valid {
        return Err(Rejection::InvalidRequest(RequestError::InvalidCharacters));
    }
    // Only ASCII passed the check above.
    std::str::from_utf8(token)
        .map_err(|_| Rejection::InvalidRequest(RequestError::InvalidCharacters))
}

/// `ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/"`, in branch-free operations.
#[inline]
fn is_b64token_char(b: u8) -> bool {
    // `b | 0x20` folds upper case onto lower case; nothing else lands on `a..=z`.
    ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

fn cookie<'r, B>(
    req: &'r Request<B>,
    name: &str,
    max_len: usize,
) -> Result<Option<&'r str>, Rejection> {
    let mut found = None;
    for header in req.headers().get_all(COOKIE) {
        for pair in header.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if &pair[..eq] != name.as_bytes() {
                continue;
            }
            if found.is_some() {
                return Err(Rejection::InvalidRequest(RequestError::MultipleCredentials));
            }
            let value = &pair[eq + 1..];
            // RFC 6265: a cookie value may be wrapped in double quotes.
            let value = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            found = Some(check(value, max_len)?);
        }
    }
    Ok(found)
}

fn header<'r, B>(
    req: &'r Request<B>,
    name: &HeaderName,
    max_len: usize,
) -> Result<Option<&'r str>, Rejection> {
    let Some(value) = single(req.headers().get_all(name).iter())? else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    // The value is the raw token, optionally with a `Bearer ` prefix.
    let token = match bytes.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case(b"bearer ") => bytes[7..].trim_ascii_start(),
        _ => bytes,
    };
    check(token, max_len).map(Some)
}

fn query<'r, B>(
    req: &'r Request<B>,
    name: &str,
    max_len: usize,
) -> Result<Option<Cow<'r, str>>, Rejection> {
    let Some(query) = req.uri().query() else {
        return Ok(None);
    };
    let mut found = None;
    for (key, value) in crate::http_util::pairs(query) {
        if key != name {
            continue;
        }
        if found.is_some() {
            return Err(Rejection::InvalidRequest(RequestError::MultipleCredentials));
        }
        // Bound the work before decoding: a percent-encoded token is at most 3× its size.
        if value.len() > max_len.saturating_mul(3) {
            return Err(Rejection::InvalidToken(TokenError::TooLarge));
        }
        let decoded = crate::http_util::form_decode(value);
        check(decoded.as_bytes(), max_len)?;
        found = Some(decoded);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_b64token_class_is_exactly_the_grammar() {
        for b in 0..=u8::MAX {
            let grammar =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_b64token_char(b), grammar, "byte {b:#04x}");
        }
    }

    const MAX: usize = 64;

    fn req(headers: &[(&str, &str)], uri: &str) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn all() -> Sources {
        Sources {
            raw_authorization: true,
            cookie: Some("at".into()),
            header: Some(HeaderName::from_static("x-token")),
            query: Some("access_token".into()),
            form: true,
            dpop: false,
        }
    }

    fn bearer(value: &str) -> Result<Option<String>, Rejection> {
        let r = req(&[("authorization", value)], "/");
        Sources::default()
            .extract(&r, MAX)
            .map(|t| t.map(Cow::into_owned))
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "Bearer   abc"] {
            assert_eq!(bearer(v).unwrap().as_deref(), Some("abc"), "{v}");
        }
        assert_eq!(
            bearer("Bearer a.b-c_d~e+f/g==").unwrap().as_deref(),
            Some("a.b-c_d~e+f/g==")
        );
    }

    #[test]
    fn the_cache_lookup_reads_a_bearer_header_as_extraction_does() {
        let values = [
            "Bearer abc",
            "bearer abc",
            "BEARER abc",
            "bEaReR abc",
            "Bearer   abc",
            "Bearer  a",
            "Bearer a",
            "Bearer",
            "Bearer ",
            "Bearer  ",
            "Bearer\tabc",
            "Bearerx abc",
            "Bear abc",
            "Basic abcdefgh",
            "Bearer a b",
            "Bearer @bc",
            "Bearer ab=",
            "abc.def.ghi",
        ];
        let long = |len: usize| format!("Bearer {}", "t".repeat(len));
        let values =
            values
                .into_iter()
                .map(String::from)
                .chain([long(MAX - 1), long(MAX), long(MAX + 1)]);
        for value in values {
            let r = req(&[("authorization", &value)], "/");
            let looked_up = Sources::default().sole_bearer(&r, MAX).map(<[u8]>::to_vec);
            // What extraction reads, if the grammar admits it; the lookup skips only that check.
            let extracted = bearer(&value).ok().flatten().map(String::into_bytes);
            if let Some(token) = &extracted {
                assert_eq!(looked_up.as_ref(), Some(token), "{value:?}");
            }
            // And it never finds a token where extraction finds none, or a different one.
            if let Some(token) = &looked_up {
                let grammar = token.iter().all(|&b| is_b64token_char(b) || b == b'=');
                assert!(grammar <= extracted.is_some(), "{value:?}");
                let scheme = value.split_once(' ').map(|(scheme, _)| scheme);
                assert!(
                    scheme.is_some_and(|s| s.eq_ignore_ascii_case("bearer")),
                    "{value:?}"
                );
                assert!(
                    value.ends_with(std::str::from_utf8(token).unwrap()),
                    "{value:?}"
                );
                assert_ne!(token.first(), Some(&b' '), "{value:?}");
            }
        }
    }

    #[test]
    fn malformed_bearer_values_are_invalid_request() {
        let empty = Rejection::InvalidRequest(RequestError::EmptyToken);
        let chars = Rejection::InvalidRequest(RequestError::InvalidCharacters);
        assert_eq!(bearer("Bearer"), Err(empty));
        assert_eq!(bearer("Bearer "), Err(empty));
        assert_eq!(bearer("Bearer \t "), Err(empty));
        assert_eq!(bearer("Bearer a b"), Err(chars));
        assert_eq!(bearer("Bearer a,b"), Err(chars));
        assert_eq!(bearer("Bearer =abc"), Err(chars));
        assert_eq!(bearer("Bearer a=b"), Err(chars));
        assert_eq!(bearer("Bearer \"abc\""), Err(chars));
    }

    #[test]
    fn the_dpop_scheme_is_read_only_when_enabled() {
        let r = req(&[("authorization", "DPoP tok")], "/");
        assert_eq!(Sources::default().extract(&r, MAX), Ok(None));
        let dpop = Sources {
            dpop: true,
            ..Sources::default()
        };
        assert_eq!(dpop.extract(&r, MAX).unwrap().as_deref(), Some("tok"));
        // Never on the hot path, which is for bearer tokens only.
        assert_eq!(dpop.sole_bearer(&r, MAX), None);
        #[cfg(feature = "dpop")]
        {
            assert!(is_dpop(&r));
            assert!(is_dpop(&req(&[("authorization", "dpop tok")], "/")));
            assert!(!is_dpop(&req(&[("authorization", "Bearer tok")], "/")));
            assert!(!is_dpop(&req(&[("authorization", "DPoP")], "/")));
        }
    }

    #[test]
    fn other_schemes_are_no_credentials() {
        assert_eq!(bearer("Basic dXNlcjpwYXNz"), Ok(None));
        // A scheme-less value is ignored unless raw tokens are enabled.
        assert_eq!(bearer("abc.def.ghi"), Ok(None));
        let r = req(&[("authorization", "abc.def.ghi")], "/");
        let raw = Sources {
            raw_authorization: true,
            ..Sources::default()
        };
        assert_eq!(
            raw.extract(&r, MAX).unwrap().as_deref(),
            Some("abc.def.ghi")
        );
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let r = req(
            &[("authorization", "Bearer a"), ("authorization", "Bearer a")],
            "/",
        );
        assert_eq!(
            Sources::default().extract(&r, MAX),
            Err(Rejection::InvalidRequest(RequestError::MultipleCredentials))
        );
    }

    #[test]
    fn the_cap_applies_before_anything_else() {
        let long = format!("Bearer {}", "a".repeat(MAX + 1));
        assert_eq!(
            bearer(&long),
            Err(Rejection::InvalidToken(TokenError::TooLarge))
        );
        let exact = format!("Bearer {}", "a".repeat(MAX));
        assert!(bearer(&exact).unwrap().is_some());
    }

    #[test]
    fn each_opt_in_source_works() {
        let s = all();
        let cases = [
            req(&[("cookie", "x=1; at=tok; y=2")], "/"),
            req(&[("cookie", "at=\"tok\"")], "/"),
            req(&[("x-token", "tok")], "/"),
            req(&[("x-token", "Bearer tok")], "/"),
            req(&[], "/p?a=1&access_token=tok"),
            req(&[("authorization", "tok")], "/"),
        ];
        for r in cases {
            assert_eq!(s.extract(&r, MAX).unwrap().as_deref(), Some("tok"), "{r:?}");
        }
        let mut r = req(&[], "/");
        r.extensions_mut()
            .insert(FormAccessToken::Token("tok".into()));
        assert_eq!(s.extract(&r, MAX).unwrap().as_deref(), Some("tok"));
    }

    #[test]
    fn disabled_sources_are_ignored() {
        let s = Sources::default();
        for r in [
            req(&[("cookie", "at=tok")], "/"),
            req(&[("x-token", "tok")], "/"),
            req(&[], "/?access_token=tok"),
        ] {
            assert_eq!(s.extract(&r, MAX), Ok(None));
        }
    }

    #[test]
    fn a_token_in_two_places_is_refused() {
        let s = all();
        let two = Rejection::InvalidRequest(RequestError::MultipleSources);
        let r = req(
            &[("authorization", "Bearer tok"), ("cookie", "at=tok")],
            "/",
        );
        assert_eq!(s.extract(&r, MAX), Err(two));
        let r = req(&[("authorization", "Bearer tok")], "/?access_token=tok");
        assert_eq!(s.extract(&r, MAX), Err(two));
        let r = req(&[("cookie", "at=a"), ("cookie", "at=b")], "/");
        assert_eq!(
            s.extract(&r, MAX),
            Err(Rejection::InvalidRequest(RequestError::MultipleCredentials))
        );
        let r = req(&[], "/?access_token=a&access_token=b");
        assert_eq!(
            s.extract(&r, MAX),
            Err(Rejection::InvalidRequest(RequestError::MultipleCredentials))
        );
    }

    #[test]
    fn query_values_are_form_decoded() {
        let s = all();
        let r = req(&[], "/?access_token=a%2Bb%2F");
        assert_eq!(s.extract(&r, MAX).unwrap().as_deref(), Some("a+b/"));
        let r = req(&[], "/?access_token=a+b");
        assert_eq!(
            s.extract(&r, MAX),
            Err(Rejection::InvalidRequest(RequestError::InvalidCharacters))
        );
        let r = req(&[], "/?access_token=%FF%FE");
        assert_eq!(
            s.extract(&r, MAX),
            Err(Rejection::InvalidRequest(RequestError::InvalidCharacters))
        );
    }
}
