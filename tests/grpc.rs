//! End to end over gRPC: a real tonic server behind [`JwtAuthLayer`] and a real tonic client,
//! talking over TCP on 127.0.0.1.
//!
//! No protoc and no build script: the unary service `/test.Echo/Say` and its client are
//! written by hand, with a UTF-8 string codec. Each test checks the status code and message
//! the client sees for one kind of token, and that a request with a valid token reaches the
//! handler together with its verified claims.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut};
use http::uri::PathAndQuery;
use jsonwebtoken::{EncodingKey, Header, get_current_timestamp};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status};
use tower_jwt_refresh::server::{Algorithm, Claims, JwtAuthLayer, Key};

const SECRET: &[u8] = b"the grpc test secret, 32 bytes or more";
const SAY: &str = "/test.Echo/Say";

/// A message is a UTF-8 string, sent as its bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Utf8Codec;

impl Codec for Utf8Codec {
    type Encode = String;
    type Decode = String;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for Utf8Codec {
    type Item = String;
    type Error = Status;

    fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }
}

impl Decoder for Utf8Codec {
    type Item = String;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| Status::invalid_argument("message is not UTF-8"))
    }
}

/// The `test.Echo` service, routed by hand as tonic's generated code would.
#[derive(Debug, Clone, Copy, Default)]
struct EchoServer;

impl NamedService for EchoServer {
    const NAME: &'static str = "test.Echo";
}

impl tower::Service<http::Request<Body>> for EchoServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() != SAY {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            Ok(tonic::server::Grpc::new(Utf8Codec).unary(Say, req).await)
        })
    }
}

/// `Say`: answers `"<sub>: <message>"`, the `sub` taken from the claims the layer verified.
struct Say;

impl UnaryService<String> for Say {
    type Response = String;
    type Future = Ready<Result<Response<String>, Status>>;

    fn call(&mut self, request: Request<String>) -> Self::Future {
        let reply = match request.extensions().get::<Claims>() {
            Some(claims) => {
                let sub = claims.subject().unwrap_or("<no sub>").to_owned();
                Ok(Response::new(format!("{sub}: {}", request.get_ref())))
            }
            None => Err(Status::internal("handler saw no verified claims")),
        };
        ready(reply)
    }
}

fn key() -> Key {
    Key::hmac(Algorithm::HS256, SECRET).expect("a 32+ byte HS256 secret")
}

/// Starts the server behind `auth` on an ephemeral port and connects a channel to it.
///
/// The listener is bound before the server task starts, so the port is known and accepting.
async fn serve(auth: JwtAuthLayer) -> Channel {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let server = Server::builder()
        .layer(auth)
        .add_service(EchoServer)
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(async move { server.await.expect("grpc server failed") });
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint uri")
        .connect()
        .await
        .expect("connect to the test server")
}

/// Calls `Say` with `message`, sending `token` as `authorization: Bearer <token>` if given.
async fn say(channel: Channel, token: Option<&str>, message: &str) -> Result<String, Status> {
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.expect("channel ready");
    let mut request = Request::new(message.to_owned());
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .expect("ascii metadata value");
        request.metadata_mut().insert("authorization", value);
    }
    client
        .unary(request, PathAndQuery::from_static(SAY), Utf8Codec)
        .await
        .map(Response::into_inner)
}

/// An `at+jwt` HS256 token over `claims`, signed with `secret`.
fn token_with(secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".to_owned());
    tower_jwt_refresh::server::install_crypto_provider();
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
