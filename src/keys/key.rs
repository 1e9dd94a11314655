//! Verification keys: one algorithm per key, chosen by `kid`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::keys::backend::{KeyMaterial, PreparedKey};

/// How many kid-less candidate keys one token may be tried against.
///
/// A token without `kid` is checked against the keys of its algorithm; the bound keeps a
/// large key set from turning one bad token into many signature checks.
const MAX_KIDLESS_CANDIDATES: usize = 4;

/// Why a key or key set could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// An HMAC secret shorter than its hash output (RFC 7518 §3.2).
    ShortSecret {
        /// The secret's length in bytes.
        len: usize,
        /// The shortest secret the algorithm accepts.
        min: usize,
    },
    /// The algorithm cannot be used with this kind of key, or is not a JWS signature algorithm
    /// this crate supports.
    Unsupported(&'static str),
    /// The key material is malformed.
    Malformed(&'static str),
    /// A JWK whose `use` or `key_ops` forbid signature verification.
    NotForVerification,
    /// A JWK without `alg` whose key type does not pin one (RSA can be RS* or PS*).
    MissingAlgorithm,
    /// Two keys in one set share a `kid`.
    DuplicateKid,
    /// A set or JWKS document with more than [`KeySet::MAX_KEYS`] keys.
    TooManyKeys,
    /// A JSON document (JWK or JWKS) could not be parsed.
    Json(serde_json::Error),
    /// A PEM document could not be read.
    Pem(jsonwebtoken::errors::Error),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShortSecret { len, min } => write!(
                f,
                "hmac secret is {len} bytes, shorter than the {min} bytes its algorithm needs"
            ),
            Self::Unsupported(what) => write!(f, "unsupported key: {what}"),
            Self::Malformed(what) => write!(f, "malformed key: {what}"),
            Self::NotForVerification => f.write_str("jwk `use` or `key_ops` forbid verification"),
            Self::MissingAlgorithm => f.write_str("jwk has no `alg` and its key type needs one"),
            Self::DuplicateKid => f.write_str("two keys share one `kid`"),
            Self::TooManyKeys => write!(f, "more than {} keys in one set", KeySet::MAX_KEYS),
            Self::Json(_) => f.write_str("invalid jwk json"),
            Self::Pem(_) => f.write_str("invalid pem key"),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Json(e) => Some(e),
            Self::Pem(e) => Some(e),
            _ => None,
        }
    }
}

/// One verification key, bound to exactly one algorithm.
///
/// The key is parsed once, here; verification never re-reads it. `Debug` shows the `kid` and
/// algorithm, never the material.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::keys::{Algorithm, Key};
///
/// let key = Key::hmac(Algorithm::HS256, b"an example secret of at least 32 bytes!")?
///     .with_kid("2026-11");
/// assert_eq!(key.kid(), Some("2026-11"));
/// # Ok::<_, tower_jwt_refresh::keys::KeyError>(())
/// ```
#[derive(Clone)]
pub struct Key {
    kid: Option<Arc<str>>,
    prepared: Arc<PreparedKey>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.prepared.algorithm())
            .finish_non_exhaustive()
    }
}

impl Key {
    /// An HMAC secret for `HS256`, `HS384` or `HS512`.
    ///
    /// Refuses secrets shorter than the hash output (32, 48 or 64 bytes), as RFC 7518 §3.2
    /// requires. Use [`Key::hmac_allow_short`] only for legacy secrets you cannot replace.
    pub fn hmac(alg: Algorithm, secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let secret = secret.as_ref();
        let min = match alg {
            Algorithm::HS256 => 32,
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => {
                return Err(KeyError::Unsupported(
                    "hmac secrets need HS256, HS384 or HS512",
                ));
            }
        };
        if secret.len() < min {
            return Err(KeyError::ShortSecret {
                len: secret.len(),
                min,
            });
        }
        Self::prepare(alg, KeyMaterial::Secret(secret))
    }

    /// An HMAC secret of any non-empty length: an explicit opt-in for legacy deployments.
    ///
    /// A short secret can be brute-forced offline from any one token. Prefer [`Key::hmac`].
    pub fn hmac_allow_short(alg: Algorithm, secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(KeyError::ShortSecret { len: 0, min: 1 });
        }
        if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(KeyError::Unsupported(
                "hmac secrets need HS256, HS384 or HS512",
            ));
        }
        Self::prepare(alg, KeyMaterial::Secret(secret))
    }

    /// A PEM public key (RSA, EC or Ed25519) for `alg`.
    ///
    /// The PEM kind must fit the algorithm: RSA for `RS*`/`PS*`, EC for `ES256`/`ES384`,
    /// Ed25519 for `EdDSA`.
    pub fn from_pem(alg: Algorithm, pem: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        use jsonwebtoken::DecodingKey;
        let pem = pem.as_ref();
        let family = PemFamily::of(alg)?;
        let decoded = match family {
            PemFamily::Rsa => DecodingKey::from_rsa_pem(pem),
            PemFamily::Ec => DecodingKey::from_ec_pem(pem),
            PemFamily::Ed25519 => DecodingKey::from_ed_pem(pem),
        }
        .map_err(KeyError::Pem)?;
        let bytes = decoded.try_get_as_bytes().map_err(KeyError::Pem)?;
        let material = match family {
            PemFamily::Rsa => KeyMaterial::RsaDer(bytes),
            PemFamily::Ec => KeyMaterial::Ec(bytes),
            PemFamily::Ed25519 => KeyMaterial::Ed25519(bytes),
        };
        Self::prepare(alg, material)
    }

    /// One JWK (RFC 7517), as JSON.
    ///
    /// The key's `alg` binds it; without `alg`, EC and OKP keys take the algorithm their curve
    /// implies and RSA keys are refused ([`KeyError::MissingAlgorithm`]). A JWK whose `use` is
    /// not `sig`, or whose `key_ops` lack `verify`, is refused.
    pub fn from_jwk(json: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let jwk: RawJwk = serde_json::from_slice(json.as_ref()).map_err(KeyError::Json)?;
        jwk.into_key()
    }

    /// Names this key, so that tokens select it by their `kid` header.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(Arc::from(kid.into()));
        self
    }

    /// This key's `kid`, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Whether this is an HMAC secret.
    pub fn is_symmetric(&self) -> bool {
        matches!(
            self.algorithm(),
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        )
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.prepared.algorithm()
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.prepared.verify(message, signature)
    }

    pub(crate) fn prepare(alg: Algorithm, material: KeyMaterial<'_>) -> Result<Self, KeyError> {
        let prepared = PreparedKey::new(alg, material).map_err(|e| {
            if e.starts_with("malformed") {
                KeyError::Malformed("public key rejected by the crypto backend")
            } else {
                KeyError::Unsupported(e)
            }
        })?;
        Ok(Self {
            kid: None,
            prepared: Arc::new(prepared),
        })
    }
}

/// The kind of PEM key an asymmetric algorithm takes.
#[derive(Clone, Copy)]
pub(crate) enum PemFamily {
    Rsa,
    Ec,
    Ed25519,
}

impl PemFamily {
    pub(crate) fn of(alg: Algorithm) -> Result<Self, KeyError> {
        use Algorithm::*;
        match alg {
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Ok(Self::Rsa),
            ES256 | ES384 => Ok(Self::Ec),
            EdDSA => Ok(Self::Ed25519),
            _ => Err(KeyError::Unsupported(
                "pem keys are for RS*, PS*, ES* and EdDSA",
            )),
        }
    }
}

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
    pub const MAX_KEYS: usize = 100;

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
        if !keys
            .iter()
            .filter_map(|k| k.kid.as_deref())
            .all(|kid| kids.insert(kid))
        {
            return Err(KeyError::DuplicateKid);
        }
        Ok(Self::from_keys(keys))
    }

    /// Parses a JWKS document (`{"keys":[…]}`).
    ///
    /// Keys meant for encryption (`use` other than `sig`, or `key_ops` without `verify`) and
    /// keys of unsupported types or curves are left out, as a JWKS often holds both kinds, and
    /// so are RSA and symmetric keys without `alg` (RFC 7517 makes it optional; such a key
    /// cannot be bound to one algorithm). A malformed signing key, or a `kid` used twice,
    /// fails the whole document.
    pub fn from_jwks(json: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        #[derive(Deserialize)]
        struct Jwks {
            keys: Vec<RawJwk>,
        }
        let jwks: Jwks = serde_json::from_slice(json.as_ref()).map_err(KeyError::Json)?;
        if jwks.keys.len() > Self::MAX_KEYS {
            return Err(KeyError::TooManyKeys);
        }
        let mut keys = Vec::with_capacity(jwks.keys.len());
        for jwk in jwks.keys {
            match jwk.into_key() {
                Ok(key) => keys.push(key),
                // A key that cannot be bound to one algorithm cannot verify anything; the
                // document's other keys still can.
                Err(
                    KeyError::NotForVerification
                    | KeyError::Unsupported(_)
                    | KeyError::MissingAlgorithm,
                ) => {}
                Err(e) => return Err(e),
            }
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
            Some(kid) => match self.keys.iter().position(|k| k.kid.as_deref() == Some(kid)) {
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

/// Parses a JWS `alg` header value. Case-sensitive, as RFC 7515 requires; `none` and anything
/// unknown give `None`.
pub(crate) fn parse_alg(alg: &str) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match alg {
        "HS256" => HS256,
        "HS384" => HS384,
        "HS512" => HS512,
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        _ => return None,
    })
}

/// The JWK members this crate reads; anything else is ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    kid: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

impl RawJwk {
    fn into_key(self) -> Result<Key, KeyError> {
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(KeyError::NotForVerification);
        }
        if let Some(ops) = &self.key_ops
            && !ops.iter().any(|op| op == "verify")
        {
            return Err(KeyError::NotForVerification);
        }
        let alg = match self.alg.as_deref() {
            Some(alg) => {
                parse_alg(alg).ok_or(KeyError::Unsupported("jwk alg is not a supported jws alg"))?
            }
            None => match (self.kty.as_str(), self.crv.as_deref()) {
                ("EC", Some("P-256")) => Algorithm::ES256,
                ("EC", Some("P-384")) => Algorithm::ES384,
                ("OKP", Some("Ed25519")) => Algorithm::EdDSA,
                ("RSA" | "oct", _) => return Err(KeyError::MissingAlgorithm),
                _ => return Err(KeyError::Unsupported("jwk key type or curve")),
            },
        };
        let field = |v: &Option<String>, name: &'static str| -> Result<Vec<u8>, KeyError> {
            let v = v.as_deref().ok_or(KeyError::Malformed(name))?;
            URL_SAFE_NO_PAD
                .decode(v)
                .map_err(|_| KeyError::Malformed(name))
        };
        let key = match self.kty.as_str() {
            "oct" => Key::hmac(alg, field(&self.k, "jwk `k` is missing or not base64url")?)?,
            "RSA" => {
                let n = field(&self.n, "jwk `n` is missing or not base64url")?;
                let e = field(&self.e, "jwk `e` is missing or not base64url")?;
                Key::prepare(alg, KeyMaterial::RsaComponents { n: &n, e: &e })?
            }
            "EC" => {
                let size = match (alg, self.crv.as_deref()) {
                    (Algorithm::ES256, Some("P-256")) => 32,
                    (Algorithm::ES384, Some("P-384")) => 48,
                    (Algorithm::ES256 | Algorithm::ES384, _) => {
                        return Err(KeyError::Unsupported("jwk curve does not match its alg"));
                    }
                    _ => return Err(KeyError::Unsupported("ec jwk with a non-ES alg")),
                };
                let x = field(&self.x, "jwk `x` is missing or not base64url")?;
                let y = field(&self.y, "jwk `y` is missing or not base64url")?;
                if x.len() != size || y.len() != size {
                    return Err(KeyError::Malformed(
                        "jwk ec coordinates have the wrong length",
                    ));
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Key::prepare(alg, KeyMaterial::Ec(&point))?
            }
            "OKP" => {
                if self.crv.as_deref() != Some("Ed25519") {
                    return Err(KeyError::Unsupported("okp curve other than Ed25519"));
                }
                let x = field(&self.x, "jwk `x` is missing or not base64url")?;
                if x.len() != 32 {
                    return Err(KeyError::Malformed("ed25519 jwk `x` must be 32 bytes"));
                }
                Key::prepare(alg, KeyMaterial::Ed25519(&x))?
            }
            _ => return Err(KeyError::Unsupported("jwk key type")),
        };
        Ok(match self.kid {
            Some(kid) => key.with_kid(kid),
            None => key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oct(extra: &str) -> String {
        format!(
            r#"{{"kty":"oct","k":"{}"{extra}}}"#,
            URL_SAFE_NO_PAD.encode([9u8; 32])
        )
    }

    #[test]
    fn short_hmac_secrets_need_the_opt_in() {
        let err = Key::hmac(Algorithm::HS256, [0u8; 31]).unwrap_err();
        assert!(
            matches!(err, KeyError::ShortSecret { len: 31, min: 32 }),
            "{err}"
        );
        assert!(matches!(
            Key::hmac(Algorithm::HS512, [0u8; 63]),
            Err(KeyError::ShortSecret { min: 64, .. })
        ));
        assert!(Key::hmac_allow_short(Algorithm::HS256, b"secret").is_ok());
        assert!(Key::hmac_allow_short(Algorithm::HS256, b"").is_err());
        assert!(Key::hmac(Algorithm::RS256, [0u8; 32]).is_err());
    }

    #[test]
    fn jwk_use_and_key_ops_must_allow_verification() {
        assert!(Key::from_jwk(oct(r#","alg":"HS256","use":"sig""#)).is_ok());
        assert!(matches!(
            Key::from_jwk(oct(r#","alg":"HS256","use":"enc""#)),
            Err(KeyError::NotForVerification)
        ));
        assert!(matches!(
            Key::from_jwk(oct(r#","alg":"HS256","key_ops":["sign"]"#)),
            Err(KeyError::NotForVerification)
        ));
        assert!(Key::from_jwk(oct(r#","alg":"HS256","key_ops":["sign","verify"]"#)).is_ok());
    }

    #[test]
    fn jwk_alg_is_required_where_the_key_type_does_not_pin_it() {
        assert!(matches!(
            Key::from_jwk(oct("")),
            Err(KeyError::MissingAlgorithm)
        ));
        assert!(matches!(
            Key::from_jwk(oct(r#","alg":"none""#)),
            Err(KeyError::Unsupported(_))
        ));
        assert!(matches!(
            Key::from_jwk(oct(r#","alg":"RS256""#)),
            Err(KeyError::Unsupported(_))
        ));
    }

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

    #[test]
    fn debug_never_shows_key_material() {
        let key = Key::hmac(Algorithm::HS256, [0x41u8; 32])
            .unwrap()
            .with_kid("k1");
        let shown = format!("{key:?}");
        assert!(shown.contains("k1") && shown.contains("HS256"), "{shown}");
        assert!(!shown.contains("AAAA") && !shown.contains("65"), "{shown}");
    }
}
