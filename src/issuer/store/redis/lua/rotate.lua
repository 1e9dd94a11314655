-- One atomic rotation. KEYS: family, tombstone, sealed successor, the bucket's index of
-- revocations (as in revoke.lua). ARGV: presented hash, successor hash, sealed successor, now,
-- grace, tombstone TTL, history length in characters, family id, '1' to publish with SPUBLISH,
-- the thumbprint of the request's DPoP proof key ('' for none).
--
-- The grace window: the previous token presented at `now` with rotated <= now <= rotated +
-- grace (inclusive, in the issuer's whole seconds) gets the sealed successor again.
--
-- Replies {'rotated', sub, claims}, {'retried', sub, claims, sealed, current hash},
-- {'reused'}, {'expired'}, {'revoked'}, {'unknown'} or {'wrong_key'} (a bound family, and not
-- its key: nothing changes). A revocation is announced first, then
-- its tombstone written, then the family deleted, so an error half-way never leaves a family
-- gone without its tombstone, nor a tombstone unannounced.
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'revoked'} end
  return {'unknown'}
end
local f = redis.call('HMGET', KEYS[1], 'sub', 'claims', 'exp', 'idle', 'used', 'cur', 'prev',
  'rotated', 'hist', 'jkt')
local presented, now, grace, keep = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local in_history = string.find(' ' .. f[9] .. ' ', ' ' .. presented .. ' ', 1, true)
if not (presented == f[6] or presented == f[7] or in_history) then
  return {'unknown'}
end
-- A family created before binding existed has no `jkt` field (false): unbound.
if f[10] and f[10] ~= '' and f[10] ~= ARGV[10] then
  return {'wrong_key'}
end
local exp, idle, used = tonumber(f[3]), tonumber(f[4]), tonumber(f[5])
local ends = exp
if idle > 0 and used + idle < ends then ends = used + idle end
if now >= ends then
  announce(ARGV[8], keep, ARGV[9])
  redis.call('SET', KEYS[2], '1', 'EX', keep)
  redis.call('DEL', KEYS[1], KEYS[3])
  return {'expired'}
end
if presented == f[7] and ARGV[2] == f[6] then
  return {'rotated', f[1], f[2]}
end
if presented == f[6] then
  local hist = f[9]
  if f[7] ~= '' then
    if hist == '' then hist = f[7] else hist = f[7] .. ' ' .. hist end
    hist = string.sub(hist, 1, tonumber(ARGV[7]))
  end
  redis.call('HSET', KEYS[1], 'cur', ARGV[2], 'prev', presented, 'rotated', now, 'used', now,
    'hist', hist)
  if grace > 0 then
    -- Kept one second past the window: `now` is the issuer's whole second, Redis expires in
    -- real time, and a retry anywhere in second `now + grace` is inside the window.
    redis.call('SET', KEYS[3], ARGV[3], 'EX', grace + 1)
  else
    redis.call('DEL', KEYS[3])
  end
  local next_end = exp
  if idle > 0 and now + idle < next_end then next_end = now + idle end
  redis.call('EXPIRE', KEYS[1], math.max(1, next_end - now) + keep)
  return {'rotated', f[1], f[2]}
end
local rotated = tonumber(f[8])
if presented == f[7] and now >= rotated and now - rotated <= grace then
  local sealed = redis.call('GET', KEYS[3])
  if sealed then return {'retried', f[1], f[2], sealed, f[6]} end
end
announce(ARGV[8], keep, ARGV[9])
redis.call('SET', KEYS[2], '1', 'EX', keep)
redis.call('DEL', KEYS[1], KEYS[3])
return {'reused'}
