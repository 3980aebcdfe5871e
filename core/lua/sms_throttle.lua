-- Admit one SMS to a phone if its recent sends allow it, and record it (sliding-window log).
-- KEYS[1]  sorted set of the phone's sends in the window: member and score = send time (ms)
-- ARGV[1]  now_ms (the caller's clock, so tests can move time)
-- ARGV[2]  min_interval_ms between two sends (> 0)
-- ARGV[3]  window_ms
-- ARGV[4]  max sends per window
-- Returns  0 when admitted (and recorded), else the ms to wait until a send would be admitted.
local now = tonumber(ARGV[1])
local interval, window, max = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local wait = 0
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  wait = math.max(wait, tonumber(last[2]) + interval - now)
end
if redis.call('ZCARD', KEYS[1]) >= max then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  wait = math.max(wait, tonumber(first[2]) + window - now)
end
if wait > 0 then
  return wait
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], window)
return 0
