//! The fetcher behind a [`RemoteJwks`](super::RemoteJwks): the background refresh, and the
//! single-flight, rate-limited refetch that an unknown `kid` starts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::ACCEPT;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use tokio::sync::watch;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::BoxError;
use crate::keys::remote::{HttpClient, JwksError, RemoteJwks};
use crate::keys::set::KeySet;
use crate::keys::source::{KeySource, Refetch, RefetchWait};

/// What every clone of a [`RemoteJwks`] and its background task share.
pub(super) struct Shared {
    pub(super) url: Uri,
    pub(super) client: HttpClient,
    pub(super) keys: Arc<ArcSwap<KeySet>>,
    pub(super) min_refetch_interval: Duration,
    pub(super) fetch_timeout: Duration,
    pub(super) max_size: usize,
    pub(super) allow_symmetric: bool,
    /// The generation of the latest fetch started; each fetch takes the next one.
    pub(super) started: AtomicU64,
    /// The fetch the current keys came from.
    pub(super) stored: Mutex<Stored>,
    pub(super) state: Mutex<FetchState>,
    /// Counts finished fetches; waiters watch it.
    pub(super) done: watch::Sender<u64>,
    pub(super) metrics: crate::metrics::Jwks,
}

/// What the last fetch to store brought, and when it started.
#[derive(Default)]
pub(super) struct Stored {
    /// The fetch's generation: a fetch that started earlier stores nothing.
    generation: u64,
    /// The document the current keys came from.
    document: Bytes,
}

#[derive(Default)]
pub(super) struct FetchState {
    in_flight: bool,
    last_refetch: Option<Instant>,
    fetches: u64,
}

/// The built-in client: HTTP/1.1 with rustls and the webpki roots, the body capped at
/// `max_size` while it is read.
pub(super) fn default_client(max_size: usize) -> HttpClient {
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
    BoxCloneSyncService::new(service)
}

/// Refetches every `interval` until the last [`RemoteJwks`] is dropped.
pub(super) async fn refresh_loop(shared: Weak<Shared>, interval: Duration) {
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
    pub(super) fn fetches(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.fetches)
    }

    /// Fetches the document and, if it changed and is valid, makes its keys current.
    ///
    /// Fetches are ordered by when they started: one that finishes after a later one has
    /// stored (a slow fetch begun before a rotation) is dropped, so it cannot bring back the
    /// keys the later one removed.
    pub(super) async fn fetch_and_store(&self) -> Result<(), JwksError> {
        let generation = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        let result = tokio::time::timeout(self.fetch_timeout, self.fetch())
            .await
            .unwrap_or(Err(JwksError::Timeout));
        let result = result.and_then(|document| self.store(generation, document));
        self.metrics.fetched(&result);
        if let Ok(mut state) = self.state.lock() {
            state.fetches += 1;
        }
        result
    }

    fn store(&self, generation: u64, document: Bytes) -> Result<(), JwksError> {
        let mut stored = self.stored.lock().map_err(|_| JwksError::Poisoned)?;
        if generation <= stored.generation {
            tracing::debug!(url = %self.url, "jwks fetch overtaken by a later one; dropped");
            return Ok(());
        }
        // An unchanged document keeps the current set, and with it the cache's verdicts.
        if stored.document.is_empty() || stored.document != document {
            let keys = self.parse(&document)?;
            tracing::debug!(keys = keys.len(), url = %self.url, "jwks changed");
            self.keys.store(Arc::new(keys));
            stored.document = document;
        }
        stored.generation = generation;
        Ok(())
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
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status()));
        }
        // The built-in client caps the body while reading; a custom one is checked here.
        let body = response.into_body();
        if body.len() > self.max_size {
            return Err(JwksError::TooLarge);
        }
        Ok(body)
    }

    /// The document's usable keys. One key this crate cannot use is left out (and logged),
    /// so that it cannot hold back a rotation; a document with no usable key at all is a
    /// broken fetch, not a revocation of every key.
    fn parse(&self, document: &[u8]) -> Result<KeySet, JwksError> {
        KeySet::from_jwks_admitting(document, self.allow_symmetric).map_err(JwksError::Keys)
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

/// Starts (or joins) a refetch when a token names an unknown `kid`.
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
            shared.metrics.refetch();
            spawn_refetch(Arc::clone(shared));
        }
        drop(state);
        Some(Box::pin(async move {
            let _ = done.changed().await;
        }))
    }
}

/// Spawned, so a waiter that gives up cancels nothing for the others.
fn spawn_refetch(shared: Arc<Shared>) {
    tokio::spawn(async move {
        // Releases waiters even if the fetch panics or the task is cancelled.
        let _finished = Finished(Arc::clone(&shared));
        if let Err(error) = shared.fetch_and_store().await {
            tracing::warn!(%error, url = %shared.url, "jwks refetch failed");
        }
    });
}

impl From<RemoteJwks> for KeySource {
    fn from(jwks: RemoteJwks) -> Self {
        let keys = Arc::clone(&jwks.shared.keys);
        KeySource::dynamic(keys, Arc::new(Refetcher(jwks.shared)))
    }
}
