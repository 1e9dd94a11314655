-- Revokes a family, if the presented hash (when given) is one of its tokens. KEYS: family,
-- tombstone, sealed successor, the bucket's index of revocations (announce.lua), all in the
-- bucket's hash slot. ARGV: the hash or '', the tombstone TTL, the family id, '1' to publish
-- with SPUBLISH (Redis Cluster). Replies 1 when a family was revoked, 0 otherwise.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local h = ARGV[1]
if h ~= '' then
  local f = redis.call('HMGET', KEYS[1], 'cur', 'prev', 'hist')
  if not (h == f[1] or h == f[2] or string.find(' ' .. f[3] .. ' ', ' ' .. h .. ' ', 1, true)) then
    return 0
  end
end
-- Announced first: if that fails, the script stops before it has written anything.
announce(ARGV[3], tonumber(ARGV[2]), ARGV[4])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
redis.call('DEL', KEYS[1], KEYS[3])
return 1
