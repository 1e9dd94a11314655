//! The circuit breaker `RedisStore`'s calls share (feature `redis`).

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tokio::time::Instant;

/// How long the breaker stays open before calls try Redis again, in milliseconds.
const OPEN_MS: u64 = 1_000;

/// Opens after `threshold` consecutive failures (errors or timeouts) of calls to Redis; for a
/// second, calls do not ask Redis (deny-list checks answer from the store's fallback, writes
/// fail at once) instead of each waiting out a timeout. Then the next calls try Redis again:
/// an answer closes it, a failure opens it for another second. Every open and every close is
/// logged.
pub(crate) struct Breaker {
    threshold: u32,
    /// Consecutive failures; any answer from Redis resets it.
    failures: AtomicU32,
    open: AtomicBool,
    /// Milliseconds since `epoch` until which the breaker is open.
    open_until: AtomicU64,
    epoch: OnceLock<Instant>,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures (at least one).
    pub(crate) fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            open_until: AtomicU64::new(0),
            epoch: OnceLock::new(),
        }
    }

    pub(crate) fn threshold(&self) -> u32 {
        self.threshold
    }

    fn now_ms(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(Instant::now);
        u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether calls should skip Redis now.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed) && self.now_ms() < self.open_until.load(Ordering::Relaxed)
    }

    /// Counts a failed or timed-out call; opens the breaker at the threshold.
    pub(crate) fn failure(&self, cause: &dyn fmt::Display) {
        let failures = self
            .failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(1))
            })
            .map_or(u32::MAX, |n| n.saturating_add(1));
        if failures < self.threshold {
            tracing::debug!(%cause, failures, "redis call failed");
            return;
        }
        self.open_until
            .store(self.now_ms().saturating_add(OPEN_MS), Ordering::Relaxed);
        if !self.open.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %cause,
                failures,
                "redis breaker open: store calls skip redis for 1 s"
            );
        }
    }

    /// Counts an answer from Redis: resets the count, closes the breaker if it was open.
    pub(crate) fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.open.load(Ordering::Relaxed) && self.open.swap(false, Ordering::Relaxed) {
            tracing::info!("redis answers again: breaker closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    use super::*;

    /// Collects the level and message of every event.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<(Level, String)>>>);

    struct Message(String);

    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl Subscriber for Logs {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut message = Message(String::new());
            event.record(&mut message);
            let level = *event.metadata().level();
            self.0.lock().unwrap().push((level, message.0));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    impl Logs {
        /// The warnings and infos logged so far.
        fn notable(&self) -> Vec<(Level, String)> {
            let logs = self.0.lock().unwrap();
            let notable = logs.iter().filter(|(level, _)| *level <= Level::INFO);
            notable.cloned().collect()
        }
    }

    #[test]
    fn opens_at_the_threshold_and_logs_every_open_and_close() {
        let logs = Logs::default();
        tracing::subscriber::with_default(logs.clone(), || {
            let breaker = Breaker::new(3);
            breaker.failure(&"timeout");
            breaker.failure(&"timeout");
            assert!(!breaker.is_open());
            // An answer in between starts the count again.
            breaker.success();
            breaker.failure(&"timeout");
            breaker.failure(&"timeout");
            assert!(!breaker.is_open());
            assert!(logs.notable().is_empty());
            breaker.failure(&"timeout");
            assert!(breaker.is_open());
            // Still failing while open: no second "open".
            breaker.failure(&"refused");
            breaker.success();
            assert!(!breaker.is_open());
            breaker.success();
            for _ in 0..3 {
                breaker.failure(&"refused");
            }
            breaker.success();
            let levels: Vec<Level> = logs.notable().into_iter().map(|(l, _)| l).collect();
            assert_eq!(
                levels,
                [Level::WARN, Level::INFO, Level::WARN, Level::INFO],
                "{:?}",
                logs.notable()
            );
            assert!(logs.notable()[0].1.contains("breaker open"));
            assert!(logs.notable()[1].1.contains("breaker closed"));
        });
    }

    #[test]
    fn a_threshold_of_zero_is_one() {
        let breaker = Breaker::new(0);
        assert!(!breaker.is_open());
        breaker.failure(&"refused");
        assert!(breaker.is_open());
    }
}
