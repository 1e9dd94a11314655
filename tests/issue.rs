//! Access tokens minted by `AccessTokenIssuer` verify with `JwtAuthLayer` configured the same
//! way, for every signing algorithm, and fail when the configuration differs.

mod support;

use serde_json::json;
use support::key_file;
use tower_jwt_refresh::issuer::AccessTokenIssuer;
use tower_jwt_refresh::keys::{Algorithm, Key, SigningKey};
use tower_jwt_refresh::server::{JwtAuthLayer, Rejection, TokenError};

fn signing_keys() -> Vec<SigningKey> {
    let hmac = |alg, len| SigningKey::hmac(alg, vec![7u8; len]).unwrap();
    let pem = |alg, file| SigningKey::from_pem(alg, key_file(file)).unwrap();
    vec![
        hmac(Algorithm::HS256, 32),
        hmac(Algorithm::HS384, 48),
        hmac(Algorithm::HS512, 64),
        pem(Algorithm::RS256, "rsa_private.pem"),
        pem(Algorithm::PS256, "rsa_private.pem"),
        pem(Algorithm::ES256, "ec_private.pem"),
        pem(Algorithm::EdDSA, "ed_private.pem"),
    ]
}

#[tokio::test]
async fn every_algorithm_round_trips_through_the_layer() {
    for key in signing_keys() {
        let alg = key.algorithm();
        let key = key.with_kid(format!("{alg:?}"));
        let issuer = AccessTokenIssuer::new(key.clone())
            .issuer("https://auth.test")
            .audience("api");
        let layer = JwtAuthLayer::new(key.verification_key())
            .issuer("https://auth.test")
            .audience("api");
        let minted = issuer
            .mint("alice", "family-1", &json!({"scope": "read write"}))
            .unwrap();
        let claims = layer
            .verify(&minted.token)
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        let registered = claims.registered();
        assert_eq!(registered.sub.as_deref(), Some("alice"), "{alg:?}");
        assert_eq!(registered.sid.as_deref(), Some("family-1"), "{alg:?}");
        assert_eq!(
            registered.jti.as_deref(),
            Some(minted.jti.as_str()),
            "{alg:?}"
        );
        assert_eq!(registered.exp, minted.expires_at, "{alg:?}");
        assert!(claims.has_scope("write"), "{alg:?}");

        // Configured differently, the same token is refused.
        let other_aud = JwtAuthLayer::new(key.verification_key())
            .issuer("https://auth.test")
            .audience("admin");
        assert_eq!(
            other_aud.verify(&minted.token).await.unwrap_err(),
            Rejection::InvalidToken(TokenError::Audience)
        );
        let other_iss = JwtAuthLayer::new(key.verification_key()).issuer("https://other.test");
        assert_eq!(
            other_iss.verify(&minted.token).await.unwrap_err(),
            Rejection::InvalidToken(TokenError::Issuer)
        );
    }
}

#[tokio::test]
async fn a_token_from_one_key_fails_on_another() {
    let a = SigningKey::from_pem(Algorithm::RS256, key_file("rsa_private.pem")).unwrap();
    let b = SigningKey::from_pem(Algorithm::RS256, key_file("rsa2_private.pem")).unwrap();
    let token = AccessTokenIssuer::new(a).mint("alice", "s", &()).unwrap();
    let err = JwtAuthLayer::new(b.verification_key())
        .verify(&token.token)
        .await
        .unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::Signature));
}

#[test]
fn private_keys_must_fit_their_algorithm() {
    assert!(SigningKey::from_pem(Algorithm::ES256, key_file("rsa_private.pem")).is_err());
    assert!(SigningKey::from_pem(Algorithm::RS256, key_file("ec_private.pem")).is_err());
    assert!(SigningKey::from_pem(Algorithm::EdDSA, key_file("rsa_public.pem")).is_err());
    assert!(SigningKey::hmac(Algorithm::HS256, [0u8; 16]).is_err());
    let shown = format!(
        "{:?}",
        SigningKey::hmac(Algorithm::HS256, [0x41u8; 32]).unwrap()
    );
    assert!(!shown.contains("65") && !shown.contains("AAAA"), "{shown}");
}

#[tokio::test]
async fn rsa_8192_signatures_fit() {
    let public = Key::from_pem(Algorithm::RS256, key_file("rsa8192_public.pem"));
    if cfg!(not(feature = "aws-lc-rs")) {
        // The `rsa` crate behind rust-crypto verifies at most 4096 bits: refused up front.
        let err = public.unwrap_err();
        assert!(err.to_string().contains("4096"), "{err}");
        return;
    }
    // A 1024-byte signature is the largest the verifier accepts.
    let key = SigningKey::from_pem(Algorithm::RS256, key_file("rsa8192_private.pem")).unwrap();
    let token = AccessTokenIssuer::new(key).mint("alice", "s", &()).unwrap();
    let claims = JwtAuthLayer::new(public.unwrap())
        .verify(&token.token)
        .await
        .unwrap();
    assert_eq!(claims.subject(), Some("alice"));
}
