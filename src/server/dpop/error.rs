//! [`DpopError`]: why a DPoP proof was refused.

use std::fmt;

use crate::BoxError;

/// Why a DPoP proof was refused, one variant per check of RFC 9449 §4.3.
///
/// [`error_code`](Self::error_code) gives the OAuth error a response carries:
/// `invalid_dpop_proof` for a bad proof (RFC 9449 §7.1), `use_dpop_nonce` when the server
/// wants a (fresh) nonce (§8, §9), and `temporarily_unavailable` when the replay store failed.
/// `Display` gives a fixed, lower-case description, fit for `error_description`: nothing the
/// client sent is echoed.
///
/// # Example
///
/// ```
/// use tower_jwt_refresh::server::dpop::DpopError;
///
/// assert_eq!(DpopError::Replayed.error_code(), "invalid_dpop_proof");
/// assert_eq!(DpopError::UseNonce.error_code(), "use_dpop_nonce");
/// assert_eq!(DpopError::Replayed.to_string(), "dpop proof replayed");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum DpopError {
    /// The request has no `DPoP` header.
    Missing,
    /// The request has more than one `DPoP` header.
    Multiple,
    /// The proof is longer than the verifier's cap.
    TooLarge,
    /// Not a compact JWS of canonical base64url JSON objects with distinct members, or a
    /// claim of the wrong JSON type.
    Malformed,
    /// The header's `typ` is not `dpop+jwt`.
    Type,
    /// The header's `alg` is `none`, symmetric, unknown, or not on the allow-list.
    Algorithm,
    /// The header's `jwk` is missing, not a supported public key, does not fit `alg`, or
    /// forbids signing.
    InvalidKey,
    /// The header's `jwk` holds a private or symmetric key (`d`, `p`, `k`, …).
    PrivateKey,
    /// The signature does not verify with the header's `jwk`.
    Signature,
    /// A required claim (`jti`, `htm`, `htu`, `iat`, or `ath` with an access token) is
    /// missing.
    MissingClaim(&'static str),
    /// `htm` is not the request's method.
    Method,
    /// `htu` is not the request's URI (after normalisation, without query and fragment).
    Uri,
    /// `ath` is not the hash of the access token presented.
    AccessTokenHash,
    /// `iat` is older than the verifier's window.
    Stale,
    /// `iat` is further in the future than the verifier's skew allows.
    FromTheFuture,
    /// This `jti` was seen before, within the window.
    Replayed,
    /// The verifier requires a server nonce and the proof has none, or an old one: answer
    /// with `use_dpop_nonce` and a fresh `DPoP-Nonce` header.
    UseNonce,
    /// The proof's key is not the one the token is bound to (`cnf.jkt`).
    KeyMismatch,
    /// The replay store failed or is full; the proof was not judged.
    Store(BoxError),
}

impl DpopError {
    /// The OAuth `error` code for a response: `invalid_dpop_proof`, `use_dpop_nonce`, or
    /// `temporarily_unavailable` ([`DpopError::Store`]).
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::UseNonce => "use_dpop_nonce",
            Self::Store(_) => "temporarily_unavailable",
            _ => "invalid_dpop_proof",
        }
    }
}

impl DpopError {
    /// A fixed description: [`Display`](fmt::Display)'s, without the claim's name for
    /// [`DpopError::MissingClaim`].
    pub(crate) fn description(&self) -> &'static str {
        match self {
            Self::Missing => "dpop proof missing",
            Self::Multiple => "more than one dpop proof",
            Self::TooLarge => "dpop proof too large",
            Self::Malformed => "dpop proof malformed",
            Self::Type => "dpop proof typ is not dpop+jwt",
            Self::Algorithm => "dpop proof algorithm not allowed",
            Self::InvalidKey => "dpop proof jwk is not a usable public key",
            Self::PrivateKey => "dpop proof jwk holds a private key",
            Self::Signature => "dpop proof signature invalid",
            Self::MissingClaim(_) => "dpop proof lacks a required claim",
            Self::Method => "dpop proof htm does not match the request",
            Self::Uri => "dpop proof htu does not match the request",
            Self::AccessTokenHash => "dpop proof ath does not match the access token",
            Self::Stale => "dpop proof too old",
            Self::FromTheFuture => "dpop proof issued in the future",
            Self::Replayed => "dpop proof replayed",
            Self::UseNonce => "dpop proof needs the server's current nonce",
            Self::KeyMismatch => "dpop proof key does not match the token binding",
            Self::Store(_) => "dpop replay check unavailable",
        }
    }
}

impl fmt::Display for DpopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingClaim(claim) => write!(f, "dpop proof lacks `{claim}`"),
            other => f.write_str(other.description()),
        }
    }
}

impl std::error::Error for DpopError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => Some(&**e),
            _ => None,
        }
    }
}
