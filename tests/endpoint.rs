//! The refresh (RFC 6749 §6) and revocation (RFC 7009) endpoints over a real axum server: form
//! and JSON bodies, every error row, and the headers on every response. `/` is a route behind
//! the verifier with the store's deny-list hook.

mod support;

use std::future::Future;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use support::{HttpClient, Reply, client, get_bearer, send, serve};
use tower_jwt_refresh::issuer::store::{
    NewFamily, RefreshStore, Rotation, RotationOutcome, StoreError,
};
use tower_jwt_refresh::issuer::{AccessTokenIssuer, MemoryStore, TokenIssuer};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};
use tower_jwt_refresh::server::{Claims, DenyCheck, JwtAuthLayer};

fn key() -> SigningKey {
    SigningKey::hmac(Algorithm::HS256, [5u8; 32]).unwrap()
}

/// The token endpoints, and `/` behind the verifier with the store's deny-list hook.
fn app<S: RefreshStore + Clone>(issuer: &TokenIssuer<S>) -> Router {
    let auth = JwtAuthLayer::new(key().verification_key()).deny_list(issuer.deny_list());
    Router::new()
        .route(
            "/",
            get(|c: Claims| async move { c.subject().unwrap_or_default().to_owned() }).layer(auth),
        )
        .route_service("/oauth/token", issuer.refresh_endpoint())
        .route_service("/oauth/revoke", issuer.revocation_endpoint())
}

async fn setup() -> (TokenIssuer<MemoryStore>, std::net::SocketAddr, HttpClient) {
    // No grace window: the error rows present a token rotated out a moment ago as reuse.
    let issuer = TokenIssuer::new(AccessTokenIssuer::new(key()), MemoryStore::new())
        .grace_period(std::time::Duration::ZERO);
    let addr = serve(app(&issuer)).await;
    (issuer, addr, client())
}

async fn post(
    client: &HttpClient,
    url: String,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Reply {
    let req = Request::post(url)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap();
    send(client, req).await
}

fn form(token: &str) -> String {
    format!("grant_type=refresh_token&refresh_token={token}")
}

/// Asserts an RFC 6749 §5.2 error and the no-store headers.
fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_no_store(reply);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["error"], code, "{}", reply.body);
    assert!(body["error_description"].is_string());
}

fn assert_no_store(reply: &Reply) {
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert_eq!(reply.headers["pragma"], "no-cache");
    assert_eq!(reply.headers["content-type"], "application/json");
}

#[tokio::test]
async fn form_and_json_refreshes_return_an_rfc_6749_token_response() {
    let (issuer, addr, client) = setup().await;
    let pair = issuer.issue("alice", &()).await.unwrap();
    let token_url = format!("http://{addr}/oauth/token");

    let reply = post(
        &client,
        token_url.clone(),
        "application/x-www-form-urlencoded",
        form(&pair.refresh_token),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_no_store(&reply);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    let refreshed = body["refresh_token"].as_str().unwrap().to_owned();
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(get_bearer(&client, addr, access).await.body, "alice");

    let json_body = json!({"grant_type": "refresh_token", "refresh_token": refreshed}).to_string();
    let reply = post(
        &client,
        token_url,
        "application/json; charset=utf-8",
        json_body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_ne!(
        serde_json::from_str::<Value>(&reply.body).unwrap()["refresh_token"],
        refreshed.as_str()
    );
}

#[tokio::test]
async fn every_error_row() {
    let (issuer, addr, client) = setup().await;
    let url = format!("http://{addr}/oauth/token");
    let pair = issuer.issue("alice", &()).await.unwrap();
    let rotated = issuer.rotate(&pair.refresh_token).await.unwrap();
    let form_type = "application/x-www-form-urlencoded";
    let cases: Vec<(&str, &str, String, StatusCode, &str)> = vec![
        (
            "reused token",
            form_type,
            form(&pair.refresh_token),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "its revoked successor",
            form_type,
            form(&rotated.refresh_token),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "unknown token",
            form_type,
            form(&format!("{}.{}", "A".repeat(22), "A".repeat(43))),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "garbage token",
            form_type,
            form("garbage"),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "an access token",
            form_type,
            form(&rotated.access_token),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "no grant_type",
            form_type,
            format!("refresh_token={}", pair.refresh_token),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "an empty refresh_token",
            form_type,
            "grant_type=refresh_token&refresh_token=".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "an empty grant_type",
            form_type,
            format!("grant_type=&refresh_token={}", pair.refresh_token),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "no refresh_token",
            form_type,
            "grant_type=refresh_token".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "another grant",
            form_type,
            "grant_type=password&username=a&password=b".into(),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            "a repeated parameter",
            form_type,
            "grant_type=refresh_token&grant_type=refresh_token&refresh_token=x".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "another content type",
            "text/plain",
            form("x"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "an oversized body",
            form_type,
            format!("{}&pad={}", form("x"), "a".repeat(20_000)),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "malformed json",
            "application/json",
            "{".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "a non-string json value",
            "application/json",
            r#"{"grant_type":"refresh_token","refresh_token":7}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "a repeated json member",
            "application/json",
            r#"{"grant_type":"refresh_token","grant_type":"refresh_token"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (label, content_type, body, status, code) in cases {
        let reply = post(&client, url.clone(), content_type, body).await;
        assert_eq!(reply.status, status, "{label}: {}", reply.body);
        assert_error(&reply, status, code);
        // Every refused grant reads the same: a family id is public, and must not tell a
        // revoked session from a forgery.
        if code == "invalid_grant" {
            let body: Value = serde_json::from_str(&reply.body).unwrap();
            assert_eq!(
                body["error_description"], "refresh token is invalid, expired or revoked",
                "{label}"
            );
        }
    }
    // A refresh token is never an access token.
    let fresh = issuer.issue("bob", &()).await.unwrap();
    let reply = get_bearer(&client, addr, &fresh.refresh_token).await;
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
}

#[tokio::test]
async fn other_methods_are_405() {
    let (_, addr, client) = setup().await;
    for path in ["oauth/token", "oauth/revoke"] {
        for method in ["GET", "PUT", "DELETE"] {
            let req = Request::builder()
                .method(method)
                .uri(format!("http://{addr}/{path}"))
                .body(Full::default())
                .unwrap();
            let reply = send(&client, req).await;
            assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "invalid_request");
            assert_eq!(reply.headers["allow"], "POST");
        }
    }
}

#[tokio::test]
async fn revocation_logs_out_at_once_and_answers_200_for_unknown_tokens() {
    let (issuer, addr, client) = setup().await;
    let url = format!("http://{addr}/oauth/revoke");
    let form_type = "application/x-www-form-urlencoded";
    let pair = issuer.issue("alice", &()).await.unwrap();
    assert_eq!(
        get_bearer(&client, addr, &pair.access_token).await.status,
        StatusCode::OK
    );

    let reply = post(
        &client,
        url.clone(),
        form_type,
        format!("token={}&token_type_hint=refresh_token", pair.refresh_token),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_no_store(&reply);
    // The session's access token is refused on the next request, and the refresh token too.
    let reply = get_bearer(&client, addr, &pair.access_token).await;
    assert_eq!(reply.description(), "token revoked");
    let reply = post(
        &client,
        format!("http://{addr}/oauth/token"),
        form_type,
        form(&pair.refresh_token),
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_grant");

    // The last includes the input the endpoint fuzzer flagged: a control byte in the value
    // and an unknown `token\r` parameter. Revoking it succeeds, as RFC 7009 §2.2 asks.
    for unknown in ["token=nonsense", "token=a.b.c", "token=t\u{8}&token\r"] {
        let reply = post(&client, url.clone(), form_type, unknown).await;
        assert_eq!(reply.status, StatusCode::OK, "{unknown}");
    }
    let reply = post(
        &client,
        url.clone(),
        "application/json",
        json!({"token": "x"}).to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = post(&client, url, form_type, "token_type_hint=refresh_token").await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
}

/// A store that is always down.
#[derive(Clone)]
struct DownStore;

impl RefreshStore for DownStore {
    fn create(&self, _: NewFamily<'_>) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Err(StoreError::new("down")))
    }
    fn rotate(
        &self,
        _: Rotation<'_>,
    ) -> impl Future<Output = Result<RotationOutcome, StoreError>> + Send {
        std::future::ready(Err(StoreError::new("down")))
    }
    fn revoke(
        &self,
        _: &str,
        _: Option<&str>,
        _: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        std::future::ready(Err(StoreError::new("down")))
    }
    fn is_revoked(&self, _: &str) -> DenyCheck {
        DenyCheck::active()
    }
}

#[tokio::test]
async fn a_store_outage_is_503_with_retry_after_and_hands_out_nothing() {
    let issuer = TokenIssuer::new(AccessTokenIssuer::new(key()), DownStore);
    let addr = serve(app(&issuer)).await;
    let client = client();
    let token = format!("{}.{}", "A".repeat(22), "A".repeat(43));
    let form_type = "application/x-www-form-urlencoded";
    for (path, body) in [
        ("oauth/token", form(&token)),
        ("oauth/revoke", format!("token={token}")),
    ] {
        let reply = post(&client, format!("http://{addr}/{path}"), form_type, body).await;
        assert_error(
            &reply,
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
        );
        assert_eq!(reply.headers["retry-after"], "1");
        assert!(!reply.body.contains("access_token") && !reply.body.contains("refresh_token"));
    }
    // Nothing is issued either when the store cannot record it.
    assert!(issuer.issue("alice", &()).await.is_err());
}

/// A store whose families carry claims that are not JSON: minting fails after the rotation.
#[derive(Clone)]
struct BrokenClaims(MemoryStore);

impl RefreshStore for BrokenClaims {
    async fn create(&self, mut family: NewFamily<'_>) -> Result<(), StoreError> {
        family.claims = "not json";
        self.0.create(family).await
    }
    async fn rotate(&self, rotation: Rotation<'_>) -> Result<RotationOutcome, StoreError> {
        self.0.rotate(rotation).await
    }
    async fn revoke(&self, family: &str, hash: Option<&str>, ttl: u64) -> Result<bool, StoreError> {
        self.0.revoke(family, hash, ttl).await
    }
    fn is_revoked(&self, family: &str) -> DenyCheck {
        self.0.is_revoked(family)
    }
}

#[tokio::test]
async fn a_minting_failure_is_a_500_not_a_retryable_503() {
    let issuer = TokenIssuer::new(
        AccessTokenIssuer::new(key()),
        BrokenClaims(MemoryStore::new()),
    );
    let addr = serve(app(&issuer)).await;
    let pair = issuer.issue("alice", &()).await.unwrap();
    let reply = post(
        &client(),
        format!("http://{addr}/oauth/token"),
        "application/x-www-form-urlencoded",
        form(&pair.refresh_token),
    )
    .await;
    assert_error(&reply, StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    assert!(!reply.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn an_oversized_body_is_refused_from_its_content_length() {
    let (_, addr, client) = setup().await;
    // Declares more than the cap but sends almost nothing: refused without waiting for it.
    let req = Request::post(format!("http://{addr}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", "1000000")
        .body(Full::new(Bytes::from_static(b"grant_type=refresh_token")))
        .unwrap();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(5), send(&client, req)).await;
    let reply = reply.expect("answered without reading a body that never comes");
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
}
