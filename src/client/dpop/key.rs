//! [`DpopKey`]: the client's DPoP key pair, parsed once.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, Uri};
use jsonwebtoken::{Algorithm, EncodingKey};

use crate::client::dpop::nonces::{self, Nonces};
use crate::client::dpop::proof::Proof;
use crate::keys::backend::{Signer, install_crypto_provider};
use crate::keys::{KeyError, Thumbprint};

/// A DPoP key pair (RFC 9449): ES256 by default, or EdDSA. It signs one proof per request with
/// [`proof`](Self::proof).
///
/// Cloning is cheap (a reference-count bump); `Debug` shows the algorithm and the thumbprint,
/// never the private key. Keep one key per client instance for as long as its tokens live:
/// tokens bound to it work with no other key.
///
/// A key also remembers the latest `DPoP-Nonce` each server (origin) sent it
/// ([`remember_nonce`](Self::remember_nonce)), and its proofs to that origin carry it. Clones
/// share that memory, so a [`RefreshLayer`](crate::client::RefreshLayer), an
/// [`OAuthRefresher`](crate::client::OAuthRefresher) and the application's own login, given
/// clones of one key, all use the nonce any of them was last handed.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::client::dpop::DpopKey;
/// use tower_jwt_refresh::keys::Algorithm;
///
/// let es256 = DpopKey::generate()?;
/// let eddsa = DpopKey::generate_with(Algorithm::EdDSA)?;
/// assert_eq!(es256.algorithm(), Algorithm::ES256);
/// // The thumbprint is what a bound token's `cnf.jkt` holds.
/// assert_ne!(es256.thumbprint(), eddsa.thumbprint());
/// # Ok::<_, tower_jwt_refresh::keys::KeyError>(())
/// ```
#[derive(Clone)]
pub struct DpopKey {
    inner: Arc<Inner>,
}

struct Inner {
    signer: Signer,
    alg: Algorithm,
    /// The public key, as RFC 7638's canonical JSON.
    jwk: String,
    thumbprint: Thumbprint,
    /// The proof header, base64url-encoded once: it is the same for every proof.
    header: String,
    /// The latest `DPoP-Nonce` of each server this key's proofs went to.
    nonces: Nonces,
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("alg", &self.inner.alg)
            .field("thumbprint", &self.inner.thumbprint)
            .finish_non_exhaustive()
    }
}

impl DpopKey {
    /// A new ES256 (P-256) key, from the operating system's random generator.
    pub fn generate() -> Result<Self, KeyError> {
        Self::generate_with(Algorithm::ES256)
    }

    /// A new key for `alg`: `ES256` or `EdDSA` (Ed25519). Other algorithms are
    /// [`KeyError::Unsupported`].
    pub fn generate_with(alg: Algorithm) -> Result<Self, KeyError> {
        check_algorithm(alg)?;
        install_crypto_provider();
        Self::from_signer(alg, Signer::generate(alg)?)
    }

    /// A PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`): P-256 for `ES256`, Ed25519
    /// for `EdDSA`.
    pub fn from_pkcs8_pem(alg: Algorithm, pem: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        check_algorithm(alg)?;
        install_crypto_provider();
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_ref()),
            _ => EncodingKey::from_ed_pem(pem.as_ref()),
        }
        .map_err(KeyError::Pem)?;
        Self::from_encoding_key(alg, key)
    }

    /// A PKCS#8 DER private key: P-256 for `ES256`, Ed25519 for `EdDSA`.
    pub fn from_pkcs8_der(alg: Algorithm, der: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        check_algorithm(alg)?;
        install_crypto_provider();
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_der(der.as_ref()),
            _ => EncodingKey::from_ed_der(der.as_ref()),
        };
        Self::from_encoding_key(alg, key)
    }

    fn from_encoding_key(alg: Algorithm, key: EncodingKey) -> Result<Self, KeyError> {
        Self::from_signer(alg, Signer::parse(alg, key)?)
    }

    fn from_signer(alg: Algorithm, signer: Signer) -> Result<Self, KeyError> {
        let public = signer.public_jwk(alg)?;
        let jwk = public.canonical_json();
        let header = format!(r#"{{"typ":"dpop+jwt","alg":"{alg:?}","jwk":{jwk}}}"#);
        Ok(Self {
            inner: Arc::new(Inner {
                signer,
                alg,
                thumbprint: public.thumbprint(),
                jwk,
                header: URL_SAFE_NO_PAD.encode(header),
                nonces: Nonces::default(),
            }),
        })
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.alg
    }

    /// The RFC 7638 thumbprint of the public key: the `jkt` that bound tokens carry in `cnf`.
    pub fn thumbprint(&self) -> &Thumbprint {
        &self.inner.thumbprint
    }

    /// The public key as a JWK (its RFC 7638 canonical JSON), as every proof carries it.
    pub fn public_jwk(&self) -> &str {
        &self.inner.jwk
    }

    /// Starts a proof for one request: `method` and `uri` (absolute; its query and fragment
    /// are left out of `htu`).
    pub fn proof<'a>(&'a self, method: &'a Method, uri: &'a Uri) -> Proof<'a> {
        Proof::new(self, method, uri)
    }

    /// Remembers the `DPoP-Nonce` header of a response from `uri` (if it carries a
    /// well-formed one) as the nonce for `uri`'s origin: the next proofs to that origin carry
    /// it. Returns whether the response carried one.
    ///
    /// A [`RefreshLayer`](crate::client::RefreshLayer) and an
    /// [`OAuthRefresher`](crate::client::OAuthRefresher) with this key do this for every
    /// response they see; call it for requests made without them, such as the login.
    ///
    /// # Example
    ///
    /// ```
    /// use http::{HeaderMap, HeaderValue, Method, Uri};
    /// use tower_jwt_refresh::client::dpop::DpopKey;
    ///
    /// let key = DpopKey::generate()?;
    /// let login = Uri::from_static("https://auth.example.com/login");
    /// // The server answered 400 `use_dpop_nonce` with a nonce: remember it and sign again.
    /// let mut headers = HeaderMap::new();
    /// headers.insert("dpop-nonce", HeaderValue::from_static("eyJ7S_zG.eyJH0-Z.HX4w-7v"));
    /// assert!(key.remember_nonce(&login, &headers));
    /// assert_eq!(key.nonce(&login).as_deref(), Some("eyJ7S_zG.eyJH0-Z.HX4w-7v"));
    /// let proof = key.proof(&Method::POST, &login).sign()?; // carries the nonce
    /// # let _ = proof; Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn remember_nonce(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        nonces::origin(uri).is_some_and(|origin| self.inner.nonces.remember(&origin, headers))
    }

    /// The latest nonce remembered for `uri`'s origin.
    pub fn nonce(&self, uri: &Uri) -> Option<String> {
        let origin = nonces::origin(uri)?;
        self.inner.nonces.get(&origin).map(|n| n.to_string())
    }

    /// The latest nonce of `origin` (`scheme://authority`, lower case).
    pub(crate) fn nonce_of(&self, origin: &str) -> Option<Arc<str>> {
        self.inner.nonces.get(origin)
    }

    /// The encoded header, `.`, then `claims` encoded, signed: a compact JWS.
    pub(crate) fn sign(&self, claims: &[u8]) -> Result<String, KeyError> {
        let inner = &*self.inner;
        let mut jws = String::with_capacity(inner.header.len() + claims.len() * 4 / 3 + 100);
        jws.push_str(&inner.header);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jws);
        let signature = inner.signer.sign(inner.alg, jws.as_bytes())?;
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jws);
        Ok(jws)
    }
}

fn check_algorithm(alg: Algorithm) -> Result<(), KeyError> {
    match alg {
        Algorithm::ES256 | Algorithm::EdDSA => Ok(()),
        _ => Err(KeyError::Unsupported("dpop keys are ES256 or EdDSA")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn generated_keys_are_distinct_and_of_their_algorithm() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA] {
            let (a, b) = (
                DpopKey::generate_with(alg).unwrap(),
                DpopKey::generate_with(alg).unwrap(),
            );
            assert_eq!(a.algorithm(), alg);
            assert_ne!(a.thumbprint(), b.thumbprint(), "{alg:?}");
            assert_eq!(Thumbprint::of_jwk(a.public_jwk()).unwrap(), *a.thumbprint());
        }
    }

    #[test]
    fn only_es256_and_eddsa() {
        for alg in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES384] {
            assert!(matches!(
                DpopKey::generate_with(alg),
                Err(KeyError::Unsupported(_))
            ));
            assert!(DpopKey::from_pkcs8_pem(alg, key_file("ec_private.pem")).is_err());
        }
    }

    #[test]
    fn loaded_keys_carry_their_public_half() {
        // The public halves of the fixtures, as `openssl pkey -pubout` printed them.
        let es = DpopKey::from_pkcs8_pem(Algorithm::ES256, key_file("ec_private.pem")).unwrap();
        let ed = DpopKey::from_pkcs8_pem(Algorithm::EdDSA, key_file("ed_private.pem")).unwrap();
        let public = |name| {
            let pem = String::from_utf8(key_file(name)).unwrap();
            let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
        };
        // SubjectPublicKeyInfo ends with the point (EC) or the 32-byte key (Ed25519).
        let ec_spki = public("ec_public.pem");
        let ed_spki = public("ed_public.pem");
        let jwk: serde_json::Value = serde_json::from_str(es.public_jwk()).unwrap();
        let xy = [
            URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap(),
            URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap(),
        ]
        .concat();
        assert_eq!(&ec_spki[ec_spki.len() - 64..], &xy[..]);
        let jwk: serde_json::Value = serde_json::from_str(ed.public_jwk()).unwrap();
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        assert_eq!(&ed_spki[ed_spki.len() - 32..], &x[..]);
        // The wrong family, or garbage, is refused.
        assert!(DpopKey::from_pkcs8_pem(Algorithm::ES256, key_file("ed_private.pem")).is_err());
        assert!(DpopKey::from_pkcs8_pem(Algorithm::EdDSA, key_file("ec_private.pem")).is_err());
        assert!(DpopKey::from_pkcs8_der(Algorithm::ES256, [0x30, 0x00]).is_err());
    }

    #[test]
    fn der_and_pem_load_the_same_key() {
        let pem = String::from_utf8(key_file("ec_private.pem")).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let a = DpopKey::from_pkcs8_pem(Algorithm::ES256, &pem).unwrap();
        let b = DpopKey::from_pkcs8_der(Algorithm::ES256, &der).unwrap();
        assert_eq!(a.thumbprint(), b.thumbprint());
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let key = DpopKey::from_pkcs8_pem(Algorithm::ES256, key_file("ec_private.pem")).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("ES256") && shown.contains(key.thumbprint().as_str()));
        assert!(
            !shown.contains("signer") && !shown.contains("header"),
            "{shown}"
        );
    }
}
