//! The `htu` comparison of RFC 9449 §4.3: both URIs normalised per RFC 3986 §6.2.2 (syntax)
//! and §6.2.3 (scheme), query and fragment left out.

/// Normalises an absolute `http` or `https` URI, dropping its query and fragment:
///
/// - scheme and host in lower case; the scheme's default port, or an empty port, left out;
/// - percent-encodings with upper-case hex digits, and those of unreserved characters decoded;
/// - dot segments removed; an empty path becomes `/`.
///
/// `None` for anything else: other schemes, user information, bad percent-encodings, bytes
/// outside printable ASCII. Such an `htu` never matches.
pub(crate) fn normalize(uri: &str) -> Option<String> {
    let uri = uri.split(['#', '?']).next().unwrap_or_default();
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    if authority.contains('@') || authority.is_empty() {
        return None;
    }
    let (host, port) = split_port(authority)?;
    let mut out = String::with_capacity(uri.len() + 1);
    out.push_str(&scheme);
    out.push_str("://");
    percent_normalized(host, &mut out, true)?;
    // An empty port is the default one (RFC 3986 §6.2.3); leading zeros are not significant.
    if let Ok(port) = port.parse::<u32>()
        && port != default_port
    {
        out.push(':');
        out.push_str(&port.to_string());
    }
    let mut decoded = String::with_capacity(path.len());
    percent_normalized(path, &mut decoded, false)?;
    out.push_str(&remove_dot_segments(&decoded));
    Some(out)
}

/// Splits `host[:port]` (the host may be an IPv6 literal in brackets); the port must be
/// digits, and may be empty.
fn split_port(authority: &str) -> Option<(&str, &str)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, ""),
            _ => (host, rest.strip_prefix(':')?),
        }
    } else {
        authority.rsplit_once(':').unwrap_or((authority, ""))
    };
    let valid_port = port.bytes().all(|b| b.is_ascii_digit()) && port.len() <= 5;
    (valid_port && !host.is_empty()).then_some((host, port))
}

/// Copies `input` to `out` with percent-encodings normalised (RFC 3986 §6.2.2.1 and
/// §6.2.2.2); `lower` also lower-cases the rest (a host). Refuses bytes outside printable
/// ASCII and `%` not followed by two hex digits.
fn percent_normalized(input: &str, out: &mut String, lower: bool) -> Option<()> {
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(0x21..0x7f).contains(&b) {
            return None;
        }
        if b != b'%' {
            out.push(if lower { b.to_ascii_lowercase() } else { b } as char);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3)?;
        let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
            out.push(if lower {
                value.to_ascii_lowercase()
            } else {
                value
            } as char);
        } else {
            out.push('%');
            out.push_str(&format!("{value:02X}"));
        }
        i += 3;
    }
    Some(())
}

/// RFC 3986 §5.2.4, on an absolute path (or an empty one, which becomes `/`).
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path.split('/').skip(1).peekable();
    let mut trailing_slash = path.is_empty();
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "." => trailing_slash |= last,
            ".." => {
                segments.pop();
                trailing_slash |= last;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_uris_normalise_alike() {
        let same = [
            (
                "https://server.example.com/token",
                "https://server.example.com/token",
            ),
            (
                "HTTPS://Server.Example.COM/token",
                "https://server.example.com/token",
            ),
            (
                "https://server.example.com:443/token",
                "https://server.example.com/token",
            ),
            (
                "https://server.example.com:/token",
                "https://server.example.com/token",
            ),
            (
                "http://server.example.com:80/a",
                "http://server.example.com/a",
            ),
            (
                "https://server.example.com/token?x=1#f",
                "https://server.example.com/token",
            ),
            ("https://server.example.com", "https://server.example.com/"),
            (
                "https://server.example.com?x",
                "https://server.example.com/",
            ),
            ("https://s.example/%7euser/%61", "https://s.example/~user/a"),
            ("https://s.example/a%2fb", "https://s.example/a%2Fb"),
            ("https://s.example/a/./b/../c", "https://s.example/a/c"),
            ("https://s.example/a/%2E%2E/c", "https://s.example/c"),
            ("https://s.example/a/..", "https://s.example/"),
            ("https://s.example/a/.", "https://s.example/a/"),
            ("https://s.example/../../a", "https://s.example/a"),
            ("https://s.example/a/", "https://s.example/a/"),
            ("https://[::1]:8443/a", "https://[::1]:8443/a"),
            ("https://[::1]:443/a", "https://[::1]/a"),
            ("https://s.example:08443/a", "https://s.example:8443/a"),
            ("https://S%2Eexample/a", "https://s.example/a"),
        ];
        for (input, want) in same {
            assert_eq!(normalize(input).as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn different_uris_stay_different() {
        let a = normalize("https://s.example/a").unwrap();
        for other in [
            "http://s.example/a",
            "https://s.example:8443/a",
            "https://s.example/A",
            "https://s.example/a/",
            "https://t.example/a",
            "https://s.example:0/a",
        ] {
            assert_ne!(normalize(other).as_deref(), Some(&*a), "{other}");
        }
    }

    #[test]
    fn unusable_uris_are_none() {
        for bad in [
            "ftp://s.example/a",
            "/a",
            "s.example/a",
            "https://user@s.example/a",
            "https:///a",
            "https://s.example/a b",
            "https://s.example/%zz",
            "https://s.example/%4",
            "https://s.example:99999x/a",
            "https://s.example/é",
            "https://[::1/a",
            "https://[::1]x/a",
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }
}
