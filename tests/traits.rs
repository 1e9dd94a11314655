//! Compile-time checks: the services, layers, futures and bodies are `Send`, `Sync` and
//! `Clone` where users need them.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::util::ServiceFn;
use tower_jwt_refresh::keys::{KeySet, KeySource};
use tower_jwt_refresh::server::future::ResponseFuture;
use tower_jwt_refresh::server::{
    AuthBody, Claims, FormToken, FormTokenLayer, JwtAuth, JwtAuthLayer, Rejection,
};

type Inner = ServiceFn<
    fn(Request<Full<Bytes>>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
>;

fn send_sync_clone<T: Send + Sync + Clone>() {}
fn send<T: Send>() {}

#[test]
fn public_types_are_send_sync_and_clone() {
    send_sync_clone::<JwtAuthLayer>();
    send_sync_clone::<JwtAuth<Inner>>();
    send_sync_clone::<FormTokenLayer>();
    send_sync_clone::<FormToken<Inner>>();
    send_sync_clone::<KeySet>();
    send_sync_clone::<KeySource>();
    send_sync_clone::<Claims>();
    send_sync_clone::<Rejection>();
    send::<ResponseFuture<Inner, Full<Bytes>, serde::de::IgnoredAny>>();
    send::<AuthBody<Full<Bytes>>>();
}

#[test]
fn an_infallible_stack_stays_infallible() {
    fn error_of<S: tower::Service<Request<Full<Bytes>>, Error = Infallible>>(_: &S) {}
    let key =
        tower_jwt_refresh::keys::Key::hmac(jsonwebtoken::Algorithm::HS256, [1u8; 32]).unwrap();
    let inner: Inner =
        tower::service_fn(|_| std::future::ready(Ok(Response::new(Full::default()))));
    let svc = tower::Layer::layer(&JwtAuthLayer::new(key), inner);
    error_of(&svc);
}
