-- Prepended to the scripts that revoke (revoke.lua, rotate.lua): what they share.
--
-- Records the revocation in the feed, in the same script as the tombstone (before it): adds the
-- family to the index of recent revocations (a sorted set scored by when the entry may be
-- forgotten, in Redis's own milliseconds), drops the entries already past, and publishes
-- "<family> <ttl>" on the channel. No index key: no feed.
local function announce(family, ttl, index, publish, channel)
  if index == '' then return end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', string.format('%.0f', now))
  local ends = now + ttl * 1000
  local known = redis.call('ZSCORE', index, family)
  if not known or tonumber(known) < ends then
    redis.call('ZADD', index, string.format('%.0f', ends), family)
  end
  redis.call(publish, channel, family .. ' ' .. ttl)
end
