//! The client's instruments: refreshes and their latency, held requests and their wait,
//! replays, DPoP nonce retries, session expiries.

use std::time::Duration;

use tokio::time::Instant;

#[cfg(feature = "metrics")]
use ::metrics::{Counter, Histogram, counter, histogram};

#[cfg(feature = "metrics")]
use super::{counters, describe, histograms, name};

opaque_debug!(Client);

/// The outcomes of a refresh.
const REFRESH_OUTCOMES: [&str; 3] = ["success", "expired", "failed"];

/// The client's instruments, built with each `Session`.
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
    nonce_retries: Counter,
    #[cfg(feature = "metrics")]
    expiries: Counter,
}

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
                        CLIENT_DPOP_NONCE_RETRIES,
                        "requests sent again with a server's new dpop nonce",
                    ),
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
                nonce_retries: counter!(CLIENT_DPOP_NONCE_RETRIES),
                expiries: counter!(CLIENT_SESSION_EXPIRIES),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    /// A refresh begun at `started` that ran to an outcome: new tokens, the session expired
    /// (the refresh token refused, or its successor unusable), or a transient failure.
    pub(crate) fn refresh(&self, started: Instant, outcome: &Result<(), crate::client::Error>) {
        #[cfg(feature = "metrics")]
        {
            let took = started.elapsed();
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

    /// A request sent again with a server's new DPoP nonce.
    pub(crate) fn nonce_retry(&self) {
        #[cfg(feature = "metrics")]
        self.nonce_retries.increment(1);
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
    use metrics_util::debugging::DebuggingRecorder;

    use super::*;
    use crate::metrics::tests::{count, recorded, samples};

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

    #[cfg(all(feature = "client", feature = "dpop"))]
    #[tokio::test]
    async fn a_dpop_nonce_retry_is_counted_apart_from_replays() {
        use bytes::Bytes;
        use http::{Request, Response, StatusCode};
        use http_body_util::Full;
        use tower::{ServiceExt, service_fn};
        use tower_layer::Layer as _;

        use crate::client::dpop::DpopKey;
        use crate::client::{RefreshFailure, RefreshLayer, Session, Tokens, refresher_fn};

        // The server wants a nonce: the first request is challenged, the second passes.
        let inner = service_fn(|req: Request<Full<Bytes>>| async move {
            let proof = req.headers()["dpop"].to_str().unwrap().to_owned();
            let payload = proof.split('.').nth(1).unwrap();
            let claims =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                    .unwrap();
            let has_nonce = String::from_utf8(claims)
                .unwrap()
                .contains("\"nonce\":\"n-1\"");
            let mut response = Response::new(Full::<Bytes>::default());
            if !has_nonce {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
                let headers = response.headers_mut();
                headers.insert(
                    "www-authenticate",
                    r#"DPoP error="use_dpop_nonce""#.parse()?,
                );
                headers.insert("dpop-nonce", "n-1".parse()?);
            }
            Ok::<_, crate::BoxError>(response)
        });
        let refresher = refresher_fn(|_| async { Err(RefreshFailure::transient("unused")) });
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let session = with_local_recorder(&recorder, Session::new);
        session.login(Tokens::new("good", "r")).unwrap();
        let key = DpopKey::generate().unwrap();
        let client = RefreshLayer::new(session.clone(), refresher)
            .dpop(key)
            .layer(inner);
        let get = Request::get("https://api.test/").body(Full::<Bytes>::default());
        let response = client.oneshot(get.unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        let snapshot = recorded(&snapshotter);
        assert_eq!(count(&snapshot, name::CLIENT_DPOP_NONCE_RETRIES, &[]), 1);
        let replays = |stale| count(&snapshot, name::CLIENT_REPLAYS, &[("stale", stale)]);
        assert_eq!((replays("false"), replays("true")), (0, 0));
        assert_eq!(
            count(&snapshot, name::CLIENT_REFRESHES, &[("outcome", "success")]),
            0
        );
        assert_eq!(session.stats().dpop_nonce_retries, 1);
    }
}
