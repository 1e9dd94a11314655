//! The opaque refresh-token format, its hash, and the sealed successor.
//!
//! A refresh token is `<family>.<secret>`: a 128-bit family id (also the access tokens'
//! `sid`), then 256 bits from the operating system's CSPRNG, both base64url. The family id is
//! not secret; it only routes the token to its family (one Redis Cluster hash slot). Stores
//! keep the token's SHA-256, never the token.
//!
//! Within a grace window, a client that lost a rotation's response may present the previous
//! token again and must get the same successor. The store cannot hand it back (it holds no
//! token), so it keeps the successor *sealed*: XOR-ed with a pad that only the previous token
//! can derive (HMAC-SHA-256 keyed by its secret). A store dump holds no usable token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::issuer::error::IssueError;
use crate::issuer::util::random_bytes;

const FAMILY_BYTES: usize = 16;
/// The bytes of a token's secret.
pub(crate) const SECRET_BYTES: usize = 32;
/// Base64url lengths of the two parts.
const FAMILY_LEN: usize = 22;
const SECRET_LEN: usize = 43;

const SEAL_LABEL: &[u8] = b"tower-jwt-refresh successor seal v1";

/// A refresh token, parsed.
pub(crate) struct RefreshToken<'t> {
    pub(crate) family: &'t str,
    pub(crate) secret: [u8; SECRET_BYTES],
}

impl<'t> RefreshToken<'t> {
    /// Parses `token`; `None` for anything that is not exactly our format (an access token,
    /// for one, has three segments).
    pub(crate) fn parse(token: &'t str) -> Option<Self> {
        let (family, secret) = token.split_once('.')?;
        if family.len() != FAMILY_LEN || secret.len() != SECRET_LEN {
            return None;
        }
        let mut family_bytes = [0u8; FAMILY_BYTES];
        let n = URL_SAFE_NO_PAD
            .decode_slice(family, &mut family_bytes)
            .ok()?;
        let mut secret_bytes = [0u8; SECRET_BYTES];
        let m = URL_SAFE_NO_PAD
            .decode_slice(secret, &mut secret_bytes)
            .ok()?;
        (n == FAMILY_BYTES && m == SECRET_BYTES).then_some(Self {
            family,
            secret: secret_bytes,
        })
    }
}

/// A new family id.
pub(crate) fn new_family() -> Result<String, IssueError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<FAMILY_BYTES>()?))
}

/// A new secret.
pub(crate) fn new_secret() -> Result<[u8; SECRET_BYTES], IssueError> {
    random_bytes::<SECRET_BYTES>()
}

/// The token `<family>.<secret>`.
pub(crate) fn format(family: &str, secret: &[u8; SECRET_BYTES]) -> String {
    let mut token = String::with_capacity(FAMILY_LEN + 1 + SECRET_LEN);
    token.push_str(family);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(secret, &mut token);
    token
}

/// What stores keep: the base64url SHA-256 of the whole token (43 characters, no spaces).
pub(crate) fn hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

fn pad(presented: &[u8; SECRET_BYTES]) -> [u8; SECRET_BYTES] {
    let mut mac = Hmac::<Sha256>::new_from_slice(presented).expect("hmac takes any key length");
    mac.update(SEAL_LABEL);
    mac.finalize().into_bytes().into()
}

/// `successor`, sealed so that only the holder of `presented` can open it.
pub(crate) fn seal(successor: &[u8; SECRET_BYTES], presented: &[u8; SECRET_BYTES]) -> String {
    let pad = pad(presented);
    let sealed: Vec<u8> = successor.iter().zip(pad).map(|(s, p)| s ^ p).collect();
    URL_SAFE_NO_PAD.encode(sealed)
}

/// Opens what [`seal`] made with the same `presented` secret.
pub(crate) fn open(sealed: &str, presented: &[u8; SECRET_BYTES]) -> Option<[u8; SECRET_BYTES]> {
    let mut bytes = [0u8; SECRET_BYTES];
    let n = URL_SAFE_NO_PAD.decode_slice(sealed, &mut bytes).ok()?;
    if n != SECRET_BYTES {
        return None;
    }
    for (b, p) in bytes.iter_mut().zip(pad(presented)) {
        *b ^= p;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_nothing_else_parses() {
        let family = new_family().unwrap();
        let secret = new_secret().unwrap();
        let token = format(&family, &secret);
        assert_eq!(token.len(), FAMILY_LEN + 1 + SECRET_LEN);
        let parsed = RefreshToken::parse(&token).unwrap();
        assert_eq!((parsed.family, parsed.secret), (family.as_str(), secret));
        for bad in [
            "",
            "abc",
            &token[1..],
            &format!("{token}."),
            &format!("{token}x"),
            &token.replace('.', "_"),
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl",
        ] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn hashes_are_fixed_length_and_distinct() {
        let a = hash("a.b");
        assert_eq!(a.len(), 43);
        assert!(!a.contains(' '));
        assert_ne!(a, hash("a.c"));
    }

    #[test]
    fn only_the_presented_secret_opens_the_seal() {
        let (successor, presented, other) = (
            new_secret().unwrap(),
            new_secret().unwrap(),
            new_secret().unwrap(),
        );
        let sealed = seal(&successor, &presented);
        assert_eq!(open(&sealed, &presented), Some(successor));
        assert_ne!(open(&sealed, &other), Some(successor));
        assert_eq!(open("short", &presented), None);
    }
}
