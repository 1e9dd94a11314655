//! The issuer's instruments: sessions issued, rotations by outcome, revocations, and the
//! store's errors and latency.

#[cfg(feature = "metrics")]
use ::metrics::{Counter, Histogram, counter};

#[cfg(feature = "metrics")]
use super::{counters, describe, histograms, name};
use crate::issuer::store::{RotationOutcome, StoreError};

opaque_debug!(Issuer);

/// A store operation, the `operation` attribute of the store instruments.
#[derive(Clone, Copy)]
pub(crate) enum StoreOp {
    Create = 0,
    Rotate = 1,
    Revoke = 2,
}

const STORE_OPS: [&str; 3] = ["create", "rotate", "revoke"];

/// The outcomes of a rotation that reached the store.
const ROTATION_OUTCOMES: [&str; 8] = [
    "rotated",
    "grace_retry",
    "reused",
    "expired",
    "revoked",
    "unknown",
    "error",
    "wrong_key",
];

/// The issuer's instruments, built with the `TokenIssuer`.
#[derive(Clone)]
pub(crate) struct Issuer {
    #[cfg(feature = "metrics")]
    issued: Counter,
    #[cfg(feature = "metrics")]
    rotations: [Counter; ROTATION_OUTCOMES.len()],
    #[cfg(feature = "metrics")]
    revocations: Counter,
    #[cfg(feature = "metrics")]
    store_errors: [Counter; 3],
    #[cfg(feature = "metrics")]
    store_duration: [Histogram; 3],
}

impl Issuer {
    pub(crate) fn new() -> Self {
        #[cfg(feature = "metrics")]
        {
            use name::*;
            describe(
                &[
                    (ISSUER_ISSUED, "sessions started: first token pairs issued"),
                    (ISSUER_ROTATIONS, "refresh-token rotations, by outcome"),
                    (
                        ISSUER_REVOCATIONS,
                        "sessions revoked by revoke or revoke_session",
                    ),
                    (ISSUER_STORE_ERRORS, "refresh-store operations that failed"),
                ],
                &[(ISSUER_STORE_DURATION, "refresh-store operation latency")],
            );
            Self {
                issued: counter!(ISSUER_ISSUED),
                rotations: counters(ISSUER_ROTATIONS, "outcome", ROTATION_OUTCOMES),
                revocations: counter!(ISSUER_REVOCATIONS),
                store_errors: counters(ISSUER_STORE_ERRORS, "operation", STORE_OPS),
                store_duration: histograms(ISSUER_STORE_DURATION, "operation", STORE_OPS),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    /// A session started (a first pair issued).
    pub(crate) fn issued(&self) {
        #[cfg(feature = "metrics")]
        self.issued.increment(1);
    }

    /// A rotation's outcome in the store; a grace retry and a detected reuse among them.
    pub(crate) fn rotation(&self, outcome: &Result<RotationOutcome, StoreError>) {
        #[cfg(feature = "metrics")]
        self.rotations[match outcome {
            Ok(RotationOutcome::Rotated(_)) => 0,
            Ok(RotationOutcome::Retried { .. }) => 1,
            Ok(RotationOutcome::Reused) => 2,
            Ok(RotationOutcome::Expired) => 3,
            Ok(RotationOutcome::Revoked) => 4,
            Ok(RotationOutcome::Unknown) => 5,
            Err(_) => 6,
            Ok(RotationOutcome::WrongKey) => 7,
        }]
        .increment(1);
    }

    /// A `revoke` or `revoke_session`: counted when it ended a session.
    pub(crate) fn revoked(&self, result: &Result<bool, StoreError>) {
        #[cfg(feature = "metrics")]
        if matches!(result, Ok(true)) {
            self.revocations.increment(1);
        }
    }

    /// Runs a store operation, recording its latency, and its failure if it fails.
    pub(crate) async fn store<T>(
        &self,
        op: StoreOp,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        #[cfg(feature = "metrics")]
        {
            let started = std::time::Instant::now();
            let result = operation.await;
            self.store_duration[op as usize].record(started.elapsed());
            if result.is_err() {
                self.store_errors[op as usize].increment(1);
            }
            result
        }
        #[cfg(not(feature = "metrics"))]
        operation.await
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use ::metrics::with_local_recorder;
    use metrics_util::debugging::DebuggingRecorder;

    use super::*;
    use crate::metrics::tests::{count, recorded, samples};

    #[cfg(feature = "issuer")]
    #[tokio::test]
    async fn the_issuer_counts_rotations_by_outcome_and_times_its_store() {
        use crate::issuer::{AccessTokenIssuer, MemoryStore, TokenIssuer};
        use crate::keys::{Algorithm, SigningKey};

        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let key = SigningKey::hmac(Algorithm::HS256, [7u8; 32]).unwrap();
        let issuer = with_local_recorder(&recorder, || {
            TokenIssuer::new(AccessTokenIssuer::new(key), MemoryStore::new())
        });
        let first = issuer.issue("alice", &()).await.unwrap().refresh_token;
        let second = issuer.rotate(&first).await.unwrap().refresh_token;
        // Inside the grace window, the previous token gets the same successor again.
        assert_eq!(issuer.rotate(&first).await.unwrap().refresh_token, second);
        let third = issuer.rotate(&second).await.unwrap().refresh_token;
        // Two rotations back: reuse, and the session is revoked.
        assert!(issuer.rotate(&first).await.is_err());
        assert!(issuer.rotate(&third).await.is_err());
        let other = issuer.issue("bob", &()).await.unwrap().refresh_token;
        assert!(issuer.revoke(&other).await.unwrap());

        let snapshot = recorded(&snapshotter);
        let rotations = |outcome| count(&snapshot, name::ISSUER_ROTATIONS, &[("outcome", outcome)]);
        assert_eq!(rotations("rotated"), 2);
        assert_eq!(rotations("grace_retry"), 1);
        assert_eq!(rotations("reused"), 1);
        assert_eq!(rotations("revoked"), 1);
        assert_eq!(count(&snapshot, name::ISSUER_ISSUED, &[]), 2);
        assert_eq!(count(&snapshot, name::ISSUER_REVOCATIONS, &[]), 1);
        let store = name::ISSUER_STORE_DURATION;
        assert_eq!(samples(&snapshot, store, &[("operation", "create")]), 2);
        assert_eq!(samples(&snapshot, store, &[("operation", "rotate")]), 5);
        assert_eq!(samples(&snapshot, store, &[("operation", "revoke")]), 1);
        let errors = name::ISSUER_STORE_ERRORS;
        assert_eq!(count(&snapshot, errors, &[("operation", "rotate")]), 0);
    }
}
