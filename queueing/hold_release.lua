-- Release one registration's seat hold (DELETE seat), returning the seat, atomically.
-- KEYS[1]  holds: hash registration -> site id
-- KEYS[2]  hold expiry: zset registration scored by expiry ms
-- KEYS[3]  last event: hash registration -> number of its latest event
-- KEYS[4]  event counter of the exam
-- KEYS[5]  holds stream of the exam
-- KEYS[6]  seat rights: hash registration -> version, positive while approved, negative once revoked
-- KEYS[7]  site_left of the site held now (only when ARGV[2] is not '')
-- ARGV[1]  registration id
-- ARGV[2]  site the caller believes is held now ('' = none); checked, never trusted
-- ARGV[3]  now_ms
-- ARGV[4]  force: '1' releases a permanent (paid) hold too, '0' refuses it
-- ARGV[5]  registration version revoking its seat right ('' = none): recorded as -version unless
--          the right already names a later version, so a grant arriving late cannot undo it
-- Returns  {code, site, event}:
--   1  released: site = the released site, event number
--   0  no hold (nothing written)
--  -2  the held site is not ARGV[2]: site = the held site; call again with it
--  -3  the hold is permanent and ARGV[4] is not '1': site = the held site
-- A release appends to the stream: type release, registration, site '', old_site,
-- expires_at_ms '', event.
--#include _hold_event.lua
local reg, believed = ARGV[1], ARGV[2]
if ARGV[5] ~= '' then
  local revoked = tonumber(ARGV[5])
  if math.abs(tonumber(redis.call('HGET', KEYS[6], reg) or '0')) < revoked then
    redis.call('HSET', KEYS[6], reg, -revoked)
  end
end
local cur = redis.call('HGET', KEYS[1], reg) or ''
if cur ~= believed then
  return {-2, cur}
end
if cur == '' then
  return {0, ''}
end
if ARGV[4] ~= '1' and not redis.call('ZSCORE', KEYS[2], reg) then
  return {-3, cur}
end
redis.call('HDEL', KEYS[1], reg)
redis.call('ZREM', KEYS[2], reg)
if redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('INCR', KEYS[7])
end
local event = record_event('release', reg, '', cur, '', ARGV[3])
return {1, cur, event}
