//! Every instrument the crate records through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`), named in this one file.
//!
//! Each role builds its handles once, when its component is built: the server's with the
//! [`JwtAuthLayer`](crate::server::JwtAuthLayer), the issuer's with the
//! [`TokenIssuer`](crate::issuer::TokenIssuer), the client's with the
//! [`Session`](crate::client::Session), the remote JWKS's with the
//! `RemoteJwks`. Recording an event is then an increment on a handle: with no recorder
//! installed the handle is a no-op (a null check), and with one it is an atomic add, with no
//! lookup by name. So the recorder must be installed before those components are built;
//! a component built earlier records nothing.
//!
//! Without the feature, every type here is empty and every function does nothing, so each call
//! site compiles to nothing.
//!
//! Names follow OpenTelemetry's conventions: dot-separated and namespaced, no unit in the name
//! (the unit is given when the instrument is described), and attribute values from fixed sets.
//! An attribute that only applies to some outcomes (the `reason` of a rejection) is recorded
//! only with them, as OpenTelemetry's conditionally required attributes are.

#![cfg_attr(not(feature = "metrics"), allow(unused_variables, dead_code))]

use std::fmt;
#[cfg(feature = "client")]
use std::time::Duration;

#[cfg(feature = "metrics")]
use ::metrics::{Counter, Unit, counter, describe_counter, describe_histogram};
#[cfg(all(feature = "metrics", any(feature = "issuer", feature = "client")))]
use ::metrics::{Histogram, histogram};

/// The names, in one place; the README's table lists them with their units and attributes.
/// Every name is here whichever roles are built.
#[allow(dead_code)]
pub(crate) mod name {
    pub(crate) const SERVER_REQUESTS: &str = "tower_jwt_refresh.server.requests";
    pub(crate) const SERVER_CACHE_LOOKUPS: &str = "tower_jwt_refresh.server.cache.lookups";
    pub(crate) const SERVER_REVOCATION_CHECKS: &str = "tower_jwt_refresh.server.revocation.checks";
    pub(crate) const SERVER_JWKS_FETCHES: &str = "tower_jwt_refresh.server.jwks.fetches";
    pub(crate) const SERVER_JWKS_REFETCHES: &str = "tower_jwt_refresh.server.jwks.refetches";
    pub(crate) const ISSUER_ISSUED: &str = "tower_jwt_refresh.issuer.issued";
    pub(crate) const ISSUER_ROTATIONS: &str = "tower_jwt_refresh.issuer.rotations";
    pub(crate) const ISSUER_REVOCATIONS: &str = "tower_jwt_refresh.issuer.revocations";
    pub(crate) const ISSUER_STORE_ERRORS: &str = "tower_jwt_refresh.issuer.store.errors";
    pub(crate) const ISSUER_STORE_DURATION: &str = "tower_jwt_refresh.issuer.store.duration";
    pub(crate) const CLIENT_REFRESHES: &str = "tower_jwt_refresh.client.refreshes";
    pub(crate) const CLIENT_REFRESH_DURATION: &str = "tower_jwt_refresh.client.refresh.duration";
    pub(crate) const CLIENT_WAITS: &str = "tower_jwt_refresh.client.waits";
    pub(crate) const CLIENT_WAIT_DURATION: &str = "tower_jwt_refresh.client.wait.duration";
    pub(crate) const CLIENT_REPLAYS: &str = "tower_jwt_refresh.client.replays";
    pub(crate) const CLIENT_SESSION_EXPIRIES: &str = "tower_jwt_refresh.client.session.expiries";
}

/// Describes `counters` and `histograms` (name, unit, description) to the current recorder.
#[cfg(feature = "metrics")]
fn describe(
    counters: &[(&'static str, &'static str)],
    histograms: &[(&'static str, &'static str)],
) {
    for &(name, text) in counters {
        describe_counter!(name, Unit::Count, text);
    }
    for &(name, text) in histograms {
        describe_histogram!(name, Unit::Seconds, text);
    }
}

/// Builds one counter per value of a fixed attribute.
#[cfg(feature = "metrics")]
fn counters<const N: usize>(
    name: &'static str,
    key: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    values.map(|value| counter!(name, key => value))
}

#[cfg(all(feature = "metrics", any(feature = "issuer", feature = "client")))]
fn histograms<const N: usize>(
    name: &'static str,
    key: &'static str,
    values: [&'static str; N],
) -> [Histogram; N] {
    values.map(|value| histogram!(name, key => value))
}

macro_rules! opaque_debug {
    ($($ty:ident),*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty)).finish_non_exhaustive()
            }
        }
    )*};
}

#[cfg(feature = "server")]
opaque_debug!(Server);
#[cfg(feature = "jwks")]
opaque_debug!(Jwks);
#[cfg(feature = "issuer")]
opaque_debug!(Issuer);
#[cfg(feature = "client")]
opaque_debug!(Client);

// ---------------------------------------------------------------------------------------------
// Server

#[cfg(feature = "server")]
use crate::server::{Rejection, TokenError, TokenStatus};

/// The `reason` of a rejected request, by [`reason`].
#[cfg(feature = "server")]
pub(crate) const REASONS: [&str; 18] = [
    "missing_token",
    "invalid_request",
    "insufficient_scope",
    "revocation_unavailable",
    "expired",
    "too_large",
    "malformed",
    "algorithm",
    "unknown_key",
    "invalid_signature",
    "header",
    "type",
    "not_yet_valid",
    "issuer",
    "audience",
    "missing_claim",
    "claims",
    "revoked",
];

/// The index in [`REASONS`] of a rejection's reason.
#[cfg(feature = "server")]
pub(crate) fn reason(rejection: Rejection) -> usize {
    match rejection {
        Rejection::MissingToken => 0,
        Rejection::InvalidRequest(_) => 1,
        Rejection::InsufficientScope => 2,
        Rejection::DenyListUnavailable => 3,
        Rejection::InvalidToken(error) => match error {
            TokenError::Expired => 4,
            TokenError::TooLarge => 5,
            TokenError::Malformed => 6,
            TokenError::Algorithm => 7,
            TokenError::UnknownKey => 8,
            TokenError::Signature => 9,
            TokenError::Header => 10,
            TokenError::Type => 11,
            TokenError::NotYetValid => 12,
            TokenError::Issuer => 13,
            TokenError::Audience => 14,
            TokenError::MissingClaim => 15,
            TokenError::Claims => 16,
            TokenError::Revoked => 17,
        },
    }
}

/// The outcomes of a revocation (deny-list) check.
#[cfg(feature = "server")]
const REVOCATION_OUTCOMES: [&str; 5] = ["active", "revoked", "error", "timeout", "overloaded"];

/// The server's instruments, built with its layer.
#[cfg(feature = "server")]
#[derive(Clone)]
pub(crate) struct Server {
    #[cfg(feature = "metrics")]
    verified: Counter,
    #[cfg(feature = "metrics")]
    anonymous: Counter,
    #[cfg(feature = "metrics")]
    rejected: [Counter; 18],
    #[cfg(feature = "metrics")]
    cache: [Counter; 2],
    #[cfg(feature = "metrics")]
    revocation: [Counter; 5],
}

#[cfg(feature = "server")]
impl Server {
    pub(crate) fn new() -> Self {
        #[cfg(feature = "metrics")]
        {
            use name::*;
            describe(
                &[
                    (
                        SERVER_REQUESTS,
                        "requests the server layer decided, by outcome",
                    ),
                    (
                        SERVER_CACHE_LOOKUPS,
                        "verified-token cache lookups, by result",
                    ),
                    (SERVER_REVOCATION_CHECKS, "deny-list checks, by outcome"),
                ],
                &[],
            );
            let rejected = REASONS.map(
                |reason| counter!(SERVER_REQUESTS, "outcome" => "rejected", "reason" => reason),
            );
            Self {
                verified: counter!(SERVER_REQUESTS, "outcome" => "verified"),
                anonymous: counter!(SERVER_REQUESTS, "outcome" => "anonymous"),
                rejected,
                cache: counters(SERVER_CACHE_LOOKUPS, "result", ["hit", "miss"]),
                revocation: counters(SERVER_REVOCATION_CHECKS, "outcome", REVOCATION_OUTCOMES),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    /// A request let through: with verified claims, or anonymous (optional mode).
    #[inline]
    pub(crate) fn passed(&self, verified: bool) {
        #[cfg(feature = "metrics")]
        if verified {
            self.verified.increment(1);
        } else {
            self.anonymous.increment(1);
        }
    }

    /// A request's verdict: let through, or refused.
    #[inline]
    pub(crate) fn verdict<T>(&self, verdict: &Result<Option<T>, Rejection>) {
        #[cfg(feature = "metrics")]
        match verdict {
            Ok(claims) => self.passed(claims.is_some()),
            Err(rejection) => self.rejected[reason(*rejection)].increment(1),
        }
    }

    /// A lookup in the verified-token cache: a hit if it `found` the token.
    #[inline]
    pub(crate) fn cache<T>(&self, found: &Option<T>) {
        #[cfg(feature = "metrics")]
        self.cache[usize::from(found.is_none())].increment(1);
    }

    /// A hit in the verified-token cache.
    #[inline]
    pub(crate) fn cache_hit(&self) {
        #[cfg(feature = "metrics")]
        self.cache[0].increment(1);
    }

    /// A deny-list check that answered.
    #[inline]
    pub(crate) fn revocation(&self, status: &Result<TokenStatus, crate::BoxError>) {
        #[cfg(feature = "metrics")]
        self.revocation[match status {
            Ok(TokenStatus::Active) => 0,
            Ok(TokenStatus::Revoked) => 1,
            Err(_) => 2,
        }]
        .increment(1);
    }

    /// A deny-list check that did not answer: it overran the I/O timeout, or too many were
    /// pending to start it.
    #[inline]
    pub(crate) fn revocation_unanswered(&self, timed_out: bool) {
        #[cfg(feature = "metrics")]
        self.revocation[if timed_out { 3 } else { 4 }].increment(1);
    }
}

/// The remote JWKS's instruments, built with it.
#[cfg(feature = "jwks")]
pub(crate) struct Jwks {
    #[cfg(feature = "metrics")]
    fetches: [Counter; 2],
    #[cfg(feature = "metrics")]
    refetches: Counter,
}

#[cfg(feature = "jwks")]
impl Jwks {
    pub(crate) fn new() -> Self {
        #[cfg(feature = "metrics")]
        {
            use name::*;
            describe(
                &[
                    (
                        SERVER_JWKS_FETCHES,
                        "JWKS fetches (first, periodic and refetches), by result",
                    ),
                    (
                        SERVER_JWKS_REFETCHES,
                        "JWKS refetches started by a token with an unknown kid",
                    ),
                ],
                &[],
            );
            Self {
                fetches: counters(SERVER_JWKS_FETCHES, "result", ["ok", "error"]),
                refetches: counter!(SERVER_JWKS_REFETCHES),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    /// A fetch that ended, stored or failed.
    pub(crate) fn fetched<T, E>(&self, result: &Result<T, E>) {
        #[cfg(feature = "metrics")]
        self.fetches[usize::from(result.is_err())].increment(1);
    }

    /// A refetch started for an unknown `kid`.
    pub(crate) fn refetch(&self) {
        #[cfg(feature = "metrics")]
        self.refetches.increment(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Issuer

#[cfg(feature = "issuer")]
use crate::issuer::store::{RotationOutcome, StoreError};

/// A store operation, the `operation` attribute of the store instruments.
#[cfg(feature = "issuer")]
#[derive(Clone, Copy)]
pub(crate) enum StoreOp {
    Create = 0,
    Rotate = 1,
    Revoke = 2,
}

#[cfg(feature = "issuer")]
const STORE_OPS: [&str; 3] = ["create", "rotate", "revoke"];

/// The outcomes of a rotation that reached the store.
#[cfg(feature = "issuer")]
const ROTATION_OUTCOMES: [&str; 7] = [
    "rotated",
    "grace_retry",
    "reused",
    "expired",
    "revoked",
    "unknown",
    "error",
];

/// The issuer's instruments, built with the `TokenIssuer`.
#[cfg(feature = "issuer")]
#[derive(Clone)]
pub(crate) struct Issuer {
    #[cfg(feature = "metrics")]
    issued: Counter,
    #[cfg(feature = "metrics")]
    rotations: [Counter; 7],
    #[cfg(feature = "metrics")]
    revocations: Counter,
    #[cfg(feature = "metrics")]
    store_errors: [Counter; 3],
    #[cfg(feature = "metrics")]
    store_duration: [Histogram; 3],
}

#[cfg(feature = "issuer")]
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

// ---------------------------------------------------------------------------------------------
// Client

/// The outcomes of a refresh.
#[cfg(feature = "client")]
const REFRESH_OUTCOMES: [&str; 3] = ["success", "expired", "failed"];

/// The client's instruments, built with each `Session`.
#[cfg(feature = "client")]
pub(crate) struct Client {
    #[cfg(feature = "metrics")]
    refreshes: [Counter; 3],
    #[cfg(feature = "metrics")]
    refresh_duration: [Histogram; 3],
    #[cfg(feature = "metrics")]
    waits: Counter,
    #[cfg(feature = "metrics")]
    wait_duration: Histogram,
    #[cfg(feature = "metrics")]
    replays: [Counter; 2],
    #[cfg(feature = "metrics")]
    expiries: Counter,
}

#[cfg(feature = "client")]
impl Client {
    pub(crate) fn new() -> Self {
        #[cfg(feature = "metrics")]
        {
            use name::*;
            describe(
                &[
                    (CLIENT_REFRESHES, "token refreshes that ran, by outcome"),
                    (CLIENT_WAITS, "requests held until a refresh ended"),
                    (CLIENT_REPLAYS, "requests sent again after a rejection"),
                    (
                        CLIENT_SESSION_EXPIRIES,
                        "sessions expired: refresh token refused",
                    ),
                ],
                &[
                    (CLIENT_REFRESH_DURATION, "token refresh latency, by outcome"),
                    (CLIENT_WAIT_DURATION, "how long a held request waited"),
                ],
            );
            Self {
                refreshes: counters(CLIENT_REFRESHES, "outcome", REFRESH_OUTCOMES),
                refresh_duration: histograms(CLIENT_REFRESH_DURATION, "outcome", REFRESH_OUTCOMES),
                waits: counter!(CLIENT_WAITS),
                wait_duration: histogram!(CLIENT_WAIT_DURATION),
                replays: counters(CLIENT_REPLAYS, "stale", ["false", "true"]),
                expiries: counter!(CLIENT_SESSION_EXPIRIES),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    /// A refresh that ran to an outcome after `took`: new tokens, the session expired (the
    /// refresh token refused, or its successor unusable), or a transient failure.
    pub(crate) fn refresh(&self, took: Duration, outcome: &Result<(), crate::client::Error>) {
        #[cfg(feature = "metrics")]
        {
            let i = match outcome {
                Ok(()) => 0,
                Err(crate::client::Error::SessionExpired) => 1,
                Err(_) => 2,
            };
            self.refreshes[i].increment(1);
            self.refresh_duration[i].record(took);
        }
    }

    /// A request that waited `waited` for a refresh.
    pub(crate) fn waited(&self, waited: Duration) {
        #[cfg(feature = "metrics")]
        {
            self.waits.increment(1);
            self.wait_duration.record(waited);
        }
    }

    /// A replay; `stale` when the request had used tokens already replaced.
    pub(crate) fn replay(&self, stale: bool) {
        #[cfg(feature = "metrics")]
        self.replays[usize::from(stale)].increment(1);
    }

    /// The session expired.
    pub(crate) fn expired(&self) {
        #[cfg(feature = "metrics")]
        self.expiries.increment(1);
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use ::metrics::with_local_recorder;
    use metrics_util::CompositeKey;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    use super::*;

    /// Everything recorded since the last snapshot (taking one drains the recorder).
    type Recorded = Vec<(CompositeKey, DebugValue)>;

    fn recorded(snapshotter: &Snapshotter) -> Recorded {
        let all = snapshotter.snapshot().into_vec().into_iter();
        all.map(|(key, _, _, value)| (key, value)).collect()
    }

    /// The series `name` with exactly `labels`.
    fn series<'a>(
        recorded: &'a Recorded,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<&'a DebugValue> {
        recorded.iter().find_map(|(key, value)| {
            let key = key.key();
            let have: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
            (key.name() == name && have == labels).then_some(value)
        })
    }

    /// The value of counter `name` with exactly `labels`, 0 when it was never registered.
    fn count(recorded: &Recorded, name: &str, labels: &[(&str, &str)]) -> u64 {
        match series(recorded, name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            Some(other) => panic!("{name} is not a counter: {other:?}"),
            None => 0,
        }
    }

    /// How many values histogram `name` with `labels` recorded.
    fn samples(recorded: &Recorded, name: &str, labels: &[(&str, &str)]) -> usize {
        match series(recorded, name, labels) {
            Some(DebugValue::Histogram(values)) => values.len(),
            Some(other) => panic!("{name} is not a histogram: {other:?}"),
            None => 0,
        }
    }

    #[cfg(feature = "server")]
    #[test]
    fn every_rejection_has_a_reason_of_its_own() {
        use crate::server::RequestError;
        let cases = [
            (Rejection::MissingToken, "missing_token"),
            (
                Rejection::InvalidRequest(RequestError::EmptyToken),
                "invalid_request",
            ),
            (Rejection::InsufficientScope, "insufficient_scope"),
            (Rejection::DenyListUnavailable, "revocation_unavailable"),
            (Rejection::InvalidToken(TokenError::Expired), "expired"),
            (Rejection::InvalidToken(TokenError::TooLarge), "too_large"),
            (Rejection::InvalidToken(TokenError::Malformed), "malformed"),
            (Rejection::InvalidToken(TokenError::Algorithm), "algorithm"),
            (
                Rejection::InvalidToken(TokenError::UnknownKey),
                "unknown_key",
            ),
            (
                Rejection::InvalidToken(TokenError::Signature),
                "invalid_signature",
            ),
            (Rejection::InvalidToken(TokenError::Header), "header"),
            (Rejection::InvalidToken(TokenError::Type), "type"),
            (
                Rejection::InvalidToken(TokenError::NotYetValid),
                "not_yet_valid",
            ),
            (Rejection::InvalidToken(TokenError::Issuer), "issuer"),
            (Rejection::InvalidToken(TokenError::Audience), "audience"),
            (
                Rejection::InvalidToken(TokenError::MissingClaim),
                "missing_claim",
            ),
            (Rejection::InvalidToken(TokenError::Claims), "claims"),
            (Rejection::InvalidToken(TokenError::Revoked), "revoked"),
        ];
        for (rejection, want) in cases {
            assert_eq!(REASONS[reason(rejection)], want, "{rejection:?}");
        }
        let mut all = REASONS.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), REASONS.len(), "reasons are distinct");
    }

    #[cfg(feature = "issuer")]
    #[tokio::test]
    async fn the_server_layer_counts_verdicts_and_cache_lookups() {
        use http::Request;
        use tower::{ServiceExt, service_fn};

        use crate::issuer::AccessTokenIssuer;
        use crate::keys::{Algorithm, SigningKey};
        use crate::server::JwtAuthLayer;

        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let key = SigningKey::hmac(Algorithm::HS256, [7u8; 32]).unwrap();
        let layer = with_local_recorder(&recorder, || JwtAuthLayer::new(key.verification_key()));
        let token = AccessTokenIssuer::new(key)
            .mint("alice", "sid", &())
            .unwrap()
            .token;
        let service = tower_layer::Layer::layer(
            &layer,
            service_fn(|_: Request<()>| async {
                Ok::<_, crate::BoxError>(http::Response::new(()))
            }),
        );
        let bearer = |token: &str| {
            Request::get("/")
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .unwrap()
        };
        for request in [
            bearer(&token),
            bearer(&token),
            bearer("not-a-jwt"),
            Request::new(()),
        ] {
            service.clone().oneshot(request).await.unwrap();
        }

        let snapshot = recorded(&snapshotter);
        let requests = name::SERVER_REQUESTS;
        assert_eq!(count(&snapshot, requests, &[("outcome", "verified")]), 2);
        let rejected = |reason| [("outcome", "rejected"), ("reason", reason)];
        assert_eq!(count(&snapshot, requests, &rejected("malformed")), 1);
        assert_eq!(count(&snapshot, requests, &rejected("missing_token")), 1);
        assert_eq!(count(&snapshot, requests, &rejected("expired")), 0);
        let lookups = name::SERVER_CACHE_LOOKUPS;
        assert_eq!(count(&snapshot, lookups, &[("result", "hit")]), 1);
        // The first request's token, and the malformed one.
        assert_eq!(count(&snapshot, lookups, &[("result", "miss")]), 2);
    }

    #[cfg(feature = "issuer")]
    #[tokio::test(start_paused = true)]
    async fn the_server_layer_counts_revocation_checks_by_outcome() {
        use crate::issuer::AccessTokenIssuer;
        use crate::keys::{Algorithm, SigningKey};
        use crate::server::{DenyCheck, JwtAuthLayer, RegisteredClaims};

        let key = SigningKey::hmac(Algorithm::HS256, [7u8; 32]).unwrap();
        let issuer = AccessTokenIssuer::new(key.clone());
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        // The hook answers by subject: active, revoked, failing, or never.
        let layer = with_local_recorder(&recorder, || {
            JwtAuthLayer::new(key.verification_key()).deny_list(|claims: &RegisteredClaims| {
                match claims.sub.as_deref() {
                    Some("active") => DenyCheck::active(),
                    Some("revoked") => DenyCheck::revoked(),
                    Some("failing") => DenyCheck::ready(Err("backend down".into())),
                    _ => DenyCheck::pending(std::future::pending()),
                }
            })
        });
        for subject in ["active", "revoked", "failing", "hanging"] {
            let token = issuer.mint(subject, "sid", &()).unwrap().token;
            let verdict = layer.verify(&token).await;
            assert_eq!(verdict.is_ok(), subject == "active", "{subject}");
        }

        let snapshot = recorded(&snapshotter);
        let checks = |outcome| {
            let labels = [("outcome", outcome)];
            count(&snapshot, name::SERVER_REVOCATION_CHECKS, &labels)
        };
        assert_eq!(
            ["active", "revoked", "error", "timeout", "overloaded"].map(checks),
            [1, 1, 1, 1, 0]
        );
    }

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

    #[cfg(feature = "client")]
    #[tokio::test(start_paused = true)]
    async fn the_client_counts_refreshes_waits_replays_and_expiries() {
        use bytes::Bytes;
        use http::{Request, Response, StatusCode};
        use http_body_util::Full;
        use tower::{ServiceExt, service_fn};
        use tower_layer::Layer as _;

        use crate::client::{Error, RefreshFailure, RefreshLayer, Session, Tokens, refresher_fn};

        // The server accepts only `good`; a refresh token `r-ok` is traded for it, any other
        // is refused for good.
        let inner = service_fn(|req: Request<Full<Bytes>>| async move {
            let good = req.headers()["authorization"] == "Bearer good";
            let status = if good {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            };
            let mut response = Response::new(Full::<Bytes>::default());
            *response.status_mut() = status;
            Ok::<_, crate::BoxError>(response)
        });
        let refresher = refresher_fn(|refresh: String| async move {
            match refresh.as_str() {
                "r-ok" => Ok(Tokens::new("good", "r-next")),
                _ => Err(RefreshFailure::permanent("invalid_grant")),
            }
        });
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (refreshed, expiring) =
            with_local_recorder(&recorder, || (Session::new(), Session::new()));
        refreshed.login(Tokens::new("stale", "r-ok")).unwrap();
        expiring.login(Tokens::new("stale", "r-spent")).unwrap();
        let get = || Request::get("/").body(Full::<Bytes>::default()).unwrap();

        let client = RefreshLayer::new(refreshed.clone(), refresher.clone()).layer(inner);
        let response = client.clone().oneshot(get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let client = RefreshLayer::new(expiring.clone(), refresher).layer(inner);
        let error = client.clone().oneshot(get()).await.unwrap_err();
        assert!(matches!(error, Error::SessionExpired), "{error}");

        let snapshot = recorded(&snapshotter);
        let refreshes = |outcome| count(&snapshot, name::CLIENT_REFRESHES, &[("outcome", outcome)]);
        assert_eq!(refreshes("success"), 1);
        assert_eq!(refreshes("expired"), 1);
        assert_eq!(refreshes("failed"), 0);
        let took = name::CLIENT_REFRESH_DURATION;
        assert_eq!(samples(&snapshot, took, &[("outcome", "success")]), 1);
        assert_eq!(samples(&snapshot, took, &[("outcome", "expired")]), 1);
        assert_eq!(count(&snapshot, name::CLIENT_SESSION_EXPIRIES, &[]), 1);
        // Each rejected request waited for its refresh; only the refreshed one was replayed.
        assert_eq!(count(&snapshot, name::CLIENT_WAITS, &[]), 2);
        assert_eq!(samples(&snapshot, name::CLIENT_WAIT_DURATION, &[]), 2);
        let replays = |stale| count(&snapshot, name::CLIENT_REPLAYS, &[("stale", stale)]);
        assert_eq!((replays("false"), replays("true")), (1, 0));
    }

    #[cfg(feature = "jwks")]
    #[test]
    fn the_remote_jwks_counts_fetches_and_refetches() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use bytes::Bytes;
        use http::{Request, Response, StatusCode};
        use http_body_util::Empty;

        use crate::keys::{KeySource, RemoteJwks};

        const JWKS: &[u8] =
            br#"{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s"}]}"#;
        // The second fetch fails with a 500; every other serves the key set.
        let calls = Arc::new(AtomicUsize::new(0));
        let client = tower::service_fn(move |_: Request<Empty<Bytes>>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut response = Response::new(Bytes::from_static(JWKS));
                if n == 1 {
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                }
                Ok::<_, crate::BoxError>(response)
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let url = "https://auth.example/jwks.json".parse().unwrap();
        let build = RemoteJwks::builder(url)
            .client(client)
            .allow_symmetric_keys()
            .build();
        // The handles bind while `build` runs, under the recorder.
        let jwks = with_local_recorder(&recorder, || runtime.block_on(build)).unwrap();
        runtime.block_on(async {
            assert!(jwks.refresh().await.is_err());
            jwks.refresh().await.unwrap();
            let keys = KeySource::from(jwks);
            keys.unknown_kid().expect("a refetch starts").await;
        });

        let snapshot = recorded(&snapshotter);
        let fetches = |result| count(&snapshot, name::SERVER_JWKS_FETCHES, &[("result", result)]);
        // The first fetch, two refreshes (one failed) and the refetch.
        assert_eq!((fetches("ok"), fetches("error")), (3, 1));
        assert_eq!(count(&snapshot, name::SERVER_JWKS_REFETCHES, &[]), 1);
    }

    #[test]
    fn every_instrument_is_in_the_readme_and_the_crate_docs() {
        use name::*;
        let readme = include_str!("../README.md");
        let docs = include_str!("lib.rs");
        for name in [
            SERVER_REQUESTS,
            SERVER_CACHE_LOOKUPS,
            SERVER_REVOCATION_CHECKS,
            SERVER_JWKS_FETCHES,
            SERVER_JWKS_REFETCHES,
            ISSUER_ISSUED,
            ISSUER_ROTATIONS,
            ISSUER_REVOCATIONS,
            ISSUER_STORE_ERRORS,
            ISSUER_STORE_DURATION,
            CLIENT_REFRESHES,
            CLIENT_REFRESH_DURATION,
            CLIENT_WAITS,
            CLIENT_WAIT_DURATION,
            CLIENT_REPLAYS,
            CLIENT_SESSION_EXPIRIES,
        ] {
            let row = format!("| `{name}` |");
            assert!(readme.contains(&row), "README lacks {name}");
            assert!(docs.contains(&row), "the crate docs lack {name}");
        }
    }
}
