//! DPoP (RFC 9449) on both sides, chosen by the first byte.
//!
//! Server: arbitrary bytes as one or two `DPoP` headers (as they are, as the base64url-encoded
//! pieces of a compact JWS, or as the key and signature of a proof with a well-formed header)
//! and as the access token, with an arbitrary method and path, through `DpopVerifier::verify`
//! (with and without server nonces) and through `JwtAuthLayer::dpop` (both modes) with a real
//! key set and, at times, a real bound or unbound token. Nothing may panic; no made-up proof is
//! accepted, nor refused for a check made after its signature's; only a real unbound token
//! sent as `Bearer` (where bearer tokens are allowed) reaches the service; and every refusal
//! is a proper answer.
//!
//! Client: `RefreshLayer::dpop` over a service that answers each send as the input scripts it
//! (200, 401, 400, 403, 500 or gRPC `UNAUTHENTICATED`, with arbitrary `WWW-Authenticate` and
//! `DPoP-Nonce` values). Every send carries `Authorization: DPoP` and a proof that verifies
//! (fresh `jti`, `htm`, `htu`, `ath`), whose nonce is the latest well-formed one the service
//! handed to that origin; one request is sent at most `1 + max_replays + 1` times, and the
//! call always ends, with the last answer.
#![no_main]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower::{Layer, ServiceExt};
use tower_jwt_refresh::client::dpop::DpopKey;
use tower_jwt_refresh::client::{Error, RefreshLayer, Session, Tokens, refresher_fn};
use tower_jwt_refresh::issuer::AccessTokenIssuer;
use tower_jwt_refresh::keys::{Algorithm, Key, KeySet, SigningKey};
use tower_jwt_refresh::server::JwtAuthLayer;
use tower_jwt_refresh::server::dpop::{DpopError, DpopMode, DpopNonces, DpopVerifier};

const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-!!";
const BASE: &str = "https://api.example.com";
const NONCE_SECRET: [u8; 32] = [7u8; 32];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    // Time paused: every wait of the layers ends as soon as nothing else can run.
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    })
}

fn method(b: u8) -> Method {
    match b % 10 {
        0 => Method::GET,
        1 => Method::POST,
        2 => Method::PUT,
        3 => Method::DELETE,
        4 => Method::HEAD,
        5 => Method::OPTIONS,
        6 => Method::PATCH,
        7 => Method::TRACE,
        8 => Method::CONNECT,
        _ => Method::from_bytes(format!("X-{b}").as_bytes()).unwrap(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&half, rest)) = data.split_first() else { return };
    if half & 1 == 0 {
        let form = match (half >> 1) % 3 {
            0 => ProofForm::Raw,
            1 => ProofForm::Pieces,
            _ => ProofForm::Built,
        };
        server(form, rest);
    } else {
        client(rest);
    }
});

// ----- the server half -----

struct Server {
    verifier: DpopVerifier,
    with_nonces: DpopVerifier,
    nonces: DpopNonces,
    /// By `[required][nonces]`.
    layers: [[JwtAuthLayer; 2]; 2],
    bound: String,
    unbound: String,
}

fn server_setup() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let keys = KeySet::new()
            .with_key(Key::hmac(Algorithm::HS256, SECRET).unwrap().with_kid("k"))
            .unwrap();
        let nonces = DpopNonces::new(NONCE_SECRET).unwrap();
        let verifier = DpopVerifier::new(BASE).unwrap();
        let with_nonces = DpopVerifier::new(BASE).unwrap().nonces(nonces.clone());
        let layer = |verifier: &DpopVerifier, mode| {
            JwtAuthLayer::new(keys.clone())
                .issuer("https://issuer.example.com")
                .audience("api")
                .dpop(verifier.clone(), mode)
        };
        let layers = [
            [layer(&verifier, DpopMode::Allowed), layer(&with_nonces, DpopMode::Allowed)],
            [layer(&verifier, DpopMode::Required), layer(&with_nonces, DpopMode::Required)],
        ];
        let issuer = AccessTokenIssuer::new(
            SigningKey::hmac(Algorithm::HS256, SECRET).unwrap().with_kid("k"),
        )
        .issuer("https://issuer.example.com")
        .audience("api")
        .lifetime(Duration::from_secs(300 * 24 * 3600));
        // Bound to a key whose private half never signs anything here.
        let key = DpopKey::generate().unwrap();
        let cnf = serde_json::json!({ "cnf": { "jkt": key.thumbprint().as_str() } });
        let bound = issuer.mint("alice", "s-1", &cnf).unwrap().token;
        let unbound = issuer.mint("bob", "s-2", &()).unwrap().token;
        Server { verifier, with_nonces, nonces, layers, bound, unbound }
    })
}

/// How the fuzzer's bytes become a `DPoP` value.
#[derive(Clone, Copy)]
enum ProofForm {
    /// As they are.
    Raw,
    /// The three pieces of a compact JWS, cut at the first two `0xff` and each
    /// base64url-encoded: made-up JSON headers and claims get past the decoding.
    Pieces,
    /// A header built around a made-up key (see [`built_proof`]), with a made-up signature.
    Built,
}

fn proof_value(raw: &[u8], form: ProofForm, claims: &Value) -> Vec<u8> {
    let b64 = |piece: &[u8]| URL_SAFE_NO_PAD.encode(piece);
    match form {
        ProofForm::Raw => raw.to_vec(),
        ProofForm::Pieces => {
            let mut pieces = raw.splitn(3, |&b| b == 0xff);
            let segments: Vec<String> =
                (0..3).map(|_| b64(pieces.next().unwrap_or_default())).collect();
            segments.join(".").into_bytes()
        }
        ProofForm::Built => built_proof(raw, claims).into_bytes(),
    }
}

const ALGORITHMS: [&str; 10] =
    ["ES256", "ES384", "EdDSA", "Ed25519", "RS256", "PS256", "RS512", "PS384", "HS256", "none"];

/// A proof with a well-formed header: `typ: dpop+jwt`, an algorithm (byte 0) and a `jwk` of a
/// type (byte 1) whose members are the fuzzer's bytes; then, cut at `0xff`, the key's two
/// members, the signature, and the claims (when empty, the request's own: only the signature
/// stands between such a proof and acceptance).
fn built_proof(raw: &[u8], claims: &Value) -> String {
    let b64 = |piece: &[u8]| URL_SAFE_NO_PAD.encode(piece);
    let [alg, kty, rest @ ..] = raw else { return String::new() };
    let mut pieces = rest.splitn(4, |&b| b == 0xff);
    let (a, b) = (b64(pieces.next().unwrap_or_default()), b64(pieces.next().unwrap_or_default()));
    let jwk = match kty % 4 {
        0 => serde_json::json!({ "kty": "EC", "crv": "P-256", "x": a, "y": b }),
        1 => serde_json::json!({ "kty": "EC", "crv": "P-384", "x": a, "y": b }),
        2 => serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": a }),
        _ => serde_json::json!({ "kty": "RSA", "n": a, "e": b }),
    };
    let alg = ALGORITHMS[usize::from(*alg) % ALGORITHMS.len()];
    let header = serde_json::json!({ "typ": "dpop+jwt", "alg": alg, "jwk": jwk });
    let signature = pieces.next().unwrap_or_default();
    let payload = match pieces.next() {
        Some(payload) if !payload.is_empty() => payload.to_vec(),
        _ => serde_json::to_vec(claims).unwrap(),
    };
    format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(&payload), b64(signature))
}

/// The claims of a proof for this request, as its maker would write them.
fn request_claims(method: &Method, uri: &Uri, token: Option<&[u8]>) -> Value {
    static JTI: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut claims = serde_json::json!({
        "jti": format!("j{}", JTI.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        "htm": method.as_str(),
        "htu": format!("{BASE}{}", uri.path()),
        "iat": now,
    });
    if let Some(token) = token {
        claims["ath"] = URL_SAFE_NO_PAD.encode(Sha256::digest(token)).into();
    }
    claims
}

fn server(form: ProofForm, data: &[u8]) {
    // Byte 0: flags; byte 1: the method; then a proof, the token, the path and a second
    // proof, split at `\n` (an empty first proof is none).
    let [flags, method_byte, rest @ ..] = data else { return };
    let setup = server_setup();
    let method = method(*method_byte);
    let mut parts = rest.splitn(4, |&b| b == b'\n');
    let first = parts.next().filter(|p| !p.is_empty());
    let fuzzed_token = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let proofs: Vec<&[u8]> = first.into_iter().chain(parts).collect();
    let uri = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));

    // Bits 0-1: which token; bits 2-4: how it is sent.
    let token: Option<Vec<u8>> = match flags & 3 {
        0 => Some(fuzzed_token.to_vec()),
        1 => Some(setup.bound.clone().into_bytes()),
        2 => Some(setup.unbound.clone().into_bytes()),
        _ => None,
    };
    let scheme = (flags >> 2) % 6;
    let required = flags & 0x20 != 0;
    let with_nonces = flags & 0x40 != 0;
    let grpc = flags & 0x80 != 0;

    let claims = request_claims(&method, &uri, token.as_deref());
    let mut headers = HeaderMap::new();
    for proof in &proofs {
        if let Ok(value) = HeaderValue::from_bytes(&proof_value(proof, form, &claims)) {
            headers.append("dpop", value);
        }
    }
    if let Some(token) = &token {
        let authorization = match scheme {
            0 | 5 => [b"DPoP ", &token[..]].concat(),
            1 => [b"Bearer ", &token[..]].concat(),
            2 => [b"dpop ", &token[..]].concat(),
            3 => [b"BEARER ", &token[..]].concat(),
            _ => token.clone(),
        };
        if let Ok(value) = HeaderValue::from_bytes(&authorization) {
            headers.append("authorization", value.clone());
            if scheme == 5 {
                headers.append("authorization", value);
            }
        }
    }
    if grpc {
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    }

    // The verifier alone: nothing made up verifies, and as the signature is checked before
    // the claims, no refusal may come from a check behind it.
    let access_token = token.as_deref().map(String::from_utf8_lossy);
    let proof_count = headers.get_all("dpop").iter().count();
    for verifier in [&setup.verifier, &setup.with_nonces] {
        let verdict =
            runtime().block_on(verifier.verify(&method, &uri, &headers, access_token.as_deref()));
        match verdict {
            Ok(_) => panic!("accepted a made-up proof"),
            Err(DpopError::Missing) => assert_eq!(proof_count, 0),
            Err(DpopError::Multiple) => assert!(proof_count > 1),
            Err(DpopError::TooLarge) => assert_eq!(proof_count, 1),
            Err(
                error @ (DpopError::Malformed
                | DpopError::Type
                | DpopError::Algorithm
                | DpopError::InvalidKey
                | DpopError::PrivateKey
                | DpopError::Signature),
            ) => {
                assert_eq!(proof_count, 1, "{error}");
                assert_eq!(error.error_code(), "invalid_dpop_proof", "{error}");
            }
            Err(error) => panic!("a made-up signature verified: refused only for {error:?}"),
        }
    }

    // The layer.
    let mut request =
        Request::builder().method(method.clone()).uri(uri).body(Full::<Bytes>::default()).unwrap();
    *request.headers_mut() = headers;
    let inner = tower::service_fn(|_: Request<Full<Bytes>>| async {
        let mut response = Response::new(Full::<Bytes>::default());
        response.headers_mut().insert("x-passed", HeaderValue::from_static("1"));
        Ok::<_, Infallible>(response)
    });
    let layer = &setup.layers[usize::from(required)][usize::from(with_nonces)];
    let service = layer.layer(inner);
    let response = runtime().block_on(service.oneshot(request)).unwrap();
    let (parts, body) = response.into_parts();
    if parts.headers.contains_key("x-passed") {
        // Only a real unbound token sent as a bearer token, where bearer tokens are allowed:
        // no made-up proof makes a bound token (or a made-up one) pass.
        assert!(
            flags & 3 == 2 && matches!(scheme, 1 | 3) && !required,
            "let through: token {}, scheme {scheme}, required {required}",
            flags & 3
        );
        return;
    }
    let body = runtime().block_on(body.collect()).ok().map(|b| b.to_bytes());
    check_refusal(setup, &parts, body, grpc && method == Method::POST, required);
}

/// A refusal is a proper answer: HTTP 400, 401 or 503 (or a trailers-only gRPC status), with
/// `Cache-Control: no-store`, a challenge on 400 and 401, `Retry-After` on 503, a JSON error
/// body, and a valid `DPoP-Nonce` with every `use_dpop_nonce`.
fn check_refusal(
    setup: &Server,
    parts: &http::response::Parts,
    body: Option<Bytes>,
    grpc: bool,
    required: bool,
) {
    let headers = &parts.headers;
    assert_eq!(headers["cache-control"], "no-store");
    let challenges: Vec<&str> = headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().expect("challenges are ASCII"))
        .collect();
    if grpc {
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/grpc");
        let code = headers["grpc-status"].to_str().unwrap();
        assert!(matches!(code, "16" | "14"), "grpc-status {code}");
        assert!(headers.contains_key("grpc-message"));
        // Only DPoP errors carry a challenge over gRPC.
        assert!(challenges.len() <= 1, "{challenges:?}");
        assert!(challenges.iter().all(|c| c.starts_with("DPoP ")), "{challenges:?}");
    } else {
        let status = parts.status.as_u16();
        assert!(matches!(status, 400 | 401 | 503), "refused with {status}");
        assert_eq!(headers["content-type"], "application/json");
        let body: Value = serde_json::from_slice(&body.expect("a body")).expect("a json body");
        let error = body["error"].as_str().expect("an error code");
        assert!(body["error_description"].is_string());
        if status == 503 {
            assert!(headers.contains_key("retry-after"));
            assert_eq!(error, "temporarily_unavailable");
        } else {
            assert!(!challenges.is_empty(), "{status} without a challenge");
            for challenge in &challenges {
                assert!(
                    challenge.starts_with("DPoP realm=\"api\"")
                        || challenge.starts_with("Bearer realm=\"api\""),
                    "{challenge}"
                );
                if required {
                    assert!(challenge.starts_with("DPoP "), "{challenge}");
                }
            }
            if status == 400 {
                assert_eq!(error, "invalid_request");
            } else {
                assert!(
                    matches!(
                        error,
                        "unauthorized" | "invalid_token" | "invalid_dpop_proof" | "use_dpop_nonce"
                    ),
                    "{error}"
                );
            }
            if error != "unauthorized" {
                assert!(challenges[0].contains(&format!("error=\"{error}\"")), "{challenges:?}");
            }
            if matches!(error, "invalid_dpop_proof" | "use_dpop_nonce") {
                assert!(challenges[0].starts_with("DPoP "), "{challenges:?}");
            }
        }
    }
    if challenges.iter().any(|c| c.contains("error=\"use_dpop_nonce\"")) {
        let nonce = headers["dpop-nonce"].to_str().unwrap();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!(setup.nonces.is_valid(nonce, now), "a stale or foreign nonce");
    } else {
        assert!(!headers.contains_key("dpop-nonce"));
    }
}

// ----- the client half -----

/// The fuzz input, read a byte at a time; zeros once it runs out. Owned: the scripted
/// service outlives the borrow of the input.
struct Input {
    data: Vec<u8>,
    at: usize,
}

impl Input {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    /// A length byte, then that many bytes (fewer at the end).
    fn bytes(&mut self) -> Vec<u8> {
        let len = usize::from(self.byte());
        let start = self.at.min(self.data.len());
        let end = (start + len).min(self.data.len());
        self.at = end;
        self.data[start..end].to_vec()
    }

    fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }
}

const ORIGINS: [&str; 3] =
    ["https://api.example.com", "http://API.example.com:8080", "https://other.example"];

const CHALLENGES: [&[u8]; 5] = [
    b"",
    br#"DPoP error="use_dpop_nonce""#,
    br#"DPoP error="invalid_dpop_proof", algs="ES256""#,
    br#"Bearer realm="api", error="invalid_token""#,
    br#"DPoP realm="api", error="use_dpop_nonce", error_description="x", algs="ES256 EdDSA""#,
];

/// What the scripted service saw.
#[derive(Default)]
struct Seen {
    /// Sends of the current request, and the status of each answer.
    answers: Vec<(StatusCode, bool)>,
    /// The latest well-formed nonce handed to each origin (lower case).
    nonces: HashMap<String, String>,
}

/// RFC 9449 §8.1, and the client's own bound of 1 KiB.
fn usable_nonce(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= 1024
        && value.iter().all(|&b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

fn b64_json(segment: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD.decode(segment).expect("base64url segment");
    serde_json::from_slice(&bytes).expect("a json segment")
}

fn client(data: &[u8]) {
    let mut input = Input { data: data.to_vec(), at: 0 };
    let config = input.byte();
    let max_replays = usize::from(config & 3);
    let requests = 1 + usize::from((config >> 2) % 3);
    let input = Arc::new(Mutex::new(input));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let refreshes = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    runtime().block_on(async {
        let session = Session::new();
        session.login(Tokens::new("at-0", "rt-0")).unwrap();
        let refresher = refresher_fn({
            let refreshes = Arc::clone(&refreshes);
            move |_: String| {
                let n = refreshes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                async move { Ok(Tokens::new(format!("at-{n}"), format!("rt-{n}"))) }
            }
        });
        let key = DpopKey::generate().unwrap();
        let layer = RefreshLayer::new(session, refresher).dpop(key).max_replays(max_replays);
        // A verifier per origin: every proof sent must pass it, its `jti` never seen before.
        let verifiers: Vec<DpopVerifier> =
            ORIGINS.iter().map(|o| DpopVerifier::new(o).unwrap()).collect();
        let verifiers = Arc::new(verifiers);

        let inner = tower::service_fn({
            let (input, seen, refreshes) =
                (Arc::clone(&input), Arc::clone(&seen), Arc::clone(&refreshes));
            move |request: Request<Full<Bytes>>| {
                let (input, seen, refreshes, verifiers) = (
                    Arc::clone(&input),
                    Arc::clone(&seen),
                    Arc::clone(&refreshes),
                    Arc::clone(&verifiers),
                );
                async move {
                    check_send(&request, &seen, &refreshes, &verifiers).await;
                    let response =
                        answer(&request, &mut input.lock().unwrap(), &mut seen.lock().unwrap());
                    Ok::<_, Infallible>(response)
                }
            }
        });
        let service = layer.layer(inner);

        for _ in 0..requests {
            let (method, origin) = {
                let mut input = input.lock().unwrap();
                (method(input.byte()), input.byte())
            };
            let uri = format!("{}/p/{}?q=1", ORIGINS[usize::from(origin) % ORIGINS.len()], origin);
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .body(Full::new(Bytes::from_static(b"body")))
                .unwrap();
            seen.lock().unwrap().answers.clear();
            let call = service.clone().oneshot(request);
            let outcome =
                tokio::time::timeout(Duration::from_secs(3600), call).await.expect("the call hung");
            let seen = seen.lock().unwrap();
            let sends = seen.answers.len();
            assert!(sends >= 1 || outcome.is_err(), "answered without a send");
            assert!(sends <= 1 + max_replays + 1, "{sends} sends with max_replays {max_replays}");
            // Only an unauthenticated answer is ever sent again.
            for (status, unauthenticated) in &seen.answers[..sends.saturating_sub(1)] {
                assert!(*unauthenticated, "sent again after {status}");
            }
            match outcome {
                Ok(response) => {
                    let last = sends - 1;
                    assert_eq!(
                        response.headers()["x-send"],
                        last.to_string().as_str(),
                        "not the last answer"
                    );
                }
                Err(Error::RefreshLoop) => {}
                Err(error) => panic!("the call failed: {error:?}"),
            }
            // Nothing left to script: the rest would be all 200s.
            if input.lock().unwrap().is_empty() {
                break;
            }
        }
    });
}

/// One send as the service sees it: `Authorization: DPoP` with a token the session was given,
/// and one proof of this request, over that token, that a verifier accepts, with the latest
/// well-formed nonce this origin handed out, if any.
async fn check_send(
    request: &Request<Full<Bytes>>,
    seen: &Mutex<Seen>,
    refreshes: &std::sync::atomic::AtomicUsize,
    verifiers: &[DpopVerifier],
) {
    let headers = request.headers();
    let authorization: Vec<&HeaderValue> = headers.get_all("authorization").iter().collect();
    assert_eq!(authorization.len(), 1, "one Authorization header");
    let token =
        authorization[0].to_str().unwrap().strip_prefix("DPoP ").expect("Authorization: DPoP");
    let n: usize =
        token.strip_prefix("at-").and_then(|n| n.parse().ok()).expect("a token the session had");
    assert!(n <= refreshes.load(std::sync::atomic::Ordering::SeqCst));
    let proofs: Vec<&HeaderValue> = headers.get_all("dpop").iter().collect();
    assert_eq!(proofs.len(), 1, "one DPoP header");
    let proof = proofs[0].to_str().unwrap();
    let segments: Vec<&str> = proof.split('.').collect();
    assert_eq!(segments.len(), 3, "a compact JWS");
    let header = b64_json(segments[0]);
    assert_eq!(header["typ"], "dpop+jwt");
    let claims = b64_json(segments[1]);
    assert!(claims.is_object());
    assert_eq!(claims["htm"], request.method().as_str());
    let uri = request.uri();
    let htu = format!("{}://{}{}", uri.scheme_str().unwrap(), uri.authority().unwrap(), uri.path());
    assert_eq!(claims["htu"], htu.as_str());
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()), "a jti");
    assert!(claims["iat"].is_u64(), "an iat");
    let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
    assert_eq!(claims["ath"], ath.as_str());
    let origin = format!("{}://{}", uri.scheme_str().unwrap(), uri.authority().unwrap())
        .to_ascii_lowercase();
    let expected = seen.lock().unwrap().nonces.get(&origin).cloned();
    match (&claims["nonce"], expected) {
        (Value::Null, None) => {}
        (Value::String(nonce), Some(expected)) => {
            assert!(usable_nonce(nonce.as_bytes()), "an invented nonce: {nonce:?}");
            assert_eq!(*nonce, expected, "not the origin's latest nonce");
        }
        (nonce, expected) => panic!("proof nonce {nonce} where {expected:?} was handed out"),
    }
    let index = ORIGINS.iter().position(|o| o.eq_ignore_ascii_case(&origin)).unwrap();
    let verdict = verifiers[index].verify(request.method(), uri, headers, Some(token)).await;
    if let Err(error) = verdict {
        panic!("a proof the server refuses: {error}");
    }
}

/// The scripted answer to one send: a status, then maybe a challenge and nonces.
fn answer(
    request: &Request<Full<Bytes>>,
    input: &mut Input,
    seen: &mut Seen,
) -> Response<Full<Bytes>> {
    let send = seen.answers.len();
    let mut response = Response::new(Full::default());
    response.headers_mut().insert("x-send", HeaderValue::from(send));
    let how = input.byte();
    let status = match how % 6 {
        0 => 200,
        1 => 401,
        2 => 400,
        3 => 403,
        4 => 500,
        _ => {
            response.headers_mut().insert("grpc-status", HeaderValue::from_static("16"));
            200
        }
    };
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    if how & 0x08 != 0 {
        // A template, then arbitrary bytes after it.
        let template = CHALLENGES[usize::from(input.byte()) % CHALLENGES.len()];
        let value = [template, &input.bytes()[..]].concat();
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            response.headers_mut().append("www-authenticate", value);
        }
    }
    for flag in [0x10, 0x20] {
        if how & flag != 0 {
            let value = input.bytes();
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                response.headers_mut().append("dpop-nonce", value);
            }
        }
    }
    if how & 0x40 != 0 {
        // A well-formed nonce the fuzzer need not find.
        response
            .headers_mut()
            .insert("dpop-nonce", HeaderValue::from(send + 1000 * usize::from(how)));
    }
    // The client reads the first `DPoP-Nonce`, if it is usable.
    if let Some(nonce) = response.headers().get("dpop-nonce")
        && usable_nonce(nonce.as_bytes())
    {
        let uri = request.uri();
        let origin = format!("{}://{}", uri.scheme_str().unwrap(), uri.authority().unwrap())
            .to_ascii_lowercase();
        seen.nonces.insert(origin, nonce.to_str().unwrap().to_owned());
    }
    let unauthenticated = status == 401 || response.headers().contains_key("grpc-status");
    seen.answers.push((response.status(), unauthenticated));
    response
}
