//! [`RemoteJwks`]: keys fetched from a JWKS URL and kept current (feature `jwks`).
//!
//! The key set is refreshed in the background on a fixed period. A token whose `kid` is
//! unknown triggers an early refetch: single-flight (every such request joins the one fetch in
//! flight) and rate-limited (at most one per [`RemoteJwksBuilder::min_refetch_interval`]).
//! Verification with known keys reads the current set lock-free and never waits on a fetch. A
//! failed fetch keeps the previous keys, and fetches are ordered: one that finishes after a
//! later-started fetch has stored its keys is dropped, so a slow fetch cannot bring back keys
//! a rotation removed.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use tokio::sync::watch;
use tower::util::BoxCloneSyncService;

use crate::BoxError;
use crate::keys::key::KeyError;
use crate::keys::set::KeySet;

mod worker;

use worker::Shared;

type HttpClient = BoxCloneSyncService<Request<Empty<Bytes>>, Response<Bytes>, BoxError>;

/// Why a JWKS could not be fetched.
#[derive(Debug)]
#[non_exhaustive]
pub enum JwksError {
    /// The URL is not `https`, and [`RemoteJwksBuilder::allow_http`] was not called.
    InsecureUrl,
    /// The fetch took longer than [`RemoteJwksBuilder::fetch_timeout`].
    Timeout,
    /// The request failed: connection, TLS, or reading the body.
    Http(BoxError),
    /// The server answered with a status other than 2xx.
    Status(StatusCode),
    /// The document exceeded the size limit.
    TooLarge,
    /// The document is not a valid JWKS.
    Keys(KeyError),
    /// A thread panicked while holding the fetcher's state.
    Poisoned,
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InsecureUrl => f.write_str("jwks url must be https (see allow_http)"),
            Self::Timeout => f.write_str("jwks fetch timed out"),
            Self::Http(_) => f.write_str("jwks request failed"),
            Self::Status(status) => write!(f, "jwks endpoint answered {status}"),
            Self::TooLarge => f.write_str("jwks document too large"),
            Self::Keys(_) => f.write_str("jwks document invalid"),
            Self::Poisoned => f.write_str("jwks fetcher state poisoned"),
        }
    }
}

impl std::error::Error for JwksError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Http(e) => Some(&**e),
            Self::Keys(e) => Some(e),
            _ => None,
        }
    }
}

/// Keys from a remote JWKS document, refreshed in the background.
///
/// Pass it to [`JwtAuthLayer::new`](crate::server::JwtAuthLayer::new). Cloning shares the keys and
/// the fetcher; the background task stops once every clone (and every layer using it) is
/// dropped.
///
/// # Example
///
/// ```no_run
/// use tower_jwt_refresh::keys::RemoteJwks;
/// use tower_jwt_refresh::server::JwtAuthLayer;
///
/// # async fn run() -> Result<(), tower_jwt_refresh::keys::JwksError> {
/// let jwks = RemoteJwks::builder("https://auth.example/.well-known/jwks.json".parse().unwrap())
///     .build()
///     .await?;
/// let layer = JwtAuthLayer::new(jwks).issuer("https://auth.example").audience("api");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RemoteJwks {
    shared: Arc<Shared>,
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.shared.url)
            .field("keys", &self.shared.keys.load().len())
            .finish_non_exhaustive()
    }
}

/// Configures a [`RemoteJwks`].
#[derive(Debug)]
#[must_use]
pub struct RemoteJwksBuilder {
    url: Uri,
    client: Option<HttpClient>,
    refresh_interval: Duration,
    min_refetch_interval: Duration,
    fetch_timeout: Duration,
    max_size: usize,
    allow_http: bool,
    allow_symmetric: bool,
}

impl RemoteJwks {
    /// Starts configuring keys fetched from `url` (`http` or `https`).
    pub fn builder(url: Uri) -> RemoteJwksBuilder {
        RemoteJwksBuilder {
            url,
            client: None,
            refresh_interval: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(5),
            max_size: 1024 * 1024,
            allow_http: false,
            allow_symmetric: false,
        }
    }

    /// The keys currently in use.
    pub fn current(&self) -> Arc<KeySet> {
        self.shared.keys.load_full()
    }

    /// How many fetches have completed (successful or not), the first one included.
    pub fn fetches(&self) -> u64 {
        self.shared.fetches()
    }

    /// Fetches the document now, replacing the keys on success.
    ///
    /// If a fetch that started later (the background refresh, or a refetch for an unknown
    /// `kid`) has stored its keys by the time this one finishes, this one's document is
    /// dropped as older, and `Ok` is returned: the keys are at least as recent.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        self.shared.fetch_and_store().await
    }
}

impl RemoteJwksBuilder {
    /// How often the keys are refetched in the background (default 5 minutes; at least 1 s).
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval.max(Duration::from_secs(1));
        self
    }

    /// The least time between two refetches caused by unknown `kid`s (default 10 s). Tokens
    /// with unknown `kid`s inside that window are refused without a fetch, so garbage tokens
    /// cannot make this process hammer the JWKS endpoint.
    pub fn min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }

    /// How long one fetch may take (default 5 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// The largest document accepted, in bytes (default 1 MiB).
    pub fn max_size(mut self, bytes: usize) -> Self {
        self.max_size = bytes;
        self
    }

    /// Allows a plain `http` URL. Anyone on the path of an unencrypted fetch can substitute
    /// their own keys, so this is for loopback tests only; `https` is required otherwise.
    pub fn allow_http(mut self) -> Self {
        self.allow_http = true;
        self
    }

    /// Accepts HMAC (`kty: oct`) keys from the document. A JWKS served at a URL is public, and
    /// anyone who can read a symmetric key can sign with it, so they are left out unless the
    /// URL is private to you.
    pub fn allow_symmetric_keys(mut self) -> Self {
        self.allow_symmetric = true;
        self
    }

    /// Fetches with `client` instead of the built-in hyper client (HTTP/1.1 with rustls and
    /// the webpki roots). The client gets a `GET` and must return the whole body.
    pub fn client<S>(mut self, client: S) -> Self
    where
        S: tower::Service<Request<Empty<Bytes>>, Response = Response<Bytes>, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.client = Some(BoxCloneSyncService::new(client));
        self
    }

    /// Fetches the document once, failing if that fetch fails, then starts the background
    /// refresh. Needs a Tokio runtime.
    pub async fn build(self) -> Result<RemoteJwks, JwksError> {
        crate::keys::backend::install_crypto_provider();
        if !self.allow_http && self.url.scheme() != Some(&http::uri::Scheme::HTTPS) {
            return Err(JwksError::InsecureUrl);
        }
        let client = match self.client {
            Some(client) => client,
            None => worker::default_client(self.max_size),
        };
        let shared = Arc::new(Shared {
            url: self.url,
            client,
            keys: Arc::new(ArcSwap::from_pointee(KeySet::new())),
            min_refetch_interval: self.min_refetch_interval,
            fetch_timeout: self.fetch_timeout,
            max_size: self.max_size,
            allow_symmetric: self.allow_symmetric,
            started: AtomicU64::new(0),
            stored: Mutex::default(),
            state: Mutex::default(),
            done: watch::channel(0).0,
            metrics: crate::metrics::Jwks::new(),
        });
        shared.fetch_and_store().await?;
        tokio::spawn(worker::refresh_loop(
            Arc::downgrade(&shared),
            self.refresh_interval,
        ));
        Ok(RemoteJwks { shared })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plain_http_url_needs_the_opt_in() {
        let url: Uri = "http://127.0.0.1:9/jwks.json".parse().unwrap();
        let err = RemoteJwks::builder(url).build().await.unwrap_err();
        assert!(matches!(err, JwksError::InsecureUrl), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_that_overruns_its_bound_is_a_timeout() {
        let never = tower::service_fn(|_: Request<Empty<Bytes>>| {
            std::future::pending::<Result<Response<Bytes>, BoxError>>()
        });
        let url: Uri = "https://auth.example/jwks.json".parse().unwrap();
        let err = RemoteJwks::builder(url)
            .client(never)
            .fetch_timeout(Duration::from_secs(1))
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, JwksError::Timeout), "{err}");
    }
}
