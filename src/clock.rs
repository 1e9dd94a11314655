//! [`Clock`]: the one wall clock the server and the issuer read.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in whole seconds, as the verifier, the issuer and the stores read it.
///
/// [`Clock::system`] (the default) reads the system clock. Tests and simulations pass their
/// own with [`Clock::from_fn`]. A [`TokenIssuer`](crate::issuer::TokenIssuer) hands its clock
/// to its access-token issuer and to its store, so one setting moves them together; give a
/// [`JwtAuthLayer`](crate::server::JwtAuthLayer) the same clock to keep the verifier in step.
///
/// Cloning is cheap (at most a reference-count bump).
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tower_jwt_refresh::Clock;
///
/// let now = Arc::new(AtomicU64::new(1_700_000_000));
/// let clock = Clock::from_fn({
///     let now = now.clone();
///     move || now.load(Ordering::Relaxed)
/// });
/// now.fetch_add(60, Ordering::Relaxed);
/// assert_eq!(clock.now(), 1_700_000_060);
/// ```
#[derive(Clone, Default)]
pub struct Clock(Source);

#[derive(Clone, Default)]
enum Source {
    #[default]
    System,
    Custom(Arc<dyn Fn() -> u64 + Send + Sync>),
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// A clock that asks `now` for the Unix time in seconds.
    pub fn from_fn(now: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self(Source::Custom(Arc::new(now)))
    }

    /// The current Unix time, in whole seconds.
    #[inline]
    pub fn now(&self) -> u64 {
        match &self.0 {
            Source::System => system_now(),
            Source::Custom(now) => now(),
        }
    }

    /// The current Unix second or the next one, never an earlier one: a cheap reading for
    /// checks that must never run late, such as a verified-token cache hit (`now < exp`).
    ///
    /// The system clock is read coarsely where the OS offers it (a tenth of the cost on
    /// Linux); such a reading lags real time by at most a timer tick, milliseconds, so one
    /// second added covers it. A custom clock is read as [`now`](Self::now).
    #[inline]
    pub(crate) fn now_or_later(&self) -> u64 {
        match &self.0 {
            Source::System => coarse_now_or_later(),
            Source::Custom(now) => now(),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Source::System => f.write_str("Clock::System"),
            Source::Custom(_) => f.write_str("Clock::Custom"),
        }
    }
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The coarse real-time clock's second, plus one for its lag of at most a timer tick.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn coarse_now_or_later() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    match clock_gettime(ClockId::CLOCK_REALTIME_COARSE) {
        Ok(coarse) => u64::try_from(coarse.tv_sec()).map_or(0, |secs| secs.saturating_add(1)),
        Err(_) => system_now(),
    }
}

/// Without a coarse clock, the precise one.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn coarse_now_or_later() -> u64 {
    system_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_unix_seconds() {
        let before = system_now();
        let read = Clock::default().now();
        assert!(read >= before && read <= system_now());
        assert!(read > 1_600_000_000, "{read} is not a current Unix time");
    }

    #[test]
    fn the_cheap_reading_is_never_earlier_and_at_most_a_second_later() {
        let clock = Clock::system();
        for _ in 0..1000 {
            let before = system_now();
            let cheap = clock.now_or_later();
            let after = system_now();
            assert!(
                cheap >= before && cheap <= after + 1,
                "{before} {cheap} {after}"
            );
        }
        assert_eq!(Clock::from_fn(|| 42).now_or_later(), 42);
    }

    #[test]
    fn a_custom_clock_is_asked_every_time() {
        let clock = Clock::from_fn(|| 42);
        assert_eq!((clock.now(), clock.clone().now()), (42, 42));
        assert_eq!(format!("{clock:?}"), "Clock::Custom");
    }
}
