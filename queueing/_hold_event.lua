-- Shared part of hold_take, hold_release and hold_expire (included by core.scripts, not a script).
-- record_event numbers one change of a registration's hold and records it: the exam's event
-- counter goes up, the registration's last event is set to it, and the stream gets one entry
-- (type, registration, site, old_site, expires_at_ms, event). It uses the KEYS every hold
-- script shares (queueing.holds.event_keys): KEYS[3] last event, KEYS[4] event counter,
-- KEYS[5] holds stream. Returns the event number as text.
local function record_event(kind, reg, site, old_site, expires_at_ms, now_ms)
  -- Event numbers start at now_ms * 1000, so after a flush they still exceed every older one.
  local event = redis.call('INCR', KEYS[4])
  if event == 1 then
    redis.call('SET', KEYS[4], now_ms .. '000')
    event = redis.call('INCR', KEYS[4])
  end
  event = string.format('%.0f', event)
  redis.call('HSET', KEYS[3], reg, event)
  redis.call('XADD', KEYS[5], '*', 'type', kind, 'registration', reg, 'site', site, 'old_site', old_site,
    'expires_at_ms', expires_at_ms, 'event', event)
  return event
end
