//! Shared test scaffolding: token minting, an axum app on a loopback port, a hyper client.
#![allow(dead_code, unreachable_pub)]

#[path = "../../examples/common/echo.rs"]
pub mod echo;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tower_jwt_refresh::keys::{Key, KeySet};
use tower_jwt_refresh::server::Claims;

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

pub fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The private key matching `alg` among the fixtures (the HMAC secret for HS*).
pub fn encoding_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => EncodingKey::from_secret(SECRET),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&key_file("ec_private.pem")).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&key_file("ed_private.pem")).unwrap(),
        _ => EncodingKey::from_rsa_pem(&key_file("rsa_private.pem")).unwrap(),
    }
}

/// The verification key matching [`encoding_key`], named by `kid`.
pub fn decoding_key(alg: Algorithm, kid: &str) -> Key {
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Key::hmac(alg, SECRET),
        Algorithm::ES256 => Key::from_pem(alg, key_file("ec_public.pem")),
        Algorithm::EdDSA => Key::from_pem(alg, key_file("ed_public.pem")),
        _ => Key::from_pem(alg, key_file("rsa_public.pem")),
    };
    key.unwrap().with_kid(kid)
}

/// Signs `header` and `claims` verbatim (no defaults added) with `key` under `alg`.
pub fn sign_with(alg: Algorithm, key: &EncodingKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    tower_jwt_refresh::keys::install_crypto_provider();
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

/// Signs with the fixture key of the header's `alg`.
pub fn sign(header: Value, claims: Value) -> String {
    let alg: Algorithm = header["alg"].as_str().unwrap().parse().unwrap();
    sign_with(alg, &encoding_key(alg), &header, &claims)
}

/// A standard access-token header.
pub fn at_header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "typ": "at+jwt", "kid": kid})
}

/// Claims valid for a minute, with our issuer and audience.
pub fn good_claims() -> Value {
    json!({
        "sub": "alice",
        "iss": "https://issuer.test",
        "aud": "api",
        "exp": now() + 60,
        "iat": now(),
        "jti": "j1",
        "scope": "read",
    })
}

/// Every fixture key, HS256 as `hs`, RS256 as `rs`, PS256 as `ps`, ES256 as `es`, EdDSA as `ed`.
pub fn all_keys() -> KeySet {
    [
        (Algorithm::HS256, "hs"),
        (Algorithm::RS256, "rs"),
        (Algorithm::PS256, "ps"),
        (Algorithm::ES256, "es"),
        (Algorithm::EdDSA, "ed"),
    ]
    .into_iter()
    .try_fold(KeySet::new(), |set, (alg, kid)| {
        set.with_key(decoding_key(alg, kid))
    })
    .unwrap()
}

/// Serves `app` on an ephemeral loopback port.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A router whose `/` and `/grpc` answer the verified subject, behind `layer`.
pub fn app<L>(layer: L) -> Router
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<axum::extract::Request> + Clone + Send + Sync + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Response:
        axum::response::IntoResponse + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Error:
        Into<std::convert::Infallible> + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Future: Send + 'static,
{
    async fn whoami(claims: Option<Claims>) -> String {
        match claims {
            Some(c) => format!("hello {}", c.subject().unwrap_or("?")),
            None => "hello anonymous".into(),
        }
    }
    Router::new()
        .route("/", get(whoami).post(whoami))
        .route("/echo", post(|b: String| async { b }))
        .layer(layer)
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The `error` of the `WWW-Authenticate` challenge, `""` when it has none, `"-"` when
    /// there is no challenge.
    pub fn error(&self) -> String {
        let Some(v) = self.headers.get("www-authenticate") else {
            return "-".into();
        };
        let v = v.to_str().unwrap();
        match v.split_once("error=\"") {
            Some((_, rest)) => rest.split('"').next().unwrap().to_owned(),
            None => String::new(),
        }
    }

    pub fn description(&self) -> String {
        let v = self
            .headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("");
        match v.split_once("error_description=\"") {
            Some((_, rest)) => rest.split('"').next().unwrap().to_owned(),
            None => String::new(),
        }
    }
}

pub async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Reply {
    let res = client.request(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// GET `/` with the given headers.
pub async fn get_with(client: &HttpClient, addr: SocketAddr, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(format!("http://{addr}/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(client, req.body(Full::default()).unwrap()).await
}

/// POST `/` with these headers, as a gRPC client sends its calls.
pub async fn post_with(client: &HttpClient, addr: SocketAddr, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::post(format!("http://{addr}/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(client, req.body(Full::default()).unwrap()).await
}

/// GET `/` with `Authorization: Bearer <token>`.
pub async fn get_bearer(client: &HttpClient, addr: SocketAddr, token: &str) -> Reply {
    get_with(
        client,
        addr,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

/// Whether the tests run in CI: `CI` is set to `true`. There, a missing outside service (a
/// Redis, the Wycheproof vectors) fails the test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true")
}

/// Skips a test whose outside service is missing, saying so, except in CI, where it fails.
/// `missing` says what is missing, `how` how to provide it.
pub fn skip_or_fail(missing: &str, how: &str) {
    assert!(!in_ci(), "CI=true but {missing}");
    eprintln!("{missing}: skipping ({how})");
}

/// `REDIS_URL`, or `None` after a notice when it is not set outside CI (where its absence
/// fails the test). `scripts/test` starts a server and sets it.
pub fn redis_url() -> Option<String> {
    let url = std::env::var("REDIS_URL").ok();
    if url.is_none() {
        skip_or_fail(
            "REDIS_URL is not set",
            "scripts/test starts a redis-server and sets it",
        );
    }
    url
}

/// A `RedisStore` on `REDIS_URL`, or `None` after a notice when it is not set outside CI
/// (where its absence fails the test). A set but unreachable Redis fails the test.
#[cfg(all(feature = "redis", feature = "issuer"))]
pub async fn redis_store() -> Option<tower_jwt_refresh::issuer::RedisStore> {
    let url = redis_url()?;
    match tower_jwt_refresh::issuer::RedisStore::connect(&url).await {
        Ok(store) => Some(store),
        Err(e) => panic!("REDIS_URL={url} is set but unreachable: {e}"),
    }
}

/// The Redis Cluster's node URLs from `REDIS_CLUSTER_URLS` (comma-separated), or `None` after a
/// notice when it is not set outside CI (where its absence fails the test). `scripts/test`
/// starts a cluster (with `scripts/redis-cluster`) and sets it.
pub fn redis_cluster_urls() -> Option<Vec<String>> {
    let urls = std::env::var("REDIS_CLUSTER_URLS").ok();
    if urls.is_none() {
        skip_or_fail(
            "REDIS_CLUSTER_URLS is not set",
            "scripts/test starts a Redis Cluster and sets it",
        );
    }
    Some(urls?.split(',').map(str::to_owned).collect())
}

/// The key `RedisStore` keeps family `family` under, with key prefix `prefix`, as its docs
/// lay it out: `{<prefix>:b<N>}:<family>`, N the family id's 32-bit FNV-1a hash modulo 16.
/// Its tombstone is this plus `:revoked`, its sealed successor this plus `:sealed`.
pub fn family_key(prefix: &str, family: &str) -> String {
    format!("{}:{family}", bucket_tag(prefix, family))
}

/// The hash tag of `family`'s bucket, `{<prefix>:b<N>}`; the bucket's index of revocations
/// (and its channel) is this plus `:revocations`.
pub fn bucket_tag(prefix: &str, family: &str) -> String {
    let hash = family.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    format!("{{{prefix}:b{}}}", hash % 16)
}
