//! DPoP against the real thing: proofs made by panva's `dpop` and `jose` npm packages verify
//! with our [`DpopVerifier`], and our [`DpopKey`]'s proofs verify with `jose`; both sides
//! agree on every key's RFC 7638 thumbprint.
//!
//! The node side is `tests/interop/dpop.mjs`, its packages pinned by
//! `tests/interop/package-lock.json`; `scripts/test` installs them with `npm ci`. Without
//! `node` or the installed packages the test is skipped with a notice; under `CI=true` it
//! fails.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Uri};
use serde_json::{Value, json};
use tower_jwt_refresh::client::dpop::DpopKey;
use tower_jwt_refresh::keys::Algorithm;
use tower_jwt_refresh::server::dpop::{DpopError, DpopNonces, DpopVerifier};

const HTU: &str = "https://api.example.com/orders";
const TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";

/// The interop directory, or `None` (with a notice) when node or its packages are missing
/// outside CI.
fn interop() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let ci = std::env::var("CI").is_ok_and(|ci| ci == "true");
    let missing = if Command::new("node").arg("--version").output().is_err() {
        Some("node is not installed")
    } else if !dir.join("node_modules/dpop").is_dir() || !dir.join("node_modules/jose").is_dir() {
        Some("tests/interop/node_modules is missing (run `npm ci` there; scripts/test does)")
    } else {
        None
    };
    match missing {
        None => Some(dir),
        Some(why) if ci => panic!("CI=true but {why}"),
        Some(why) => {
            eprintln!("notice: skipping the DPoP interop test: {why}");
            None
        }
    }
}

fn node(dir: &PathBuf, args: &[&str], stdin: &str) -> Vec<Value> {
    let mut child = Command::new("node")
        .arg("dpop.mjs")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "node dpop.mjs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn headers(proof: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("dpop", HeaderValue::from_str(proof).unwrap());
    headers
}

#[tokio::test]
async fn proofs_made_by_panvas_packages_verify_here() {
    let Some(dir) = interop() else { return };
    let nonces = DpopNonces::new([5u8; 32])
        .unwrap()
        .lifetime(Duration::from_secs(300));
    let verifier = DpopVerifier::new("https://api.example.com")
        .unwrap()
        .nonces(nonces);
    let nonce = verifier.current_nonce().unwrap();
    let made = node(&dir, &["make", HTU, "GET", TOKEN, &nonce], "");
    let makers: Vec<(&str, &str)> = made
        .iter()
        .map(|m| (m["maker"].as_str().unwrap(), m["alg"].as_str().unwrap()))
        .collect();
    assert_eq!(
        makers,
        [
            ("dpop", "ES256"),
            ("dpop", "Ed25519"),
            ("dpop", "RS256"),
            ("dpop", "PS256"),
            ("jose", "ES384"),
            ("jose", "EdDSA"),
        ]
    );
    let uri = Uri::from_static("/orders?page=1");
    for m in &made {
        let proof = m["proof"].as_str().unwrap();
        let label = format!("{} {}", m["maker"], m["alg"]);
        let headers = headers(proof);
        let verified = verifier
            .verify(&Method::GET, &uri, &headers, Some(TOKEN))
            .await
            .unwrap_or_else(|e| panic!("{label}: {e:?}"));
        // Our thumbprint is jose's.
        assert_eq!(
            verified.thumbprint().as_str(),
            m["jkt"].as_str().unwrap(),
            "{label}"
        );
        // And the checks still bite on their proofs: a replay, another method, another token.
        let again = verifier
            .verify(&Method::GET, &uri, &headers, Some(TOKEN))
            .await;
        assert!(
            matches!(again, Err(DpopError::Replayed)),
            "{label}: {again:?}"
        );
        let fresh = DpopVerifier::new("https://api.example.com").unwrap();
        let post = fresh
            .verify(&Method::POST, &uri, &headers, Some(TOKEN))
            .await;
        assert!(matches!(post, Err(DpopError::Method)), "{label}: {post:?}");
        let other = fresh.verify(&Method::GET, &uri, &headers, Some("x")).await;
        assert!(
            matches!(other, Err(DpopError::AccessTokenHash)),
            "{label}: {other:?}"
        );
    }
}

#[test]
fn our_proofs_verify_with_jose() {
    let Some(dir) = interop() else { return };
    let uri = Uri::from_static("https://api.example.com/orders?page=1");
    let mut lines = String::new();
    let mut expected = Vec::new();
    for alg in [Algorithm::ES256, Algorithm::EdDSA] {
        let key = DpopKey::generate_with(alg).unwrap();
        let proof = key
            .proof(&Method::GET, &uri)
            .access_token(TOKEN)
            .nonce("server-nonce")
            .sign()
            .unwrap();
        let line = json!({"proof": proof, "htu": HTU, "htm": "GET", "accessToken": TOKEN, "nonce": "server-nonce"});
        lines.push_str(&format!("{line}\n"));
        expected.push(json!({"ok": true, "jkt": key.thumbprint().as_str()}));
        // Controls: jose must refuse the same proof for another token or another URI, so a
        // pass above is jose's judgement, not a script that passes everything.
        let wrong_token = json!({"proof": proof, "htu": HTU, "htm": "GET", "accessToken": "other", "nonce": "server-nonce"});
        let wrong_htu =
            json!({"proof": proof, "htu": "https://api.example.com/other", "htm": "GET"});
        lines.push_str(&format!("{wrong_token}\n{wrong_htu}\n"));
        expected.push(json!({"ok": false}));
        expected.push(json!({"ok": false}));
        // A tampered signature.
        let mut tampered = proof.into_bytes();
        let i = tampered.len() - 5;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        lines.push_str(&format!(
            "{}\n",
            json!({"proof": tampered, "htu": HTU, "htm": "GET"})
        ));
        expected.push(json!({"ok": false}));
    }
    let got = node(&dir, &["verify"], &lines);
    assert_eq!(got.len(), expected.len());
    for (got, want) in got.iter().zip(&expected) {
        assert_eq!(got["ok"], want["ok"], "{got}");
        if want["ok"] == true {
            assert_eq!(got["jkt"], want["jkt"], "{got}");
        }
    }
}
