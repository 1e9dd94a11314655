//! Every instrument the crate records through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`). Every name is in [`name`]; each role's handles are in a file of their
//! own (`server.rs`, with the remote JWKS's, `issuer.rs`, `client.rs`), and each call site in
//! the roles is one call into them.
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
//! Each role describes its own instruments (name, unit, description) to the recorder when it
//! builds its handles: a rare event (a layer, an issuer or a session built), and a recorder
//! keeps one description per name.
//!
//! Names follow OpenTelemetry's conventions: dot-separated and namespaced, no unit in the name
//! (the unit is given when the instrument is described), and attribute values from fixed sets.
//! An attribute that only applies to some outcomes (the `reason` of a rejection) is recorded
//! only with them, as OpenTelemetry's conditionally required attributes are.

#![cfg_attr(not(feature = "metrics"), allow(unused_variables, dead_code))]

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
    pub(crate) const CLIENT_DPOP_NONCE_RETRIES: &str =
        "tower_jwt_refresh.client.dpop_nonce_retries";
    pub(crate) const CLIENT_SESSION_EXPIRIES: &str = "tower_jwt_refresh.client.session.expiries";
}

/// Describes `counters` and `histograms` (name, unit, description) to the current recorder.
#[cfg(feature = "metrics")]
pub(crate) fn describe(
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
pub(crate) fn counters<const N: usize>(
    name: &'static str,
    key: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    values.map(|value| counter!(name, key => value))
}

#[cfg(all(feature = "metrics", any(feature = "issuer", feature = "client")))]
pub(crate) fn histograms<const N: usize>(
    name: &'static str,
    key: &'static str,
    values: [&'static str; N],
) -> [Histogram; N] {
    values.map(|value| histogram!(name, key => value))
}

macro_rules! opaque_debug {
    ($($ty:ident),*) => {$(
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty)).finish_non_exhaustive()
            }
        }
    )*};
}

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "issuer")]
mod issuer;
#[cfg(feature = "server")]
mod server;

#[cfg(feature = "client")]
pub(crate) use client::Client;
#[cfg(feature = "issuer")]
pub(crate) use issuer::{Issuer, StoreOp};
#[cfg(feature = "jwks")]
pub(crate) use server::Jwks;
#[cfg(feature = "server")]
pub(crate) use server::Server;

/// What the tests of every role read a recorder with.
#[cfg(all(test, feature = "metrics"))]
pub(crate) mod tests {
    use metrics_util::CompositeKey;
    use metrics_util::debugging::{DebugValue, Snapshotter};

    /// Everything recorded since the last snapshot (taking one drains the recorder).
    pub(crate) type Recorded = Vec<(CompositeKey, DebugValue)>;

    pub(crate) fn recorded(snapshotter: &Snapshotter) -> Recorded {
        let all = snapshotter.snapshot().into_vec().into_iter();
        all.map(|(key, _, _, value)| (key, value)).collect()
    }

    /// The series `name` with exactly `labels`.
    pub(crate) fn series<'a>(
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
    pub(crate) fn count(recorded: &Recorded, name: &str, labels: &[(&str, &str)]) -> u64 {
        match series(recorded, name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            Some(other) => panic!("{name} is not a counter: {other:?}"),
            None => 0,
        }
    }

    /// How many values histogram `name` with `labels` recorded.
    pub(crate) fn samples(recorded: &Recorded, name: &str, labels: &[(&str, &str)]) -> usize {
        match series(recorded, name, labels) {
            Some(DebugValue::Histogram(values)) => values.len(),
            Some(other) => panic!("{name} is not a histogram: {other:?}"),
            None => 0,
        }
    }

    #[test]
    fn every_instrument_is_in_the_readme_and_the_crate_docs() {
        use super::name::*;
        let readme = include_str!("../../README.md");
        let docs = include_str!("../lib.rs");
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
            CLIENT_DPOP_NONCE_RETRIES,
            CLIENT_SESSION_EXPIRIES,
        ] {
            let row = format!("| `{name}` |");
            assert!(readme.contains(&row), "README lacks {name}");
            assert!(docs.contains(&row), "the crate docs lack {name}");
        }
    }
}
