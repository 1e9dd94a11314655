//! What Redis answered, as the store's results: a `rotate.lua` reply as its outcome, a Redis
//! error as a [`StoreError`], ambiguous or not.

use crate::issuer::store::{FamilyInfo, RotationOutcome, StoreError};

/// A Redis error as a store error: a timeout or a dropped connection may have happened after
/// the script ran, so the outcome is unknown.
pub(super) fn store_error(error: redis::RedisError) -> StoreError {
    if error.is_timeout() || error.is_connection_dropped() {
        StoreError::ambiguous(error)
    } else {
        StoreError::new(error)
    }
}

/// The outcome a `rotate.lua` reply stands for.
pub(super) fn rotation_outcome(reply: Vec<String>) -> Result<RotationOutcome, StoreError> {
    let malformed = || StoreError::new("malformed rotate reply");
    let mut reply = reply.into_iter();
    let outcome = match reply.next().as_deref() {
        Some("rotated") => {
            let (Some(subject), Some(claims)) = (reply.next(), reply.next()) else {
                return Err(malformed());
            };
            RotationOutcome::Rotated(FamilyInfo::new(subject, claims))
        }
        Some("retried") => {
            let (Some(subject), Some(claims), Some(sealed), Some(current)) =
                (reply.next(), reply.next(), reply.next(), reply.next())
            else {
                return Err(malformed());
            };
            RotationOutcome::Retried {
                info: FamilyInfo::new(subject, claims),
                sealed,
                current,
            }
        }
        Some("reused") => RotationOutcome::Reused,
        Some("expired") => RotationOutcome::Expired,
        Some("revoked") => RotationOutcome::Revoked,
        Some("unknown") => RotationOutcome::Unknown,
        Some("wrong_key") => RotationOutcome::WrongKey,
        _ => return Err(malformed()),
    };
    Ok(outcome)
}

/// Whether `error` says Redis cannot be reached (rather than refusing a command).
pub(super) fn unreachable(error: &redis::RedisError) -> bool {
    error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_io_error()
}
