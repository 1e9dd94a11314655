//! A hand-written tonic unary service (tonic's manual codegen), `/test.Echo/Say`, with a UTF-8 string codec: no
//! protoc, no build script. It answers `"<sub>: <message>"`, the `sub` from the claims the
//! server layer verified.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut};
use http::uri::PathAndQuery;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::client::GrpcService;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};
use tower_jwt_refresh::server::{Claims, JwtAuthLayer};

pub const SAY: &str = "/test.Echo/Say";

/// A message is a UTF-8 string, sent as its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8Codec;

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
pub struct EchoServer;

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

/// Starts the echo server behind `auth` on an ephemeral loopback port.
///
/// The listener is bound before the server task starts, so the port is known and accepting.
pub async fn serve_echo(auth: JwtAuthLayer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let server = Server::builder()
        .layer(auth)
        .add_service(EchoServer)
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(async move { server.await.expect("grpc server failed") });
    addr
}

/// A channel to `addr`.
pub async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint uri")
        .connect()
        .await
        .expect("connect to the test server")
}

/// Calls `Say` through `service`, adding `authorization: Bearer <token>` if given.
pub async fn say_via<T>(service: T, token: Option<&str>, message: &str) -> Result<String, Status>
where
    T: GrpcService<Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut client = tonic::client::Grpc::new(service);
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.into().to_string()))?;
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
