//! The subscription worker: subscribes to the revocation channel, loads the index, applies
//! what is published, and starts again whenever the subscription is lost.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionLike;
use tokio::task::JoinHandle;

use crate::BoxError;
use crate::issuer::store::propagation::{Feed, LocalRevocations};

/// The bound on each step of a (re)connection: connect, subscribe, read the index.
const STEP_BOUND: Duration = Duration::from_secs(1);
/// How often the subscription is pinged (and the local set purged); a subscription that
/// does not answer within [`STEP_BOUND`] counts as lost.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// The first wait before reconnecting, doubled after each failed attempt up to
/// [`BACKOFF_MAX`], and reset once synchronised.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The running worker; dropping it (with the last clone of the store) stops it.
pub(crate) struct Worker(JoinHandle<()>);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the worker needs: where to subscribe, the store's own connection (for the index),
/// the names, and the set it keeps.
pub(crate) struct Context<C> {
    pub(crate) subscriber: redis::Client,
    pub(crate) connection: C,
    pub(crate) feed: Arc<Feed>,
    pub(crate) resync: Arc<redis::Script>,
    pub(crate) local: Arc<LocalRevocations>,
}

impl Worker {
    /// Starts the worker on the current Tokio runtime.
    pub(crate) fn spawn<C>(runtime: &tokio::runtime::Handle, context: Context<C>) -> Self
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        Self(runtime.spawn(run(context)))
    }
}

/// Runs sessions for ever: each ends when the subscription is lost, and the set is then
/// untrusted until the next session has synchronised it.
async fn run<C>(context: Context<C>)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let mut backoff = BACKOFF_MIN;
    loop {
        let cause = session(&context, &mut backoff).await;
        if context.local.set_synced(false) {
            tracing::warn!(
                %cause,
                "revocation feed lost: per-request checks until it is back and resynchronised"
            );
        } else {
            tracing::debug!(%cause, "revocation feed still down");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One subscription: subscribe first, then read the index (so that no revocation falls
/// between the two), then trust the set and apply messages until the subscription is lost.
/// Returns why it was lost.
async fn session<C>(context: &Context<C>, backoff: &mut Duration) -> BoxError
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let pubsub = match bounded(context.subscriber.get_async_pubsub()).await {
        Ok(pubsub) => pubsub,
        Err(error) => return error,
    };
    let (mut sink, mut stream) = pubsub.split();
    if let Err(error) = bounded(sink.subscribe(&context.feed.channel)).await {
        return error;
    }
    let mut connection = context.connection.clone();
    let mut resync = context.resync.prepare_invoke();
    resync.arg(&context.feed.index);
    let loaded = match bounded(resync.invoke_async::<Vec<String>>(&mut connection)).await {
        Ok(reply) => load_index(&context.local, &reply),
        Err(error) => return error,
    };
    let Some(loaded) = loaded else {
        return "malformed index reply".into();
    };
    context.local.set_synced(true);
    tracing::info!(loaded, "revocations synchronised");
    *backoff = BACKOFF_MIN;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return "subscription closed".into();
                };
                let Some((family, ttl)) = parse(message.get_payload_bytes()) else {
                    // Resynchronising recovers whatever this message was.
                    return "malformed revocation message".into();
                };
                context.local.insert(family, ttl);
            }
            _ = heartbeat.tick() => {
                if let Err(error) = bounded(sink.ping::<redis::Value>()).await {
                    return error;
                }
                context.local.purge();
            }
        }
    }
}

/// `future`, failing after [`STEP_BOUND`].
async fn bounded<T>(future: impl Future<Output = redis::RedisResult<T>>) -> Result<T, BoxError> {
    match tokio::time::timeout(STEP_BOUND, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err("redis did not answer in time".into()),
    }
}

/// A published revocation: `<family> <ttl in seconds>`.
pub(crate) fn parse(payload: &[u8]) -> Option<(&str, Duration)> {
    let (family, ttl) = std::str::from_utf8(payload).ok()?.split_once(' ')?;
    let ttl = ttl.parse::<u64>().ok()?;
    (!family.is_empty()).then_some((family, Duration::from_secs(ttl)))
}

/// Adds `resync.lua`'s reply (Redis's time, then each family and the time its entry ends,
/// in milliseconds) to `local`; returns how many entries it held, or `None` if malformed.
pub(crate) fn load_index(local: &LocalRevocations, reply: &[String]) -> Option<usize> {
    let (now, entries) = reply.split_first()?;
    let now = millis(now)?;
    if entries.len() % 2 != 0 {
        return None;
    }
    for entry in entries.chunks_exact(2) {
        let until = millis(&entry[1])?;
        local.insert(&entry[0], Duration::from_millis(until.saturating_sub(now)));
    }
    Some(entries.len() / 2)
}

/// A time in milliseconds as Redis writes it (an integer, or a score, which may be written
/// as a float).
fn millis(text: &str) -> Option<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return Some(ms);
    }
    let ms = text.parse::<f64>().ok()?;
    // `as` saturates; NaN is refused.
    (ms.is_finite() && ms >= 0.0).then_some(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_or_are_refused() {
        assert_eq!(parse(b"fam 360"), Some(("fam", Duration::from_secs(360))));
        for bad in [
            &b"fam"[..],
            b" 360",
            b"fam -1",
            b"fam 1.5",
            b"fam x",
            b"\xff 1",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_index_counts_from_redis_time() {
        let local = LocalRevocations::new();
        let reply = ["1000000", "a", "1060000", "b", "1.0005e6"].map(String::from);
        assert_eq!(load_index(&local, &reply), Some(2));
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(local.contains("a") && local.contains("b"));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(local.contains("a") && !local.contains("b"));
        tokio::time::advance(Duration::from_millis(59_500)).await;
        assert!(!local.contains("a"));
        for bad in [&[][..], &["x".into()], &["1".into(), "a".into()]] {
            assert_eq!(load_index(&local, bad), None);
        }
    }
}
