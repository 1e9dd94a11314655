//! [`Head`]: what a replay needs of a request's head, in one allocation.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Extensions, Method, Request, Uri, Version};

/// A request's head as a replay needs it: the method, version and extensions as they are, the
/// URI and the headers copied into one buffer.
///
/// A cloned `HeaderMap` costs two allocations, plus one for every header value built at run
/// time (a clone turns its bytes into shared ones); a cloned `Uri` costs two atomic reference
/// counts, taken and given back. The buffer costs one allocation and no atomic operation.
/// Replays are rare: they parse the URI and the headers again.
pub(crate) struct Head {
    method: Method,
    version: Version,
    extensions: Extensions,
    /// The scheme, the authority and the path with its query (each a presence byte, a
    /// length as a native `usize`, the bytes), then per header a sensitivity byte, the name
    /// and the value (each a length, the bytes).
    bytes: Vec<u8>,
}

const WORD: usize = size_of::<usize>();

impl Head {
    /// Copies the head of `request`.
    pub(crate) fn of<B>(request: &Request<B>) -> Self {
        Self {
            method: request.method().clone(),
            version: request.version(),
            extensions: request.extensions().clone(),
            bytes: encode(request.uri(), request.headers()),
        }
    }

    /// The request again, with `body`.
    ///
    /// `None` only if what was copied does not parse again: a header value made with
    /// `HeaderValue::from_maybe_shared_unchecked` from bytes a header may not carry.
    pub(crate) fn request<B>(&self, body: B) -> Option<Request<B>> {
        let (uri, headers) = decode(&self.bytes)?;
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = headers;
        *request.extensions_mut() = self.extensions.clone();
        Some(request)
    }
}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may hold secrets, and so may a query.
        f.debug_struct("Head")
            .field("method", &self.method)
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

fn encode(uri: &Uri, headers: &HeaderMap) -> Vec<u8> {
    let parts = [
        uri.scheme_str(),
        uri.authority().map(Authority::as_str),
        uri.path_and_query().map(PathAndQuery::as_str),
    ];
    let size = parts.iter().flatten().map(|part| part.len()).sum::<usize>()
        + 3 * (1 + WORD)
        + headers
            .iter()
            .map(|(name, value)| 1 + 2 * WORD + name.as_str().len() + value.len())
            .sum::<usize>();
    let mut buf = Vec::with_capacity(size);
    for part in parts {
        buf.push(u8::from(part.is_some()));
        put(&mut buf, part.unwrap_or_default().as_bytes());
    }
    for (name, value) in headers {
        buf.push(u8::from(value.is_sensitive()));
        put(&mut buf, name.as_str().as_bytes());
        put(&mut buf, value.as_bytes());
    }
    buf
}

fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&bytes.len().to_ne_bytes());
    buf.extend_from_slice(bytes);
}

/// The URI and the headers `encode` wrote, in their order; the parts share one copy of the
/// buffer.
fn decode(buf: &[u8]) -> Option<(Uri, HeaderMap)> {
    let shared = Bytes::copy_from_slice(buf);
    let mut reader = Reader { buf, at: 0 };
    let mut uri = http::uri::Parts::default();
    if reader.byte()? == 1 {
        uri.scheme = Some(Scheme::try_from(&buf[reader.bytes()?]).ok()?);
    } else {
        reader.bytes()?;
    }
    if reader.byte()? == 1 {
        uri.authority = Some(Authority::from_maybe_shared(shared.slice(reader.bytes()?)).ok()?);
    } else {
        reader.bytes()?;
    }
    if reader.byte()? == 1 {
        let path = shared.slice(reader.bytes()?);
        uri.path_and_query = Some(PathAndQuery::from_maybe_shared(path).ok()?);
    } else {
        reader.bytes()?;
    }
    let uri = Uri::from_parts(uri).ok()?;
    let mut headers = HeaderMap::new();
    while reader.at < buf.len() {
        let sensitive = reader.byte()? == 1;
        let name = HeaderName::from_bytes(&buf[reader.bytes()?]).ok()?;
        let mut value = HeaderValue::from_maybe_shared(shared.slice(reader.bytes()?)).ok()?;
        value.set_sensitive(sensitive);
        headers.append(name, value);
    }
    Some((uri, headers))
}

/// Reads what `encode` wrote, and `None` past the end rather than a panic.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.buf.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    /// The range of the next length-prefixed bytes.
    fn bytes(&mut self) -> Option<Range<usize>> {
        let len = self.buf.get(self.at..self.at.checked_add(WORD)?)?;
        let len = usize::from_ne_bytes(len.try_into().ok()?);
        let start = self.at + WORD;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())?;
        self.at = end;
        Some(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_comes_back_whole() {
        let mut request = Request::post("http://api.test/a?b=c")
            .version(Version::HTTP_2)
            .header("accept", "application/json")
            .header("x-trace", "1")
            .header("accept", "text/plain")
            .header("x-empty", "")
            .extension(7u8)
            .body(())
            .unwrap();
        let mut secret = HeaderValue::from_static("s3cret");
        secret.set_sensitive(true);
        request.headers_mut().insert("x-api-key", secret);
        let head = Head::of(&request);
        let again = head.request("body").unwrap();
        assert_eq!(again.method(), request.method());
        assert_eq!(again.uri(), request.uri());
        assert_eq!(again.version(), Version::HTTP_2);
        assert_eq!(again.headers(), request.headers());
        let accept: Vec<_> = again.headers().get_all("accept").iter().collect();
        assert_eq!(accept, ["application/json", "text/plain"]);
        assert!(again.headers()["x-api-key"].is_sensitive());
        assert!(!again.headers()["x-trace"].is_sensitive());
        assert_eq!(again.extensions().get::<u8>(), Some(&7));
        assert_eq!(*again.body(), "body");
        // A second replay gets the same head.
        assert_eq!(head.request(()).unwrap().headers(), request.headers());
    }

    #[test]
    fn every_form_of_uri_comes_back() {
        for uri in [
            "http://api.test/a?b=c",
            "https://user@api.test:8443/",
            "http://api.test",
            "/only/a/path?q",
            "*",
            "api.test:443",
            "custom+scheme://host/p",
        ] {
            let request = Request::get(uri).body(()).unwrap();
            let again = Head::of(&request).request(()).unwrap();
            assert_eq!(again.uri(), request.uri(), "{uri}");
            assert_eq!(again.uri().to_string(), request.uri().to_string(), "{uri}");
        }
    }

    #[test]
    fn a_cut_buffer_gives_none_not_a_panic() {
        let request = Request::get("http://api.test/a")
            .header("accept", "application/json")
            .body(())
            .unwrap();
        let head = Head::of(&request);
        // Cut anywhere, it decodes to nothing or to the URI alone, never to a wrong header.
        for len in 0..head.bytes.len() {
            let cut = decode(&head.bytes[..len]);
            assert!(cut.is_none_or(|(_, headers)| headers.is_empty()), "{len}");
        }
    }
}
