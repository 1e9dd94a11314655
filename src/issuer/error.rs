//! The issuer's errors: [`IssueError`] (minting, starting a session), [`GrantError`] (why a
//! refresh token was refused) and [`RefreshError`] (why a rotation failed).

use std::fmt;

use crate::issuer::store::StoreError;
use crate::keys::KeyError;

/// Why a token could not be issued.
#[derive(Debug)]
#[non_exhaustive]
pub enum IssueError {
    /// The custom claims did not serialize to a JSON object.
    Claims(serde_json::Error),
    /// The custom claims use a name the issuer sets itself (`sub`, `exp`, …).
    ReservedClaim(String),
    /// The operating system's random number generator failed.
    Random,
    /// The signing key failed.
    Signing(KeyError),
    /// The store could not record the new session: retry later.
    Unavailable(StoreError),
}

impl fmt::Display for IssueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Claims(_) => f.write_str("custom claims must serialize to a json object"),
            Self::ReservedClaim(name) => write!(f, "custom claim `{name}` is set by the issuer"),
            Self::Random => f.write_str("random number generator failed"),
            Self::Signing(_) => f.write_str("signing failed"),
            Self::Unavailable(_) => f.write_str("refresh-token store unavailable"),
        }
    }
}

impl std::error::Error for IssueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Claims(e) => Some(e),
            Self::Signing(e) => Some(e),
            Self::Unavailable(e) => Some(e),
            Self::ReservedClaim(_) | Self::Random => None,
        }
    }
}

impl From<StoreError> for IssueError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e)
    }
}

/// Why a refresh token was refused: each answers `invalid_grant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrantError {
    /// Not a refresh token of this format (an access token, for one).
    Malformed,
    /// No such family, or a token it never issued.
    Unknown,
    /// The family's absolute lifetime or idle timeout has passed.
    Expired,
    /// The family was revoked (logout, or an earlier reuse).
    Revoked,
    /// A rotated-out token was presented again: the family is now revoked.
    Reused,
    /// The refresh token is bound to a DPoP key (RFC 9449 §5) and the request had no proof
    /// from that key. Nothing changed: the holder of the key can still refresh.
    WrongKey,
}

impl GrantError {
    /// A fixed description.
    pub fn description(self) -> &'static str {
        match self {
            Self::Malformed => "refresh token malformed",
            Self::Unknown => "refresh token unknown",
            Self::Expired => "refresh token expired",
            Self::Revoked => "refresh token revoked",
            Self::Reused => "refresh token reused; session revoked",
            Self::WrongKey => "refresh token is bound to another dpop key",
        }
    }
}

/// Why a rotation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RefreshError {
    /// The refresh token is not valid: RFC 6749 `invalid_grant`.
    InvalidGrant(GrantError),
    /// The store could not answer: retry later (503).
    Unavailable(StoreError),
    /// The access token could not be minted.
    Issue(IssueError),
}

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidGrant(e) => f.write_str(e.description()),
            Self::Unavailable(_) => f.write_str("refresh-token store unavailable"),
            Self::Issue(_) => f.write_str("access token could not be issued"),
        }
    }
}

impl std::error::Error for RefreshError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidGrant(_) => None,
            Self::Unavailable(e) => Some(e),
            Self::Issue(e) => Some(e),
        }
    }
}

impl From<StoreError> for RefreshError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e)
    }
}

impl From<IssueError> for RefreshError {
    fn from(e: IssueError) -> Self {
        Self::Issue(e)
    }
}

impl From<GrantError> for RefreshError {
    fn from(e: GrantError) -> Self {
        Self::InvalidGrant(e)
    }
}
