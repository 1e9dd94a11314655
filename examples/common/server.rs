//! The example backend, built only from this crate's public API: a drop-in for the NestJS
//! backend of the silent-refresh (无感刷新token) write-up whose NestJS + axios design this crate
//! replaces. That backend signs both tokens with one JWT secret, reads the raw
//! `authorization` header, and refreshes at `GET /refresh?token=…`.
//!
//! - `POST /login` `{username, password}`: users `admin`/`admin` and `zhangsan`/`123`;
//!   answers `{userInfo:{username}, accessToken, refreshToken, tokenType}`, or 400 "用户不存在"
//!   / "密码错误" in NestJS's error shape. A login that carries a `DPoP` proof (RFC 9449) gets
//!   tokens bound to the proof's key (`tokenType: "DPoP"`); without one, bearer tokens.
//! - `GET /aaa`, `GET /bbb` behind `JwtAuthLayer`: `Bearer <token>` or the raw token, or
//!   `DPoP <token>` with a proof; a bound token works only with a proof from its key.
//! - `GET /refresh?token=…` and `POST /refresh` `{refreshToken}`: `{accessToken,
//!   refreshToken}`, rotating with reuse detection; 401 when refused. A bound refresh token
//!   needs a `DPoP` proof from its key.
//! - `POST /oauth/token`: the RFC 6749 refresh endpoint, with DPoP; `POST /logout`
//!   `{refreshToken}`.
//! - With `dpop_nonce` (`DPOP_NONCE=1`), every DPoP proof must carry the server's current
//!   nonce: a proof without it gets `use_dpop_nonce` and a `DPoP-Nonce` header (401 at the
//!   API, 400 at the login and refresh endpoints).
//! - `GET /metrics`, when the config holds a Prometheus handle ([`install_metrics`]): every
//!   instrument of the crate's `metrics` feature, in Prometheus text format.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{OriginalUri, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::json;
use tower_jwt_refresh::issuer::store::RefreshStore;
use tower_jwt_refresh::issuer::{
    AccessTokenIssuer, IssuedTokens, MemoryStore, RefreshError, TokenIssuer,
};
use tower_jwt_refresh::keys::{Algorithm, KeySet, SigningKey};
use tower_jwt_refresh::server::dpop::{DpopError, DpopMode, DpopNonces, DpopVerifier};
use tower_jwt_refresh::server::{Claims, JwtAuthLayer};

/// The users of the NestJS write-up's backend.
const USERS: [(&str, &str); 2] = [("admin", "admin"), ("zhangsan", "123")];

/// What the server is configured with (the example reads it from the environment).
#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    /// The HS256 secret; `None` draws a random one.
    pub secret: Option<Vec<u8>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// A JWKS document of extra public keys to accept.
    pub jwks: Option<String>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub redis_url: Option<String>,
    /// With Redis, keep a local set of revoked sessions fed by the store's revocation feed
    /// (`RedisStore::propagate_revocations`) instead of asking Redis on every request.
    pub propagate: bool,
    /// The issuer's grace window; `None` keeps its default (30 s). The soak sets it to show
    /// what a lost reply does without one.
    pub grace: Option<Duration>,
    /// The installed Prometheus recorder: with it, `GET /metrics` serves what it recorded.
    pub metrics: Option<PrometheusHandle>,
    /// The URL clients address the server by, which DPoP proofs name (`htu`); `None` takes
    /// `http://<the bound address>`.
    pub public_url: Option<String>,
    /// Require the server's nonce in every DPoP proof.
    pub dpop_nonce: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            secret: None,
            issuer: None,
            audience: None,
            jwks: None,
            access_ttl: Duration::from_millis(3600),
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            redis_url: None,
            propagate: false,
            grace: None,
            metrics: None,
            public_url: None,
            dpop_nonce: false,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Config {
    /// Reads `ADDR`, `JWT_SECRET`, `JWT_ISSUER`, `JWT_AUDIENCE`, `JWT_JWKS` (a file),
    /// `ACCESS_TTL` and `REFRESH_TTL` (seconds), `REDIS_URL` (one URL, or a cluster's node
    /// URLs, comma-separated), `PROPAGATE_REVOCATIONS` (`1`: propagated revocations),
    /// `PUBLIC_URL` (what DPoP proofs name) and `DPOP_NONCE` (`1`: DPoP proofs need nonces).
    pub fn from_env() -> Result<Self, BoxError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let seconds = |name: &str, default: Duration| -> Result<Duration, BoxError> {
            match var(name) {
                Some(v) => Ok(Duration::try_from_secs_f64(
                    v.parse::<f64>().map_err(|e| format!("{name}: {e}"))?,
                )
                .map_err(|e| format!("{name}: {e}"))?),
                None => Ok(default),
            }
        };
        let defaults = Self::default();
        Ok(Self {
            addr: match var("ADDR") {
                Some(addr) => addr.parse().map_err(|e| format!("ADDR: {e}"))?,
                None => defaults.addr,
            },
            secret: var("JWT_SECRET").map(String::into_bytes),
            issuer: var("JWT_ISSUER"),
            audience: var("JWT_AUDIENCE"),
            jwks: match var("JWT_JWKS") {
                Some(path) => Some(
                    std::fs::read_to_string(&path).map_err(|e| format!("JWT_JWKS {path}: {e}"))?,
                ),
                None => None,
            },
            access_ttl: seconds("ACCESS_TTL", defaults.access_ttl)?,
            refresh_ttl: seconds("REFRESH_TTL", defaults.refresh_ttl)?,
            redis_url: var("REDIS_URL"),
            propagate: var("PROPAGATE_REVOCATIONS").is_some_and(|v| v == "1"),
            grace: None,
            metrics: None,
            public_url: var("PUBLIC_URL"),
            dpop_nonce: var("DPOP_NONCE").is_some_and(|v| v == "1"),
        })
    }
}

/// Installs a Prometheus recorder as the process's global recorder, and returns the handle
/// that renders it. Call it before building the server (or any layer, issuer or session):
/// their instruments are bound to the recorder installed when they are built.
pub fn install_metrics() -> Result<PrometheusHandle, BoxError> {
    if !cfg!(feature = "metrics") {
        return Err("METRICS=1 needs the `metrics` feature: run with `--features metrics`".into());
    }
    // Prometheus names: `tower_jwt_refresh.server.requests` is served as
    // `tower_jwt_refresh_server_requests_total`, durations with `_seconds`.
    let handle = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .install_recorder()?;
    Ok(handle)
}

/// A bound server, not yet serving.
pub struct Server {
    pub listener: tokio::net::TcpListener,
    pub router: Router,
    /// Messages for the operator (a random secret, the store in use).
    pub notices: Vec<String>,
}

/// Binds `config.addr` and builds the router, with the store `REDIS_URL` names: one Redis, or
/// a Redis Cluster when it lists several node URLs, comma-separated.
pub async fn bind(config: Config) -> Result<Server, BoxError> {
    match &config.redis_url {
        #[cfg(feature = "redis")]
        Some(url) if url.contains(',') => {
            use tower_jwt_refresh::issuer::{RedisStore, RevocationSubscriber};
            let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
            let mut store = RedisStore::connect_cluster(&nodes).await?;
            if config.propagate {
                store = store
                    .propagate_revocations(RevocationSubscriber::cluster(&nodes))
                    .await?;
            }
            let mut server = bind_with(config.clone(), store).await?;
            server
                .notices
                .push(format!("refresh tokens in the Redis Cluster at {url}"));
            Ok(server)
        }
        #[cfg(feature = "redis")]
        Some(url) => {
            let mut store = tower_jwt_refresh::issuer::RedisStore::connect(url).await?;
            if config.propagate {
                store = store
                    .propagate_revocations(redis::Client::open(url.as_str())?)
                    .await?;
            }
            let mut server = bind_with(config.clone(), store).await?;
            server
                .notices
                .push(format!("refresh tokens in Redis at {url}"));
            Ok(server)
        }
        #[cfg(not(feature = "redis"))]
        Some(_) => Err(
            "REDIS_URL is set, but this build lacks the `redis` feature: \
                        run with `--features redis`"
                .into(),
        ),
        None => {
            let mut server = bind_with(config, MemoryStore::new()).await?;
            server
                .notices
                .push("refresh tokens in memory: they are lost on restart".into());
            Ok(server)
        }
    }
}

/// Binds `config.addr` and builds the router around `store`.
pub async fn bind_with<S: RefreshStore + Clone>(
    config: Config,
    store: S,
) -> Result<Server, BoxError> {
    let mut notices = Vec::new();
    let secret = match config.secret {
        Some(secret) => secret,
        None => {
            let mut secret = vec![0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| format!("random secret: {e}"))?;
            notices.push("JWT_SECRET not set: using a random secret for this run".into());
            secret
        }
    };
    let key = SigningKey::hmac(Algorithm::HS256, &secret)?;
    let mut access = AccessTokenIssuer::new(key.clone()).lifetime(config.access_ttl);
    if let Some(iss) = &config.issuer {
        access = access.issuer(iss.clone());
    }
    if let Some(aud) = &config.audience {
        access = access.audience(aud.clone());
    }
    // The default grace window (30 s) lets a client that lost a refresh response retry.
    let mut issuer = TokenIssuer::new(access, store).refresh_lifetime(config.refresh_ttl);
    if let Some(grace) = config.grace {
        issuer = issuer.grace_period(grace);
    }

    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let public_url = match &config.public_url {
        Some(url) => url.clone(),
        None => format!("http://{}", listener.local_addr()?),
    };
    // One verifier for the API, the login and the refresh endpoints: they share its replay
    // store (a proof is good once, anywhere) and its nonces.
    let mut dpop = DpopVerifier::new(&public_url).map_err(|e| format!("PUBLIC_URL: {e}"))?;
    if config.dpop_nonce {
        dpop = dpop.nonces(DpopNonces::random()?);
    }

    let mut keys = vec![key.verification_key()];
    if let Some(jwks) = &config.jwks {
        keys.extend(KeySet::from_jwks(jwks)?.iter().cloned());
    }
    // Tokens that live seconds make no sense with the default 30 s of leeway.
    let mut auth = JwtAuthLayer::new(KeySet::try_from_keys(keys)?)
        .leeway(Duration::ZERO)
        .allow_raw_authorization()
        .deny_list(issuer.deny_list())
        .dpop(dpop.clone(), DpopMode::Allowed);
    if let Some(iss) = &config.issuer {
        auth = auth.issuer(iss.clone());
    }
    if let Some(aud) = &config.audience {
        auth = auth.audience(aud.clone());
    }
    let app = App {
        issuer: issuer.clone(),
        dpop: dpop.clone(),
    };
    let protected = Router::new()
        .route("/aaa", get(|| async { "aaa" }))
        .route("/bbb", get(|| async { "bbb" }))
        .route("/logout", post(logout::<S>))
        .layer(auth)
        .with_state(app.clone());
    let mut router = Router::new()
        .route("/login", post(login::<S>))
        .route("/refresh", get(refresh_get::<S>).post(refresh_post::<S>))
        .route_service("/oauth/token", issuer.refresh_endpoint().dpop(dpop))
        .with_state(app)
        .merge(protected);
    if let Some(handle) = config.metrics {
        router = router.route("/metrics", get(move || scrape(handle.clone())));
    }
    Ok(Server {
        listener,
        router,
        notices,
    })
}

/// What the handlers share: the issuer, and the DPoP verifier of logins and refreshes.
#[derive(Clone)]
struct App<S> {
    issuer: TokenIssuer<S>,
    dpop: DpopVerifier,
}

impl<S: RefreshStore + Clone> App<S> {
    /// Verifies the request's `DPoP` proof, if it carries one: `Ok(None)` without one, the
    /// OAuth error answer (400) for a bad one.
    async fn proof(
        &self,
        method: &Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
    ) -> Result<Option<tower_jwt_refresh::server::dpop::VerifiedProof>, Response> {
        if !headers.contains_key("dpop") {
            return Ok(None);
        }
        match self.dpop.verify(method, uri, headers, None).await {
            Ok(proof) => Ok(Some(proof)),
            Err(error) => Err(self.dpop_refusal(&error)),
        }
    }

    /// RFC 9449 §5 and §8: 400 with the OAuth error, and the current nonce if one is needed.
    fn dpop_refusal(&self, error: &DpopError) -> Response {
        let body = json!({"error": error.error_code(), "error_description": error.to_string()});
        let mut response = (StatusCode::BAD_REQUEST, Json(body)).into_response();
        if let Some(nonce) = self.dpop.current_nonce()
            && let Ok(nonce) = nonce.parse()
        {
            response.headers_mut().insert("dpop-nonce", nonce);
        }
        response
    }
}

/// `GET /metrics`: the recorder's contents in Prometheus text format.
async fn scrape(handle: PrometheusHandle) -> impl IntoResponse {
    // Upkeep drains the histograms' buffers into their buckets; a scrape is a fine moment.
    handle.run_upkeep();
    let text = "text/plain; version=0.0.4; charset=utf-8";
    ([(CONTENT_TYPE, text)], handle.render())
}

/// NestJS's error shape: `{statusCode, message}`.
fn nest_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"statusCode": status.as_u16(), "message": message})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

async fn login<S: RefreshStore + Clone>(
    State(app): State<App<S>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Json(login): Json<Login>,
) -> Response {
    let Some((_, password)) = USERS.iter().find(|(name, _)| *name == login.username) else {
        return nest_error(StatusCode::BAD_REQUEST, "用户不存在");
    };
    if *password != login.password {
        return nest_error(StatusCode::BAD_REQUEST, "密码错误");
    }
    let proof = match app.proof(&Method::POST, &uri, &headers).await {
        Ok(proof) => proof,
        Err(refusal) => return refusal,
    };
    let claims = json!({"username": login.username});
    let issued = match &proof {
        Some(proof) => {
            app.issuer
                .issue_bound(&login.username, &claims, proof)
                .await
        }
        None => app.issuer.issue(&login.username, &claims).await,
    };
    match issued {
        Ok(pair) => Json(json!({
            "userInfo": {"username": login.username},
            "accessToken": pair.access_token,
            "refreshToken": pair.refresh_token,
            "tokenType": pair.token_type,
        }))
        .into_response(),
        Err(e) => nest_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// Rotates `token`, bound to the request's DPoP key if it carries a proof: a bound refresh
/// token without a proof from its key is refused.
async fn rotate<S: RefreshStore + Clone>(
    app: &App<S>,
    (method, uri, headers): (Method, axum::http::Uri, HeaderMap),
    token: &str,
) -> Response {
    let rotated: Result<IssuedTokens, RefreshError> = match app.proof(&method, &uri, &headers).await
    {
        Ok(Some(proof)) => app.issuer.rotate_bound(token, &proof).await,
        Ok(None) => app.issuer.rotate(token).await,
        Err(refusal) => return refusal,
    };
    match rotated {
        Ok(pair) => Json(json!({
            "accessToken": pair.access_token,
            "refreshToken": pair.refresh_token,
            "tokenType": pair.token_type,
        }))
        .into_response(),
        Err(RefreshError::InvalidGrant(_)) => {
            nest_error(StatusCode::UNAUTHORIZED, "token 已失效，请重新登录")
        }
        Err(e) => nest_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: String,
}

async fn refresh_get<S: RefreshStore + Clone>(
    State(app): State<App<S>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    rotate(&app, (Method::GET, uri, headers), &query.token).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshBody {
    refresh_token: String,
}

async fn refresh_post<S: RefreshStore + Clone>(
    State(app): State<App<S>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Json(body): Json<RefreshBody>,
) -> Response {
    rotate(&app, (Method::POST, uri, headers), &body.refresh_token).await
}

/// Ends the session: of the refresh token sent, or else of the access token's `sid`.
async fn logout<S: RefreshStore + Clone>(
    State(app): State<App<S>>,
    Extension(claims): Extension<Claims>,
    body: Option<Json<RefreshBody>>,
) -> Response {
    let issuer = &app.issuer;
    let result = match (body, claims.registered().sid.as_deref()) {
        (Some(Json(body)), _) => issuer.revoke(&body.refresh_token).await,
        (None, Some(sid)) => issuer.revoke_session(sid).await,
        (None, None) => Ok(false),
    };
    match result {
        Ok(revoked) => Json(json!({"loggedOut": revoked})).into_response(),
        Err(e) => nest_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// Serves `server` until `shutdown` resolves.
pub async fn serve(
    server: Server,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(server.listener, server.router)
        .with_graceful_shutdown(shutdown)
        .await
}
