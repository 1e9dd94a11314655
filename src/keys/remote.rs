//! [`RemoteJwks`]: keys fetched from a JWKS URL and kept current (feature `jwks`).
//!
//! The key set is refreshed in the background on a fixed period. A token whose `kid` is
//! unknown triggers an early refetch: single-flight (every such request joins the one fetch in
//! flight) and rate-limited (at most one per [`RemoteJwksBuilder::min_refetch_interval`]).
//! Verification with known keys reads the current set lock-free and never waits on a fetch. A
//! failed fetch keeps the previous keys.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::ACCEPT;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use tokio::sync::watch;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::BoxError;
use crate::keys::key::{KeyError, KeySet};
use crate::keys::source::{KeySource, Refetch, RefetchWait};

type HttpClient = BoxCloneSyncService<Request<Empty<Bytes>>, Response<Bytes>, BoxError>;

/// Why a JWKS could not be fetched.
#[derive(Debug)]
#[non_exhaustive]
pub enum JwksError {
    /// The request failed: connection, TLS, or timeout.
    Http(BoxError),
    /// The server answered with a status other than 200.
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

struct Shared {
    url: Uri,
    client: HttpClient,
    keys: Arc<ArcSwap<KeySet>>,
    min_refetch_interval: Duration,
    fetch_timeout: Duration,
    max_size: usize,
    allow_symmetric: bool,
    /// The document the current keys came from.
    last_document: Mutex<Bytes>,
    state: Mutex<FetchState>,
    /// Counts finished fetches; waiters watch it.
    done: watch::Sender<u64>,
}

#[derive(Default)]
struct FetchState {
    in_flight: bool,
    last_refetch: Option<Instant>,
    fetches: u64,
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
        self.shared.state.lock().map_or(0, |s| s.fetches)
    }

    /// Fetches the document now, replacing the keys on success.
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
            return Err(JwksError::Http(
                "jwks url must be https (see allow_http)".into(),
            ));
        }
        let client = match self.client {
            Some(client) => client,
            None => default_client(self.max_size)?,
        };
        let shared = Arc::new(Shared {
            url: self.url,
            client,
            keys: Arc::new(ArcSwap::from_pointee(KeySet::new())),
            min_refetch_interval: self.min_refetch_interval,
            fetch_timeout: self.fetch_timeout,
            max_size: self.max_size,
            allow_symmetric: self.allow_symmetric,
            last_document: Mutex::default(),
            state: Mutex::new(FetchState::default()),
            done: watch::channel(0).0,
        });
        shared.fetch_and_store().await?;
        tokio::spawn(refresh_loop(Arc::downgrade(&shared), self.refresh_interval));
        Ok(RemoteJwks { shared })
    }
}

fn default_client(max_size: usize) -> Result<HttpClient, JwksError> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let service = tower::service_fn(move |req: Request<Empty<Bytes>>| {
        let client = client.clone();
        async move {
            let response = client.request(req).await?;
            let (parts, body) = response.into_parts();
            // Capped while reading, so a hostile endpoint cannot stream without end.
            let bytes = Limited::new(body, max_size).collect().await?.to_bytes();
            Ok::<_, BoxError>(Response::from_parts(parts, bytes))
        }
    });
    Ok(BoxCloneSyncService::new(service))
}

async fn refresh_loop(shared: Weak<Shared>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate, and the first fetch is done
    loop {
        ticker.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(error) = shared.fetch_and_store().await {
            tracing::warn!(%error, url = %shared.url, "jwks refresh failed; keeping the old keys");
        }
    }
}

impl Shared {
    async fn fetch_and_store(&self) -> Result<(), JwksError> {
        let result = tokio::time::timeout(self.fetch_timeout, self.fetch())
            .await
            .unwrap_or_else(|_| Err(JwksError::Http("jwks fetch timed out".into())));
        let result = result.and_then(|document| {
            let mut last = self.last_document.lock().map_err(|_| JwksError::Poisoned)?;
            // An unchanged document keeps the current set, and with it the cache's verdicts.
            if !last.is_empty() && *last == document {
                return Ok(());
            }
            let keys = self.parse(&document)?;
            tracing::debug!(keys = keys.len(), url = %self.url, "jwks changed");
            self.keys.store(Arc::new(keys));
            *last = document;
            Ok(())
        });
        if let Ok(mut state) = self.state.lock() {
            state.fetches += 1;
        }
        result
    }

    /// The raw document.
    async fn fetch(&self) -> Result<Bytes, JwksError> {
        let mut request = Request::get(self.url.clone())
            .body(Empty::new())
            .map_err(|e| JwksError::Http(e.into()))?;
        request
            .headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("application/json"));
        let response = self
            .client
            .clone()
            .oneshot(request)
            .await
            .map_err(JwksError::Http)?;
        if response.status() != StatusCode::OK {
            return Err(JwksError::Status(response.status()));
        }
        // The built-in client caps the body while reading; a custom one is checked here.
        let body = response.into_body();
        if body.len() > self.max_size {
            return Err(JwksError::TooLarge);
        }
        Ok(body)
    }

    fn parse(&self, document: &[u8]) -> Result<KeySet, JwksError> {
        let keys = KeySet::from_jwks(document).map_err(JwksError::Keys)?;
        let keys = if self.allow_symmetric {
            keys
        } else {
            let asymmetric = keys.iter().filter(|k| !k.is_symmetric()).cloned().collect();
            KeySet::try_from_keys(asymmetric).map_err(JwksError::Keys)?
        };
        // A document with no usable key is a broken fetch, not a revocation of every key.
        if keys.is_empty() {
            return Err(JwksError::Keys(KeyError::Unsupported(
                "jwks holds no usable signing key",
            )));
        }
        Ok(keys)
    }
}

/// Marks the refetch in flight as finished when dropped.
struct Finished(Arc<Shared>);

impl Drop for Finished {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.in_flight = false;
        }
        self.0.done.send_modify(|n| *n += 1);
    }
}

struct Refetcher(Arc<Shared>);

impl Refetch for Refetcher {
    fn unknown_kid(&self) -> Option<RefetchWait> {
        let shared = &self.0;
        // Subscribe first, so a fetch finishing right after the check below still wakes us.
        let mut done = shared.done.subscribe();
        let mut state = shared.state.lock().ok()?;
        if !state.in_flight {
            let now = Instant::now();
            if state
                .last_refetch
                .is_some_and(|last| now - last < shared.min_refetch_interval)
            {
                return None;
            }
            state.in_flight = true;
            state.last_refetch = Some(now);
            let shared = Arc::clone(shared);
            // Spawned, so a waiter that gives up cancels nothing for the others.
            tokio::spawn(async move {
                // Releases waiters even if the fetch panics or the task is cancelled.
                let _finished = Finished(Arc::clone(&shared));
                if let Err(error) = shared.fetch_and_store().await {
                    tracing::warn!(%error, url = %shared.url, "jwks refetch failed");
                }
            });
        }
        drop(state);
        Some(Box::pin(async move {
            let _ = done.changed().await;
        }))
    }
}

impl From<RemoteJwks> for KeySource {
    fn from(jwks: RemoteJwks) -> Self {
        let keys = Arc::clone(&jwks.shared.keys);
        KeySource::dynamic(keys, Arc::new(Refetcher(jwks.shared)))
    }
}
