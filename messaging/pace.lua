-- Take the next send slot of a rate every delivery worker shares (virtual scheduling, as GCRA's TAT).
-- KEYS[1]  the next free slot: microseconds since the epoch on Redis's clock (TIME)
-- ARGV[1]  interval_us between two sends (1e6 / rate), > 0
-- ARGV[2]  burst_us: how far in the past a slot may be taken (idle time banked, at most this)
-- ARGV[3]  pause_us: when > 0, take no slot; push the next free one to now + pause_us (every worker
--          pauses: the provider said the account's rate is exceeded)
-- Returns  the microseconds to wait before sending in the slot taken (0: send now); 0 for a pause.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval, burst, pause = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local idle_ms = 60000 -- the key outlives the last slot by this
if pause > 0 then
  free = math.max(free, now + pause)
  redis.call('SET', KEYS[1], string.format('%.0f', free), 'PX', math.floor((free - now) / 1000) + idle_ms)
  return 0
end
local slot = math.max(free, now - burst)
local next_free = slot + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_free), 'PX', math.floor((next_free - now) / 1000) + idle_ms)
return math.floor(math.max(0, slot - now))
