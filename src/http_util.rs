//! HTTP helpers shared by the issuer's endpoints and the server's layers: the
//! `Content-Length` pre-check, the media type of `Content-Type`, `&`-separated `key=value`
//! parameters, and the OAuth error answer (its JSON body, and `Retry-After` on a 503).

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue};

/// The JSON body of an OAuth error (RFC 6749 §5.2, RFC 6750 §3):
/// `{"error":"<code>","error_description":"<description>"}`. Both are fixed texts of this
/// crate, never request data, so nothing needs escaping.
pub(crate) fn oauth_error_body(code: &str, description: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"error":"{code}","error_description":"{description}"}}"#
    ))
}

/// Marks a 503 as worth retrying a second later (`Retry-After: 1`).
pub(crate) fn retry_soon(headers: &mut HeaderMap) {
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
}

/// Whether the request declares (in `Content-Length`) a body longer than `limit`, so that it
/// can be refused before a byte of it is read. A missing or unparsable header declares
/// nothing.
pub(crate) fn declares_more_than(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|len| len > limit as u64)
}

/// Whether `Content-Type` names the media type `expected` (compared case-insensitively;
/// parameters such as `charset` are ignored).
pub(crate) fn has_media_type(headers: &HeaderMap, expected: &str) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let essence = v
            .as_bytes()
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        essence
            .trim_ascii()
            .eq_ignore_ascii_case(expected.as_bytes())
    })
}

/// The `key=value` pairs of a query string or form body, split on `&`, neither decoded (see
/// [`form_decode`]). A pair without `=` has an empty value; an empty pair is `("", "")`.
pub(crate) fn pairs(input: &str) -> impl Iterator<Item = (&str, &str)> {
    input
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// `application/x-www-form-urlencoded` value decoding: `+` is a space, `%XX` a byte. Invalid
/// UTF-8 is kept lossily; it then fails the `b64token` check.
pub(crate) fn form_decode(value: &str) -> Cow<'_, str> {
    if !value.contains(['+', '%']) {
        return Cow::Borrowed(value);
    }
    let spaced = value.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy();
    Cow::Owned(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(name: http::HeaderName, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn only_a_declared_length_over_the_limit_counts() {
        assert!(declares_more_than(&headers(CONTENT_LENGTH, "11"), 10));
        assert!(!declares_more_than(&headers(CONTENT_LENGTH, "10"), 10));
        assert!(!declares_more_than(&headers(CONTENT_LENGTH, "lots"), 10));
        assert!(!declares_more_than(&HeaderMap::new(), 0));
    }

    #[test]
    fn media_types_ignore_case_parameters_and_spaces() {
        let form = "application/x-www-form-urlencoded";
        assert!(has_media_type(
            &headers(
                CONTENT_TYPE,
                " Application/X-WWW-Form-Urlencoded ; charset=utf-8"
            ),
            form
        ));
        assert!(!has_media_type(
            &headers(CONTENT_TYPE, "application/json"),
            form
        ));
        assert!(!has_media_type(&HeaderMap::new(), form));
    }

    #[test]
    fn pairs_are_split_but_not_decoded() {
        let got: Vec<_> = pairs("a=1&b&&c=x%20y=z").collect();
        assert_eq!(got, [("a", "1"), ("b", ""), ("", ""), ("c", "x%20y=z")]);
        assert_eq!(form_decode("x%20y+z"), "x y z");
    }
}
