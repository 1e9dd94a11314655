//! The JWS layer of a token: its three segments, base64url, the JOSE header, and the
//! signature checked with the key the header selects. No claim is read here.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::keys::{Key, KeySet, Selection, parse_alg};
use crate::server::rejection::TokenError;
use crate::server::verify::serde::{Present, Str};

/// Largest decoded signature: RSA-8192.
const MAX_SIGNATURE: usize = 1024;

/// The three segments of a compact JWS, checked to be base64url.
struct Segments<'t> {
    header: &'t str,
    payload: &'t str,
    signature: &'t str,
    /// `header.payload`, the signed bytes.
    signing_input: &'t str,
}

fn split(token: &str) -> Result<Segments<'_>, TokenError> {
    let mut parts = token.splitn(4, '.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    // RFC 7515 allows an empty payload; the claims layer refuses it as not an object.
    if header.is_empty() {
        return Err(TokenError::Malformed);
    }
    if signature.is_empty() {
        return Err(TokenError::Signature);
    }
    if !(canonical_base64url(header) && canonical_base64url(payload)) {
        return Err(TokenError::Malformed);
    }
    if !signature
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(TokenError::Malformed);
    }
    // A signature of impossible length (truncated, say) simply does not verify.
    if !canonical_base64url(signature) {
        return Err(TokenError::Signature);
    }
    let signing_input = &token[..header.len() + 1 + payload.len()];
    Ok(Segments {
        header,
        payload,
        signature,
        signing_input,
    })
}

/// Whether `s` is canonical unpadded base64url: only the url-safe alphabet, no length that
/// leaves a lone 6-bit group, and zero bits past the last whole byte. The payload is checked
/// here too, although the signature layer never decodes it, so that the two layers agree on
/// what a well-formed token is.
fn canonical_base64url(s: &str) -> bool {
    fn value(b: u8) -> Option<u8> {
        match b {
            b'A'..=b'Z' => Some(b - b'A'),
            b'a'..=b'z' => Some(b - b'a' + 26),
            b'0'..=b'9' => Some(b - b'0' + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if !bytes.iter().all(|&b| value(b).is_some()) {
        return false;
    }
    let unused_bits_mask = match bytes.len() % 4 {
        0 => return true,
        1 => return false,
        2 => 0x0f,
        _ => 0x03,
    };
    bytes
        .last()
        .and_then(|&b| value(b))
        .is_some_and(|v| v & unused_bits_mask == 0)
}

/// Decodes base64url into `buf` (no padding, canonical trailing bits).
fn decode_into<'b>(segment: &str, buf: &'b mut [u8]) -> Result<&'b [u8], TokenError> {
    // A segment whose decoded size exceeds the buffer is refused before decoding.
    if segment.len() * 3 / 4 > buf.len() {
        return Err(TokenError::Malformed);
    }
    let n = URL_SAFE_NO_PAD
        .decode_slice(segment, buf)
        .map_err(|_| TokenError::Malformed)?;
    Ok(&buf[..n])
}

pub(super) fn decode_vec(segment: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)
}

/// Parses a JSON object into `T`.
///
/// Derived struct deserializers also accept a JSON array, filling fields by position (so
/// `[1]` would read as `{"exp":1}`); a JOSE header and a claims set must be objects, so
/// anything else is refused first. `Err(None)` means "not an object".
pub(super) fn parse_object<'a, T: Deserialize<'a>>(
    json: &'a [u8],
) -> Result<T, Option<serde_json::error::Category>> {
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(None);
    }
    serde_json::from_slice(json).map_err(|e| Some(e.classify()))
}

/// The JOSE header members this crate reads.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Str<'a>,
    #[serde(default, borrow)]
    typ: Present<Str<'a>>,
    #[serde(default, borrow)]
    kid: Present<Str<'a>>,
    // Refused when present at all: crit (RFC 7515 §4.1.11: we understand no extension),
    // embedded or remote keys (a token must not choose its own key), and RFC 7797's b64.
    #[serde(default)]
    crit: Present<IgnoredAny>,
    #[serde(default)]
    jwk: Present<IgnoredAny>,
    #[serde(default)]
    jku: Present<IgnoredAny>,
    #[serde(default)]
    x5u: Present<IgnoredAny>,
    #[serde(default)]
    x5c: Present<IgnoredAny>,
    #[serde(default)]
    b64: Present<IgnoredAny>,
}

impl Header<'_> {
    /// Whether a parameter this crate refuses is present at all.
    fn has_refused_parameter(&self) -> bool {
        self.crit.0.is_some()
            || self.jwk.0.is_some()
            || self.jku.0.is_some()
            || self.x5u.0.is_some()
            || self.x5c.0.is_some()
            || self.b64.0.is_some()
    }

    /// The keys to try: the one named by `kid`, or those of the token's `alg`.
    fn candidates<'k>(&self, keys: &'k KeySet) -> Result<&'k [Key], TokenError> {
        let kid = self.kid.0.as_ref().map(|k| &*k.0);
        if kid == Some("") {
            return Err(TokenError::Header);
        }
        let alg: Algorithm = parse_alg(&self.alg.0).ok_or(TokenError::Algorithm)?;
        match keys.select(kid, alg) {
            Selection::Keys(keys) => Ok(keys),
            Selection::UnknownKid => Err(TokenError::UnknownKey),
            Selection::WrongAlgorithm => Err(TokenError::Algorithm),
        }
    }
}

/// What the signature layer found: the header's `typ` and the payload segment.
pub(crate) struct Jws<'t> {
    pub(super) typ: Option<Cow<'t, str>>,
    pub(super) payload: &'t str,
}

/// Checks a compact JWS up to and including its signature. No claims are read.
pub(crate) fn verify_jws<'t>(token: &'t str, keys: &KeySet) -> Result<Jws<'t>, TokenError> {
    let segments = split(token)?;
    let mut header_buf = [0u8; 1024];
    let header_json = decode_into(segments.header, &mut header_buf)?;
    let header: Header<'_> = parse_object(header_json).map_err(|_| TokenError::Malformed)?;
    if header.has_refused_parameter() {
        return Err(TokenError::Header);
    }
    let candidates = header.candidates(keys)?;
    let mut sig_buf = [0u8; MAX_SIGNATURE];
    let signature =
        decode_into(segments.signature, &mut sig_buf).map_err(|_| TokenError::Signature)?;
    let message = segments.signing_input.as_bytes();
    if !candidates.iter().any(|key| key.verify(message, signature)) {
        return Err(TokenError::Signature);
    }
    // The header borrows from a stack buffer; keep only what the claims layer needs.
    let typ = header.typ.0.map(|t| Cow::Owned(t.0.into_owned()));
    Ok(Jws {
        typ,
        payload: segments.payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_must_be_canonical() {
        assert!(canonical_base64url(""));
        assert!(canonical_base64url("AA"));
        assert!(canonical_base64url("AAA"));
        assert!(canonical_base64url("Zm9v"));
        assert!(!canonical_base64url("A"));
        assert!(!canonical_base64url("AB"));
        assert!(!canonical_base64url("AAB"));
        assert!(!canonical_base64url("AA=="));
        assert!(!canonical_base64url("A+/A"));
    }
}
