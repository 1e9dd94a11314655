//! Helpers shared by the issuer's endpoints and the server's form layer.

use std::borrow::Cow;

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
