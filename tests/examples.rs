//! The examples' code paths, run for real: the example server against the example client's
//! storm in every refresh style, the client against a backend shaped like the NestJS write-up's
//! (see `examples/common/server.rs`), and the gRPC example.

#[path = "../examples/client_only.rs"]
mod client_only;
#[path = "../examples/common/mod.rs"]
mod common;
#[path = "../examples/verify_only.rs"]
mod verify_only;

use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, response::IntoResponse};
use common::client::{Options, RefreshStyle};
use common::server::Config;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

/// The example server on an ephemeral port with 2 s access tokens.
async fn example_server() -> String {
    example_server_with(false).await
}

/// The example server; with `dpop_nonce`, DPoP proofs need its nonces (`DPOP_NONCE=1`).
async fn example_server_with(dpop_nonce: bool) -> String {
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        secret: Some(b"example-test-secret-example-test!".to_vec()),
        access_ttl: Duration::from_secs(2),
        dpop_nonce,
        ..Config::default()
    };
    let server = common::server::bind(config).await.unwrap();
    let addr = server.listener.local_addr().unwrap();
    tokio::spawn(common::server::serve(server, std::future::pending()));
    format!("http://{addr}")
}

/// The example client's storm against the example server in every refresh style, with and
/// without early refresh: one refresh, every request answered.
async fn storm_every_style(reqwest: bool) {
    let base_url = example_server().await;
    for (style, raw_auth) in [
        (RefreshStyle::SeedPost, false),
        (RefreshStyle::SeedGet, true),
        (RefreshStyle::OAuth, false),
    ] {
        for early_refresh in [true, false] {
            let options = Options {
                base_url: base_url.clone(),
                requests: 200,
                refresh_style: style,
                raw_auth,
                early_refresh,
                reqwest,
                ..Options::default()
            };
            let summary = common::client::run(&options, |_| {}).await.unwrap();
            assert_eq!(
                (summary.ok, summary.failed, summary.refreshes),
                (200, 0, 1),
                "{style:?}, early {early_refresh}"
            );
        }
    }
}

#[tokio::test]
async fn the_example_client_storms_the_example_server_in_every_style() {
    storm_every_style(false).await;
}

#[tokio::test]
async fn the_reqwest_example_client_storms_the_example_server_in_every_style() {
    storm_every_style(true).await;
}

/// `--dpop` against the example server, with and without server nonces, with and without
/// early refresh: one refresh, every request answered, every token bound.
async fn storm_with_dpop(reqwest: bool) {
    for dpop_nonce in [false, true] {
        let base_url = example_server_with(dpop_nonce).await;
        for early_refresh in [true, false] {
            let options = Options {
                base_url: base_url.clone(),
                requests: 200,
                early_refresh,
                reqwest,
                dpop: true,
                refresh_style: RefreshStyle::OAuth,
                ..Options::default()
            };
            let mut events = Vec::new();
            let summary = common::client::run(&options, |e| events.push(e.to_owned()))
                .await
                .unwrap();
            assert_eq!(
                (summary.ok, summary.failed, summary.refreshes),
                (200, 0, 1),
                "nonces {dpop_nonce}, early {early_refresh}: {events:#?}"
            );
            assert!(
                events[0].starts_with("tokens bound to DPoP key"),
                "{events:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_example_client_storms_the_example_server_with_dpop() {
    storm_with_dpop(false).await;
}

#[tokio::test]
async fn the_reqwest_example_client_storms_the_example_server_with_dpop() {
    storm_with_dpop(true).await;
}

/// What the example server does with DPoP: a login with a proof binds both tokens, which
/// then need proofs from that key at the API and at both refresh endpoints; a login without
/// one stays bearer; with nonces on, a proof without one gets `use_dpop_nonce`.
#[tokio::test]
async fn the_example_server_binds_the_tokens_of_a_login_with_a_proof() {
    use http::{Method, Request, Uri};
    use http_body_util::{BodyExt, Full};
    use tower_jwt_refresh::client::dpop::DpopKey;

    let http = reqwest_like();
    let send = |request: Request<Full<bytes::Bytes>>| {
        let client = http.0.clone();
        async move {
            let response = client.request(request).await.unwrap();
            let (status, headers) = (response.status(), response.headers().clone());
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, headers, body)
        }
    };
    let login = json!({"username": "admin", "password": "admin"}).to_string();
    for dpop_nonce in [false, true] {
        let base = example_server_with(dpop_nonce).await;
        let key = DpopKey::generate().unwrap();
        let url = |path: &str| format!("{base}{path}").parse::<Uri>().unwrap();
        let post = |path: &str, proof: Option<String>, body: String| {
            let mut request = Request::post(url(path)).header("content-type", "application/json");
            if let Some(proof) = proof {
                request = request.header("dpop", proof);
            }
            request.body(Full::from(body)).unwrap()
        };
        let proof = |method: &Method, path: &str, token: Option<&str>| {
            let uri = url(path);
            let proof = key.proof(method, &uri);
            match token {
                Some(token) => proof.access_token(token).sign().unwrap(),
                None => proof.sign().unwrap(),
            }
        };

        let first = proof(&Method::POST, "/login", None);
        let (mut status, headers, mut body) =
            send(post("/login", Some(first), login.clone())).await;
        if dpop_nonce {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(body["error"], "use_dpop_nonce");
            assert!(key.remember_nonce(&url("/login"), &headers));
            let again = proof(&Method::POST, "/login", None);
            (status, _, body) = send(post("/login", Some(again), login.clone())).await;
        }
        assert_eq!(
            (status, body["tokenType"].as_str()),
            (StatusCode::OK, Some("DPoP")),
            "{body}"
        );
        let access = body["accessToken"].as_str().unwrap().to_owned();
        let refresh = body["refreshToken"].as_str().unwrap().to_owned();

        // The API: the bound token as a bearer token is refused; with a proof it works.
        let (status, _) = http.get(&format!("{base}/aaa"), Some(&access)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let request = Request::get(url("/aaa"))
            .header("authorization", format!("DPoP {access}"))
            .header("dpop", proof(&Method::GET, "/aaa", Some(&access)))
            .body(Full::default())
            .unwrap();
        let (status, _, _) = send(request).await;
        assert_eq!(status, StatusCode::OK, "nonces {dpop_nonce}");

        // `POST /refresh`: refused without a proof, rotated (and still bound) with one.
        let refresh_body = json!({"refreshToken": refresh}).to_string();
        let (status, _, _) = send(post("/refresh", None, refresh_body.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let with_proof = post(
            "/refresh",
            Some(proof(&Method::POST, "/refresh", None)),
            refresh_body,
        );
        let (status, _, body) = send(with_proof).await;
        assert_eq!(
            (status, body["tokenType"].as_str()),
            (StatusCode::OK, Some("DPoP")),
            "{body}"
        );
        let refresh = body["refreshToken"].as_str().unwrap().to_owned();

        // `POST /oauth/token`: the same.
        let form = format!("grant_type=refresh_token&refresh_token={refresh}");
        let oauth = |proof: Option<String>| {
            let mut request = Request::post(url("/oauth/token"))
                .header("content-type", "application/x-www-form-urlencoded");
            if let Some(proof) = proof {
                request = request.header("dpop", proof);
            }
            request.body(Full::from(form.clone())).unwrap()
        };
        let (status, _, body) = send(oauth(None)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant"))
        );
        let (status, _, body) = send(oauth(Some(proof(&Method::POST, "/oauth/token", None)))).await;
        assert_eq!(
            (status, body["token_type"].as_str()),
            (StatusCode::OK, Some("DPoP")),
            "{body}"
        );

        // A login without a proof stays bearer.
        let (status, _, body) = send(post("/login", None, login.clone())).await;
        assert_eq!(
            (status, body["tokenType"].as_str()),
            (StatusCode::OK, Some("Bearer"))
        );
        let (status, text) = http
            .get(&format!("{base}/aaa"), body["accessToken"].as_str())
            .await;
        assert_eq!((status, text.as_str()), (StatusCode::OK, "aaa"));
    }
}

#[tokio::test]
async fn the_example_server_answers_logins_as_the_original_did() {
    let base_url = example_server().await;
    let http = reqwest_like();
    for (user, password, message) in [
        ("nobody", "x", "用户不存在"),
        ("admin", "wrong", "密码错误"),
    ] {
        let (status, body) = http
            .post_json(
                &format!("{base_url}/login"),
                json!({"username": user, "password": password}),
            )
            .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (StatusCode::BAD_REQUEST, Some(message))
        );
    }
    let (status, body) = http
        .post_json(
            &format!("{base_url}/login"),
            json!({"username": "zhangsan", "password": "123"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["userInfo"]["username"], "zhangsan");
    assert!(body["accessToken"].is_string() && body["refreshToken"].is_string());
}

#[tokio::test]
async fn the_verify_only_example_accepts_its_issuers_tokens_and_refuses_the_rest() {
    use tower_jwt_refresh::issuer::AccessTokenIssuer;
    use tower_jwt_refresh::keys::{Algorithm, SigningKey};
    const SECRET: &[u8] = b"verify-only-example-secret-32byte";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/me", listener.local_addr().unwrap());
    let app = verify_only::app(SECRET).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let key = SigningKey::hmac(Algorithm::HS256, SECRET).unwrap();
    let token = AccessTokenIssuer::new(key)
        .mint("alice", "session-1", &json!({}))
        .unwrap();
    let client = reqwest_like();
    let (status, body) = client.get(&url, Some(&token.token)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello alice"));
    let (status, _) = client.get(&url, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let forged = SigningKey::hmac(Algorithm::HS256, b"another-secret-another-secret-32b").unwrap();
    let forged = AccessTokenIssuer::new(forged)
        .mint("alice", "session-1", &json!({}))
        .unwrap();
    let (status, _) = client.get(&url, Some(&forged.token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_client_only_example_crosses_expiries_without_a_401() {
    let base_url = example_server().await;
    // 2 s tokens, 8 calls 600 ms apart: at least two expiries crossed.
    let statuses = client_only::run(&base_url, 8, Duration::from_millis(600))
        .await
        .unwrap();
    assert_eq!(statuses, vec![200; 8]);
}

/// A tiny JSON-over-HTTP helper for these tests.
struct JsonClient(
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
);

fn reqwest_like() -> JsonClient {
    JsonClient(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http(),
    )
}

impl JsonClient {
    async fn get(&self, url: &str, bearer: Option<&str>) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        let mut request = http::Request::get(url);
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(http_body_util::Full::default()).unwrap();
        let response = self.0.request(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn post_json(&self, url: &str, body: Value) -> (StatusCode, Value) {
        use http_body_util::BodyExt;
        let request = http::Request::post(url)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let response = self.0.request(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// A backend shaped like the NestJS write-up's: the refresh token is a JWT signed with the
/// same key, `/aaa` reads the raw `authorization` header, `GET /refresh?token=` and `POST
/// /refresh` answer a new pair. Its `POST`s answer 201 Created, NestJS's default. Written here
/// with plain jsonwebtoken, as a stranger's server would be.
mod seed {
    use super::*;

    const SECRET: &[u8] = b"the nestjs write-up's backend secret";

    fn sign(claims: Value) -> String {
        tower_jwt_refresh::keys::install_crypto_provider();
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn pair(username: &str) -> Value {
        json!({
            "accessToken": sign(json!({"username": username, "exp": now() + 2})),
            "refreshToken": sign(json!({"userId": 1, "exp": now() + 3600})),
        })
    }

    fn verify(token: &str) -> Option<Value> {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = 0;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(SECRET), &validation)
            .ok()
            .map(|d| d.claims)
    }

    pub(super) fn app() -> Router {
        async fn login(Json(body): Json<Value>) -> impl IntoResponse {
            let mut answer = pair(body["username"].as_str().unwrap_or_default());
            answer["userInfo"] = json!({"username": body["username"]});
            (StatusCode::CREATED, Json(answer))
        }
        async fn guarded(headers: HeaderMap) -> impl IntoResponse {
            // The write-up's guard: the header is the token itself, no scheme.
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            match verify(token) {
                Some(claims) if claims.get("username").is_some() => {
                    (StatusCode::OK, "aaa").into_response()
                }
                _ => (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"statusCode": 401, "message": "token 失效，请重新登录"})),
                )
                    .into_response(),
            }
        }
        fn refreshed(token: Option<&str>, success: StatusCode) -> axum::response::Response {
            match token.and_then(verify) {
                Some(_) => (success, Json(pair("admin"))).into_response(),
                None => (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"statusCode": 401, "message": "token 已失效，请重新登录"})),
                )
                    .into_response(),
            }
        }
        async fn refresh(
            Query(query): Query<std::collections::HashMap<String, String>>,
        ) -> impl IntoResponse {
            refreshed(query.get("token").map(String::as_str), StatusCode::OK)
        }
        async fn refresh_post(Json(body): Json<Value>) -> impl IntoResponse {
            refreshed(body["refreshToken"].as_str(), StatusCode::CREATED)
        }
        Router::new()
            .route("/login", post(login))
            .route("/aaa", get(guarded))
            .route(
                "/bbb",
                get(|h: HeaderMap| async move {
                    let response = guarded(h).await.into_response();
                    if response.status() == StatusCode::OK {
                        (StatusCode::OK, "bbb").into_response()
                    } else {
                        response
                    }
                }),
            )
            .route("/refresh", get(refresh).post(refresh_post))
    }
}

#[tokio::test]
async fn the_example_client_works_unchanged_against_the_original_backend_shape() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, seed::app()).await.unwrap() });
    // The login answers 201 in both; so does the refresh in `SeedPost`.
    for style in [RefreshStyle::SeedGet, RefreshStyle::SeedPost] {
        let options = Options {
            base_url: format!("http://{addr}"),
            requests: 200,
            refresh_style: style,
            raw_auth: true,
            ..Options::default()
        };
        let summary = common::client::run(&options, |_| {}).await.unwrap();
        let summary = (summary.ok, summary.failed, summary.refreshes);
        assert_eq!(summary, (200, 0, 1), "{style:?}");
    }
}

#[tokio::test]
async fn the_grpc_example_survives_an_expiry_with_one_refresh() {
    let outcome = common::grpc::run(|_| {}).await.unwrap();
    assert_eq!(outcome.ok, outcome.calls);
    assert_eq!(outcome.refreshes, 1);
    assert!(outcome.replays >= 1, "the expiry was met, not avoided");
}
