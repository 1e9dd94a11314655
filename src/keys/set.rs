//! [`KeySet`]: the keys a token's header selects from.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jsonwebtoken::Algorithm;

use crate::keys::jwk::{JwkEntry, RawJwk};
use crate::keys::key::{Key, KeyError};

/// How many kid-less candidate keys one token may be tried against.
///
/// A token without `kid` is checked against the keys of its algorithm; the bound keeps a
/// large key set from turning one bad token into many signature checks.
const MAX_KIDLESS_CANDIDATES: usize = 4;

/// A set of verification keys, chosen per token by `kid`.
///
/// A token with a `kid` uses exactly the key of that `kid`; a token without one is tried
/// against the keys of its algorithm (at most four). Either way the key's own algorithm must
/// equal the token's `alg`.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::keys::{Algorithm, Key, KeySet};
///
/// let jwks = r#"{"keys":[{"kty":"oct","kid":"a","alg":"HS256",
///     "k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#;
/// let keys = KeySet::from_jwks(jwks)?
///     .with_key(Key::hmac(Algorithm::HS256, [7u8; 32])?.with_kid("b"))?;
/// assert_eq!(keys.len(), 2);
/// # Ok::<_, tower_jwt_refresh::keys::KeyError>(())
/// ```
#[derive(Clone)]
pub struct KeySet {
    keys: Arc<[Key]>,
    epoch: u64,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter()).finish()
    }
}

impl Default for KeySet {
    fn default() -> Self {
        Self::from_keys(Vec::new())
    }
}

impl From<Key> for KeySet {
    fn from(key: Key) -> Self {
        Self::from_keys(vec![key])
    }
}

/// What a token's header selected.
pub(crate) enum Selection<'a> {
    /// Keys to try, in order.
    Keys(&'a [Key]),
    /// The token's `kid` names no key here.
    UnknownKid,
    /// The `kid` names a key of another algorithm, or no key has the token's algorithm.
    WrongAlgorithm,
}

impl KeySet {
    /// The most keys a set may hold. Key sets are small (an issuer rotates through a few); the
    /// bound keeps a hostile JWKS document from costing unbounded work.
    pub const MAX_KEYS: usize = crate::keys::key::MAX_KEYS;

    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key`, failing if its `kid` is already taken.
    pub fn with_key(self, key: Key) -> Result<Self, KeyError> {
        let mut keys: Vec<Key> = Vec::with_capacity(self.keys.len() + 1);
        keys.extend(self.keys.iter().cloned());
        keys.push(key);
        Self::try_from_keys(keys)
    }

    /// A set of `keys`, failing on a repeated `kid` or more than [`KeySet::MAX_KEYS`] keys.
    pub fn try_from_keys(keys: Vec<Key>) -> Result<Self, KeyError> {
        if keys.len() > Self::MAX_KEYS {
            return Err(KeyError::TooManyKeys);
        }
        let mut kids = std::collections::HashSet::with_capacity(keys.len());
        if !keys.iter().filter_map(Key::kid).all(|kid| kids.insert(kid)) {
            return Err(KeyError::DuplicateKid);
        }
        Ok(Self::from_keys(keys))
    }

    /// Parses a JWKS document (`{"keys":[…]}`), keeping every key this crate can verify with.
    ///
    /// A JWKS often holds keys of several kinds, and an issuer rotates by publishing a new key
    /// beside the old ones, so one key this crate cannot use must not hold back the rest. Every
    /// such key is left out, with a warning naming its `kid` and the reason: keys meant for
    /// encryption (`use` other than `sig`, or `key_ops` without `verify`), keys of unsupported
    /// types, curves or algorithms, RSA and symmetric keys without `alg` (RFC 7517 makes it
    /// optional; such a key cannot be bound to one algorithm), HMAC secrets shorter than their
    /// hash, and malformed keys. The document fails if it is not a JWKS, holds more than
    /// [`KeySet::MAX_KEYS`] entries, uses a `kid` twice, or holds no usable key at all
    /// ([`KeyError::NoUsableKey`]).
    pub fn from_jwks(json: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        Self::from_jwks_admitting(json.as_ref(), true)
    }

    /// [`KeySet::from_jwks`], leaving out symmetric keys unless `symmetric` is set.
    #[cfg_attr(not(feature = "jwks"), allow(dead_code))]
    pub(crate) fn from_jwks_admitting(json: &[u8], symmetric: bool) -> Result<Self, KeyError> {
        let entries = RawJwk::parse_set(json)?;
        if entries.len() > Self::MAX_KEYS {
            return Err(KeyError::TooManyKeys);
        }
        let mut keys = Vec::with_capacity(entries.len());
        for JwkEntry { kid, jwk } in entries {
            let key = jwk.and_then(|jwk| {
                if !symmetric && jwk.is_symmetric() {
                    return Err(KeyError::Unsupported(
                        "symmetric key in a remote jwks (see allow_symmetric_keys)",
                    ));
                }
                jwk.into_key()
            });
            match key {
                Ok(key) => keys.push(key),
                Err(error) => skipped(kid.as_deref(), &error),
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoUsableKey);
        }
        Self::try_from_keys(keys)
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }

    /// Identifies this set's contents; a new set gets a new epoch, so cached verdicts made
    /// with retired keys can be told apart.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection<'_> {
        match kid {
            Some(kid) => match self.keys.iter().position(|k| k.kid() == Some(kid)) {
                Some(i) if self.keys[i].algorithm() == alg => Selection::Keys(&self.keys[i..=i]),
                Some(_) => Selection::WrongAlgorithm,
                None => Selection::UnknownKid,
            },
            None => {
                // Keys are grouped by algorithm at construction, so the candidates are one run.
                let start = self.keys.iter().position(|k| k.algorithm() == alg);
                match start {
                    Some(start) => {
                        let run = self.keys[start..]
                            .iter()
                            .take_while(|k| k.algorithm() == alg)
                            .count()
                            .min(MAX_KIDLESS_CANDIDATES);
                        Selection::Keys(&self.keys[start..start + run])
                    }
                    None if self.keys.is_empty() => Selection::UnknownKid,
                    None => Selection::WrongAlgorithm,
                }
            }
        }
    }

    fn from_keys(mut keys: Vec<Key>) -> Self {
        static EPOCH: AtomicU64 = AtomicU64::new(1);
        // Stable sort: keys of one algorithm form one run, insertion order kept within it.
        keys.sort_by_key(|k| alg_rank(k.algorithm()));
        Self {
            keys: keys.into(),
            epoch: EPOCH.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// Logs a JWKS key left out of its set.
fn skipped(kid: Option<&str>, error: &KeyError) {
    match std::error::Error::source(error) {
        Some(detail) => {
            tracing::warn!(kid, reason = %error, %detail, "jwks key skipped: it cannot be used");
        }
        None => tracing::warn!(kid, reason = %error, "jwks key skipped: it cannot be used"),
    }
}

fn alg_rank(alg: Algorithm) -> u8 {
    use Algorithm::*;
    match alg {
        HS256 => 0,
        HS384 => 1,
        HS512 => 2,
        RS256 => 3,
        RS384 => 4,
        RS512 => 5,
        PS256 => 6,
        PS384 => 7,
        PS512 => 8,
        ES256 => 9,
        ES384 => 10,
        EdDSA => 11,
        _ => 12,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::jwk::tests::oct;

    #[test]
    fn jwks_skips_encryption_keys_and_keys_without_alg_but_refuses_duplicate_kids() {
        let enc = oct(r#","alg":"HS256","use":"enc","kid":"e""#);
        let unbound = oct(r#","kid":"u""#);
        let sig = oct(r#","alg":"HS256","kid":"s""#);
        let set = KeySet::from_jwks(format!(r#"{{"keys":[{enc},{unbound},{sig}]}}"#)).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.iter().next().unwrap().kid(), Some("s"));
        let dup = KeySet::from_jwks(format!(r#"{{"keys":[{sig},{sig}]}}"#));
        assert!(matches!(dup, Err(KeyError::DuplicateKid)));
    }

    #[test]
    fn jwks_skips_every_key_it_cannot_use_and_fails_only_without_a_usable_one() {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let short = format!(
            r#"{{"kty":"oct","kid":"short","alg":"HS256","k":"{}"}}"#,
            b64(&[1; 8])
        );
        let ec = format!(
            r#"{{"kty":"EC","kid":"ec","crv":"P-256","x":"{}","y":"{}"}}"#,
            b64(&[1; 31]),
            b64(&[1; 32])
        );
        let unreadable = [r#""not a key""#, r#"{"kid":"no-kty"}"#, r#"{"kty":7}"#];
        let good = oct(r#","alg":"HS256","kid":"good""#);
        let mut entries = vec![short, ec];
        entries.extend(unreadable.map(str::to_owned));
        let without_good = format!(r#"{{"keys":[{}]}}"#, entries.join(","));
        entries.push(good);
        let set = KeySet::from_jwks(format!(r#"{{"keys":[{}]}}"#, entries.join(","))).unwrap();
        assert_eq!(set.iter().map(Key::kid).collect::<Vec<_>>(), [Some("good")]);
        for none in [without_good.as_str(), r#"{"keys":[]}"#] {
            assert!(
                matches!(KeySet::from_jwks(none), Err(KeyError::NoUsableKey)),
                "{none}"
            );
        }
        assert!(matches!(
            KeySet::from_jwks(r#"{"keys":{}}"#),
            Err(KeyError::Json(_))
        ));
    }

    #[test]
    fn selection_by_kid_binds_the_algorithm() {
        let set = KeySet::new()
            .with_key(
                Key::hmac(Algorithm::HS256, [1u8; 32])
                    .unwrap()
                    .with_kid("a"),
            )
            .unwrap()
            .with_key(Key::hmac(Algorithm::HS512, [1u8; 64]).unwrap())
            .unwrap();
        assert!(
            matches!(set.select(Some("a"), Algorithm::HS256), Selection::Keys(k) if k.len() == 1)
        );
        assert!(matches!(
            set.select(Some("a"), Algorithm::HS512),
            Selection::WrongAlgorithm
        ));
        assert!(matches!(
            set.select(Some("zz"), Algorithm::HS256),
            Selection::UnknownKid
        ));
        assert!(matches!(set.select(None, Algorithm::HS512), Selection::Keys(k) if k.len() == 1));
        assert!(matches!(
            set.select(None, Algorithm::ES256),
            Selection::WrongAlgorithm
        ));
    }

    #[test]
    fn oversized_sets_are_refused() {
        let keys = (0..=KeySet::MAX_KEYS)
            .map(|i| {
                Key::hmac(Algorithm::HS256, [1u8; 32])
                    .unwrap()
                    .with_kid(i.to_string())
            })
            .collect::<Vec<_>>();
        assert!(matches!(
            KeySet::try_from_keys(keys.clone()),
            Err(KeyError::TooManyKeys)
        ));
        assert_eq!(
            KeySet::try_from_keys(keys[1..].to_vec()).unwrap().len(),
            KeySet::MAX_KEYS
        );
        let jwks = format!(
            r#"{{"keys":[{}]}}"#,
            vec![oct(r#","alg":"HS256""#); 101].join(",")
        );
        assert!(matches!(
            KeySet::from_jwks(jwks),
            Err(KeyError::TooManyKeys)
        ));
    }

    #[test]
    fn every_new_set_has_a_new_epoch() {
        let a = KeySet::from(Key::hmac(Algorithm::HS256, [1u8; 32]).unwrap());
        let b = a
            .clone()
            .with_key(Key::hmac(Algorithm::HS384, [1u8; 48]).unwrap())
            .unwrap();
        assert_ne!(a.epoch(), b.epoch());
        assert_eq!(a.epoch(), a.clone().epoch());
    }
}
