-- Prepended to the scripts that revoke (revoke.lua, rotate.lua): what they share.
--
-- Records the revocation in its bucket's feed, in the same script as the tombstone (before
-- it): adds the family to the bucket's index of recent revocations (a sorted set scored by
-- when the entry may be forgotten, in Redis's own milliseconds), drops the entries already
-- past, and publishes "<family> <ttl>" on the bucket's channel. The channel has the index's
-- name, so on Redis Cluster it maps to the index's slot, which is the family's: `SPUBLISH`
-- (sharded, `sharded` is '1') reaches the subscribers of that slot's shard; `PUBLISH` those
-- of a single Redis. Both scripts that include it pass the bucket's index as KEYS[4].
local function announce(family, ttl, sharded)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', string.format('%.0f', now))
  local ends = now + ttl * 1000
  local known = redis.call('ZSCORE', KEYS[4], family)
  if not known or tonumber(known) < ends then
    redis.call('ZADD', KEYS[4], string.format('%.0f', ends), family)
  end
  if sharded == '1' then
    redis.call('SPUBLISH', KEYS[4], family .. ' ' .. ttl)
  else
    redis.call('PUBLISH', KEYS[4], family .. ' ' .. ttl)
  end
end
