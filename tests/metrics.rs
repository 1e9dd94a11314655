//! The `metrics` feature, end to end: the example server with `METRICS=1`'s recorder, scraped
//! over a real socket at `GET /metrics` after a refresh-token reuse and after a storm across
//! an expiry, with the example client in the same process (so its instruments land in the
//! same recorder).
//!
//! A process has one global recorder, so this binary holds one test, which installs it.

#[path = "../examples/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::client::{Options, RefreshStyle};
use common::server::Config;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    /// The `error_description` of the `WWW-Authenticate` challenge.
    fn description(&self) -> &str {
        let challenge = self.headers["www-authenticate"].to_str().unwrap();
        let (_, rest) = challenge.split_once("error_description=\"").unwrap();
        rest.split('"').next().unwrap()
    }
}

async fn send(http: &HttpClient, request: Request<Full<Bytes>>) -> Reply {
    let response = http.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The example server on an ephemeral port, serving `/metrics` from `handle`.
async fn example_server(
    handle: &metrics_exporter_prometheus::PrometheusHandle,
    access_ttl: Duration,
) -> String {
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        secret: Some(b"metrics-test-secret-metrics-test!".to_vec()),
        access_ttl,
        metrics: Some(handle.clone()),
        ..Config::default()
    };
    let server = common::server::bind(config).await.unwrap();
    let addr = server.listener.local_addr().unwrap();
    tokio::spawn(common::server::serve(server, std::future::pending()));
    format!("http://{addr}")
}

async fn post_json(http: &HttpClient, url: String, body: Value) -> (StatusCode, Value) {
    let request = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let reply = send(http, request).await;
    let body = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
    (reply.status, body)
}

async fn get(http: &HttpClient, url: String, token: &str) -> Reply {
    let request = Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    send(http, request).await
}

/// `GET /metrics`, parsed: every sample line, `name{labels}` to value.
async fn scrape(http: &HttpClient, base: &str) -> BTreeMap<String, f64> {
    let request = Request::get(format!("{base}/metrics"))
        .body(Full::default())
        .unwrap();
    let reply = send(http, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    reply
        .body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// The value of a series, 0 when it was never recorded.
fn value(scraped: &BTreeMap<String, f64>, series: &str) -> f64 {
    scraped.get(series).copied().unwrap_or(0.0)
}

/// The series of requests refused for `reason`.
fn rejected(reason: &str) -> String {
    format!("tower_jwt_refresh_server_requests_total{{outcome=\"rejected\",reason=\"{reason}\"}}")
}

/// The series of rotations that ended in `outcome`.
fn rotations(outcome: &str) -> String {
    format!("tower_jwt_refresh_issuer_rotations_total{{outcome=\"{outcome}\"}}")
}

const VERIFIED: &str = "tower_jwt_refresh_server_requests_total{outcome=\"verified\"}";

fn assert_values(scraped: &BTreeMap<String, f64>, expected: &[(String, f64)]) {
    for (series, want) in expected {
        assert_eq!(value(scraped, series), *want, "{series}");
    }
}

#[tokio::test]
async fn the_example_server_counts_a_reuse_a_refresh_and_every_rejection_reason() {
    let handle = common::server::install_metrics().unwrap();
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // A session reused: login, two rotations, then the first refresh token again (two
    // rotations back, so reuse, not a grace retry), which revokes the session. Long-lived
    // access tokens, so that the one kept is refused as revoked, never as expired.
    let base = example_server(&handle, Duration::from_secs(3600)).await;
    let login = json!({"username": "admin", "password": "admin"});
    let (status, pair) = post_json(&http, format!("{base}/login"), login).await;
    assert_eq!(status, StatusCode::OK, "{pair}");
    let access = pair["accessToken"].as_str().unwrap().to_owned();
    let first = pair["refreshToken"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&http, format!("{base}/aaa"), &access).await.status,
        StatusCode::OK
    );
    let mut refresh = first.clone();
    for _ in 0..2 {
        let body = json!({ "refreshToken": refresh });
        let (status, pair) = post_json(&http, format!("{base}/refresh"), body).await;
        assert_eq!(status, StatusCode::OK, "{pair}");
        refresh = pair["refreshToken"].as_str().unwrap().to_owned();
    }
    let body = json!({ "refreshToken": first });
    let (status, _) = post_json(&http, format!("{base}/refresh"), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let revoked = get(&http, format!("{base}/aaa"), &access).await;
    assert_eq!(revoked.description(), "token revoked");
    let malformed = get(&http, format!("{base}/bbb"), "not-a-jwt").await;
    assert_eq!(malformed.description(), "token malformed");

    let scraped = scrape(&http, &base).await;
    let checks = "tower_jwt_refresh_server_revocation_checks_total";
    let store = "tower_jwt_refresh_issuer_store_duration_seconds_count";
    let expected = [
        ("tower_jwt_refresh_issuer_issued_total".to_owned(), 1.0),
        (rotations("rotated"), 2.0),
        (rotations("reused"), 1.0),
        (rotations("grace_retry"), 0.0),
        (VERIFIED.to_owned(), 1.0),
        (rejected("revoked"), 1.0),
        (rejected("malformed"), 1.0),
        (rejected("expired"), 0.0),
        (format!("{checks}{{outcome=\"active\"}}"), 1.0),
        (format!("{checks}{{outcome=\"revoked\"}}"), 1.0),
        (format!("{store}{{operation=\"create\"}}"), 1.0),
        (format!("{store}{{operation=\"rotate\"}}"), 3.0),
    ];
    assert_values(&scraped, &expected);

    // A storm across an expiry: 40 requests sent with the expired token are refused, held,
    // and replayed after the one refresh, which rotates once more. The client runs in this
    // process, so its refresh, waits and replays are in the same scrape.
    let base = example_server(&handle, Duration::from_secs(1)).await;
    let options = Options {
        base_url: base.clone(),
        requests: 40,
        refresh_style: RefreshStyle::OAuth,
        early_refresh: false,
        ..Options::default()
    };
    let summary = common::client::run(&options, |_| {}).await.unwrap();
    assert_eq!((summary.ok, summary.failed, summary.refreshes), (40, 0, 1));

    let scraped = scrape(&http, &base).await;
    let expired = value(&scraped, &rejected("expired"));
    let replays = value(
        &scraped,
        "tower_jwt_refresh_client_replays_total{stale=\"false\"}",
    ) + value(
        &scraped,
        "tower_jwt_refresh_client_replays_total{stale=\"true\"}",
    );
    assert!(expired >= 1.0, "no request was refused as expired");
    // Every refused request was replayed once, and nothing else was.
    assert_eq!(replays, expired);
    let refreshes = "tower_jwt_refresh_client_refreshes_total";
    let took = "tower_jwt_refresh_client_refresh_duration_seconds_count";
    let expected = [
        ("tower_jwt_refresh_issuer_issued_total".to_owned(), 2.0),
        (rotations("rotated"), 3.0),
        (rotations("reused"), 1.0),
        (VERIFIED.to_owned(), 41.0),
        (format!("{refreshes}{{outcome=\"success\"}}"), 1.0),
        (format!("{refreshes}{{outcome=\"failed\"}}"), 0.0),
        (format!("{took}{{outcome=\"success\"}}"), 1.0),
        (
            "tower_jwt_refresh_client_session_expiries_total".to_owned(),
            0.0,
        ),
    ];
    assert_values(&scraped, &expected);
    let waits = value(&scraped, "tower_jwt_refresh_client_waits_total");
    let waited = value(
        &scraped,
        "tower_jwt_refresh_client_wait_duration_seconds_count",
    );
    assert_eq!(
        waits, waited,
        "every held request records how long it waited"
    );
}
