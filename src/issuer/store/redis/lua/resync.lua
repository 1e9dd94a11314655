-- Reads one bucket's index of recent revocations, for an instance (re)synchronising its local
-- set. KEYS: the index. Drops the entries already past, then replies
-- {now, family, until, family, until, ...}: Redis's time and each family with the time its
-- entry may be forgotten, in milliseconds.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cut = string.format('%.0f', now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cut)
local reply = {cut}
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. cut, '+inf', 'WITHSCORES')
for i = 1, #entries do reply[#reply + 1] = entries[i] end
return reply
