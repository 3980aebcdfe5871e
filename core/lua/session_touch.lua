-- Resolve a session and keep it alive: the one round trip of an authenticated request.
-- KEYS[1]  the session: string "<candidate_id>:<absolute_deadline_ms>", its TTL the idle lifetime
-- ARGV[1]  idle_ms: the idle window
-- ARGV[2]  renew_every_ms: extend only once this much of the idle window has been used,
--          so an active session costs a write (replicated, AOF-logged) at most this often
-- Returns  the candidate id as a string, or false when the session is missing or past its
--          absolute deadline (then it is deleted).
-- The idle TTL is never extended beyond the absolute deadline, so the key itself dies then.
local value = redis.call('GET', KEYS[1])
if not value then
  return false
end
local sep = string.find(value, ':', 1, true)
local deadline = tonumber(string.sub(value, sep + 1))
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = deadline - now
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return false
end
local idle = tonumber(ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < idle - tonumber(ARGV[2]) then
  if left < idle then
    idle = left
  end
  if idle > ttl then
    redis.call('PEXPIRE', KEYS[1], idle)
  end
end
return string.sub(value, 1, sep - 1)
