//! Peer crates doing the same job over the same kind of inner service, for `verify.rs`:
//! axum-jwt-auth 0.7 (an axum extractor; jsonwebtoken 10 with RustCrypto, which it requires),
//! jwt-authorizer 0.15 (a layer on axum 0.7; jsonwebtoken 9 with ring) and
//! tower-oauth2-resource-server 0.12 (a layer; jsonwebtoken 11 with aws-lc-rs, as ours).
//! Each validates `exp`, `iss` and `aud` and deserializes the six claims; none checks `typ`.

use criterion::Criterion;
use http::StatusCode;
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::fixture::{AUD, Claims6, ISS, SECRET, bench_service, key_file, keys};

fn public_pem(alg: Algorithm) -> Vec<u8> {
    match alg {
        Algorithm::HS256 => SECRET.to_vec(),
        Algorithm::RS256 => key_file("rsa_public.pem"),
        Algorithm::ES256 => key_file("ec_public.pem"),
        _ => key_file("ed_public.pem"),
    }
}

fn axum_jwt_auth(alg: Algorithm) -> axum::Router {
    use axum_jwt_auth::{Claims, Decoder, LocalDecoder};
    use jsonwebtoken10::{Algorithm as A, DecodingKey, Validation};
    let pem = public_pem(alg);
    let (a, key) = match alg {
        Algorithm::HS256 => (A::HS256, DecodingKey::from_secret(&pem)),
        Algorithm::RS256 => (A::RS256, DecodingKey::from_rsa_pem(&pem).unwrap()),
        Algorithm::ES256 => (A::ES256, DecodingKey::from_ec_pem(&pem).unwrap()),
        _ => (A::EdDSA, DecodingKey::from_ed_pem(&pem).unwrap()),
    };
    let mut validation = Validation::new(a);
    validation.set_issuer(&[ISS]);
    validation.set_audience(&[AUD]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let decoder: Decoder<Claims6> = std::sync::Arc::new(
        LocalDecoder::builder()
            .keys(vec![key])
            .validation(validation)
            .build()
            .unwrap(),
    );
    async fn handler(_: Claims<Claims6>) -> StatusCode {
        StatusCode::OK
    }
    axum::Router::new()
        .route("/", axum::routing::get(handler))
        .with_state(decoder)
}

async fn jwt_authorizer(alg: Algorithm) -> axum07::Router {
    use jwt_authorizer::{Authorizer, IntoLayer, JwtAuthorizer, JwtClaims, Validation};
    let pem = public_pem(alg);
    let text = std::str::from_utf8(&pem).unwrap();
    let (builder, a) = match alg {
        Algorithm::HS256 => (
            JwtAuthorizer::<Claims6>::from_secret(text),
            jsonwebtoken9::Algorithm::HS256,
        ),
        Algorithm::RS256 => (
            JwtAuthorizer::from_rsa_pem_text(text),
            jsonwebtoken9::Algorithm::RS256,
        ),
        Algorithm::ES256 => (
            JwtAuthorizer::from_ec_pem_text(text),
            jsonwebtoken9::Algorithm::ES256,
        ),
        _ => (
            JwtAuthorizer::from_ed_pem_text(text),
            jsonwebtoken9::Algorithm::EdDSA,
        ),
    };
    let validation = Validation::new()
        .iss(&[ISS])
        .aud(&[AUD])
        .exp(true)
        .algs(vec![a]);
    let authorizer: Authorizer<Claims6> = builder.validation(validation).build().await.unwrap();
    async fn handler(JwtClaims(_): JwtClaims<Claims6>) -> axum07::http::StatusCode {
        axum07::http::StatusCode::OK
    }
    axum07::Router::new()
        .route("/", axum07::routing::get(handler))
        .layer(authorizer.into_layer())
}

/// tower-oauth2-resource-server takes only a JWKS, and tokens must name their key.
const KID: &str = "k1";

async fn tower_oauth2(alg: Algorithm) -> axum::Router {
    use tower_oauth2_resource_server::server::OAuth2ResourceServer;
    use tower_oauth2_resource_server::tenant::TenantConfiguration;
    use tower_oauth2_resource_server::validation::ClaimsValidationSpec;
    let mut jwk = match alg {
        Algorithm::HS256 => json!({"kty": "oct", "k": base64_url(SECRET)}),
        _ => {
            let (_, decoding, _) = keys(alg);
            serde_json::to_value(
                jsonwebtoken::jwk::Jwk::from_decoding_key(&decoding, Some(alg)).unwrap(),
            )
            .unwrap()
        }
    };
    jwk["kid"] = json!(KID);
    jwk["alg"] = json!(format!("{alg:?}"));
    let tenant = TenantConfiguration::static_builder(json!({ "keys": [jwk] }).to_string())
        .claims_validation(
            ClaimsValidationSpec::new()
                .iss(ISS)
                .exp(true)
                .aud(&vec![AUD.to_string()]),
        )
        .allowed_algorithms(&[alg])
        .build()
        .unwrap();
    let server = OAuth2ResourceServer::<Claims6>::builder()
        .add_tenant(tenant)
        .build()
        .await
        .unwrap();
    async fn handler(axum::Extension(_): axum::Extension<Claims6>) -> StatusCode {
        StatusCode::OK
    }
    axum::Router::new()
        .route("/", axum::routing::get(handler))
        .layer(server.into_layer())
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Benchmarks every peer on `alg`.
pub(crate) fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime, alg: Algorithm, valid: &str) {
    let name = format!("{alg:?}");
    bench_service(
        c,
        &format!("{name}/d_peer_axum_jwt_auth"),
        rt,
        axum_jwt_auth(alg),
        valid,
        StatusCode::OK,
    );
    let service = rt.block_on(jwt_authorizer(alg));
    bench_service(
        c,
        &format!("{name}/d_peer_jwt_authorizer"),
        rt,
        service,
        valid,
        StatusCode::OK,
    );
    let (encoding, _, _) = keys(alg);
    let mut header = jsonwebtoken::Header::new(alg);
    header.typ = Some("at+jwt".into());
    header.kid = Some(KID.into());
    let claims: Claims6 = jsonwebtoken::dangerous::insecure_decode(valid)
        .unwrap()
        .claims;
    let with_kid = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
    let service = rt.block_on(tower_oauth2(alg));
    bench_service(
        c,
        &format!("{name}/d_peer_tower_oauth2"),
        rt,
        service,
        &with_kid,
        StatusCode::OK,
    );
}
