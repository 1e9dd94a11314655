//! [`RedisStore::wait_for_replicas`](super::RedisStore::wait_for_replicas): a script followed
//! by `WAIT` in one pipeline.

use redis::aio::ConnectionLike;
use redis::{ErrorKind, ScriptInvocation, ServerErrorKind};

/// What [`RedisStore::wait_for_replicas`](super::RedisStore::wait_for_replicas) asks of every
/// write: `WAIT replicas timeout_ms`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Replication {
    pub(super) replicas: usize,
    pub(super) timeout_ms: u64,
}

/// Runs `script` and then `WAIT` in one pipeline, so both go to the node that owns the keys,
/// on one connection (`WAIT` counts the replicas that have that connection's writes). Loads
/// the script first if the node does not know it.
pub(super) async fn replicated<T, C>(
    connection: &mut C,
    script: &ScriptInvocation<'_>,
    replication: Replication,
) -> redis::RedisResult<(T, usize)>
where
    T: redis::FromRedisValue,
    C: ConnectionLike,
{
    let mut pipe = redis::pipe();
    pipe.invoke_script(script)
        .cmd("WAIT")
        .arg(replication.replicas)
        .arg(replication.timeout_ms);
    match pipe.query_async(connection).await {
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.load_async(connection).await?;
            pipe.query_async(connection).await
        }
        reply => reply,
    }
}
