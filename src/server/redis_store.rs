//! [`RedisStore`]: refresh-token families in Redis, shared by every instance (feature `redis`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::revoke::{RevocationCheck, TokenStatus};
use super::store::{
    FamilyInfo, NewFamily, REUSE_HISTORY, RefreshStore, Rotation, RotationOutcome, StoreError,
};

/// The family hash: its data, current/previous token hashes, and history. The key expires
/// a minute after the family would.
const CREATE: &str = r"
local now, exp, idle = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'cur', ARGV[1], 'sub', ARGV[2], 'claims', ARGV[3], 'exp', exp,
  'idle', idle, 'used', now, 'prev', '', 'sealed', '', 'rotated', 0, 'hist', '')
local ends = exp
if idle > 0 and now + idle < ends then ends = now + idle end
redis.call('EXPIRE', KEYS[1], math.max(1, ends - now) + 60)
return 1
";

/// One atomic rotation: check, rotate, retry within grace, or detect reuse.
const ROTATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'revoked'} end
  return {'unknown'}
end
local f = redis.call('HMGET', KEYS[1], 'sub', 'claims', 'exp', 'idle', 'used', 'cur', 'prev',
  'sealed', 'rotated', 'hist')
local presented, now = ARGV[1], tonumber(ARGV[4])
local exp, idle, used = tonumber(f[3]), tonumber(f[4]), tonumber(f[5])
local ends = exp
if idle > 0 and used + idle < ends then ends = used + idle end
if now >= ends then
  redis.call('DEL', KEYS[1])
  return {'expired'}
end
if presented == f[6] then
  local hist = f[10]
  if f[7] ~= '' then
    if hist == '' then hist = f[7] else hist = f[7] .. ' ' .. hist end
    hist = string.sub(hist, 1, tonumber(ARGV[7]))
  end
  redis.call('HSET', KEYS[1], 'cur', ARGV[2], 'prev', presented, 'sealed', ARGV[3],
    'rotated', now, 'used', now, 'hist', hist)
  local next_end = exp
  if idle > 0 and now + idle < next_end then next_end = now + idle end
  redis.call('EXPIRE', KEYS[1], math.max(1, next_end - now) + 60)
  return {'rotated', f[1], f[2]}
end
if presented == f[7] and tonumber(ARGV[5]) > 0 and now - tonumber(f[9]) <= tonumber(ARGV[5]) then
  return {'retried', f[1], f[2], f[8]}
end
if presented == f[7] or string.find(' ' .. f[10] .. ' ', ' ' .. presented .. ' ', 1, true) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[6])
  return {'reused'}
end
return {'unknown'}
";

/// Revokes a family, if the presented hash (when given) is one of its tokens.
const REVOKE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local h = ARGV[1]
if h ~= '' then
  local f = redis.call('HMGET', KEYS[1], 'cur', 'prev', 'hist')
  if not (h == f[1] or h == f[2] or string.find(' ' .. f[3] .. ' ', ' ' .. h .. ' ', 1, true)) then
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
return 1
";

/// Characters of history kept: [`REUSE_HISTORY`] hashes of 43 characters, space-separated.
const HISTORY_CHARS: usize = REUSE_HISTORY * 44 - 1;

/// Refresh-token families in Redis, for several instances of a service.
///
/// Every operation is one round trip: a server-side Lua script for create, rotate and revoke
/// (so rotation keeps reuse detection atomically, never check-then-set), one `EXISTS` for
/// the per-request revocation check. Keys expire with their family. A family's keys share
/// one hash tag (`<prefix>:{<family>}`), so the store works on Redis Cluster too. It talks
/// through a reconnecting connection manager: while Redis is down operations fail fast with
/// [`StoreError`] (the refresh endpoint answers 503), and it recovers by itself.
///
/// While Redis is unreachable or slower than [`check_timeout`](Self::check_timeout), the
/// revocation check lets access tokens through (it fails open, logging at debug level), so
/// that verification keeps working; a revocation made before the outage is enforced again once
/// Redis answers.
///
/// Times come from the issuer (its clock), so instances should keep their clocks in sync, as
/// JWT expiry already requires.
#[derive(Clone)]
pub struct RedisStore<C = ConnectionManager> {
    connection: C,
    prefix: Arc<str>,
    scripts: Arc<[Script; 3]>,
    check_timeout: Duration,
}

impl<C> fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`), with one-second connection and response
    /// timeouts. Fails if Redis cannot be reached now.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::new)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(1))
            .set_number_of_retries(2)
            .set_max_delay(1000);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(StoreError::new)?;
        Ok(Self::with_connection(connection))
    }
}

impl<C> RedisStore<C> {
    /// Uses an existing connection: a configured `ConnectionManager`, or (with the `redis`
    /// crate's `cluster-async` feature) a Redis Cluster connection. Configure its timeouts:
    /// every wait of the store but the revocation check is bounded by them.
    pub fn with_connection(connection: C) -> Self {
        Self {
            connection,
            prefix: Arc::from("tjr"),
            scripts: Arc::new([
                Script::new(CREATE),
                Script::new(ROTATE),
                Script::new(REVOKE),
            ]),
            check_timeout: Duration::from_millis(250),
        }
    }

    /// The key prefix (default `tjr`), to share one Redis between applications.
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// How long the per-request revocation check may wait for Redis before it lets the token
    /// through (default 250 ms). Keep it well under the verifier's `io_timeout`, or an outage
    /// turns into 503s on every request while the client reconnects.
    #[must_use]
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// The family's key and its tombstone's, sharing the hash tag `{family}`.
    fn keys(&self, family: &str) -> (String, String) {
        let key = format!("{}:{{{family}}}", self.prefix);
        let tombstone = format!("{key}:revoked");
        (key, tombstone)
    }
}

impl<C> RefreshStore for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn create(&self, family: NewFamily<'_>) -> Result<(), StoreError> {
        let (key, _) = self.keys(family.id);
        let mut connection = self.connection.clone();
        let _: i64 = self.scripts[0]
            .key(key)
            .arg(family.token_hash)
            .arg(family.subject)
            .arg(family.claims)
            .arg(family.now)
            .arg(family.expires_at)
            .arg(family.idle_timeout)
            .invoke_async(&mut connection)
            .await
            .map_err(StoreError::new)?;
        Ok(())
    }

    async fn rotate(&self, r: Rotation<'_>) -> Result<RotationOutcome, StoreError> {
        let (key, tombstone) = self.keys(r.family);
        let mut connection = self.connection.clone();
        let reply: Vec<String> = self.scripts[1]
            .key(key)
            .key(tombstone)
            .arg(r.presented)
            .arg(r.successor)
            .arg(r.sealed_successor)
            .arg(r.now)
            .arg(r.grace)
            .arg(r.tombstone_ttl.max(1))
            .arg(HISTORY_CHARS)
            .invoke_async(&mut connection)
            .await
            .map_err(StoreError::new)?;
        let mut reply = reply.into_iter();
        let outcome = match reply.next().as_deref() {
            Some("rotated") => {
                let (Some(subject), Some(claims)) = (reply.next(), reply.next()) else {
                    return Err(StoreError::new("malformed rotate reply"));
                };
                RotationOutcome::Rotated(FamilyInfo::new(subject, claims))
            }
            Some("retried") => {
                let (Some(subject), Some(claims), Some(sealed)) =
                    (reply.next(), reply.next(), reply.next())
                else {
                    return Err(StoreError::new("malformed rotate reply"));
                };
                RotationOutcome::Retried(FamilyInfo::new(subject, claims), sealed)
            }
            Some("reused") => RotationOutcome::Reused,
            Some("expired") => RotationOutcome::Expired,
            Some("revoked") => RotationOutcome::Revoked,
            Some("unknown") => RotationOutcome::Unknown,
            _ => return Err(StoreError::new("malformed rotate reply")),
        };
        Ok(outcome)
    }

    async fn revoke(
        &self,
        family: &str,
        token_hash: Option<&str>,
        tombstone_ttl: u64,
    ) -> Result<bool, StoreError> {
        let (key, tombstone) = self.keys(family);
        let mut connection = self.connection.clone();
        let revoked: i64 = self.scripts[2]
            .key(key)
            .key(tombstone)
            .arg(token_hash.unwrap_or(""))
            .arg(tombstone_ttl.max(1))
            .invoke_async(&mut connection)
            .await
            .map_err(StoreError::new)?;
        Ok(revoked == 1)
    }

    fn is_revoked(&self, family: &str) -> RevocationCheck {
        let (_, tombstone) = self.keys(family);
        let mut connection = self.connection.clone();
        let bound = self.check_timeout;
        RevocationCheck::pending(async move {
            match tokio::time::timeout(bound, connection.exists::<_, bool>(tombstone)).await {
                Ok(Ok(true)) => Ok(TokenStatus::Revoked),
                Ok(Ok(false)) => Ok(TokenStatus::Active),
                Ok(Err(error)) => {
                    tracing::debug!(%error, "redis unreachable; revocation check fails open");
                    Ok(TokenStatus::Active)
                }
                Err(_) => {
                    tracing::debug!("redis slow; revocation check fails open");
                    Ok(TokenStatus::Active)
                }
            }
        })
    }
}
