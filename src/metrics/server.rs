//! The server's instruments: requests by verdict and reason, the cache, deny-list checks, and
//! the remote JWKS's fetches.

#[cfg(feature = "metrics")]
use ::metrics::{Counter, counter};

#[cfg(feature = "metrics")]
use super::{counters, describe, name};
use crate::server::{Rejection, TokenError, TokenStatus};

opaque_debug!(Server);
#[cfg(feature = "jwks")]
opaque_debug!(Jwks);

/// The `reason` of a rejected request, by [`reason`].
pub(crate) const REASONS: [&str; 23] = [
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
    "invalid_dpop_proof",
    "use_dpop_nonce",
    "dpop_unavailable",
    "dpop_bound",
    "not_dpop_bound",
];

/// The index in [`REASONS`] of a rejection's reason.
pub(crate) fn reason(rejection: Rejection) -> usize {
    match rejection {
        Rejection::MissingToken => 0,
        Rejection::InvalidRequest(_) => 1,
        Rejection::InsufficientScope => 2,
        Rejection::DenyListUnavailable => 3,
        Rejection::InvalidDpopProof(_) => 18,
        Rejection::UseDpopNonce => 19,
        Rejection::DpopUnavailable => 20,
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
            TokenError::DpopBound => 21,
            TokenError::NotDpopBound => 22,
        },
    }
}

/// The outcomes of a revocation (deny-list) check.
const REVOCATION_OUTCOMES: [&str; 5] = ["active", "revoked", "error", "timeout", "overloaded"];

/// The server's instruments, built with its layer.
#[derive(Clone)]
pub(crate) struct Server {
    #[cfg(feature = "metrics")]
    verified: Counter,
    #[cfg(feature = "metrics")]
    anonymous: Counter,
    #[cfg(feature = "metrics")]
    rejected: [Counter; REASONS.len()],
    #[cfg(feature = "metrics")]
    cache: [Counter; 2],
    #[cfg(feature = "metrics")]
    revocation: [Counter; 5],
}

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

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use ::metrics::with_local_recorder;
    use metrics_util::debugging::DebuggingRecorder;

    use super::*;
    use crate::metrics::tests::{count, recorded};

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
}
