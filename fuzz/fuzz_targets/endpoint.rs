//! The refresh and revocation endpoints' request parsing: arbitrary methods, content types
//! and bodies get an answer (never a panic), always with `Cache-Control: no-store`; no
//! made-up refresh token is refreshed, and revocation answers 200 or a client error.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use tower_jwt_refresh::issuer::{AccessTokenIssuer, MemoryStore, TokenIssuer};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};

fn issuer() -> &'static TokenIssuer<MemoryStore> {
    static ISSUER: OnceLock<TokenIssuer<MemoryStore>> = OnceLock::new();
    ISSUER.get_or_init(|| {
        let key = SigningKey::hmac(Algorithm::HS256, [7u8; 32]).unwrap();
        TokenIssuer::new(AccessTokenIssuer::new(key), MemoryStore::new())
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, body)) = data.split_first() else { return };
    let method = if how & 1 == 0 { "POST" } else { "GET" };
    let content_type = match (how >> 1) % 4 {
        0 => "application/x-www-form-urlencoded",
        1 => "application/json",
        2 => "application/json; charset=utf-8",
        _ => "text/plain",
    };
    let request = Request::builder()
        .method(method)
        .uri("/")
        .header("content-type", content_type)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let refresh = how & 0x80 == 0;
    let response = if refresh {
        runtime().block_on(issuer().refresh_endpoint().oneshot(request))
    } else {
        runtime().block_on(issuer().revocation_endpoint().oneshot(request))
    }
    .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    if refresh {
        // No made-up body is a token the issuer handed out.
        assert_ne!(response.status(), 200, "refreshed a made-up token");
    } else {
        // RFC 7009 §2.2: revoking an unknown token succeeds; anything else is a client error
        // (or a store outage, which MemoryStore never has).
        let status = response.status();
        assert!(status == 200 || status.is_client_error(), "revocation answered {status}");
    }
});
