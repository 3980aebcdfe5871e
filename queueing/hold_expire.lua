-- Release one expired hold for the sweeper, only if it is still the hold the sweeper saw
-- (same site, same expiry) and still expired; a refreshed, moved or paid hold is left alone.
-- KEYS[1]  holds: hash registration -> site id
-- KEYS[2]  hold expiry: zset registration scored by expiry ms
-- KEYS[3]  last event: hash registration -> number of its latest event
-- KEYS[4]  event counter of the exam
-- KEYS[5]  holds stream of the exam
-- KEYS[6]  site_left of the site seen (only when ARGV[2] is not '')
-- ARGV[1]  registration id
-- ARGV[2]  site the sweeper saw held ('' = none: an expiry entry without a hold)
-- ARGV[3]  expiry score the sweeper saw (ms)
-- ARGV[4]  now_ms
-- Returns  {code, event}:
--   1  released: event number
--   0  changed meanwhile or not yet expired: nothing written
--   2  an expiry entry without a hold: the entry was removed, no event
-- A release appends to the stream: type expire, registration, site '', old_site,
-- expires_at_ms (the expiry that passed), event.
--#include _hold_event.lua
local reg, seen = ARGV[1], ARGV[2]
local now = tonumber(ARGV[4])
local score = redis.call('ZSCORE', KEYS[2], reg)
if not score or tonumber(score) ~= tonumber(ARGV[3]) or tonumber(score) > now then
  return {0, ''}
end
local cur = redis.call('HGET', KEYS[1], reg) or ''
if cur ~= seen then
  return {0, ''}
end
redis.call('ZREM', KEYS[2], reg)
if cur == '' then
  return {2, ''}
end
redis.call('HDEL', KEYS[1], reg)
if redis.call('EXISTS', KEYS[6]) == 1 then
  redis.call('INCR', KEYS[6])
end
local event = record_event('expire', reg, '', cur, string.format('%.0f', tonumber(score)), ARGV[4])
return {1, event}
