//! The server layer over real sockets: an axum app on a loopback port, a hyper client, and
//! every "must reject" row of the verification contract, for HTTP and for gRPC.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use support::*;
use tower_jwt_refresh::keys::install_crypto_provider;
use tower_jwt_refresh::server::{
    DenyCheck, FormTokenLayer, JwtAuthLayer, RegisteredClaims, Rejection, TokenError, TokenStatus,
};

/// The layer every table row runs against: all fixture keys, our issuer and audience.
fn layer() -> JwtAuthLayer {
    JwtAuthLayer::new(all_keys())
        .issuer("https://issuer.test")
        .audience("api")
}

fn with(claims: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut claims = claims;
    f(claims.as_object_mut().unwrap());
    claims
}

/// An HS256 token of the good claims with `name` set to `value`.
fn set(name: &str, value: Value) -> String {
    hs(with(good_claims(), |c| {
        c.insert(name.into(), value);
    }))
}

/// An HS256 token of the good claims without `name`.
fn unset(name: &str) -> String {
    hs(with(good_claims(), |c| {
        c.remove(name);
    }))
}

fn hs(claims: Value) -> String {
    sign(at_header("HS256", "hs"), claims)
}

/// Replaces one segment of a token.
fn segment(token: &str, index: usize, value: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[index] = value;
    parts.join(".")
}

/// Flips the lowest bit of the byte at `byte` in segment `index`.
fn flip(token: &str, index: usize, byte: usize) -> String {
    let part = token.split('.').nth(index).unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(part).unwrap();
    bytes[byte] ^= 1;
    segment(token, index, &URL_SAFE_NO_PAD.encode(bytes))
}

/// Every token that must be answered 401 `invalid_token`, with the description expected.
fn invalid_tokens() -> Vec<(&'static str, String, &'static str)> {
    let good = hs(good_claims());
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let b64 = |v: &str| URL_SAFE_NO_PAD.encode(v);
    let mut rows: Vec<(&'static str, String, &'static str)> = vec![
        // Size and structure.
        (
            "longer than the cap",
            format!("{h}.{}.{s}", "A".repeat(9000)),
            "token too large",
        ),
        ("1 segment", h.to_owned(), "token malformed"),
        ("2 segments", format!("{h}.{p}"), "token malformed"),
        ("4 segments", format!("{good}.{s}"), "token malformed"),
        ("5 segments", format!("{good}.{s}.{s}"), "token malformed"),
        (
            "signature stripped",
            format!("{h}.{p}."),
            "token signature invalid",
        ),
        (
            "signature null",
            format!("{h}.{p}.null"),
            "token signature invalid",
        ),
        // Padding inside the token breaks RFC 6750's b64token grammar, so in a header it is a
        // 400 (see `malformed_credentials_are_invalid_request`); handed to the verifier
        // directly it is malformed (see `verify_without_a_request`).
        (
            "padding in signature",
            format!("{h}.{p}.{s}="),
            "token malformed",
        ),
        (
            "base64 + in payload",
            format!("{h}.{p}+.{s}"),
            "token malformed",
        ),
        (
            "base64 / in header",
            format!("/{h}.{p}.{s}"),
            "token malformed",
        ),
        (
            "header not json",
            format!("{}.{p}.{s}", b64("not json")),
            "token malformed",
        ),
        (
            "header an array",
            format!("{}.{p}.{s}", b64("[1,2]")),
            "token malformed",
        ),
        ("payload not json", hs_raw("not json"), "token malformed"),
        ("payload an array", hs_raw("[1]"), "token malformed"),
        ("payload a string", hs_raw("\"foo\""), "token malformed"),
        // Algorithm and key.
        (
            "unknown alg",
            sign_hs_as("XYZ"),
            "token algorithm not accepted",
        ),
        (
            "lower-case alg",
            sign_hs_as("hs256"),
            "token algorithm not accepted",
        ),
        (
            "alg the key does not have",
            sign(at_header("HS384", "hs"), good_claims()),
            "token algorithm not accepted",
        ),
        (
            "RS256 signature labelled PS256",
            rs_as_ps(),
            "token signature invalid",
        ),
        (
            "PS256 under the kid of an RS256 key",
            sign(at_header("PS256", "rs"), good_claims()),
            "token algorithm not accepted",
        ),
        (
            "PS256 signature labelled RS256",
            ps_as_rs(),
            "token signature invalid",
        ),
        (
            "valid signature from an unknown key",
            sign_with(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(&key_file("rsa2_private.pem")).unwrap(),
                &at_header("RS256", "retired"),
                &good_claims(),
            ),
            "token signing key not recognised",
        ),
        (
            "valid signature from another key under a known kid",
            sign_with(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(&key_file("rsa2_private.pem")).unwrap(),
                &at_header("RS256", "rs"),
                &good_claims(),
            ),
            "token signature invalid",
        ),
        // Tampering.
        (
            "one bit in the header",
            flip(&good, 0, 5),
            "token malformed",
        ),
        (
            "one bit in the payload",
            flip(&good, 1, 10),
            "token signature invalid",
        ),
        (
            "one bit in the signature",
            flip(&good, 2, 3),
            "token signature invalid",
        ),
        (
            "truncated signature",
            good[..good.len() - 2].to_owned(),
            "token signature invalid",
        ),
        // Header content.
        (
            "crit",
            sign(hdr(json!({"crit": ["exp"], "exp": 1})), good_claims()),
            "token header not accepted",
        ),
        (
            "empty crit",
            sign(hdr(json!({"crit": []})), good_claims()),
            "token header not accepted",
        ),
        (
            "b64 false",
            sign(hdr(json!({"b64": false})), good_claims()),
            "token header not accepted",
        ),
        (
            "typ missing",
            sign(json!({"alg": "HS256", "kid": "hs"}), good_claims()),
            "token type not accepted",
        ),
        (
            "typ JWT",
            sign(hdr(json!({"typ": "JWT"})), good_claims()),
            "token type not accepted",
        ),
        (
            "typ null",
            sign(hdr(json!({"typ": null})), good_claims()),
            "token malformed",
        ),
        // Header injection.
        (
            "empty kid",
            sign(hdr(json!({"kid": ""})), good_claims()),
            "token header not accepted",
        ),
        (
            "kid traversal",
            sign(hdr(json!({"kid": "../../../../etc/passwd"})), good_claims()),
            "token signing key not recognised",
        ),
        (
            "kid sql",
            sign(hdr(json!({"kid": "' OR '1'='1' --"})), good_claims()),
            "token signing key not recognised",
        ),
        (
            "kid shell",
            sign(hdr(json!({"kid": "|sleep 10"})), good_claims()),
            "token signing key not recognised",
        ),
        (
            "kid not a string",
            sign(hdr(json!({"kid": 1})), good_claims()),
            "token malformed",
        ),
        // Claims.
        ("exp missing", unset("exp"), "token lacks a required claim"),
        ("exp past", set("exp", json!(now() - 120)), "token expired"),
        ("exp far past", set("exp", json!(1)), "token expired"),
        (
            "nbf in the future",
            set("nbf", json!(now() + 120)),
            "token not yet valid",
        ),
        (
            "iat in the future",
            set("iat", json!(now() + 120)),
            "token not yet valid",
        ),
        (
            "iss wrong",
            set("iss", json!("https://evil.test")),
            "token issuer not accepted",
        ),
        ("iss missing", unset("iss"), "token issuer not accepted"),
        ("iss a number", set("iss", json!(7)), "token claims invalid"),
        (
            "iss an array",
            set("iss", json!(["https://issuer.test"])),
            "token claims invalid",
        ),
        (
            "aud wrong",
            set("aud", json!("other")),
            "token audience not accepted",
        ),
        (
            "aud array without ours",
            set("aud", json!(["a", "b"])),
            "token audience not accepted",
        ),
        ("aud missing", unset("aud"), "token audience not accepted"),
        ("aud a number", set("aud", json!(1)), "token claims invalid"),
        (
            "aud an object",
            set("aud", json!({"api": true})),
            "token claims invalid",
        ),
        // Token kind.
        (
            "an opaque refresh token",
            URL_SAFE_NO_PAD.encode([7u8; 32]),
            "token malformed",
        ),
        (
            "an ID-token-typed JWT",
            sign(hdr(json!({"typ": "id_token+jwt"})), good_claims()),
            "token type not accepted",
        ),
        (
            "a refresh-typed JWT",
            sign(hdr(json!({"typ": "rt+jwt"})), good_claims()),
            "token type not accepted",
        ),
    ];
    // `exp` equal to now with no leeway: see `exp_equal_to_now_is_expired_without_leeway`.
    for none in ["none", "None", "NONE", "nOnE"] {
        let header = b64(&json!({"alg": none, "typ": "at+jwt"}).to_string());
        rows.push((
            "alg none",
            format!("{header}.{p}."),
            "token signature invalid",
        ));
        rows.push((
            "alg none, with a signature",
            format!("{header}.{p}.{s}"),
            "token algorithm not accepted",
        ));
    }
    for claim in ["exp", "nbf", "iat"] {
        for (what, bad) in [
            ("string", json!("1")),
            ("null", json!(null)),
            ("negative", json!(-5)),
            ("1e300", json!(1e300)),
        ] {
            let claims = with(good_claims(), |c| {
                c.insert(claim.into(), bad.clone());
            });
            let label: &'static str = Box::leak(format!("{claim} as {what}").into_boxed_str());
            rows.push((label, hs(claims), "token claims invalid"));
        }
    }
    rows.extend(algorithm_confusion());
    rows.extend(es256_degenerate_signatures());
    rows.extend(embedded_key_headers());
    rows
}

fn hdr(extra: Value) -> Value {
    let mut h = at_header("HS256", "hs");
    for (k, v) in extra.as_object().unwrap() {
        h[k] = v.clone();
    }
    h
}

/// An HS256 token whose payload is `payload` verbatim.
fn hs_raw(payload: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(at_header("HS256", "hs").to_string()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    install_crypto_provider();
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &encoding_key(Algorithm::HS256),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{input}.{sig}")
}

/// A token HMAC-signed with the real key but labelled with another `alg`.
fn sign_hs_as(alg: &str) -> String {
    let header = json!({"alg": alg, "typ": "at+jwt", "kid": "hs"});
    sign_with(
        Algorithm::HS256,
        &encoding_key(Algorithm::HS256),
        &header,
        &good_claims(),
    )
}

fn rs_as_ps() -> String {
    sign_with(
        Algorithm::RS256,
        &encoding_key(Algorithm::RS256),
        &at_header("PS256", "ps"),
        &good_claims(),
    )
}

fn ps_as_rs() -> String {
    sign_with(
        Algorithm::PS256,
        &encoding_key(Algorithm::PS256),
        &at_header("RS256", "rs"),
        &good_claims(),
    )
}

/// HS256 tokens keyed with the public key bytes of the RSA and EC keys, under their `kid`s
/// and without a `kid`.
fn algorithm_confusion() -> Vec<(&'static str, String, &'static str)> {
    let mut rows = Vec::new();
    for (file, kid) in [
        ("rsa_public.pem", "rs"),
        ("ec_public.pem", "es"),
        ("ed_public.pem", "ed"),
    ] {
        let secret = EncodingKey::from_secret(&key_file(file));
        let token = sign_with(
            Algorithm::HS256,
            &secret,
            &at_header("HS256", kid),
            &good_claims(),
        );
        rows.push((
            "HS256 keyed with a public key, under its kid",
            token,
            "token algorithm not accepted",
        ));
        let token = sign_with(
            Algorithm::HS256,
            &secret,
            &json!({"alg": "HS256", "typ": "at+jwt"}),
            &good_claims(),
        );
        rows.push((
            "HS256 keyed with a public key, no kid",
            token,
            "token signature invalid",
        ));
    }
    rows
}

/// ES256 signatures whose r or s is 0, 1, n-1 or n.
fn es256_degenerate_signatures() -> Vec<(&'static str, String, &'static str)> {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let mut n_minus_1 = N;
    n_minus_1[31] -= 1;
    let mut one = [0u8; 32];
    one[31] = 1;
    let good = sign(at_header("ES256", "es"), good_claims());
    let real = URL_SAFE_NO_PAD
        .decode(good.rsplit('.').next().unwrap())
        .unwrap();
    let (r, s) = real.split_at(32);
    let mut rows = Vec::new();
    for value in [[0u8; 32], one, n_minus_1, N] {
        for (label, sig) in [
            ("ES256 with degenerate r", [&value[..], s].concat()),
            ("ES256 with degenerate s", [r, &value[..]].concat()),
        ] {
            rows.push((
                label,
                segment(&good, 2, &URL_SAFE_NO_PAD.encode(sig)),
                "token signature invalid",
            ));
        }
    }
    rows
}

/// Headers that try to bring their own key. `jku`/`x5u` point at `JKU_TRAP`, a listener the
/// test asserts nobody connects to.
fn embedded_key_headers() -> Vec<(&'static str, String, &'static str)> {
    let trap = JKU_TRAP.get().copied().unwrap_or("http://127.0.0.1:9/");
    let attacker_jwk = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(SECRET)});
    [
        ("embedded jwk", json!({"jwk": attacker_jwk})),
        ("jku", json!({"jku": trap})),
        ("x5u", json!({"x5u": trap})),
        ("x5c", json!({"x5c": ["MIIB"]})),
    ]
    .into_iter()
    .map(|(label, extra)| {
        (
            label,
            sign(hdr(extra), good_claims()),
            "token header not accepted",
        )
    })
    .collect()
}

static JKU_TRAP: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

#[tokio::test]
async fn every_invalid_token_is_refused_over_http_and_grpc() {
    // A listener for jku/x5u URLs: if the layer fetched them, it would accept a connection.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url: &'static str =
        Box::leak(format!("http://{}/jwks", trap.local_addr().unwrap()).into_boxed_str());
    let _ = JKU_TRAP.set(trap_url);

    let addr = serve(app(layer())).await;
    let client = client();
    let rows = invalid_tokens();
    assert!(rows.len() > 90, "{} rows", rows.len());
    for (label, token, description) in &rows {
        let reply = get_bearer(&client, addr, token).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{label}: {}",
            reply.body
        );
        assert_eq!(reply.error(), "invalid_token", "{label}");
        assert_eq!(reply.description(), *description, "{label}");
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["error_description"], *description, "{label}");
        assert!(
            !reply.body.contains(token.as_str()) || token.is_empty(),
            "{label}: token echoed"
        );

        let grpc = post_with(
            &client,
            addr,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("content-type", "application/grpc"),
            ],
        )
        .await;
        assert_eq!(grpc.status, StatusCode::OK, "{label} (grpc)");
        assert_eq!(grpc.headers["grpc-status"], "16", "{label} (grpc)");
        assert_eq!(
            grpc.headers["grpc-message"],
            description.replace('%', "%25").as_str(),
            "{label}"
        );
        assert!(
            grpc.body.is_empty(),
            "{label}: grpc answers are trailers-only"
        );
    }
    // Nobody connected to the jku/x5u target.
    let accepted = tokio::time::timeout(Duration::from_millis(50), trap.accept()).await;
    assert!(accepted.is_err(), "the layer fetched a header-supplied URL");
}

#[tokio::test]
async fn exp_equal_to_now_is_expired_without_leeway() {
    let strict = layer().leeway(Duration::ZERO);
    let addr = serve(app(strict)).await;
    let client = client();
    let at_now = set("exp", json!(now()));
    let reply = get_bearer(&client, addr, &at_now).await;
    assert_eq!(
        (reply.status, reply.description().as_str()),
        (StatusCode::UNAUTHORIZED, "token expired")
    );
    // And a token inside the default leeway is still accepted by the default layer.
    let addr = serve(app(layer())).await;
    let within = set("exp", json!(now() - 10));
    assert_eq!(
        get_bearer(&client, addr, &within).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn every_algorithm_is_accepted_with_its_own_key() {
    let addr = serve(app(layer())).await;
    let client = client();
    for (alg, kid) in [
        ("HS256", "hs"),
        ("RS256", "rs"),
        ("PS256", "ps"),
        ("ES256", "es"),
        ("EdDSA", "ed"),
    ] {
        let reply = get_bearer(&client, addr, &sign(at_header(alg, kid), good_claims())).await;
        assert_eq!(reply.status, StatusCode::OK, "{alg}: {}", reply.body);
        assert_eq!(reply.body, "hello alice", "{alg}");
        // Without a kid, the key is found by algorithm.
        let no_kid = json!({"alg": alg, "typ": "application/at+jwt"});
        assert_eq!(
            get_bearer(&client, addr, &sign(no_kid, good_claims()))
                .await
                .status,
            StatusCode::OK,
            "{alg}"
        );
    }
}

#[tokio::test]
async fn malformed_credentials_are_invalid_request() {
    let addr = serve(app(layer().token_from_cookie("at"))).await;
    let client = client();
    let token = hs(good_claims());
    let bearer = format!("Bearer {token}");
    let cookie = format!("at={token}");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "Bearer with nothing after it",
            vec![("authorization", "Bearer")],
        ),
        (
            "Bearer with only whitespace",
            vec![("authorization", "Bearer    ")],
        ),
        (
            "a space inside the token",
            vec![("authorization", "Bearer abc def")],
        ),
        ("a comma", vec![("authorization", "Bearer abc,def")]),
        ("a quote", vec![("authorization", "Bearer \"abc\"")]),
        (
            "padding inside the token",
            vec![("authorization", "Bearer abc=.def.ghi")],
        ),
        (
            "two Authorization headers",
            vec![("authorization", &bearer), ("authorization", &bearer)],
        ),
        (
            "header and cookie",
            vec![("authorization", &bearer), ("cookie", &cookie)],
        ),
        (
            "two cookies",
            vec![("cookie", &cookie), ("cookie", &cookie)],
        ),
    ];
    for (label, headers) in cases {
        let reply = get_with(&client, addr, &headers).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{label}");
        assert_eq!(reply.error(), "invalid_request", "{label}");
    }
    // The cookie alone works.
    let reply = get_with(&client, addr, &[("cookie", &format!("x=1; at={token}"))]).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn no_credentials_is_a_bare_challenge() {
    let addr = serve(app(layer().realm("example"))).await;
    let client = client();
    for headers in [vec![], vec![("authorization", "Basic dXNlcjpwYXNz")]] {
        let reply = get_with(&client, addr, &headers).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.headers["www-authenticate"],
            r#"Bearer realm="example""#
        );
        assert_eq!(reply.error(), "");
        let grpc = [
            headers.clone(),
            vec![("content-type", "application/grpc+proto")],
        ]
        .concat();
        let reply = post_with(&client, addr, &grpc).await;
        assert_eq!(
            (reply.status, &reply.headers["grpc-status"]),
            (StatusCode::OK, &HeaderValue::from_static("16"))
        );
        assert_eq!(reply.headers["grpc-message"], "bearer token required");
    }
}

#[tokio::test]
async fn legacy_raw_authorization_is_opt_in() {
    let token = hs(good_claims());
    let client = client();
    let strict = serve(app(layer())).await;
    assert_eq!(
        get_with(&client, strict, &[("authorization", &token)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let legacy = serve(app(layer().allow_raw_authorization())).await;
    let reply = get_with(&client, legacy, &[("authorization", &token)]).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "hello alice")
    );
    assert_eq!(
        get_bearer(&client, legacy, &token).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn query_and_form_sources_are_opt_in() {
    let token = hs(good_claims());
    let client = client();
    let off = serve(app(layer())).await;
    let reply = send(
        &client,
        Request::get(format!("http://{off}/?access_token={token}"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    let on = serve(app(tower::ServiceBuilder::new()
        .layer(FormTokenLayer::new())
        .layer(layer().token_from_query("access_token").token_from_form())))
    .await;
    let reply = send(
        &client,
        Request::get(format!("http://{on}/?access_token={token}"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "hello alice")
    );
    let form = |body: String| {
        Request::post(format!("http://{on}/"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let reply = send(&client, form(format!("x=1&access_token={token}"))).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "hello alice")
    );
    let reply = send(
        &client,
        form(format!("access_token={token}&access_token={token}")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let mut both = form(format!("access_token={token}"));
    both.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert_eq!(send(&client, both).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_form_body_reaches_the_handler_intact() {
    let token = hs(good_claims());
    let addr = serve(app(tower::ServiceBuilder::new()
        .layer(FormTokenLayer::new())
        .layer(layer().token_from_form())))
    .await;
    let body = format!("a=1&access_token={token}&b=2");
    let req = Request::post(format!("http://{addr}/echo"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let reply = send(&client(), req).await;
    assert_eq!((reply.status, reply.body), (StatusCode::OK, body));
}

#[tokio::test]
async fn optional_mode_passes_anonymous_requests_but_not_bad_tokens() {
    let addr = serve(app(layer().optional())).await;
    let client = client();
    let reply = get_with(&client, addr, &[]).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "hello anonymous")
    );
    let reply = get_bearer(&client, addr, &hs(good_claims())).await;
    assert_eq!(reply.body, "hello alice");
    let expired = set("exp", json!(1));
    assert_eq!(
        get_bearer(&client, addr, &expired).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Requiring a scope makes the route non-optional.
    let scoped = serve(app(layer().optional().require_scope("read"))).await;
    assert_eq!(
        get_with(&client, scoped, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_bearer(&client, scoped, &hs(good_claims())).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn required_scope_answers_403_with_the_scope() {
    let addr = serve(app(layer().require_scope("admin").require_scope("read"))).await;
    let client = client();
    let reply = get_bearer(&client, addr, &hs(good_claims())).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error(), "insufficient_scope");
    assert!(
        reply.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .ends_with(r#"scope="admin read""#)
    );
    let admin = set("scope", json!("read admin"));
    assert_eq!(
        get_bearer(&client, addr, &admin).await.status,
        StatusCode::OK
    );
    let scp = hs(with(good_claims(), |c| {
        c.remove("scope");
        c.insert("scp".into(), json!(["admin", "read"]));
    }));
    assert_eq!(get_bearer(&client, addr, &scp).await.status, StatusCode::OK);
    let grpc = post_with(
        &client,
        addr,
        &[
            ("authorization", &format!("Bearer {}", hs(good_claims()))),
            ("content-type", "application/grpc"),
        ],
    )
    .await;
    assert_eq!(grpc.headers["grpc-status"], "7");
}

#[tokio::test]
async fn revocation_is_consulted_on_every_request_cache_hits_included() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let hook = move |claims: &RegisteredClaims| {
        seen.fetch_add(1, Ordering::SeqCst);
        if claims.jti.as_deref() == Some("revoked") {
            DenyCheck::revoked()
        } else {
            DenyCheck::active()
        }
    };
    let addr = serve(app(layer().deny_list(hook))).await;
    let client = client();
    let token = hs(good_claims());
    for _ in 0..3 {
        assert_eq!(
            get_bearer(&client, addr, &token).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let revoked = set("jti", json!("revoked"));
    for _ in 0..2 {
        let reply = get_bearer(&client, addr, &revoked).await;
        assert_eq!(
            (reply.status, reply.description().as_str()),
            (StatusCode::UNAUTHORIZED, "token revoked")
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn async_revocation_is_awaited_bounded_and_fails_closed() {
    let hook = |claims: &RegisteredClaims| {
        let jti = claims.jti.clone();
        DenyCheck::pending(async move {
            match jti.as_deref() {
                Some("slow") => std::future::pending().await,
                Some("broken") => Err("backend down".into()),
                Some("revoked") => Ok(TokenStatus::Revoked),
                _ => Ok(TokenStatus::Active),
            }
        })
    };
    let addr = serve(app(layer()
        .deny_list(hook)
        .io_timeout(Duration::from_millis(200))))
    .await;
    let client = client();
    let token = |jti: &str| set("jti", json!(jti));
    assert_eq!(
        get_bearer(&client, addr, &token("fine")).await.body,
        "hello alice"
    );
    assert_eq!(
        get_bearer(&client, addr, &token("revoked"))
            .await
            .description(),
        "token revoked"
    );
    for jti in ["slow", "broken"] {
        let reply = get_bearer(&client, addr, &token(jti)).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{jti}");
        assert_eq!(reply.headers["retry-after"], "1");
    }
}

#[tokio::test]
async fn a_custom_rejection_body_keeps_the_challenge() {
    let custom = layer().rejection_body(|r: &Rejection| {
        (
            HeaderValue::from_static("text/plain"),
            Bytes::from(format!("nope: {r}")),
        )
    });
    let addr = serve(app(custom)).await;
    let reply = get_with(&client(), addr, &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.headers["content-type"], "text/plain");
    assert_eq!(reply.body, "nope: bearer token required");
    assert_eq!(reply.headers["www-authenticate"], r#"Bearer realm="api""#);
}

#[tokio::test]
async fn custom_claims_and_required_claims() {
    #[derive(Clone, serde::Deserialize)]
    struct Tenant {
        tenant: String,
    }
    let layer = JwtAuthLayer::<Tenant>::with_claims(all_keys()).require_claims(["tenant", "jti"]);
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|c: tower_jwt_refresh::server::Claims<Tenant>| async move {
                c.tenant.clone()
            }),
        )
        .layer(layer);
    let addr = serve(app).await;
    let client = client();
    let with_tenant = set("tenant", json!("acme"));
    assert_eq!(get_bearer(&client, addr, &with_tenant).await.body, "acme");
    let reply = get_bearer(&client, addr, &hs(good_claims())).await;
    assert_eq!(reply.description(), "token lacks a required claim");
    let wrong_type = set("tenant", json!(5));
    assert_eq!(
        get_bearer(&client, addr, &wrong_type).await.description(),
        "token claims invalid"
    );
}

#[tokio::test]
async fn the_extractor_says_the_layer_is_missing() {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|c: tower_jwt_refresh::server::Claims| async move {
            c.subject().unwrap_or_default().to_owned()
        }),
    );
    let addr = serve(app).await;
    let reply = get_with(&client(), addr, &[]).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.body.contains("JwtAuthLayer"), "{}", reply.body);
}

#[tokio::test]
async fn verify_without_a_request() {
    let layer = layer();
    let claims = layer.verify(&hs(good_claims())).await.unwrap();
    assert_eq!(claims.subject(), Some("alice"));
    let malformed = Rejection::InvalidToken(TokenError::Malformed);
    assert_eq!(layer.verify("").await.unwrap_err(), malformed);
    let good = hs(good_claims());
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    assert_eq!(
        layer.verify(&format!("{h}=.{p}.{s}")).await.unwrap_err(),
        malformed
    );
    assert_eq!(
        layer.verify(&format!("{h}.{p}==.{s}")).await.unwrap_err(),
        malformed
    );
    let expired = set("exp", json!(1));
    let err = layer.verify(&expired).await.unwrap_err();
    assert!(err.is_expired());
}

#[tokio::test]
async fn a_derived_layer_with_stricter_rules_does_not_trust_the_looser_cache() {
    let loose = JwtAuthLayer::new(all_keys());
    let strict = loose.clone().audience("admin");
    let token = hs(good_claims()); // aud "api"
    assert!(loose.verify(&token).await.is_ok());
    assert_eq!(
        strict.verify(&token).await.unwrap_err(),
        Rejection::InvalidToken(TokenError::Audience)
    );
}

#[tokio::test]
async fn requests_waiting_on_io_are_bounded_and_free_their_place() {
    let started = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&started);
    let hook = move |claims: &RegisteredClaims| {
        let slow = claims.jti.as_deref() == Some("slow");
        seen.fetch_add(usize::from(slow), Ordering::SeqCst);
        DenyCheck::pending(async move {
            if slow {
                std::future::pending::<()>().await;
            }
            Ok(TokenStatus::Active)
        })
    };
    let layer = layer()
        .deny_list(hook)
        .io_timeout(Duration::from_secs(3600))
        .max_pending_checks(2);
    let slow = set("jti", json!("slow"));
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (layer, slow) = (layer.clone(), slow.clone());
            tokio::spawn(async move { layer.verify(&slow).await })
        })
        .collect();
    while started.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    // Both places are taken: the next request is answered at once, not queued.
    let fine = set("jti", json!("fine"));
    assert_eq!(
        layer.verify(&fine).await.unwrap_err(),
        Rejection::DenyListUnavailable
    );
    // A caller that gives up frees its place.
    for task in waiting {
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }
    assert!(layer.verify(&fine).await.is_ok());
}

#[tokio::test]
async fn only_grpc_calls_get_grpc_answers_and_no_refusal_is_cached() {
    let addr = serve(app(layer().require_scope("read"))).await;
    let client = client();
    let grpc = ("content-type", "application/grpc");
    // A GET that merely claims the gRPC content type is HTTP: a 401, never a 200.
    let reply = get_with(&client, addr, &[grpc]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.headers.get("grpc-status").is_none());
    assert!(reply.headers.contains_key("www-authenticate"));
    // A gRPC call (POST) gets the trailers-only status.
    let reply = post_with(&client, addr, &[grpc]).await;
    assert_eq!(
        (reply.status, &reply.headers["grpc-status"]),
        (StatusCode::OK, &HeaderValue::from_static("16"))
    );
    // POST without the gRPC content type is HTTP too.
    let reply = post_with(&client, addr, &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // Every refusal, HTTP or gRPC, carries `Cache-Control: no-store`.
    let unscoped = format!(
        "Bearer {}",
        hs(with(good_claims(), |c| {
            c.remove("scope");
        }))
    );
    for (label, reply) in [
        ("http 401", get_with(&client, addr, &[]).await),
        (
            "http 400",
            get_with(&client, addr, &[("authorization", "Bearer a b")]).await,
        ),
        (
            "http 403",
            get_with(&client, addr, &[("authorization", unscoped.as_str())]).await,
        ),
        ("grpc 16", post_with(&client, addr, &[grpc]).await),
        (
            "grpc 7",
            post_with(&client, addr, &[grpc, ("authorization", unscoped.as_str())]).await,
        ),
    ] {
        assert_eq!(reply.headers["cache-control"], "no-store", "{label}");
    }
    // An accepted request is the application's to cache or not.
    let admin = format!("Bearer {}", hs(good_claims()));
    let reply = get_with(&client, addr, &[("authorization", admin.as_str())]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers.get("cache-control").is_none());
}
