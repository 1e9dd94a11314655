//! The client's required scenarios, each deterministic: paused Tokio time, a mock server
//! whose accepted tokens the test controls, and a refresher whose outcome it scripts.
//!
//! Every scenario about the shared core runs through both front ends, listed once in
//! `both_fronts!`: `via_tower::NAME` through `RefreshLayer` over a tower service, and
//! `via_reqwest::NAME` through `RefreshMiddleware` in a reqwest-middleware client whose last
//! middleware answers from the same mock server in process (no socket, so paused time works).
//!
//! The rest test what only the tower front end has, and run through it alone:
//! - readiness and capacity of the inner service (`ConcurrencyLimit`, `Buffer`): a reqwest
//!   middleware has no `poll_ready` and holds no permit while it waits;
//!   `waiting_in_the_stale_window_holds_no_capacity_the_refresher_needs`,
//!   `s15_the_inner_service_is_driven_to_readiness_for_every_send`,
//!   `an_early_refresh_holds_one_unit_of_capacity_not_two`,
//!   `a_replay_reads_the_token_once_the_service_is_ready`;
//! - replay policies (`no_replay`, `tee_bodies`, a custom `ReplayPolicy`), which the reqwest
//!   middleware does not use: it replays with `reqwest::Request::try_clone`;
//!   `s11_a_body_that_cannot_be_kept_gets_its_401_after_the_refresh`,
//!   `s12_streaming_bodies_are_replayed_byte_identical_under_the_cap`,
//!   `zero_replays_keeps_no_copy_on_any_path`. Its counterpart for a body that cannot be
//!   cloned is `a_streaming_body_gets_its_401_after_the_refresh` in `tests/reqwest.rs`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_jwt_refresh::client::{
    Error, RefreshFailure, RefreshLayer, RefreshMiddleware, Session, Tokens, refresher_fn,
};

/// What the mock server saw and accepts.
#[derive(Clone)]
struct Server {
    valid: Arc<Mutex<HashSet<String>>>,
    /// Every token seen, in order.
    seen: Arc<Mutex<Vec<String>>>,
    /// Requests to `/slow` wait for a permit before answering.
    slow_gate: Arc<Semaphore>,
    slow_arrived: Arc<AtomicUsize>,
    /// A log shared with hooks, for ordering checks.
    log: Arc<Mutex<Vec<String>>>,
    /// When set, every token is rejected.
    reject_all: Arc<std::sync::atomic::AtomicBool>,
    /// When set, the `Authorization` header is the bare token, with no scheme.
    raw: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            valid: Arc::default(),
            seen: Arc::default(),
            slow_gate: Arc::new(Semaphore::new(0)),
            slow_arrived: Arc::default(),
            log: Arc::default(),
            reject_all: Arc::default(),
            raw: Arc::default(),
        }
    }
}

impl Server {
    fn accept(&self, token: &str) {
        self.valid.lock().unwrap().insert(token.to_owned());
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Answers 200 with the request body for a valid token (after `Bearer `, or the whole
    /// header when `raw`), else 401 `invalid_token`. The body is read first, as a server
    /// that parses it would.
    async fn handle<B>(self, req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::fmt::Debug,
    {
        let header = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let token = if self.raw.load(Ordering::SeqCst) {
            Some(header)
        } else {
            header.strip_prefix("Bearer ")
        };
        let token = token.unwrap_or("").to_owned();
        self.seen.lock().unwrap().push(token.clone());
        self.log.lock().unwrap().push(format!("request {token}"));
        if req.uri().path() == "/slow" {
            self.slow_arrived.fetch_add(1, Ordering::SeqCst);
            self.slow_gate.acquire().await.unwrap().forget();
        }
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let ok =
            !self.reject_all.load(Ordering::SeqCst) && self.valid.lock().unwrap().contains(&token);
        let mut response = Response::new(Full::new(if ok { body } else { Bytes::new() }));
        if !ok {
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response.headers_mut().insert(
                "www-authenticate",
                r#"Bearer realm="api", error="invalid_token", error_description="token expired""#
                    .parse()
                    .unwrap(),
            );
        }
        Ok(response)
    }
}

/// A scripted refresher: `t1`, `t2`, … each made valid on `server` as it is issued, unless the
/// script says otherwise for that call.
#[derive(Clone)]
struct Script {
    calls: Arc<AtomicUsize>,
    outcome: Arc<dyn Fn(usize) -> Outcome + Send + Sync>,
    /// Refreshes wait for a permit when set.
    gate: Option<Arc<Semaphore>>,
    delay: Duration,
}

#[derive(Clone, Copy)]
enum Outcome {
    Ok,
    Permanent,
    Transient,
    Hang,
}

impl Script {
    fn ok() -> Self {
        Self::with(|_| Outcome::Ok)
    }

    fn with(f: impl Fn(usize) -> Outcome + Send + Sync + 'static) -> Self {
        Self {
            calls: Arc::default(),
            outcome: Arc::new(f),
            gate: None,
            delay: Duration::from_millis(10),
        }
    }

    fn gated(mut self) -> (Self, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        self.gate = Some(Arc::clone(&gate));
        (self, gate)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn layer(&self, session: &Session, server: &Server) -> RefreshLayer {
        let (script, server) = (self.clone(), server.clone());
        let refresher = refresher_fn(move |_refresh: String| {
            let (script, server) = (script.clone(), server.clone());
            async move {
                let n = script.calls.fetch_add(1, Ordering::SeqCst) + 1;
                if let Some(gate) = &script.gate {
                    gate.acquire().await.unwrap().forget();
                }
                tokio::time::sleep(script.delay).await;
                match (script.outcome)(n) {
                    Outcome::Ok => {
                        let token = format!("t{n}");
                        server.accept(&token);
                        Ok(Tokens::new(token, format!("r{n}")))
                    }
                    Outcome::Permanent => Err(RefreshFailure::permanent("invalid_grant")),
                    Outcome::Transient => {
                        Err(RefreshFailure::transient("503 from the auth server"))
                    }
                    Outcome::Hang => std::future::pending().await,
                }
            }
        });
        RefreshLayer::new(session.clone(), refresher)
    }
}

type Client = tower::util::BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, Error>;

/// The front end a scenario runs through.
#[derive(Debug, Clone, Copy)]
enum Front {
    /// `RefreshLayer` over a tower service.
    Tower,
    /// `RefreshMiddleware` in a reqwest-middleware client.
    Reqwest,
}

impl Front {
    /// A client with `layer`'s session and settings, answered by `server`.
    fn client<P>(self, layer: RefreshLayer<P>, server: &Server) -> Client
    where
        P: tower_jwt_refresh::client::ReplayPolicy<Full<Bytes>> + Clone,
    {
        match self {
            Self::Tower => tower_client(layer, server),
            Self::Reqwest => reqwest_client(layer, server),
        }
    }
}

fn tower_client<P>(layer: RefreshLayer<P>, server: &Server) -> Client
where
    P: tower_jwt_refresh::client::ReplayPolicy<Full<Bytes>>,
{
    let server = server.clone();
    let inner = tower::service_fn(move |req: Request<Full<Bytes>>| server.clone().handle(req));
    tower::util::BoxCloneService::new(ServiceBuilder::new().layer(layer).service(inner))
}

/// A reqwest-middleware client, `RefreshMiddleware` then [`Answer`], seen as a tower service
/// of the same type as the tower front end's. Our errors come back out of reqwest-middleware's
/// as they went in.
fn reqwest_client<P: Clone>(layer: RefreshLayer<P>, server: &Server) -> Client {
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(RefreshMiddleware::new(layer))
        .with(Answer(server.clone()))
        .build();
    tower::util::BoxCloneService::new(tower::service_fn(move |req: Request<Full<Bytes>>| {
        let client = client.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            parts.uri = format!("http://api.test{}", parts.uri).parse().unwrap();
            let body = match body.collect().await {
                Ok(body) => body.to_bytes(),
                Err(never) => match never {},
            };
            let req = reqwest::Request::try_from(Request::from_parts(parts, body)).unwrap();
            let response = client.execute(req).await.map_err(ours)?;
            let (parts, body) = Response::<reqwest::Body>::from(response).into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| Error::Inner(Arc::new(e)))?;
            Ok(Response::from_parts(parts, Full::new(body.to_bytes())))
        }
    }))
}

/// Our error out of reqwest-middleware's; any other is the inner service's.
fn ours(error: reqwest_middleware::Error) -> Error {
    match error {
        reqwest_middleware::Error::Middleware(e) => match e.downcast_ref::<Error>() {
            Some(ours) => ours.clone(),
            None => Error::Inner(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
                e,
            ))),
        },
        reqwest_middleware::Error::Reqwest(e) => Error::Inner(Arc::new(e)),
    }
}

/// The end of the reqwest middleware chain: `server` answers in process, with no socket, so
/// paused time goes on working.
struct Answer(Server);

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for Answer {
    async fn handle(
        &self,
        req: reqwest::Request,
        _: &mut http::Extensions,
        _: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let req = Request::<reqwest::Body>::try_from(req)?;
        let Ok(response) = self.0.clone().handle(req).await;
        let (parts, body) = response.into_parts();
        let Ok(body) = body.collect().await;
        Ok(Response::from_parts(parts, body.to_bytes()).into())
    }
}

/// Runs each named scenario through both front ends: `via_tower::NAME` and
/// `via_reqwest::NAME`.
macro_rules! both_fronts {
    (async: $($scenario:ident),* $(,)?; sync: $($plain:ident),* $(,)?) => {
        both_fronts!(@front via_tower, Tower; $($scenario),*; $($plain),*);
        both_fronts!(@front via_reqwest, Reqwest; $($scenario),*; $($plain),*);
    };
    (@front $module:ident, $front:ident; $($scenario:ident),*; $($plain:ident),*) => {
        mod $module {
            $(
                #[tokio::test(start_paused = true)]
                async fn $scenario() {
                    super::$scenario(super::Front::$front).await;
                }
            )*
            $(
                #[test]
                fn $plain() {
                    super::$plain(super::Front::$front);
                }
            )*
        }
    };
}

both_fronts! {
    async:
    s01_a_401_is_refreshed_once_and_replayed,
    s02_a_storm_of_1000_gets_exactly_one_refresh,
    s03_401s_arriving_during_the_refresh_join_it,
    s04_a_stale_401_after_the_refresh_is_replayed_without_another,
    s05_a_token_past_the_stale_point_is_refreshed_before_sending,
    past_the_prefetch_point_requests_go_out_at_once_and_one_refresh_runs_behind,
    a_failed_prefetch_fails_nobody_and_is_tried_again_after_a_backoff,
    a_backoff_from_failed_prefetches_ends_when_the_token_expires,
    s06_a_permanent_failure_expires_the_session_once,
    s07_a_transient_failure_lets_a_request_after_the_backoff_refresh_again,
    s08_a_hung_refresh_ends_every_waiter_at_the_bound,
    s09_the_initiator_giving_up_cancels_nothing,
    s10_a_replay_rejected_again_returns_its_401_and_the_loop_guard_trips,
    s13_on_refresh_completes_before_any_waiter_goes_on,
    s14_waiters_beyond_the_maximum_are_overloaded,
    s16_two_sessions_never_share_a_refresh,
    a_panicking_refresher_fails_its_waiters_and_the_next_request_refreshes_again,
    a_login_during_a_refresh_fails_its_waiters_with_session_changed,
    a_request_rejected_after_a_logout_and_login_is_not_replayed_as_the_new_user,
    replace_tokens_keeps_the_identity_and_lets_waiters_go_on,
    every_expiry_fires_the_hook_once,
    an_access_only_session_uses_its_token_until_rejected,
    pass_through_and_raw_authorization,
    zero_replays_returns_the_401_after_refreshing,
    a_young_token_rejected_is_replayed_by_default_and_not_with_the_window,
    a_refreshed_access_token_that_cannot_be_sent_expires_the_session,
    a_token_endpoint_failing_fast_is_refresh_failed_with_its_cause_not_a_loop,
    the_loop_guard_history_resets_on_login,
    hooks_run_one_at_a_time_in_the_order_their_tokens_were_installed,
    a_logout_under_the_storage_lock_is_never_overwritten_by_a_hook,
    a_hook_due_after_a_logout_does_not_run,
    a_panicking_hook_leaves_the_session_the_waiters_and_the_stats_consistent;
    sync:
    a_refresh_started_on_a_runtime_that_goes_idle_still_finishes,
    a_caller_outside_any_runtime_waits_on_the_layers_runtime,
    a_runtime_without_timers_gets_a_typed_error_not_a_panic
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::default()).unwrap()
}

fn logged_in(token: &str) -> Session {
    let session = Session::new();
    session.login(Tokens::new(token, "r0")).unwrap();
    session
}

async fn status(client: &Client, path: &str) -> Result<StatusCode, Error> {
    let request = get(path);
    client.clone().oneshot(request).await.map(|r| r.status())
}

/// Spawns `n` requests to `path` and returns their handles.
fn spawn_many(
    client: &Client,
    path: &'static str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<StatusCode, Error>>> {
    (0..n)
        .map(|_| {
            let request = client.clone().oneshot(get(path));
            tokio::spawn(async move { request.await.map(|r| r.status()) })
        })
        .collect()
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    while !condition() {
        tokio::task::yield_now().await;
    }
}

/// Like `wait_until`, for a condition that needs (paused) time to pass: each turn lets the
/// clock move a millisecond.
async fn wait_in_time_until(mut condition: impl FnMut() -> bool) {
    let mut n = 0;
    while !condition() {
        n += 1;
        assert!(n < 100_000, "condition never met");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn s01_a_401_is_refreshed_once_and_replayed(front: Front) {
    let server = Server::default();
    let script = Script::ok();
    let session = logged_in("t0");
    let client = front.client(script.layer(&session, &server), &server);
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(script.calls(), 1);
    assert_eq!(server.seen(), ["t0", "t1"]);
    assert_eq!((session.stats().refreshes, session.stats().replays), (1, 1));
}

async fn s02_a_storm_of_1000_gets_exactly_one_refresh(front: Front) {
    let server = Server::default();
    let script = Script::ok();
    let session = logged_in("t0");
    let client = front.client(script.layer(&session, &server), &server);
    for task in spawn_many(&client, "/", 1000) {
        assert_eq!(task.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(script.calls(), 1);
    assert_eq!(session.stats().refreshes, 1);
}

async fn s03_401s_arriving_during_the_refresh_join_it(front: Front) {
    let server = Server::default();
    let (script, refresh_gate) = Script::ok().gated();
    let session = logged_in("t0");
    let client = front.client(script.layer(&session, &server), &server);
    // B is in flight with t0; its answer is held.
    let b = spawn_many(&client, "/slow", 1).remove(0);
    wait_until(|| server.slow_arrived.load(Ordering::SeqCst) == 1).await;
    // A gets its 401 and starts the refresh, which is held too.
    let a = spawn_many(&client, "/", 1).remove(0);
    wait_until(|| script.calls() == 1).await;
    // B's 401 arrives during the refresh: it joins, it does not fail.
    server.slow_gate.add_permits(10);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!b.is_finished());
    refresh_gate.add_permits(1);
    assert_eq!(a.await.unwrap().unwrap(), StatusCode::OK);
    assert_eq!(b.await.unwrap().unwrap(), StatusCode::OK);
    assert_eq!(script.calls(), 1);
}

async fn s04_a_stale_401_after_the_refresh_is_replayed_without_another(front: Front) {
    let server = Server::default();
    let script = Script::ok();
    let session = logged_in("t0");
    let client = front.client(script.layer(&session, &server), &server);
    let b = spawn_many(&client, "/slow", 1).remove(0);
    wait_until(|| server.slow_arrived.load(Ordering::SeqCst) == 1).await;
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(script.calls(), 1);
    // B's 401 (for t0) arrives after the refresh finished.
    server.slow_gate.add_permits(10);
    assert_eq!(b.await.unwrap().unwrap(), StatusCode::OK);
    assert_eq!(script.calls(), 1, "no second refresh");
    assert_eq!(session.stats().stale_replays, 1);
}

async fn s05_a_token_past_the_stale_point_is_refreshed_before_sending(front: Front) {
    let server = Server::default();
    server.accept("t0");
    let script = Script::ok();
    let session = Session::new();
    session
        .login(Tokens::new("t0", "r0").expires_in(Duration::from_secs(300)))
        .unwrap();
    let client = front.client(script.layer(&session, &server), &server);
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    // 300 s tokens are stale 5 s before expiry: requests wait for the refresh.
    tokio::time::advance(Duration::from_secs(296)).await;
    for task in spawn_many(&client, "/", 100) {
        assert_eq!(task.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(script.calls(), 1);
    // No request went out with a token about to expire, and none was rejected.
    assert_eq!(server.seen().iter().filter(|t| *t == "t0").count(), 1);
    assert_eq!(session.stats().replays, 0);
}

/// A session whose 300 s token `t0` the server accepts, `at` seconds into its life.
async fn early(front: Front, script: &Script, server: &Server, at: u64) -> (Session, Client) {
    server.accept("t0");
    let session = Session::new();
    session
        .login(Tokens::new("t0", "r0").expires_in(Duration::from_secs(300)))
        .unwrap();
    let client = front.client(script.layer(&session, server), server);
    tokio::time::advance(Duration::from_secs(at)).await;
    (session, client)
}

async fn past_the_prefetch_point_requests_go_out_at_once_and_one_refresh_runs_behind(front: Front) {
    let server = Server::default();
    let (script, gate) = Script::ok().gated();
    // 300 s tokens: the early window is the last 30 s, the prefetch point in its first half
    // (270 to 285 s), the stale point at 295 s.
    let (session, client) = early(front, &script, &server, 286).await;
    let sent = spawn_many(&client, "/", 50);
    // The refresh is held, and no request waits for it.
    let all = async {
        for task in sent {
            assert_eq!(task.await.unwrap().unwrap(), StatusCode::OK);
        }
    };
    tokio::time::timeout(Duration::from_millis(100), all)
        .await
        .expect("no request waited for the refresh");
    assert_eq!(script.calls(), 1, "one background refresh");
    assert!(server.seen().iter().all(|t| t == "t0"));
    gate.add_permits(1);
    wait_in_time_until(|| session.tokens().unwrap().access_token() == "t1").await;
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(server.seen().last().unwrap(), "t1");
    assert_eq!((script.calls(), session.stats().waits), (1, 0));
}

async fn a_failed_prefetch_fails_nobody_and_is_tried_again_after_a_backoff(front: Front) {
    let server = Server::default();
    let script = Script::with(|n| {
        if n == 1 {
            Outcome::Transient
        } else {
            Outcome::Ok
        }
    });
    let (session, client) = early(front, &script, &server, 286).await;
    for task in spawn_many(&client, "/", 20) {
        assert_eq!(task.await.unwrap().unwrap(), StatusCode::OK);
    }
    wait_in_time_until(|| session.stats().refresh_failures == 1).await;
    // Within the backoff, requests go on with the valid token and start nothing.
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(script.calls(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    // The script's second call issues `t2`.
    wait_in_time_until(|| session.tokens().unwrap().access_token() == "t2").await;
    assert_eq!(script.calls(), 2);
}

async fn a_backoff_from_failed_prefetches_ends_when_the_token_expires(front: Front) {
    let server = Server::default();
    // The endpoint fails four times, then is back.
    let script = Script::with(|n| {
        if n <= 4 {
            Outcome::Transient
        } else {
            Outcome::Ok
        }
    });
    // 300 s tokens: every prefetch point passed at 286 s, the stale point at 295 s.
    let (session, client) = early(front, &script, &server, 286).await;
    // Failed prefetches back off 1, 2 and 4 s; the requests go on with the valid token.
    for (failures, wait) in [(1, 2), (2, 3), (3, 5)] {
        assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
        wait_in_time_until(|| session.stats().refresh_failures == failures).await;
        tokio::time::advance(Duration::from_secs(wait)).await;
    }
    // 296 s, past the stale point: the refresh first fails too, and would back off 8 s, to
    // 304 s, past the expiry; the request still goes out with its valid token.
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!((script.calls(), session.stats().refresh_failures), (4, 4));
    assert!(server.seen().iter().all(|t| t == "t0"));
    // 300.5 s: the token has expired. The backoff ended with it, so the request refreshes
    // (the endpoint is back) instead of failing until 304 s.
    tokio::time::advance(Duration::from_millis(4500)).await;
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(script.calls(), 5);
    // The script's fifth call issues `t5`.
    assert_eq!(server.seen().last().unwrap(), "t5");
}

#[tokio::test(start_paused = true)]
async fn waiting_in_the_stale_window_holds_no_capacity_the_refresher_needs() {
    use tower::limit::ConcurrencyLimit;
    let server = Server::default();
    server.accept("t0");
    let handler = {
        let server = server.clone();
        tower::service_fn(move |req: Request<Full<Bytes>>| server.clone().handle(req))
    };
    // One limit of 2 for the API and the token endpoint, as with one HTTP client for both.
    let limited = ConcurrencyLimit::new(handler, 2);
    let endpoint = limited.clone();
    let accept = server.clone();
    let refresher = refresher_fn(move |_refresh: String| {
        let (mut endpoint, server) = (endpoint.clone(), accept.clone());
        async move {
            let call = endpoint.ready().await.unwrap().call(get("/token"));
            call.await.unwrap();
            server.accept("t1");
            Ok(Tokens::new("t1", "r1"))
        }
    });
    let session = Session::new();
    session
        .login(Tokens::new("t0", "r0").expires_in(Duration::from_secs(300)))
        .unwrap();
    let layer = RefreshLayer::new(session.clone(), refresher);
    let mut a = ServiceBuilder::new()
        .layer(layer.clone())
        .service(limited.clone());
    let mut b = ServiceBuilder::new().layer(layer).service(limited.clone());
    tokio::time::advance(Duration::from_secs(296)).await;
    // Both reserve a permit, then wait for the refresh.
    let first = a.ready().await.unwrap().call(get("/"));
    let second = b.ready().await.unwrap().call(get("/"));
    let started = tokio::time::Instant::now();
    let (first, second) = tokio::join!(first, second);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(first.unwrap().status(), StatusCode::OK);
    assert_eq!(second.unwrap().status(), StatusCode::OK);
    assert_eq!(&server.seen()[1..], ["t1", "t1"]);
    drop((a, b));
}

async fn s06_a_permanent_failure_expires_the_session_once(front: Front) {
    let server = Server::default();
    let script = Script::with(|_| Outcome::Permanent);
    let session = logged_in("t0");
    let fired = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fired);
    let layer = script.layer(&session, &server).on_session_expired(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let client = front.client(layer, &server);
    for task in spawn_many(&client, "/", 50) {
        assert!(matches!(task.await.unwrap(), Err(Error::SessionExpired)));
    }
    assert_eq!((fired.load(Ordering::SeqCst), script.calls()), (1, 1));
    assert!(session.is_expired());
    // Later requests fail fast, without reaching the server.
    let sent = server.seen().len();
    assert!(matches!(
        status(&client, "/").await,
        Err(Error::SessionExpired)
    ));
    assert_eq!(server.seen().len(), sent);
    // A new login makes requests work again.
    server.accept("fresh");
    session.login(Tokens::new("fresh", "r-fresh")).unwrap();
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(fired.load(Ordering::SeqCst), 1);
}

async fn s07_a_transient_failure_lets_a_request_after_the_backoff_refresh_again(front: Front) {
    let server = Server::default();
    let script = Script::with(|n| {
        if n == 1 {
            Outcome::Transient
        } else {
            Outcome::Ok
        }
    });
    let session = logged_in("t0");
    let client = front.client(script.layer(&session, &server), &server);
    let err = status(&client, "/").await.unwrap_err();
    assert!(matches!(err, Error::RefreshFailed(_)), "{err}");
    assert!(!session.is_expired());
    // Within the backoff (1 s), the failure is reported at once, without a refresh.
    let err = status(&client, "/").await.unwrap_err();
    assert!(matches!(err, Error::RefreshFailed(_)), "{err}");
    assert_eq!(script.calls(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(script.calls(), 2);
}

async fn s08_a_hung_refresh_ends_every_waiter_at_the_bound(front: Front) {
    let server = Server::default();
    let script = Script::with(|n| if n == 1 { Outcome::Hang } else { Outcome::Ok });
    let session = logged_in("t0");
    let layer = script
        .layer(&session, &server)
        .wait_timeout(Duration::from_secs(1))
        .refresh_timeout(Duration::from_secs(5));
    let client = front.client(layer, &server);
    let started = tokio::time::Instant::now();
    for task in spawn_many(&client, "/", 20) {
        assert!(matches!(task.await.unwrap(), Err(Error::WaitTimeout)));
    }
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    // Once the refresh itself times out, a later request refreshes again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(script.calls(), 2);
}

async fn s09_the_initiator_giving_up_cancels_nothing(front: Front) {
    let server = Server::default();
    let (script, gate) = Script::ok().gated();
    let session = logged_in("t0");
    let client = front.client(script.layer(&session, &server), &server);
    let initiator = spawn_many(&client, "/", 1).remove(0);
    wait_until(|| script.calls() == 1).await;
    let others = spawn_many(&client, "/", 10);
    tokio::time::sleep(Duration::from_millis(1)).await;
    initiator.abort();
    assert!(initiator.await.unwrap_err().is_cancelled());
    gate.add_permits(1);
    for task in others {
        assert_eq!(task.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(script.calls(), 1);
    assert_eq!(session.tokens().unwrap().access_token(), "t1");
}

async fn s10_a_replay_rejected_again_returns_its_401_and_the_loop_guard_trips(front: Front) {
    let server = Server::default();
    server.reject_all.store(true, Ordering::SeqCst);
    let script = Script::ok();
    let session = logged_in("t0");
    let client = front.client(script.layer(&session, &server), &server);
    assert_eq!(
        status(&client, "/").await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(script.calls(), 1, "no second refresh for one request");
    // The default guard allows 4 refreshes in 2 s; the next request's refresh is refused.
    for _ in 0..3 {
        assert_eq!(
            status(&client, "/").await.unwrap(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(matches!(
        status(&client, "/").await,
        Err(Error::RefreshLoop)
    ));
    assert_eq!(script.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn s11_a_body_that_cannot_be_kept_gets_its_401_after_the_refresh() {
    let server = Server::default();
    let script = Script::ok();
    let session = logged_in("t0");
    let client = tower_client(script.layer(&session, &server).no_replay(), &server);
    assert_eq!(
        status(&client, "/").await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(script.calls(), 1);
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
}

type Streaming = UnsyncBoxBody<Bytes, BoxError>;

#[tokio::test(start_paused = true)]
async fn s12_streaming_bodies_are_replayed_byte_identical_under_the_cap() {
    let server = Server::default();
    let script = Script::ok();
    let session = logged_in("t0");
    let layer = script
        .layer(&session, &server)
        .tee_bodies(64, Streaming::new);
    let inner = {
        let server = server.clone();
        tower::service_fn(move |req: Request<Streaming>| server.clone().handle(req))
    };
    let mut client = ServiceBuilder::new().layer(layer).service(inner);
    let body = |parts: &[&'static str]| -> Streaming {
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        Streaming::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    };
    let parts = ["chunk one, ", "chunk two, ", "three"];
    let request = Request::post("/").body(body(&parts)).unwrap();
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        parts.concat()
    );
    assert_eq!(script.calls(), 1);

    // Over the cap: the first attempt read it all, so there is nothing to replay.
    session.login(Tokens::new("t0", "r0")).unwrap();
    let big = ["x".repeat(40).leak() as &'static str, "y".repeat(40).leak()];
    let request = Request::post("/").body(body(&big)).unwrap();
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(script.calls(), 2, "the refresh still happened");
}

async fn s13_on_refresh_completes_before_any_waiter_goes_on(front: Front) {
    let server = Server::default();
    let script = Script::ok();
    let session = logged_in("t0");
    let log = Arc::clone(&server.log);
    let layer = script.layer(&session, &server).on_refresh(move |tokens| {
        let log = Arc::clone(&log);
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            log.lock()
                .unwrap()
                .push(format!("persisted {}", tokens.access_token()));
        }
    });
    let client = front.client(layer, &server);
    for task in spawn_many(&client, "/", 20) {
        assert_eq!(task.await.unwrap().unwrap(), StatusCode::OK);
    }
    let log = server.log.lock().unwrap().clone();
    let persisted = log.iter().position(|l| l == "persisted t1").unwrap();
    let first_replay = log.iter().position(|l| l == "request t1").unwrap();
    assert!(persisted < first_replay, "{log:?}");
}

async fn s14_waiters_beyond_the_maximum_are_overloaded(front: Front) {
    let server = Server::default();
    let (script, gate) = Script::ok().gated();
    let session = logged_in("t0");
    let client = front.client(script.layer(&session, &server).max_waiters(5), &server);
    let tasks = spawn_many(&client, "/", 12);
    wait_until(|| server.seen().len() == 12).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    gate.add_permits(1);
    let mut results = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(StatusCode::OK) => results.0 += 1,
            Err(Error::Overloaded) => results.1 += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(results, (5, 7));
}

#[tokio::test(start_paused = true)]
async fn s15_the_inner_service_is_driven_to_readiness_for_every_send() {
    let server = Server::default();
    let script = Script::ok();
    let session = logged_in("t0");
    let server_for_inner = server.clone();
    // Buffer panics when called without poll_ready, so every send and replay must drive it.
    // (The early-refresh path is covered by `an_early_refresh_holds_one_unit_of_capacity`.)
    let inner = ServiceBuilder::new()
        .buffer(4)
        .concurrency_limit(2)
        .service(tower::service_fn(move |req: Request<Full<Bytes>>| {
            server_for_inner.clone().handle(req)
        }));
    let client = tower::util::BoxCloneService::new(
        ServiceBuilder::new()
            .layer(script.layer(&session, &server))
            .service(inner),
    );
    for task in spawn_many(&client, "/", 100) {
        assert_eq!(task.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(script.calls(), 1);
}

async fn s16_two_sessions_never_share_a_refresh(front: Front) {
    let server = Server::default();
    let script = Script::ok();
    let (alice, bob) = (logged_in("t0"), logged_in("t0"));
    let a = front.client(script.layer(&alice, &server), &server);
    let b = front.client(script.layer(&bob, &server), &server);
    let mut tasks = spawn_many(&a, "/", 50);
    tasks.extend(spawn_many(&b, "/", 50));
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(script.calls(), 2);
    let tokens: HashSet<_> = [alice.tokens().unwrap(), bob.tokens().unwrap()]
        .iter()
        .map(|t| t.access_token().to_owned())
        .collect();
    assert_eq!(tokens.len(), 2, "each session got its own tokens");
}

async fn a_panicking_refresher_fails_its_waiters_and_the_next_request_refreshes_again(
    front: Front,
) {
    let server = Server::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (counter, accept) = (Arc::clone(&calls), server.clone());
    let refresher = refresher_fn(move |_: String| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let server = accept.clone();
        async move {
            assert!(n > 1, "the first refresh panics");
            server.accept("t2");
            Ok(Tokens::new("t2", "r2"))
        }
    });
    let session = logged_in("t0");
    let client = front.client(RefreshLayer::new(session.clone(), refresher), &server);
    assert!(matches!(
        status(&client, "/").await,
        Err(Error::RefreshFailed(_))
    ));
    // The dead flight was cleared: after the backoff, the next request starts a new refresh.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

async fn a_login_during_a_refresh_fails_its_waiters_with_session_changed(front: Front) {
    let server = Server::default();
    let (script, gate) = Script::ok().gated();
    let session = logged_in("t0");
    let persisted = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&persisted);
    let layer = script.layer(&session, &server).on_refresh(move |tokens| {
        log.lock().unwrap().push(tokens.access_token().to_owned());
        async {}
    });
    let client = front.client(layer, &server);
    let waiting = spawn_many(&client, "/", 5);
    wait_until(|| script.calls() == 1).await;
    server.accept("fresh");
    session.login(Tokens::new("fresh", "r-fresh")).unwrap();
    gate.add_permits(1);
    for task in waiting {
        assert!(matches!(task.await.unwrap(), Err(Error::SessionChanged)));
    }
    // The refreshed tokens were thrown away, not installed nor persisted, and no request made
    // for the first login went out with the second login's token.
    assert_eq!(session.tokens().unwrap().access_token(), "fresh");
    assert!(persisted.lock().unwrap().is_empty());
    assert!(!server.seen().contains(&"fresh".to_owned()));
    // A request made after the login uses it.
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
}

async fn a_request_rejected_after_a_logout_and_login_is_not_replayed_as_the_new_user(front: Front) {
    let server = Server::default();
    let script = Script::ok();
    let session = logged_in("alice");
    let client = front.client(script.layer(&session, &server), &server);
    // Alice's request is in flight; the application logs out and logs Bob in.
    let alices = spawn_many(&client, "/slow", 1).remove(0);
    wait_until(|| server.slow_arrived.load(Ordering::SeqCst) == 1).await;
    session.logout();
    server.accept("bob");
    session.login(Tokens::new("bob", "r-bob")).unwrap();
    // Alice's token is rejected: the stale rule would replay at once with Bob's token.
    server.slow_gate.add_permits(10);
    assert!(matches!(alices.await.unwrap(), Err(Error::SessionChanged)));
    assert_eq!(server.seen(), ["alice"]);
    assert_eq!(script.calls(), 0);
}

async fn replace_tokens_keeps_the_identity_and_lets_waiters_go_on(front: Front) {
    let server = Server::default();
    let (script, gate) = Script::ok().gated();
    let session = logged_in("t0");
    let client = front.client(script.layer(&session, &server), &server);
    let waiting = spawn_many(&client, "/", 5);
    wait_until(|| script.calls() == 1).await;
    server.accept("same-user");
    session
        .replace_tokens(Tokens::new("same-user", "r-same"))
        .unwrap();
    gate.add_permits(1);
    for task in waiting {
        assert_eq!(task.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(session.tokens().unwrap().access_token(), "same-user");
}

async fn every_expiry_fires_the_hook_once(front: Front) {
    let server = Server::default();
    let script = Script::with(|_| Outcome::Permanent);
    let session = logged_in("t0");
    let fired = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fired);
    let layer = script.layer(&session, &server).on_session_expired(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let client = front.client(layer, &server);
    for expiry in 1..=3 {
        for task in spawn_many(&client, "/", 10) {
            assert!(matches!(task.await.unwrap(), Err(Error::SessionExpired)));
        }
        assert_eq!(fired.load(Ordering::SeqCst), expiry);
        session.login(Tokens::new("t0", "r0")).unwrap();
    }
}

async fn an_access_only_session_uses_its_token_until_rejected(front: Front) {
    let server = Server::default();
    server.accept("t0");
    let script = Script::ok();
    let session = Session::new();
    session
        .login(Tokens::access_only("t0").expires_in(Duration::from_secs(60)))
        .unwrap();
    let client = front.client(script.layer(&session, &server), &server);
    // Inside the early window, but nothing to refresh with: sent as it is.
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert!(!session.is_expired());
    // Rejected, with nothing to refresh with: the session is over.
    server.valid.lock().unwrap().clear();
    assert!(matches!(
        status(&client, "/").await,
        Err(Error::SessionExpired)
    ));
    assert_eq!(script.calls(), 0);
}

async fn pass_through_and_raw_authorization(front: Front) {
    let server = Server::default();
    let script = Script::ok();
    let anonymous = Session::new();
    let strict = front.client(script.layer(&anonymous, &server), &server);
    assert!(matches!(
        status(&strict, "/").await,
        Err(Error::NotAuthenticated)
    ));
    let open = front.client(
        script
            .layer(&anonymous, &server)
            .pass_through_without_token(),
        &server,
    );
    assert_eq!(status(&open, "/").await.unwrap(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.seen(), [""], "sent without a token");

    let raw = Server::default();
    raw.raw.store(true, Ordering::SeqCst);
    raw.accept("t0");
    let layer = script.layer(&logged_in("t0"), &raw).raw_authorization();
    let client = front.client(layer, &raw);
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(raw.seen(), ["t0"], "no scheme");
}

#[tokio::test(start_paused = true)]
async fn an_early_refresh_holds_one_unit_of_capacity_not_two() {
    let server = Server::default();
    server.accept("t0");
    let script = Script::ok();
    let session = Session::new();
    session
        .login(Tokens::new("t0", "r0").expires_in(Duration::from_secs(60)))
        .unwrap();
    let inner = {
        let server = server.clone();
        ServiceBuilder::new()
            .concurrency_limit(1)
            .service(tower::service_fn(move |req: Request<Full<Bytes>>| {
                server.clone().handle(req)
            }))
    };
    let mut client = ServiceBuilder::new()
        .layer(script.layer(&session, &server))
        .service(inner);
    // Past the stale point (55 s of 60): the first request waits for the refresh.
    tokio::time::advance(Duration::from_secs(56)).await;
    // One caller, one service, each request awaited: the early refresh must not need a
    // second permit of the limit.
    for _ in 0..3 {
        let response = tokio::time::timeout(Duration::from_secs(60), async {
            client.ready().await.unwrap().call(get("/")).await.unwrap()
        })
        .await
        .expect("no deadlock");
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(script.calls(), 1);
}

/// Counts the bodies a layer keeps, keeping them as `CloneBodies` does.
#[derive(Clone, Default)]
struct CountingKeeps(Arc<AtomicUsize>);

impl tower_jwt_refresh::client::ReplayPolicy<Full<Bytes>> for CountingKeeps {
    type Kept = Full<Bytes>;

    fn keep(&self, body: Full<Bytes>) -> (Full<Bytes>, Option<Full<Bytes>>) {
        self.0.fetch_add(1, Ordering::SeqCst);
        (body.clone(), Some(body))
    }

    fn rebuild(&self, kept: Full<Bytes>) -> Option<Full<Bytes>> {
        Some(kept)
    }
}

#[tokio::test(start_paused = true)]
async fn zero_replays_keeps_no_copy_on_any_path() {
    let server = Server::default();
    server.accept("t0");
    let script = Script::ok();
    let session = Session::new();
    session
        .login(Tokens::new("t0", "r0").expires_in(Duration::from_secs(60)))
        .unwrap();
    let keeps = CountingKeeps::default();
    let layer = script
        .layer(&session, &server)
        .max_replays(0)
        .replay(keeps.clone());
    let client = tower_client(layer, &server);
    // A young token, then one past the stale point, which waits for the refresh first.
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    tokio::time::advance(Duration::from_secs(56)).await;
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(script.calls(), 1);
    assert_eq!(keeps.0.load(Ordering::SeqCst), 0, "no copy without replays");
}

async fn zero_replays_returns_the_401_after_refreshing(front: Front) {
    let server = Server::default();
    let script = Script::ok();
    let session = logged_in("t0");
    let client = front.client(script.layer(&session, &server).max_replays(0), &server);
    assert_eq!(
        status(&client, "/").await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(script.calls(), 1);
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
}

async fn a_young_token_rejected_is_replayed_by_default_and_not_with_the_window(front: Front) {
    for window in [false, true] {
        let server = Server::default();
        let script = Script::ok();
        let session = Session::new();
        // Young: an hour left of an hour. The server has revoked it anyway (a rotated key).
        session
            .login(Tokens::new("t0", "r0").expires_in(Duration::from_secs(3600)))
            .unwrap();
        let layer = script.layer(&session, &server);
        let client = front.client(if window { layer.replay_window() } else { layer }, &server);
        // A POST with a body and a header, so the copy has something to keep.
        let request = Request::post("/")
            .header("x-trace", "1")
            .body(Full::from("payload"))
            .unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        assert_eq!(
            script.calls(),
            1,
            "the rejection triggered the refresh either way"
        );
        if window {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "no copy kept");
            assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
        } else {
            assert_eq!(response.status(), StatusCode::OK, "kept, so replayed");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "payload", "the replay carried the body");
            assert_eq!(server.seen(), ["t0", "t1"]);
        }
    }
    // With the window, a request in the second half of its lifetime is kept and replayed.
    let server = Server::default();
    let script = Script::ok();
    let session = Session::new();
    session
        .login(Tokens::new("t0", "r0").expires_in(Duration::from_secs(3600)))
        .unwrap();
    let layer = script.layer(&session, &server).replay_window();
    let client = front.client(layer.no_early_refresh(), &server);
    tokio::time::advance(Duration::from_secs(1900)).await;
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
}

async fn a_refreshed_access_token_that_cannot_be_sent_expires_the_session(front: Front) {
    let server = Server::default();
    let session = logged_in("t0");
    // The server rotated, so "r0" is spent; an access token no header can carry is no session.
    let refresher = refresher_fn(|_refresh: String| async { Ok(Tokens::new("bad\ntoken", "r1")) });
    let client = front.client(RefreshLayer::new(session.clone(), refresher), &server);
    assert!(matches!(
        status(&client, "/").await,
        Err(Error::SessionExpired)
    ));
    assert!(session.is_expired());
}

async fn a_token_endpoint_failing_fast_is_refresh_failed_with_its_cause_not_a_loop(front: Front) {
    let server = Server::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let refresher = refresher_fn(move |_: String| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            Err(RefreshFailure::transient("token endpoint answered 503")
                .retry_after(Duration::from_secs(5)))
        }
    });
    let session = logged_in("t0");
    let client = front.client(RefreshLayer::new(session.clone(), refresher), &server);
    // 20 requests over 2 s, against a default loop guard of 4 refreshes in 2 s.
    for _ in 0..20 {
        let err = status(&client, "/").await.unwrap_err();
        assert!(matches!(err, Error::RefreshFailed(_)), "{err}");
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(cause, "token endpoint answered 503");
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "Retry-After honoured");
    tokio::time::advance(Duration::from_secs(3)).await;
    assert!(status(&client, "/").await.is_err());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "tried again once it passed"
    );
}

async fn the_loop_guard_history_resets_on_login(front: Front) {
    let server = Server::default();
    server.reject_all.store(true, Ordering::SeqCst);
    let script = Script::ok();
    let session = logged_in("t0");
    let client = front.client(script.layer(&session, &server), &server);
    for _ in 0..4 {
        assert_eq!(
            status(&client, "/").await.unwrap(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(matches!(
        status(&client, "/").await,
        Err(Error::RefreshLoop)
    ));
    // Another user logs in: the previous identity's loop is not theirs.
    server.reject_all.store(false, Ordering::SeqCst);
    session.login(Tokens::new("bob", "r-bob")).unwrap();
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(script.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_replay_reads_the_token_once_the_service_is_ready() {
    use tower::limit::ConcurrencyLimit;
    let server = Server::default();
    let (script, gate) = Script::ok().gated();
    let session = logged_in("t0");
    let permits = Arc::new(Semaphore::new(1));
    let handler = {
        let server = server.clone();
        tower::service_fn(move |req: Request<Full<Bytes>>| server.clone().handle(req))
    };
    let limited = ConcurrencyLimit::with_semaphore(handler, Arc::clone(&permits));
    let client = tower::util::BoxCloneService::new(
        ServiceBuilder::new()
            .layer(script.layer(&session, &server))
            .service(limited),
    );
    let request = spawn_many(&client, "/", 1).remove(0);
    // Rejected with t0, the request waits for the refresh; the one permit is taken meanwhile.
    wait_until(|| script.calls() == 1).await;
    let held = Arc::clone(&permits).acquire_owned().await.unwrap();
    gate.add_permits(1);
    wait_in_time_until(|| session.tokens().unwrap().access_token() == "t1").await;
    // While the replay waits for readiness, the same user's tokens are replaced.
    server.accept("t2");
    session.replace_tokens(Tokens::new("t2", "r2")).unwrap();
    drop(held);
    assert_eq!(request.await.unwrap().unwrap(), StatusCode::OK);
    assert_eq!(server.seen(), ["t0", "t2"]);
}

/// A refresher issuing `t1`, `t2`, … at once, none of them accepted by the server unless the
/// test says so.
fn counting_refresher(calls: &Arc<AtomicUsize>) -> impl tower_jwt_refresh::client::Refresher {
    let calls = Arc::clone(calls);
    refresher_fn(move |_: String| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok(Tokens::new(format!("t{n}"), format!("r{n}"))) }
    })
}

/// An `on_refresh` hook that logs when it starts and ends and stores what it persisted in
/// `stored`; it takes 500 ms for `t1`, 10 ms otherwise.
fn persisting(
    log: &Arc<Mutex<Vec<String>>>,
    stored: &Arc<Mutex<Option<String>>>,
) -> impl Fn(tower_jwt_refresh::client::CurrentTokens) -> futures_util::future::BoxFuture<'static, ()>
+ Send
+ Sync
+ 'static {
    let (log, stored) = (Arc::clone(log), Arc::clone(stored));
    move |tokens| {
        let token = tokens.access_token().to_owned();
        let (log, stored) = (Arc::clone(&log), Arc::clone(&stored));
        Box::pin(async move {
            log.lock().unwrap().push(format!("start {token}"));
            let slow = if token == "t1" { 500 } else { 10 };
            tokio::time::sleep(Duration::from_millis(slow)).await;
            *stored.lock().unwrap() = Some(token.clone());
            log.lock().unwrap().push(format!("end {token}"));
        })
    }
}

async fn hooks_run_one_at_a_time_in_the_order_their_tokens_were_installed(front: Front) {
    let server = Server::default();
    server.accept("t2");
    let calls = Arc::new(AtomicUsize::new(0));
    let (log, stored) = (Arc::default(), Arc::default());
    let session = logged_in("t0");
    let layer = RefreshLayer::new(session.clone(), counting_refresher(&calls))
        .on_refresh(persisting(&log, &stored));
    let client = front.client(layer, &server);
    // t0 is rejected: the first refresh installs t1, whose hook is slow.
    let first = spawn_many(&client, "/", 1).remove(0);
    wait_until(|| session.tokens().unwrap().access_token() == "t1").await;
    // t1 is rejected too: a second refresh gets t2 while t1's hook still runs.
    let second = spawn_many(&client, "/", 1).remove(0);
    wait_until(|| calls.load(Ordering::SeqCst) == 2).await;
    first.await.unwrap().ok();
    assert_eq!(second.await.unwrap().unwrap(), StatusCode::OK);
    let log = log.lock().unwrap().clone();
    assert_eq!(log, ["start t1", "end t1", "start t2", "end t2"]);
    // Storage holds the live refresh token, not the rotated-out one.
    assert_eq!(stored.lock().unwrap().as_deref(), Some("t2"));
}

async fn a_logout_under_the_storage_lock_is_never_overwritten_by_a_hook(front: Front) {
    let server = Server::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (log, stored) = (Arc::default(), Arc::<Mutex<Option<String>>>::default());
    let session = logged_in("t0");
    let layer = RefreshLayer::new(session.clone(), counting_refresher(&calls))
        .on_refresh(persisting(&log, &stored));
    let client = front.client(layer, &server);
    let request = spawn_many(&client, "/", 1).remove(0);
    // t1's hook is storing it when the application logs out and clears storage.
    wait_until(|| log.lock().unwrap().len() == 1).await;
    let guard = session.lock_storage().await;
    session.logout();
    *stored.lock().unwrap() = None;
    drop(guard);
    request.await.unwrap().ok();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*log.lock().unwrap(), ["start t1", "end t1"]);
    assert_eq!(
        *stored.lock().unwrap(),
        None,
        "the logout's clear came last"
    );
}

async fn a_hook_due_after_a_logout_does_not_run(front: Front) {
    let server = Server::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (log, stored) = (Arc::default(), Arc::default());
    let session = logged_in("t0");
    let layer = RefreshLayer::new(session.clone(), counting_refresher(&calls))
        .on_refresh(persisting(&log, &stored));
    let client = front.client(layer, &server);
    // The application is writing storage when the refresh lands: the refresh waits for it.
    let guard = session.lock_storage().await;
    let request = spawn_many(&client, "/", 1).remove(0);
    wait_until(|| calls.load(Ordering::SeqCst) == 1).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    session.logout();
    drop(guard);
    assert!(matches!(request.await.unwrap(), Err(Error::SessionChanged)));
    assert!(
        log.lock().unwrap().is_empty(),
        "no hook for tokens of an ended login"
    );
    assert!(stored.lock().unwrap().is_none());
}

async fn a_panicking_hook_leaves_the_session_the_waiters_and_the_stats_consistent(front: Front) {
    let server = Server::default();
    server.accept("t1");
    let calls = Arc::new(AtomicUsize::new(0));
    let session = logged_in("t0");
    let layer = RefreshLayer::new(session.clone(), counting_refresher(&calls))
        .on_refresh(|_| -> std::future::Ready<()> { panic!("storage is broken") });
    let client = front.client(layer, &server);
    for task in spawn_many(&client, "/", 10) {
        assert_eq!(task.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(session.tokens().unwrap().access_token(), "t1");
    let stats = session.stats();
    assert_eq!((stats.refreshes, stats.refresh_failures), (1, 0));
    // No backoff: the session goes on as after any refresh.
    assert_eq!(status(&client, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Polls `future` to its end on this thread, which belongs to no runtime.
fn block_on_plain_thread<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

fn main_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn a_refresh_started_on_a_runtime_that_goes_idle_still_finishes(front: Front) {
    let main = main_runtime();
    let side = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = Server::default();
    let (script, gate) = Script::ok().gated();
    let session = logged_in("t0");
    // Built on the main runtime: that is where its refreshes run.
    let client = {
        let _main = main.enter();
        let layer = script.layer(&session, &server);
        front.client(layer.wait_timeout(Duration::from_secs(5)), &server)
    };
    // A request on the side runtime starts the refresh and gives up; that runtime then idles.
    let gave_up = side.block_on(async {
        tokio::time::timeout(Duration::from_millis(50), status(&client, "/")).await
    });
    assert!(gave_up.is_err());
    assert_eq!(script.calls(), 1);
    gate.add_permits(1);
    // A request on the main runtime joins that refresh, which ends without the side runtime.
    assert_eq!(main.block_on(status(&client, "/")).unwrap(), StatusCode::OK);
    assert_eq!(script.calls(), 1);
}

fn a_caller_outside_any_runtime_waits_on_the_layers_runtime(front: Front) {
    let main = main_runtime();
    let server = Server::default();
    let script = Script::ok();
    let session = logged_in("t0");
    let on_main = {
        let _main = main.enter();
        front.client(script.layer(&session, &server), &server)
    };
    let answer = std::thread::spawn(move || block_on_plain_thread(status(&on_main, "/")))
        .join()
        .unwrap();
    assert_eq!(answer.unwrap(), StatusCode::OK);
    // Built and called outside any runtime, a request that must wait gets a typed error.
    let orphan = front.client(Script::ok().layer(&logged_in("t0"), &server), &server);
    let answer = block_on_plain_thread(status(&orphan, "/"));
    assert!(matches!(answer, Err(Error::NoRuntime)), "{answer:?}");
}

fn a_runtime_without_timers_gets_a_typed_error_not_a_panic(front: Front) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let server = Server::default();
    let answer = runtime.block_on(async {
        let client = front.client(Script::ok().layer(&logged_in("t0"), &server), &server);
        status(&client, "/").await
    });
    assert!(matches!(answer, Err(Error::NoRuntime)), "{answer:?}");
}
