//! The latest `DPoP-Nonce` each server sent, by origin (RFC 9449 §8 and §9).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use http::{HeaderMap, Uri};

/// The response header a server hands its nonce out in.
pub(crate) const DPOP_NONCE: &str = "dpop-nonce";

/// How many origins are remembered; past it, the memory starts over (a client talks to a
/// handful of servers; the bound only keeps a client that follows arbitrary URLs small).
const MAX_ORIGINS: usize = 256;

/// The longest nonce kept, in bytes: servers' nonces are tens of bytes.
const MAX_NONCE: usize = 1024;

/// The latest nonce of each origin (`scheme://authority`, lower case).
#[derive(Default)]
pub(crate) struct Nonces {
    latest: RwLock<HashMap<Box<str>, Arc<str>>>,
}

impl Nonces {
    /// The latest nonce `origin` sent.
    pub(crate) fn get(&self, origin: &str) -> Option<Arc<str>> {
        let latest = self.latest.read().unwrap_or_else(PoisonError::into_inner);
        latest.get(origin).cloned()
    }

    /// Remembers the `DPoP-Nonce` in `headers` as `origin`'s latest; whether one was there
    /// and well-formed (RFC 9449 §8.1: `1*NQCHAR`). A malformed one is ignored.
    pub(crate) fn remember(&self, origin: &str, headers: &HeaderMap) -> bool {
        let Some(nonce) = nonce_in(headers) else {
            return false;
        };
        if self.get(origin).as_deref() == Some(nonce) {
            return true;
        }
        let mut latest = self.latest.write().unwrap_or_else(PoisonError::into_inner);
        if latest.len() >= MAX_ORIGINS && !latest.contains_key(origin) {
            latest.clear();
        }
        latest.insert(origin.into(), nonce.into());
        true
    }
}

/// The well-formed `DPoP-Nonce` of an answer (RFC 9449 §8.1: `1*NQCHAR`), at most 1 KiB.
pub(crate) fn nonce_in(headers: &HeaderMap) -> Option<&str> {
    let nonce = headers.get(DPOP_NONCE)?.as_bytes();
    if nonce.is_empty() || nonce.len() > MAX_NONCE || !nonce.iter().all(|&b| is_nqchar(b)) {
        return None;
    }
    // Printable ASCII: valid UTF-8.
    std::str::from_utf8(nonce).ok()
}

/// RFC 9449 §8.1: `NQCHAR = %x21 / %x23-5B / %x5D-7E`.
fn is_nqchar(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)
}

/// `scheme://host[:port]` of an absolute URI, in lower case, without user information;
/// `None` for a relative one.
pub(crate) fn origin(uri: &Uri) -> Option<String> {
    let mut origin = format!("{}://{}", uri.scheme_str()?, host_port(uri)?);
    origin.make_ascii_lowercase();
    Some(origin)
}

/// The host and port of an absolute URI: its authority without user information, which a
/// URI sent over HTTP must not carry (RFC 9110 §4.2.4) and a proof's `htu` never does.
pub(crate) fn host_port(uri: &Uri) -> Option<&str> {
    let authority = uri.authority()?.as_str();
    Some(
        authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_nonce(nonce: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(DPOP_NONCE, HeaderValue::from_bytes(nonce).unwrap());
        headers
    }

    #[test]
    fn the_latest_wellformed_nonce_is_kept_per_origin() {
        let nonces = Nonces::default();
        assert!(nonces.remember("https://a.test", &with_nonce(b"one")));
        assert!(nonces.remember("https://a.test", &with_nonce(b"two")));
        assert!(nonces.remember("https://b.test", &with_nonce(b"eyJ7S_zG.eyJH0-Z.HX4w-7v")));
        assert_eq!(nonces.get("https://a.test").as_deref(), Some("two"));
        assert_eq!(
            nonces.get("https://b.test").as_deref(),
            Some("eyJ7S_zG.eyJH0-Z.HX4w-7v")
        );
        // Quotes, backslashes and spaces are not NQCHAR; an absent header changes nothing.
        for bad in [&b"a\"b"[..], b"a\\b", b"a b", b""] {
            assert!(
                !nonces.remember("https://a.test", &with_nonce(bad)),
                "{bad:?}"
            );
        }
        assert!(!nonces.remember("https://a.test", &with_nonce(&[b'x'; MAX_NONCE + 1])));
        assert!(!nonces.remember("https://a.test", &HeaderMap::new()));
        assert_eq!(nonces.get("https://a.test").as_deref(), Some("two"));
        assert_eq!(nonces.get("https://c.test"), None);
    }

    #[test]
    fn the_memory_stays_bounded() {
        let nonces = Nonces::default();
        for i in 0..MAX_ORIGINS * 3 {
            nonces.remember(&format!("https://{i}.test"), &with_nonce(b"n"));
        }
        assert!(nonces.latest.read().unwrap().len() <= MAX_ORIGINS);
    }

    #[test]
    fn origins_are_lower_case_absolute_and_without_user_information() {
        let uri = Uri::from_static("HTTPS://API.Example.COM:8443/a?b");
        assert_eq!(origin(&uri).unwrap(), "https://api.example.com:8443");
        let uri = Uri::from_static("https://user:p%40ss@api.example.com/a");
        assert_eq!(origin(&uri).unwrap(), "https://api.example.com");
        assert_eq!(origin(&Uri::from_static("/a")), None);
    }
}
