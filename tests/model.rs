//! Model-based tests (proptest).
//!
//! - The refresh-token state machine: random sequences of issue, rotate (current, previous,
//!   older or forged tokens), concurrent rotations, revoke and time passing, on both stores,
//!   checked step by step against a plain model. The Redis half needs the `redis` feature and
//!   `REDIS_URL` (`scripts/test` sets it); without `REDIS_URL` it is skipped with a notice, and
//!   under `CI=true` it fails.
//! - The client session: random interleavings of requests, server-side expiries, refresh
//!   outcomes (success, transient, permanent, hang) and cancellations, checked against the
//!   client's invariants.

mod support;

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use tower_jwt_refresh::Clock;
use tower_jwt_refresh::issuer::store::RefreshStore;
use tower_jwt_refresh::issuer::{
    AccessTokenIssuer, GrantError, MemoryStore, RefreshError, TokenIssuer,
};
use tower_jwt_refresh::keys::{Algorithm, SigningKey};

// ----- the refresh-token state machine -----

const BASE: u64 = 2_000_000_000;
const GRACE: u64 = 10;
const LIFETIME: u64 = 600;
const IDLE: u64 = 120;

thread_local! {
    static NOW: Cell<u64> = const { Cell::new(BASE) };
}

fn clock() -> u64 {
    NOW.with(Cell::get)
}

#[derive(Debug, Clone)]
enum Op {
    Issue,
    /// Rotate a token of family `family % n`: 0 = current, 1 = previous, 2 = two back,
    /// 3 = forged.
    Rotate {
        family: usize,
        which: u8,
    },
    /// Rotate the current token of a family from `tasks` tasks at once.
    Concurrent {
        family: usize,
        tasks: usize,
    },
    Revoke {
        family: usize,
        which: u8,
    },
    Advance {
        seconds: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Issue),
        6 => (any::<usize>(), 0u8..4).prop_map(|(family, which)| Op::Rotate { family, which }),
        1 => (any::<usize>(), 2usize..8).prop_map(|(family, tasks)| Op::Concurrent { family, tasks }),
        1 => (any::<usize>(), 0u8..4).prop_map(|(family, which)| Op::Revoke { family, which }),
        2 => prop_oneof![Just(1u64), Just(5), Just(GRACE + 1), Just(60), Just(IDLE)].prop_map(|seconds| Op::Advance { seconds }),
    ]
}

/// What the model knows of a family.
#[derive(Debug, Clone)]
struct Family {
    /// Every token issued, oldest first; the last is current.
    tokens: Vec<String>,
    /// When the current token was installed.
    rotated_at: u64,
    created_at: u64,
    last_used: u64,
    dead: bool,
}

impl Family {
    fn ends_at(&self) -> u64 {
        (self.created_at + LIFETIME).min(self.last_used + IDLE)
    }

    fn pick(&self, which: u8) -> Option<String> {
        let n = self.tokens.len();
        match which {
            0 => Some(self.tokens[n - 1].clone()),
            1 if n >= 2 => Some(self.tokens[n - 2].clone()),
            2 if n >= 3 => Some(self.tokens[n - 3].clone()),
            3 => {
                let family = self.tokens[0].split('.').next().unwrap();
                Some(format!("{family}.{}", "A".repeat(43)))
            }
            _ => None,
        }
    }
}

/// Runs `ops` on `store` and checks each outcome against the model.
async fn run_model<S: RefreshStore + Clone>(store: S, ops: Vec<Op>) {
    let key = SigningKey::hmac(Algorithm::HS256, [4u8; 32]).unwrap();
    let access = AccessTokenIssuer::new(key).clock(Clock::from_fn(clock));
    let issuer = TokenIssuer::new(access, store)
        .clock(Clock::from_fn(clock))
        .grace_period(Duration::from_secs(GRACE))
        .refresh_lifetime(Duration::from_secs(LIFETIME))
        .idle_timeout(Duration::from_secs(IDLE));
    let mut families: Vec<Family> = Vec::new();
    for op in ops {
        match op {
            Op::Issue => {
                let pair = issuer.issue("user", &()).await.unwrap();
                let now = clock();
                families.push(Family {
                    tokens: vec![pair.refresh_token],
                    rotated_at: 0,
                    created_at: now,
                    last_used: now,
                    dead: false,
                });
            }
            Op::Advance { seconds } => NOW.with(|n| n.set(n.get() + seconds)),
            Op::Rotate { family, which } if !families.is_empty() => {
                let index = family % families.len();
                let model = &mut families[index];
                let Some(token) = model.pick(which) else {
                    continue;
                };
                let expected = expect_rotation(model, which);
                let got = issuer.rotate(&token).await;
                check(model, which, expected, got.map(|p| p.refresh_token));
            }
            Op::Concurrent { family, tasks } if !families.is_empty() => {
                let index = family % families.len();
                let model = &mut families[index];
                let token = model.pick(0).unwrap();
                let expected = expect_rotation(model, 0);
                let handles: Vec<_> = (0..tasks)
                    .map(|_| {
                        let (issuer, token) = (issuer.clone(), token.clone());
                        tokio::spawn(
                            async move { issuer.rotate(&token).await.map(|p| p.refresh_token) },
                        )
                    })
                    .collect();
                let mut results = Vec::new();
                for handle in handles {
                    results.push(handle.await.unwrap());
                }
                match expected {
                    Expect::Rotated => {
                        // One wins; the others are retries inside the grace window and get the
                        // same successor.
                        let successors: HashSet<_> = results
                            .iter()
                            .map(|r| {
                                r.as_ref()
                                    .expect("grace covers concurrent rotations")
                                    .clone()
                            })
                            .collect();
                        assert_eq!(successors.len(), 1, "{results:?}");
                        model.tokens.push(successors.into_iter().next().unwrap());
                        model.rotated_at = clock();
                        model.last_used = clock();
                    }
                    other => {
                        for result in results {
                            // The first to see an expired family ends it; the others find it
                            // revoked.
                            let result = match result {
                                Err(RefreshError::InvalidGrant(GrantError::Revoked))
                                    if other == Expect::Invalid(GrantError::Expired) =>
                                {
                                    continue;
                                }
                                result => result,
                            };
                            check(&mut model.clone(), 0, other, result);
                        }
                        if matches!(other, Expect::Invalid(GrantError::Expired)) {
                            model.dead = true;
                        }
                    }
                }
            }
            Op::Revoke { family, which } if !families.is_empty() => {
                let index = family % families.len();
                let model = &mut families[index];
                let Some(token) = model.pick(which) else {
                    continue;
                };
                let revoked = issuer.revoke(&token).await.unwrap();
                // A forged token revokes nothing, nor does a revoked family's; a genuine one
                // revokes a live family; an expired one the store may not have purged yet.
                if which == 3 || model.dead {
                    assert!(!revoked, "{model:?} {which}");
                } else if clock() < model.ends_at() {
                    assert!(revoked, "{model:?} {which}");
                }
                if revoked {
                    model.dead = true;
                }
            }
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Rotated,
    Retried,
    Invalid(GrantError),
}

/// Expected outcome of presenting token `which` of `model` now.
fn expect_rotation(model: &Family, which: u8) -> Expect {
    let now = clock();
    if model.dead {
        // Revoked (the tombstone answers before the secret is compared) or gone.
        return Expect::Invalid(GrantError::Revoked);
    }
    if which == 3 {
        return Expect::Invalid(GrantError::Unknown);
    }
    if now >= model.ends_at() {
        return Expect::Invalid(GrantError::Expired);
    }
    match which {
        0 => Expect::Rotated,
        1 if now >= model.rotated_at && now - model.rotated_at <= GRACE => Expect::Retried,
        _ => Expect::Invalid(GrantError::Reused),
    }
}

fn check(model: &mut Family, which: u8, expected: Expect, got: Result<String, RefreshError>) {
    match (expected, got) {
        (Expect::Rotated, Ok(token)) => {
            model.tokens.push(token);
            model.rotated_at = clock();
            model.last_used = clock();
        }
        (Expect::Retried, Ok(token)) => {
            assert_eq!(
                &token,
                model.tokens.last().unwrap(),
                "a retry gets the same successor"
            );
        }
        (Expect::Invalid(expected), Err(RefreshError::InvalidGrant(got))) => {
            // A dead family may answer Revoked (tombstone) or Unknown (forgotten); both refuse.
            let equivalent =
                expected == got || (expected == GrantError::Revoked && got == GrantError::Unknown);
            assert!(
                equivalent,
                "expected {expected:?}, got {got:?} for token {which} of {model:?}"
            );
            if matches!(got, GrantError::Reused | GrantError::Expired) {
                model.dead = true;
            }
        }
        (expected, got) => {
            panic!("expected {expected:?}, got {got:?} for token {which} of {model:?}")
        }
    }
}

fn model_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn memory_store_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        model_runtime().block_on(run_model(MemoryStore::new().clock(Clock::from_fn(clock)), ops));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_store_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let Some(url) = redis_url() else {
            return Ok(());
        };
        let runtime = model_runtime();
        let store = runtime.block_on(tower_jwt_refresh::issuer::RedisStore::connect(&url)).unwrap();
        runtime.block_on(run_model(store, ops));
    }
}

/// `REDIS_URL`, read (and its absence reported) once for all the cases.
#[cfg(feature = "redis")]
fn redis_url() -> Option<String> {
    static URL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    URL.get_or_init(support::redis_url).clone()
}

// ----- the client session -----

mod client_model {
    use super::*;
    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use tower::{ServiceBuilder, ServiceExt};
    use tower_jwt_refresh::client::{
        Error, RefreshFailure, RefreshLayer, Session, Tokens, refresher_fn,
    };

    const WAIT: Duration = Duration::from_secs(2);
    const REFRESH: Duration = Duration::from_secs(1);
    /// What the client is told of every token: so the early window and the replay window
    /// (a token in the first half of its life keeps no copy) come into play as time passes.
    const TOKEN_LIFETIME: Duration = Duration::from_secs(3);

    #[derive(Debug, Clone)]
    pub(super) enum Event {
        /// Start `n` requests.
        Send(usize),
        /// The server stops accepting the tokens it has.
        Expire,
        /// How the next refresh ends.
        Next(Outcome),
        /// Let time pass.
        Advance(u64),
        /// Cancel the oldest unfinished request.
        Cancel,
        /// The application logs in again.
        Login,
    }

    #[derive(Debug, Clone, Copy)]
    pub(super) enum Outcome {
        Ok,
        Transient,
        Permanent,
        Hang,
    }

    pub(super) fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (1usize..20).prop_map(Event::Send),
            2 => Just(Event::Expire),
            2 => prop_oneof![
                4 => Just(Outcome::Ok),
                1 => Just(Outcome::Transient),
                1 => Just(Outcome::Permanent),
                1 => Just(Outcome::Hang),
            ].prop_map(Event::Next),
            2 => (0u64..1500).prop_map(Event::Advance),
            1 => Just(Event::Cancel),
            1 => Just(Event::Login),
        ]
    }

    /// What the mock server and the refresher share.
    #[derive(Default)]
    struct World {
        /// The token number the server accepts from; older ones are expired.
        valid_from: AtomicUsize,
        /// Tokens are `t<n>`; the newest issued.
        newest: AtomicUsize,
        outcomes: Mutex<Vec<Outcome>>,
        /// Refresh tokens being refreshed right now.
        in_flight: Mutex<HashSet<String>>,
        /// A refresh token presented while a refresh with it was still running.
        overlapped: Mutex<Vec<String>>,
        /// Successful refreshes per refresh token presented.
        refreshed_from: Mutex<Vec<String>>,
        /// (oldest token number the request could have had, token number it was sent with)
        sends: Mutex<Vec<(usize, usize)>>,
    }

    struct Flying(Arc<World>, String);

    impl Drop for Flying {
        fn drop(&mut self) {
            self.0.in_flight.lock().unwrap().remove(&self.1);
        }
    }

    fn number(token: &str) -> usize {
        token
            .trim_start_matches("Bearer ")
            .trim_start_matches('t')
            .parse()
            .unwrap_or(0)
    }

    pub(super) async fn run(events: Vec<Event>) {
        let world = Arc::new(World::default());
        let session = Session::new();
        session
            .login(Tokens::new("t0", "r0").expires_in(TOKEN_LIFETIME))
            .unwrap();
        let refresher = {
            let world = Arc::clone(&world);
            refresher_fn(move |refresh: String| {
                let world = Arc::clone(&world);
                async move {
                    if !world.in_flight.lock().unwrap().insert(refresh.clone()) {
                        world.overlapped.lock().unwrap().push(refresh.clone());
                    }
                    // Leaves `in_flight` however the refresh ends, timed out and dropped
                    // included.
                    let _flying = Flying(Arc::clone(&world), refresh.clone());
                    let outcome = world.outcomes.lock().unwrap().pop().unwrap_or(Outcome::Ok);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    match outcome {
                        Outcome::Ok => {
                            world.refreshed_from.lock().unwrap().push(refresh);
                            let n = world.newest.fetch_add(1, Ordering::SeqCst) + 1;
                            Ok(Tokens::new(format!("t{n}"), format!("r{n}"))
                                .expires_in(TOKEN_LIFETIME))
                        }
                        Outcome::Transient => Err(RefreshFailure::transient("503")),
                        Outcome::Permanent => Err(RefreshFailure::permanent("invalid_grant")),
                        Outcome::Hang => std::future::pending().await,
                    }
                }
            })
        };
        let layer = RefreshLayer::new(session.clone(), refresher)
            .wait_timeout(WAIT)
            .refresh_timeout(REFRESH)
            .loop_guard(1000, Duration::from_secs(1));
        let inner = {
            let world = Arc::clone(&world);
            tower::service_fn(move |req: Request<Full<Bytes>>| {
                let world = Arc::clone(&world);
                async move {
                    let token = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(number)
                        .unwrap_or(0);
                    let could_have = req
                        .headers()
                        .get("x-could-have")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    world.sends.lock().unwrap().push((could_have, token));
                    let mut response = Response::new(Full::<Bytes>::default());
                    if token < world.valid_from.load(Ordering::SeqCst) {
                        *response.status_mut() = StatusCode::UNAUTHORIZED;
                    }
                    Ok::<_, std::convert::Infallible>(response)
                }
            })
        };
        let client = ServiceBuilder::new().layer(layer).service(inner);
        let mut tasks: Vec<tokio::task::JoinHandle<Result<StatusCode, Error>>> = Vec::new();
        let mut logins = 0;
        for event in events {
            match event {
                Event::Send(n) => {
                    for _ in 0..n {
                        // The newest token the session held when the request started.
                        let could_have = session.tokens().map_or(0, |t| number(t.access_token()));
                        let request = Request::get("/")
                            .header("x-could-have", could_have)
                            .body(Full::default())
                            .unwrap();
                        let call = client.clone().oneshot(request);
                        tasks.push(tokio::spawn(async move { call.await.map(|r| r.status()) }));
                    }
                }
                Event::Expire => {
                    let newest = world.newest.load(Ordering::SeqCst);
                    world.valid_from.store(newest + 1, Ordering::SeqCst);
                }
                Event::Next(outcome) => world.outcomes.lock().unwrap().insert(0, outcome),
                Event::Advance(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Event::Cancel => {
                    if let Some(task) = tasks.iter().find(|t| !t.is_finished()) {
                        task.abort();
                    }
                }
                Event::Login => {
                    logins += 1;
                    let n = world.newest.fetch_add(1, Ordering::SeqCst) + 1;
                    session
                        .login(
                            Tokens::new(format!("t{n}"), format!("login-{logins}"))
                                .expires_in(TOKEN_LIFETIME),
                        )
                        .unwrap();
                }
            }
        }
        // No request outlives the bounds: a wait, plus a refresh it may have started.
        tokio::time::sleep(WAIT + REFRESH + Duration::from_millis(200)).await;
        for task in tasks {
            assert!(task.is_finished(), "a request outlived the bounds");
            // Every caller got exactly one outcome: a response, a typed error, or its
            // cancellation.
            match task.await {
                Ok(Ok(_)) | Ok(Err(_)) => {}
                Err(e) => assert!(e.is_cancelled(), "{e}"),
            }
        }
        // A login during a refresh may start another with the new refresh token; the same
        // token is never refreshed twice at once.
        let overlapped = world.overlapped.lock().unwrap();
        assert!(
            overlapped.is_empty(),
            "refreshed twice at once: {overlapped:?}"
        );
        let refreshed = world.refreshed_from.lock().unwrap();
        let distinct: HashSet<_> = refreshed.iter().collect();
        assert_eq!(
            distinct.len(),
            refreshed.len(),
            "one refresh token refreshed twice: {refreshed:?}"
        );
        for (could_have, sent) in world.sends.lock().unwrap().iter() {
            assert!(
                sent >= could_have,
                "sent t{sent} when t{could_have} was available"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_client_keeps_its_invariants(events in proptest::collection::vec(client_model::event(), 1..30)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        runtime.block_on(client_model::run(events));
    }
}
