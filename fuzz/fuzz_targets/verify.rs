//! Token extraction and verification, from arbitrary header bytes and token strings: nothing
//! may panic, and nothing may be accepted but a token the test key actually signed.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use tower_jwt_refresh::keys::{Algorithm, Key, KeySet};
use tower_jwt_refresh::server::JwtAuthLayer;

const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-!!";

fn layer() -> &'static JwtAuthLayer {
    static LAYER: OnceLock<JwtAuthLayer> = OnceLock::new();
    LAYER.get_or_init(|| {
        let keys = KeySet::new()
            .with_key(Key::hmac(Algorithm::HS256, SECRET).unwrap().with_kid("k"))
            .unwrap();
        JwtAuthLayer::new(keys)
            .allow_raw_authorization()
            .token_from_cookie("at")
            .token_from_query("access_token")
            .cache_capacity(64 * 1024)
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the rest goes.
    let Some((&how, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let keys = KeySet::from(Key::hmac(Algorithm::HS256, SECRET).unwrap());
    let _ = keys.verify_signature(&text);

    let mut request = Request::get("/").body(Full::<Bytes>::default()).unwrap();
    if let Ok(value) = HeaderValue::from_bytes(rest) {
        let name = match how % 4 {
            0 | 1 => "authorization",
            2 => "cookie",
            _ => "x-other",
        };
        request.headers_mut().append(name, value.clone());
        if how & 0x80 != 0 {
            request.headers_mut().append(name, value);
        }
    }
    if how & 0x40 != 0 {
        if let Ok(uri) = format!("/?access_token={text}").parse() {
            *request.uri_mut() = uri;
        }
    }
    let inner = tower::service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
    });
    let service = tower::Layer::layer(layer(), inner);
    let response = runtime().block_on(service.oneshot(request)).unwrap();
    // Nothing the fuzzer makes up is signed with the secret.
    assert_ne!(response.status(), 200, "accepted a forged token");
    let _ = runtime().block_on(layer().verify(&text));
});
