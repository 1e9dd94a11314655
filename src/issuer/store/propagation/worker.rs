//! The subscription worker: subscribes to every bucket's revocation channel, loads the
//! indexes, applies what is published, and starts again whenever the subscription is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{ProtocolVersion, PushInfo, PushKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::BoxError;
use crate::issuer::store::propagation::{Feed, LocalRevocations, Source};
use crate::issuer::store::redis::cluster_client;

/// The bound on each step of a (re)connection: connect, subscribe, read an index.
const STEP_BOUND: Duration = Duration::from_secs(1);
/// How often the subscription is pinged (and the local set purged); a subscription that
/// does not answer within [`STEP_BOUND`] counts as lost.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// The first wait before reconnecting, doubled after each failed attempt up to
/// [`BACKOFF_MAX`], and reset once synchronised.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The pushes a cluster subscription may queue before the worker reads them; one more is a
/// lost message, which ends the session.
const PUSH_QUEUE: usize = 4096;

/// The running worker; dropping it (with the last clone of the store) stops it.
pub(crate) struct Worker(JoinHandle<()>);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the worker needs: where to subscribe, the store's own connection (for the indexes),
/// the names, and the set it keeps.
pub(crate) struct Context<C> {
    pub(crate) subscriber: Source,
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

/// One subscription: subscribe to every bucket first, then read every index (so that no
/// revocation falls between the two), then trust the set and apply messages until the
/// subscription is lost. Returns why it was lost.
async fn session<C>(context: &Context<C>, backoff: &mut Duration) -> BoxError
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let mut link = match Link::open(context).await {
        Ok(link) => link,
        Err(error) => return error,
    };
    let loaded = match resync_all(context).await {
        Ok(loaded) => loaded,
        Err(error) => return error,
    };
    // A push that overflowed while the indexes were read is a gap the read may not cover.
    if let Err(error) = link.intact() {
        return error;
    }
    context.local.set_synced(true);
    tracing::info!(loaded, "revocations synchronised");
    *backoff = BACKOFF_MIN;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            revocation = link.next() => match revocation {
                Ok((family, ttl)) => context.local.insert(&family, ttl),
                Err(error) => return error,
            },
            _ = heartbeat.tick() => {
                if let Err(error) = link.ping().await {
                    return error;
                }
                context.local.purge();
            }
        }
    }
}

/// Reads every bucket's index into the set; returns how many entries they held.
async fn resync_all<C>(context: &Context<C>) -> Result<usize, BoxError>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let mut connection = context.connection.clone();
    let mut loaded = 0;
    for index in context.feed.indexes() {
        let resync = context.resync.key(index);
        let reply = bounded(resync.invoke_async::<Vec<String>>(&mut connection)).await?;
        loaded += load_index(&context.local, &reply).ok_or("malformed index reply")?;
    }
    Ok(loaded)
}

/// A live subscription to every bucket's channel.
enum Link {
    /// One pub/sub connection to a single Redis.
    Single {
        sink: PubSubSink,
        stream: PubSubStream,
    },
    /// A RESP3 cluster connection holding a sharded subscription on each bucket's node, its
    /// pushes in a bounded queue.
    Cluster {
        connection: ClusterConnection,
        pushes: mpsc::Receiver<PushInfo>,
        overflowed: Arc<AtomicBool>,
    },
}

impl Link {
    /// Connects and subscribes to every bucket, each step bounded.
    async fn open<C>(context: &Context<C>) -> Result<Self, BoxError> {
        let channels = context.feed.indexes();
        match &context.subscriber {
            Source::Single(client) => {
                let (mut sink, stream) = bounded(client.get_async_pubsub()).await?.split();
                bounded(sink.subscribe(channels)).await?;
                Ok(Self::Single { sink, stream })
            }
            Source::Cluster(urls) => {
                let (sender, pushes) = mpsc::channel(PUSH_QUEUE);
                let overflowed = Arc::new(AtomicBool::new(false));
                let (flag, local) = (Arc::clone(&overflowed), Arc::clone(&context.local));
                let push = move |info: PushInfo| {
                    if let Err(mpsc::error::TrySendError::Full(_)) = sender.try_send(info) {
                        // Distrust the set at once, not when the worker next looks.
                        flag.store(true, Ordering::Release);
                        local.set_synced(false);
                    }
                    Ok::<(), std::convert::Infallible>(())
                };
                let client = cluster_client(urls)
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(push)
                    .build()?;
                let mut connection = bounded(client.get_async_connection()).await?;
                // One channel at a time: each is in its own slot, possibly on its own node.
                for channel in channels {
                    bounded(connection.ssubscribe(channel)).await?;
                }
                Ok(Self::Cluster {
                    connection,
                    pushes,
                    overflowed,
                })
            }
        }
    }

    /// The next revocation published, or why the subscription is no longer whole.
    async fn next(&mut self) -> Result<(String, Duration), BoxError> {
        match self {
            Self::Single { stream, .. } => {
                let message = stream.next().await.ok_or("subscription closed")?;
                // Resynchronising recovers whatever a malformed message was.
                let (family, ttl) =
                    parse(message.get_payload_bytes()).ok_or("malformed revocation message")?;
                Ok((family.to_owned(), ttl))
            }
            Self::Cluster {
                pushes, overflowed, ..
            } => loop {
                let push = pushes.recv().await.ok_or("cluster subscription closed")?;
                if overflowed.load(Ordering::Acquire) {
                    return Err("revocation messages overflowed the queue".into());
                }
                match push.kind {
                    PushKind::SMessage => {
                        let payload = match push.data.get(1) {
                            Some(redis::Value::BulkString(bytes)) => bytes.as_slice(),
                            _ => return Err("malformed revocation message".into()),
                        };
                        let (family, ttl) = parse(payload).ok_or("malformed revocation message")?;
                        return Ok((family.to_owned(), ttl));
                    }
                    PushKind::Disconnection => {
                        return Err("a cluster node's connection was lost".into());
                    }
                    // A node that no longer owns a bucket's slot (resharding) drops its
                    // subscribers.
                    PushKind::SUnsubscribe => {
                        return Err("a cluster node dropped a subscription".into());
                    }
                    // Confirmations, and anything else, carry no revocation.
                    _ => {}
                }
            },
        }
    }

    /// Fails if a push was lost.
    fn intact(&self) -> Result<(), BoxError> {
        match self {
            Self::Cluster { overflowed, .. } if overflowed.load(Ordering::Acquire) => {
                Err("revocation messages overflowed the queue".into())
            }
            _ => Ok(()),
        }
    }

    /// Checks, bounded, that the subscription's connections still answer: the pub/sub
    /// connection, or every primary's.
    async fn ping(&mut self) -> Result<(), BoxError> {
        self.intact()?;
        match self {
            Self::Single { sink, .. } => bounded(sink.ping::<redis::Value>()).await.map(drop),
            Self::Cluster { connection, .. } => {
                let every_primary = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                bounded(connection.route_command(redis::cmd("PING"), every_primary))
                    .await
                    .map(drop)
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
