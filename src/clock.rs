//! The wall clock, as Unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// The system clock as Unix time in whole seconds.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
