-- Take, move, refresh or make permanent one registration's seat hold, atomically: the seat
-- count never goes below zero and a move returns the old site's seat in the same step.
-- KEYS[1]  holds: hash registration -> site id
-- KEYS[2]  hold expiry: zset registration scored by expiry ms (permanent holds are absent)
-- KEYS[3]  last event: hash registration -> number of its latest event
-- KEYS[4]  event counter of the exam
-- KEYS[5]  holds stream of the exam
-- KEYS[6]  seat rights: hash registration -> version, positive while approved, negative once revoked
-- KEYS[7]  site_left of the wanted site
-- KEYS[8]  site_left of the site held now (only when ARGV[3] is not '')
-- ARGV[1]  registration id
-- ARGV[2]  wanted site id
-- ARGV[3]  site the caller believes is held now ('' = none); checked, never trusted
-- ARGV[4]  now_ms
-- ARGV[5]  ttl_ms; 0 = permanent (paid: the sweeper never releases it)
-- ARGV[6]  '1': an expiring hold needs a granted seat right (the registration is approved)
-- Returns  {code, site, expires_at_ms, event}, strings after the integer code:
--   1  held: site = the site held before ('' when none), expires_at_ms ('' = permanent), event number
--   0  the wanted site has no seat left (nothing written)
--  -1  the wanted site has no inventory key (not loaded; nothing written)
--  -2  the held site is not ARGV[3]: site = the held site ('' = none); call again with it
--  -3  the hold is permanent and ARGV[5] asks for an expiring one: site = the held site
--  -4  ARGV[6] is '1' and the registration has no seat right (nothing written)
-- Every success appends to the stream: type hold|move, registration, site, old_site,
-- expires_at_ms, event. Refreshing the same site is a 'hold' with old_site = site.
--#include _hold_event.lua
local reg, want, believed = ARGV[1], ARGV[2], ARGV[3]
local ttl = tonumber(ARGV[5])
if ARGV[6] == '1' and ttl > 0 and tonumber(redis.call('HGET', KEYS[6], reg) or '0') <= 0 then
  return {-4, ''}
end
local cur = redis.call('HGET', KEYS[1], reg) or ''
if cur ~= believed then
  return {-2, cur}
end
if cur ~= '' and ttl > 0 and not redis.call('ZSCORE', KEYS[2], reg) then
  return {-3, cur}
end
if cur ~= want then
  local left = redis.call('GET', KEYS[7])
  if not left then
    return {-1, ''}
  end
  if tonumber(left) <= 0 then
    return {0, ''}
  end
  redis.call('DECR', KEYS[7])
  -- a missing key is left missing: the inventory rebuild counts this seat as free from PostgreSQL
  if cur ~= '' and redis.call('EXISTS', KEYS[8]) == 1 then
    redis.call('INCR', KEYS[8])
  end
  redis.call('HSET', KEYS[1], reg, want)
end
local expires = ''
if ttl > 0 then
  expires = string.format('%.0f', tonumber(ARGV[4]) + ttl)
  redis.call('ZADD', KEYS[2], expires, reg)
else
  redis.call('ZREM', KEYS[2], reg)
end
local kind = 'hold'
if cur ~= '' and cur ~= want then
  kind = 'move'
end
local event = record_event(kind, reg, want, cur, expires, ARGV[4])
return {1, cur, expires, event}
