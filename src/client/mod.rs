//! The client side: attach the access token to every request and refresh it silently.
//!
//! [`RefreshLayer`] wraps any `Service<http::Request<B>>`: a hyper-util client, a tonic
//! `Channel`, a mock. Where tower's `Retry` replays a request on its own, this layer
//! coordinates every request of a [`Session`]: when the token is rejected (or about to
//! expire) exactly one refresh runs, every request that needs it waits for that one refresh
//! (bounded in time and number), and each is replayed with the new token. The application
//! never sees the 401 of an expiry.
//!
//! Per request:
//! 1. no tokens: fail with [`Error::NotAuthenticated`] (or pass through, if configured);
//! 2. two thresholds, as AWS's `CachedSupplier`: past a prefetch point (drawn at random per
//!    token set in the first half of the early window) the first request starts one
//!    background refresh and every request goes out at once with the still-valid token;
//!    only past the stale point (a few seconds before expiry) do requests wait, holding none
//!    of the inner service's capacity. Lifetimes are `expires_in`, else the JWT's
//!    `exp - iat`, counted from receipt on the monotonic clock;
//! 3. attach `Authorization: Bearer …` and remember the tokens' generation and identity
//!    epoch (one per login): a request is never sent with another login's tokens, and
//!    fails with [`Error::SessionChanged`] instead;
//! 4. a rejection (401, or gRPC `UNAUTHENTICATED`) of a request that used an older
//!    generation is replayed at once with the current token, without a refresh: this stale
//!    rule is what keeps a storm at exactly one refresh. Otherwise it joins or starts the
//!    refresh for its generation, then replays, at most once by default;
//! 5. bodies are kept for the replay by a [`ReplayPolicy`]: [`CloneBodies`] (default),
//!    [`TeeBodies`] for streaming bodies, [`NoReplay`].
//!
//! With a valid token, a request costs a read of the session (one plain atomic load while the
//! tokens are unchanged: each service caches them), one clock read, a clone of the prebuilt
//! `Authorization` value (a reference count), a reference count on what its recovery needs
//! (the configuration and a spare clone of the inner service, which is cloned for a replay only
//! when one happens), and its replay copy: the request's URI and headers but `Authorization`
//! copied into one buffer (one allocation, no atomic operation), and the body as the
//! [`ReplayPolicy`] keeps it (a clone for [`CloneBodies`]; nothing to buffer for a bodiless
//! request). A body the policy cannot keep
//! (over the [`TeeBodies`] cap, or with [`NoReplay`]) is not replayed: its request gets its
//! 401 back, after the refresh it triggered, so the next request succeeds.
//! [`RefreshLayer::replay_window`] keeps copies only late in a token's life.
//!
//! A refresh runs in a task of its own, so a caller that gives up cancels nothing for the
//! others. A permanent failure (`invalid_grant`) expires the session: every waiter gets
//! [`Error::SessionExpired`], `on_session_expired` fires once, and requests fail fast until the
//! next [`Session::login`]. A transient failure gives waiters [`Error::RefreshFailed`]; no
//! refresh starts again before a backoff (or the server's `Retry-After`) has passed. The
//! backoff ends at the latest when the access token expires, so failed prefetches never keep
//! failing requests once the token is gone and the endpoint may be back.
//!
//! # Layout
//!
//! - `layer.rs`: [`RefreshLayer`], configuration only; `config.rs`: what its services share,
//!   and the per-request plan (refresh first, or send and keep a copy for a replay);
//!   `rejection.rs`: what counts as "token rejected".
//! - `service.rs`: [`Refresh`], which attaches the token; `future.rs`: [`ResponseFuture`](future::ResponseFuture), the
//!   hot path; `recovery.rs`: the slow paths (refreshing first, recovering from a rejection,
//!   driving the replays).
//! - `session/`: the [`Session`] (`mod.rs`), its tokens (`tokens.rs`), and the single-flight
//!   refresh where waiting requests wake up (`flight.rs`).
//! - `refresher/`: the [`Refresher`] trait, [`refresher_fn`] (`closure.rs`) and
//!   [`OAuthRefresher`] (`oauth.rs`).
//! - `replay/`: the [`ReplayPolicy`] trait with [`CloneBodies`] and [`NoReplay`]; [`TeeBodies`]
//!   in `tee.rs`.
//! - `error.rs`: [`Error`].
//! - `proofs.rs`: DPoP on the requests ([`RefreshLayer::dpop`]): credentials with a fresh
//!   proof, remembered nonces, and the `use_dpop_nonce` verdict that the round
//!   (`round.rs`) answers with one more send; `dpop/`: the key, its proofs and its nonces.
//!
//! # Example: hyper-util
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_jwt_refresh::client::{OAuthRefresher, RefreshLayer, Session, Tokens};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let session = Session::new();
//! let refresher = OAuthRefresher::new(http.clone(), "http://127.0.0.1:3000/oauth/token".parse()?);
//! let client = ServiceBuilder::new()
//!     .layer(RefreshLayer::new(session.clone(), refresher))
//!     .service(http);
//!
//! session.login(Tokens::new("access token from login", "refresh token from login"))?;
//! let request = http::Request::get("http://127.0.0.1:3000/aaa").body(Full::default())?;
//! let response = client.oneshot(request).await?; // refreshed and replayed if needed
//! # let _ = response; Ok(()) }
//! ```
//!
//! # Example: tonic
//!
//! ```
//! use tonic::transport::Channel;
//! use tower::ServiceBuilder;
//! use tower_jwt_refresh::client::{RefreshLayer, Tokens, Session, refresher_fn};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = Channel::from_static("http://127.0.0.1:50051").connect_lazy();
//! let session = Session::new();
//! let refresher = refresher_fn(|refresh_token: String| async move {
//!     // Call your auth service here.
//!     Ok(Tokens::new("new access", refresh_token))
//! });
//! let channel = ServiceBuilder::new()
//!     .layer(RefreshLayer::new(session, refresher).tee_bodies(64 * 1024, tonic::body::Body::new))
//!     .service(channel);
//! // Hand `channel` to a generated client: `MyServiceClient::new(channel)`.
//! # let _ = channel; Ok(()) }
//! ```

mod config;
#[cfg(feature = "dpop")]
pub mod dpop;
mod error;
pub mod future;
mod layer;
mod proofs;
mod recovery;
mod refresher;
mod rejection;
mod replay;
#[cfg(feature = "reqwest")]
mod reqwest;
mod round;
mod service;
mod session;

pub use error::Error;
pub use layer::RefreshLayer;
pub use refresher::{OAuthRefresher, RefreshFailure, Refresher, RefresherFn, refresher_fn};
pub use replay::{CloneBodies, NoReplay, ReplayBody, ReplayPolicy, TeeBodies};
#[cfg(feature = "reqwest")]
pub use reqwest::{RefreshMiddleware, ReqwestTransport};
pub use service::Refresh;
pub use session::{
    CurrentTokens, Session, SessionEvent, Stats, StorageGuard, Tokens, UnusableToken,
};
