//! The example client: a hyper-util client behind `RefreshLayer` that logs in, waits for the
//! access token to expire, and fires concurrent requests across the expiry.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};
use tower_jwt_refresh::client::dpop::DpopKey;
use tower_jwt_refresh::client::{
    OAuthRefresher, RefreshFailure, RefreshLayer, Refresher, Session, Tokens, refresher_fn,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Http = Client<HttpConnector, Full<Bytes>>;

/// How the backend refreshes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshStyle {
    /// RFC 6749: `POST /oauth/token`.
    OAuth,
    /// The NestJS write-up's backend: `GET /refresh?token=…`.
    SeedGet,
    /// `POST /refresh` with `{refreshToken}`.
    SeedPost,
}

/// The client's options.
#[derive(Clone, Debug)]
pub struct Options {
    pub base_url: String,
    pub user: String,
    pub password: String,
    pub requests: usize,
    pub refresh_style: RefreshStyle,
    /// Send the bare token instead of `Bearer <token>`.
    pub raw_auth: bool,
    /// Show a progress bar (when stdout is a terminal).
    pub progress: bool,
    /// Refresh before the token expires (the default); off, requests go out with the expired
    /// token and are held and replayed after their 401s.
    pub early_refresh: bool,
    /// Added to every refresh, to show what a slow auth server does (the demo uses it).
    pub refresh_delay: Option<Duration>,
    /// Send through a reqwest client with `RefreshMiddleware` instead of a tower client.
    pub reqwest: bool,
    /// DPoP (RFC 9449): log in with a proof, so the tokens are bound to a key of this run,
    /// and send every request and refresh with a proof. Refreshes at `/oauth/token`.
    pub dpop: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:3000".into(),
            user: "admin".into(),
            password: "admin".into(),
            requests: 50,
            refresh_style: RefreshStyle::SeedPost,
            raw_auth: false,
            progress: false,
            early_refresh: true,
            refresh_delay: None,
            reqwest: false,
            dpop: false,
        }
    }
}

impl Options {
    /// Parses `--base-url`, `--user`, `--password`, `-n`, `--refresh-style
    /// oauth|seed-get|seed-post`, `--auth bearer|raw` and `--dpop`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut options = Self::default();
        let mut style_given = false;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--base-url" => options.base_url = value()?.trim_end_matches('/').to_owned(),
                "--user" => options.user = value()?,
                "--password" => options.password = value()?,
                "-n" => options.requests = value()?.parse().map_err(|e| format!("-n: {e}"))?,
                "--refresh-style" => {
                    style_given = true;
                    options.refresh_style = match value()?.as_str() {
                        "oauth" => RefreshStyle::OAuth,
                        "seed-get" => RefreshStyle::SeedGet,
                        "seed-post" => RefreshStyle::SeedPost,
                        other => return Err(format!("unknown refresh style {other}")),
                    }
                }
                "--auth" => {
                    options.raw_auth = match value()?.as_str() {
                        "bearer" => false,
                        "raw" => true,
                        other => return Err(format!("unknown auth style {other}")),
                    }
                }
                "--dpop" => options.dpop = true,
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
            }
        }
        if options.dpop && !style_given {
            // RFC 9449 §5: bound refresh tokens are traded at the token endpoint.
            options.refresh_style = RefreshStyle::OAuth;
        }
        Ok(options)
    }
}

pub const USAGE: &str = "usage: client [--base-url URL] [--user NAME] [--password PASSWORD] [-n N] \
                         [--refresh-style oauth|seed-get|seed-post] [--auth bearer|raw] [--dpop]\n\
                         --dpop binds the tokens to a DPoP key and refreshes at /oauth/token";

/// What a run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub ok: usize,
    pub failed: usize,
    pub refreshes: u64,
    pub ms: u128,
}

impl Summary {
    /// `{"ok":…,"failed":…,"refreshes":…,"ms":…}`.
    pub fn json(&self) -> String {
        json!({"ok": self.ok, "failed": self.failed, "refreshes": self.refreshes, "ms": self.ms})
            .to_string()
    }
}

pub async fn send_json(
    http: &Http,
    method: Method,
    url: String,
    body: Value,
) -> Result<(StatusCode, Value), BoxError> {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let response = http.request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// The pair of a `{accessToken, refreshToken}` answer.
pub fn pair(body: &Value) -> Result<(String, String), RefreshFailure> {
    match (body["accessToken"].as_str(), body["refreshToken"].as_str()) {
        (Some(a), Some(r)) => Ok((a.to_owned(), r.to_owned())),
        _ => Err(RefreshFailure::transient(format!(
            "unexpected answer: {body}"
        ))),
    }
}

/// `refresher`, slowed down by `delay`.
fn delayed(refresher: impl Refresher, delay: Duration) -> impl Refresher {
    let refresher = std::sync::Arc::new(refresher);
    refresher_fn(move |token: String| {
        let refresher = std::sync::Arc::clone(&refresher);
        async move {
            tokio::time::sleep(delay).await;
            refresher.refresh(&token).await
        }
    })
}

/// RFC 6749's refresh, over the hyper-util client, or over reqwest for the reqwest client;
/// with a DPoP key, refresh requests carry proofs, and so do the layer's requests.
fn oauth_layer(
    http: &Http,
    options: &Options,
    session: &Session,
    url: http::Uri,
    dpop: Option<&DpopKey>,
) -> RefreshLayer {
    let with_key = |oauth: OAuthRefresher<_>| match dpop {
        Some(key) => oauth.dpop(key.clone()),
        None => oauth,
    };
    #[cfg(feature = "reqwest")]
    let layer = if options.reqwest {
        let transport = tower_jwt_refresh::client::ReqwestTransport::new(reqwest::Client::new());
        let oauth = OAuthRefresher::new(transport, url);
        let oauth = match dpop {
            Some(key) => oauth.dpop(key.clone()),
            None => oauth,
        };
        slowed(session, oauth, options.refresh_delay)
    } else {
        let oauth = with_key(OAuthRefresher::new(http.clone(), url));
        slowed(session, oauth, options.refresh_delay)
    };
    #[cfg(not(feature = "reqwest"))]
    let layer = slowed(
        session,
        with_key(OAuthRefresher::new(http.clone(), url)),
        options.refresh_delay,
    );
    match dpop {
        Some(key) => layer.dpop(key.clone()),
        None => layer,
    }
}

/// A layer on `session` refreshing with `refresher`, slowed down by `delay` if given.
fn slowed(session: &Session, refresher: impl Refresher, delay: Option<Duration>) -> RefreshLayer {
    match delay {
        Some(delay) => RefreshLayer::new(session.clone(), delayed(refresher, delay)),
        None => RefreshLayer::new(session.clone(), refresher),
    }
}

/// The refresher for `style`, as a layer on `session`.
fn refresh_layer(
    http: &Http,
    options: &Options,
    session: &Session,
    dpop: Option<&DpopKey>,
) -> Result<RefreshLayer, BoxError> {
    let base = options.base_url.clone();
    let layer = match options.refresh_style {
        RefreshStyle::OAuth => {
            let url = format!("{base}/oauth/token").parse()?;
            oauth_layer(http, options, session, url, dpop)
        }
        RefreshStyle::SeedGet | RefreshStyle::SeedPost => {
            let (http, style) = (http.clone(), options.refresh_style);
            RefreshLayer::new(
                session.clone(),
                refresher_fn(move |token: String| {
                    let (http, base) = (http.clone(), base.clone());
                    async move {
                        let answer = if style == RefreshStyle::SeedGet {
                            let token = percent_encoding::utf8_percent_encode(
                                &token,
                                percent_encoding::NON_ALPHANUMERIC,
                            );
                            let request = Request::get(format!("{base}/refresh?token={token}"))
                                .body(Full::default());
                            let request = request.map_err(RefreshFailure::transient)?;
                            let response = http
                                .request(request)
                                .await
                                .map_err(RefreshFailure::transient)?;
                            let status = response.status();
                            let bytes = response
                                .into_body()
                                .collect()
                                .await
                                .map_err(RefreshFailure::transient)?;
                            (
                                status,
                                serde_json::from_slice(&bytes.to_bytes()).unwrap_or(Value::Null),
                            )
                        } else {
                            let body = json!({"refreshToken": token});
                            send_json(&http, Method::POST, format!("{base}/refresh"), body)
                                .await
                                .map_err(RefreshFailure::transient)?
                        };
                        match answer {
                            // NestJS answers a POST with 201 Created: any 2xx is a success.
                            (status, body) if status.is_success() => {
                                let (access, refresh) = pair(&body)?;
                                Ok(Tokens::new(access, refresh))
                            }
                            (status, body) if status.is_client_error() => {
                                Err(RefreshFailure::permanent(format!(
                                    "refresh refused ({status}): {body}"
                                )))
                            }
                            (status, _) => Err(RefreshFailure::transient(format!(
                                "refresh answered {status}"
                            ))),
                        }
                    }
                }),
            )
        }
    };
    let layer = if options.raw_auth {
        layer.raw_authorization()
    } else {
        layer
    };
    Ok(if options.early_refresh {
        layer
    } else {
        layer.no_early_refresh()
    })
}

type Answer = std::pin::Pin<Box<dyn Future<Output = Result<(bool, Bytes), BoxError>> + Send>>;

/// `GET`s a URL through `layer`, over the tower client or reqwest: whether it answered 2xx,
/// and its body.
fn getter(options: &Options, layer: RefreshLayer, http: &Http) -> impl Fn(String) -> Answer {
    let tower = (!options.reqwest).then(|| {
        ServiceBuilder::new()
            .layer(layer.clone())
            .service(http.clone())
    });
    let reqwest = options.reqwest.then(|| reqwest_client(layer));
    move |url: String| -> Answer {
        match (&tower, &reqwest) {
            (Some(client), _) => {
                let client = client.clone();
                Box::pin(async move {
                    let response = client
                        .oneshot(Request::get(url).body(Full::default())?)
                        .await?;
                    let ok = response.status().is_success();
                    Ok((ok, response.into_body().collect().await?.to_bytes()))
                })
            }
            (None, Some(client)) => reqwest_get(client, url),
            (None, None) => unreachable!("one of the two is built"),
        }
    }
}

#[cfg(feature = "reqwest")]
type Reqwest = reqwest_middleware::ClientWithMiddleware;
#[cfg(not(feature = "reqwest"))]
type Reqwest = std::convert::Infallible;

#[cfg(feature = "reqwest")]
fn reqwest_client(layer: RefreshLayer) -> Reqwest {
    let middleware = tower_jwt_refresh::client::RefreshMiddleware::new(layer);
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

#[cfg(not(feature = "reqwest"))]
fn reqwest_client(_: RefreshLayer) -> Reqwest {
    panic!("the reqwest client needs the `reqwest` feature")
}

#[cfg(feature = "reqwest")]
fn reqwest_get(client: &Reqwest, url: String) -> Answer {
    let client = client.clone();
    Box::pin(async move {
        let response = client.get(url).send().await?;
        let ok = response.status().is_success();
        Ok((ok, response.bytes().await?))
    })
}

#[cfg(not(feature = "reqwest"))]
fn reqwest_get(client: &Reqwest, _: String) -> Answer {
    match *client {}
}

/// The example clients' `main`: parses the command line, runs, prints the JSON summary, and
/// exits non-zero if any request failed. Over reqwest when `reqwest` is set.
pub async fn main(reqwest: bool) -> std::process::ExitCode {
    use std::io::IsTerminal;
    use std::process::ExitCode;

    let mut options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    options.progress = std::io::stdout().is_terminal();
    options.reqwest = reqwest;
    match run(&options, |event| eprintln!("{event}")).await {
        Ok(summary) if summary.failed == 0 => {
            println!("{}", summary.json());
            ExitCode::SUCCESS
        }
        Ok(summary) => {
            println!("{}", summary.json());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `POST /login`; with a DPoP key, with a proof (sent again once if the server asks for its
/// nonce), so the tokens are bound to the key.
async fn log_in(
    http: &Http,
    options: &Options,
    dpop: Option<&DpopKey>,
) -> Result<Tokens, BoxError> {
    let login = json!({"username": options.user, "password": options.password});
    let url: http::Uri = format!("{}/login", options.base_url).parse()?;
    for _ in 0..2 {
        let mut request = Request::post(url.clone()).header("content-type", "application/json");
        if let Some(key) = dpop {
            request = request.header("dpop", key.proof(&Method::POST, &url).sign()?);
        }
        let response = http
            .request(request.body(Full::new(Bytes::from(login.to_string())))?)
            .await?;
        let status = response.status();
        let nonce = dpop.is_some_and(|key| key.remember_nonce(&url, response.headers()));
        let bytes = response.into_body().collect().await?.to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if nonce && status == StatusCode::BAD_REQUEST && body["error"] == "use_dpop_nonce" {
            continue;
        }
        // The original backend answers its login with 201 Created, as NestJS does for a POST.
        if !status.is_success() {
            return Err(format!("login failed with {status}: {body}").into());
        }
        let (access, refresh) = pair(&body).map_err(|e| format!("{e:?}"))?;
        let tokens = Tokens::new(access, refresh);
        return Ok(match body["tokenType"].as_str() {
            Some(token_type) => tokens.token_type(token_type),
            None => tokens,
        });
    }
    Err("the login kept asking for a new DPoP nonce".into())
}

/// Logs in, waits for the access token to expire, fires the requests, and sums them up.
/// `on_event` hears about each step, for a timeline.
pub async fn run(options: &Options, mut on_event: impl FnMut(&str)) -> Result<Summary, BoxError> {
    if options.dpop && options.refresh_style != RefreshStyle::OAuth {
        return Err(
            "DPoP-bound tokens are refreshed at /oauth/token: use --refresh-style oauth".into(),
        );
    }
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let dpop = options.dpop.then(DpopKey::generate).transpose()?;
    let tokens = log_in(&http, options, dpop.as_ref()).await?;
    if let Some(key) = &dpop {
        on_event(&format!(
            "tokens bound to DPoP key {} ({:?})",
            key.thumbprint(),
            key.algorithm()
        ));
    }
    let session = Session::new();
    session.login(tokens)?;
    let layer = refresh_layer(&http, options, &session, dpop.as_ref())?;

    match session.tokens().and_then(|t| t.expires_at()) {
        Some(expires_at) => {
            let left = expires_at.saturating_duration_since(tokio::time::Instant::now());
            on_event(&format!(
                "logged in as {}; the access token expires in {:.1} s",
                options.user,
                left.as_secs_f64()
            ));
            tokio::time::sleep_until(expires_at + Duration::from_millis(50)).await;
            on_event("the access token has expired");
        }
        None => on_event(&format!(
            "logged in as {}; the access token's expiry is unknown",
            options.user
        )),
    }

    let progress = options.progress.then(|| {
        let bar = indicatif::ProgressBar::new(options.requests as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .expect("a valid template"),
        );
        bar
    });
    on_event(&format!(
        "sending {} requests with the expired token",
        options.requests
    ));
    let started = Instant::now();
    let get = getter(options, layer, &http);
    let requests: Vec<_> = (0..options.requests)
        .map(|i| {
            let path = if i % 2 == 0 { "aaa" } else { "bbb" };
            let answer = get(format!("{}/{path}", options.base_url));
            tokio::spawn(async move {
                let (ok, body) = answer.await?;
                Ok::<_, BoxError>(ok && body == path.as_bytes())
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for request in requests {
        match request.await {
            Ok(Ok(true)) => ok += 1,
            Ok(Ok(false)) => failed += 1,
            Ok(Err(error)) => {
                failed += 1;
                on_event(&format!("request failed: {error}"));
            }
            Err(error) => {
                failed += 1;
                on_event(&format!("request task failed: {error}"));
            }
        }
        if let Some(bar) = &progress {
            bar.inc(1);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let stats = session.stats();
    on_event(&format!(
        "{} requests held for the refresh, {} refresh, {} replayed ({} of them with no wait); {ok} ok, {failed} failed",
        stats.waits, stats.refreshes, stats.replays, stats.stale_replays
    ));
    Ok(Summary {
        ok,
        failed,
        refreshes: stats.refreshes,
        ms: started.elapsed().as_millis(),
    })
}
