//! Small helpers the issuer's parts share: random bytes and whole seconds.

use std::time::Duration;

use crate::issuer::error::IssueError;

/// `N` random bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], IssueError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| IssueError::Random)?;
    Ok(bytes)
}

/// `duration` in whole seconds, a fraction rounded up (as JWT times and store TTLs count);
/// `u64::MAX` for anything longer, so `Duration::MAX` neither panics nor wraps to 0.
pub(crate) fn whole_seconds_up(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_random() {
        assert_ne!(random_bytes::<32>().unwrap(), random_bytes::<32>().unwrap());
    }

    #[test]
    fn fractions_round_up() {
        assert_eq!(whole_seconds_up(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds_up(Duration::from_millis(2001)), 3);
        assert_eq!(whole_seconds_up(Duration::from_nanos(1)), 1);
        assert_eq!(whole_seconds_up(Duration::ZERO), 0);
    }

    #[test]
    fn the_longest_duration_saturates() {
        assert_eq!(whole_seconds_up(Duration::MAX), u64::MAX);
        assert_eq!(whole_seconds_up(Duration::from_secs(u64::MAX)), u64::MAX);
    }
}
