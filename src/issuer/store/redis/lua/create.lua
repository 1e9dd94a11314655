-- Records a new family. KEYS: family. ARGV: token hash, subject, claims, now, absolute end,
-- idle timeout (0 for none), tombstone TTL, the thumbprint of the key its tokens are bound to
-- (DPoP; '' for none).
--
-- The family hash holds its data, the current and previous token hashes, and the history.
-- The key outlives the family by the tombstone TTL, so that a logout near its end still
-- revokes it.
local now, exp, idle, keep = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local ends = exp
if idle > 0 and now + idle < ends then ends = now + idle end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'cur', ARGV[1], 'sub', ARGV[2], 'claims', ARGV[3], 'exp', exp,
  'idle', idle, 'used', now, 'prev', '', 'rotated', 0, 'hist', '', 'jkt', ARGV[8])
redis.call('EXPIRE', KEYS[1], math.max(1, ends - now) + keep)
return 1
