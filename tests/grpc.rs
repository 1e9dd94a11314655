//! End to end over gRPC: a real tonic server behind [`JwtAuthLayer`] and a real tonic client,
//! talking over TCP on 127.0.0.1.
//!
//! The unary service `/test.Echo/Say` (in `examples/common/echo.rs`, reached as `support::echo`) is written by hand. Each test
//! checks the status code and message the client sees for one kind of token, and that a
//! request with a valid token reaches the handler together with its verified claims.

mod support;

use jsonwebtoken::{EncodingKey, Header, get_current_timestamp};
use serde_json::{Value, json};
use support::echo::{connect, say_via, serve_echo};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower_jwt_refresh::keys::{Algorithm, Key};
use tower_jwt_refresh::server::JwtAuthLayer;

const SECRET: &[u8] = b"the grpc test secret, 32 bytes or more";
fn key() -> Key {
    Key::hmac(Algorithm::HS256, SECRET).expect("a 32+ byte HS256 secret")
}

/// Starts the server behind `auth` and connects a channel to it.
async fn serve(auth: JwtAuthLayer) -> Channel {
    connect(serve_echo(auth).await).await
}

/// Calls `Say` with `message`, sending `token` as `authorization: Bearer <token>` if given.
async fn say(channel: Channel, token: Option<&str>, message: &str) -> Result<String, Status> {
    say_via(channel, token, message).await
}

/// An `at+jwt` HS256 token over `claims`, signed with `secret`.
fn token_with(secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".to_owned());
    tower_jwt_refresh::keys::install_crypto_provider();
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign")
}

fn token(claims: &Value) -> String {
    token_with(SECRET, claims)
}

fn now() -> u64 {
    get_current_timestamp()
}

fn assert_status(result: Result<String, Status>, code: Code, message: &str) {
    let status = result.expect_err("the call must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.message(), message, "{status:?}");
}

#[tokio::test]
async fn no_token_is_unauthenticated() {
    let channel = serve(JwtAuthLayer::new(key())).await;
    let result = say(channel, None, "hello").await;
    assert_status(result, Code::Unauthenticated, "bearer token required");
}

#[tokio::test]
async fn expired_token_is_unauthenticated_as_expired() {
    let channel = serve(JwtAuthLayer::new(key())).await;
    // Past the default 30 s leeway.
    let expired = token(&json!({"sub": "alice", "exp": now() - 120}));
    let result = say(channel, Some(&expired), "hello").await;
    assert_status(result, Code::Unauthenticated, "token expired");
}

#[tokio::test]
async fn bad_signature_is_unauthenticated() {
    let channel = serve(JwtAuthLayer::new(key())).await;
    let claims = json!({"sub": "alice", "exp": now() + 300});
    let forged = token_with(b"not the server's secret, but 32+ bytes", &claims);
    let result = say(channel, Some(&forged), "hello").await;
    assert_status(result, Code::Unauthenticated, "token signature invalid");
}

#[tokio::test]
async fn valid_token_reaches_the_handler_with_its_claims() {
    let channel = serve(JwtAuthLayer::new(key())).await;
    let valid = token(&json!({"sub": "alice", "exp": now() + 300}));
    let reply = say(channel, Some(&valid), "hello")
        .await
        .expect("a valid token passes");
    assert_eq!(reply, "alice: hello");
}

#[tokio::test]
async fn missing_scope_is_permission_denied() {
    let channel = serve(JwtAuthLayer::new(key()).require_scope("admin")).await;
    let reader = token(&json!({"sub": "bob", "exp": now() + 300, "scope": "read"}));
    let result = say(channel.clone(), Some(&reader), "hello").await;
    assert_status(
        result,
        Code::PermissionDenied,
        "token lacks a required scope",
    );
    // The same server lets the scope through, so the refusal above was the scope's doing.
    let admin = token(&json!({"sub": "carol", "exp": now() + 300, "scope": "read admin"}));
    let reply = say(channel, Some(&admin), "hello")
        .await
        .expect("the admin scope passes");
    assert_eq!(reply, "carol: hello");
}
