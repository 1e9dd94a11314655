-- Reads the index of recent revocations, for an instance (re)synchronising its local set.
-- KEYS: none (the index is an argument, as in revoke.lua). ARGV: the index key. Drops the
-- entries already past, then replies {now, family, until, family, until, ...}: Redis's time
-- and each family with the time its entry may be forgotten, in milliseconds.
local index = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cut = string.format('%.0f', now)
redis.call('ZREMRANGEBYSCORE', index, '-inf', cut)
local reply = {cut}
local entries = redis.call('ZRANGEBYSCORE', index, '(' .. cut, '+inf', 'WITHSCORES')
for i = 1, #entries do reply[#reply + 1] = entries[i] end
return reply
