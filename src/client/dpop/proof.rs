//! [`Proof`]: one DPoP proof, built for one request and signed.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Method, Uri};
use serde::Serialize;

use crate::client::dpop::key::DpopKey;
use crate::client::dpop::nonces;
use crate::keys::{KeyError, access_token_hash};

/// Why a proof could not be made.
///
/// # Example
///
/// ```
/// use http::{Method, Uri};
/// use tower_jwt_refresh::client::dpop::{DpopKey, ProofError};
///
/// let key = DpopKey::generate()?;
/// let relative = Uri::from_static("/orders");
/// let err = key.proof(&Method::GET, &relative).sign().unwrap_err();
/// assert!(matches!(err, ProofError::RelativeUri));
/// # Ok::<_, tower_jwt_refresh::keys::KeyError>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ProofError {
    /// The request URI has no scheme or no authority: `htu` must be absolute.
    RelativeUri,
    /// The random generator or the crypto backend failed.
    Signing(KeyError),
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RelativeUri => f.write_str("dpop proofs need an absolute request uri"),
            Self::Signing(_) => f.write_str("signing the dpop proof failed"),
        }
    }
}

impl std::error::Error for ProofError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::RelativeUri => None,
            Self::Signing(e) => Some(e),
        }
    }
}

/// A DPoP proof under construction, from [`DpopKey::proof`]: the request's method and URI,
/// optionally the access token it goes with and the server's nonce. [`sign`](Self::sign)
/// adds a fresh `jti` (128 random bits) and `iat` (now, unless
/// [`issued_at`](Self::issued_at) says otherwise).
///
/// Without [`nonce`](Self::nonce), the proof carries the latest nonce the key remembers for
/// the URI's origin ([`DpopKey::remember_nonce`]), if any.
///
/// # Example
///
/// ```
/// use http::{Method, Uri};
/// use tower_jwt_refresh::client::dpop::DpopKey;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = DpopKey::generate()?;
/// let uri = Uri::from_static("https://auth.example.com/oauth/token");
/// // A refresh request: no access token; the nonce the server sent in `DPoP-Nonce`.
/// let proof = key.proof(&Method::POST, &uri).nonce("eyJ7S_zG.eyJH0-Z.HX4w-7v").sign()?;
/// # let _ = proof; Ok(()) }
/// ```
#[must_use]
pub struct Proof<'a> {
    key: &'a DpopKey,
    method: &'a Method,
    uri: &'a Uri,
    access_token: Option<&'a str>,
    nonce: Option<&'a str>,
    issued_at: Option<u64>,
}

impl fmt::Debug for Proof<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proof")
            .field("method", self.method)
            .field("uri", self.uri)
            .field("access_token", &self.access_token.map(|_| "<redacted>"))
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// The claims of a proof, in the order RFC 9449 §4.2 lists them.
#[derive(Serialize)]
struct Claims<'a> {
    jti: &'a str,
    htm: &'a str,
    htu: &'a str,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

impl<'a> Proof<'a> {
    pub(crate) fn new(key: &'a DpopKey, method: &'a Method, uri: &'a Uri) -> Self {
        Self {
            key,
            method,
            uri,
            access_token: None,
            nonce: None,
            issued_at: None,
        }
    }

    /// The access token sent with the proof: the proof carries its hash (`ath`).
    pub fn access_token(mut self, token: &'a str) -> Self {
        self.access_token = Some(token);
        self
    }

    /// The server's latest nonce (from its `DPoP-Nonce` header), as the `nonce` claim,
    /// instead of the one the key remembers for the URI's origin.
    pub fn nonce(mut self, nonce: &'a str) -> Self {
        self.nonce = Some(nonce);
        self
    }

    /// The `iat` claim, in Unix seconds, instead of the system clock's now: for tests, and
    /// for clients that correct their clock by the server's.
    pub fn issued_at(mut self, unix_seconds: u64) -> Self {
        self.issued_at = Some(unix_seconds);
        self
    }

    /// Signs the proof: the value of the request's `DPoP` header.
    pub fn sign(self) -> Result<String, ProofError> {
        let htu = htu(self.uri).ok_or(ProofError::RelativeUri)?;
        let remembered = match self.nonce {
            Some(_) => None,
            None => nonces::origin(self.uri).and_then(|origin| self.key.nonce_of(&origin)),
        };
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|_| {
            ProofError::Signing(KeyError::Signing(
                "the system random generator failed".into(),
            ))
        })?;
        let iat = self.issued_at.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
        let claims = Claims {
            jti: &URL_SAFE_NO_PAD.encode(jti),
            htm: self.method.as_str(),
            htu: &htu,
            iat,
            ath: self.access_token.map(access_token_hash),
            nonce: self.nonce.or(remembered.as_deref()),
        };
        let json = serde_json::to_vec(&claims)
            .map_err(|e| ProofError::Signing(KeyError::Signing(e.into())))?;
        self.key.sign(&json).map_err(ProofError::Signing)
    }
}

/// The `htu` of a request: its scheme, host, port and path, without user information,
/// query or fragment.
fn htu(uri: &Uri) -> Option<String> {
    let (scheme, host) = (uri.scheme_str()?, nonces::host_port(uri)?);
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    Some(format!("{scheme}://{host}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Algorithm;
    use serde_json::Value;

    fn decode(segment: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
    }

    #[test]
    fn a_proof_has_the_header_and_claims_of_rfc_9449() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA] {
            let key = DpopKey::generate_with(alg).unwrap();
            let uri = Uri::from_static("https://Server.example.com:443/a/b?q=1#frag");
            let proof = key
                .proof(&Method::POST, &uri)
                .access_token("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU")
                .nonce("n-0S6_WzA2Mj")
                .issued_at(1_562_262_616)
                .sign()
                .unwrap();
            let parts: Vec<&str> = proof.split('.').collect();
            assert_eq!(parts.len(), 3);
            let header = decode(parts[0]);
            assert_eq!(header["typ"], "dpop+jwt");
            assert_eq!(header["alg"], format!("{alg:?}"));
            let jwk = &header["jwk"];
            assert!(jwk.get("d").is_none(), "{jwk}");
            assert_eq!(jwk.to_string(), key.public_jwk());
            let claims = decode(parts[1]);
            assert_eq!(claims["htm"], "POST");
            assert_eq!(claims["htu"], "https://Server.example.com:443/a/b");
            assert_eq!(claims["iat"], 1_562_262_616);
            assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
            // RFC 9449 §7.1: this access token's `ath`.
            assert_eq!(claims["ath"], "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
            assert_eq!(claims["jti"].as_str().unwrap().len(), 22);
        }
    }

    #[test]
    fn optional_claims_are_left_out_and_jti_is_fresh() {
        let key = DpopKey::generate().unwrap();
        let uri = Uri::from_static("http://localhost:3000");
        let proofs: Vec<Value> = (0..2)
            .map(|_| {
                decode(
                    key.proof(&Method::GET, &uri)
                        .sign()
                        .unwrap()
                        .split('.')
                        .nth(1)
                        .unwrap(),
                )
            })
            .collect();
        assert_eq!(proofs[0]["htu"], "http://localhost:3000/");
        assert!(proofs[0].get("ath").is_none() && proofs[0].get("nonce").is_none());
        assert_ne!(proofs[0]["jti"], proofs[1]["jti"]);
        assert!(proofs[0]["iat"].as_u64().unwrap() > 1_700_000_000);
    }

    #[test]
    fn user_information_never_reaches_htu() {
        let key = DpopKey::generate().unwrap();
        let uri = Uri::from_static("https://user:secret@api.example.com:8443/a?b=1");
        let proof = key.proof(&Method::GET, &uri).sign().unwrap();
        let claims = decode(proof.split('.').nth(1).unwrap());
        assert_eq!(claims["htu"], "https://api.example.com:8443/a");
    }

    #[test]
    fn relative_uris_are_refused() {
        let key = DpopKey::generate().unwrap();
        let uri = Uri::from_static("/orders");
        assert!(matches!(
            key.proof(&Method::GET, &uri).sign(),
            Err(ProofError::RelativeUri)
        ));
    }
}
