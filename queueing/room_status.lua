-- One status poll of a place in an exam's waiting room: checks it is alive, marks it seen, and
-- returns what the candidate's numbers are computed from (one round trip).
-- The first poll that finds the place admitted records when (the admission runs from then, so
-- polling again never renews it); once the admission TTL has passed, the place is given up.
-- KEYS[1]  meta  HASH   the room's counters (see room_join.lua)
-- KEYS[2]  tix   HASH   ticket → "<candidate_id>:<position>:<last_seen_ms>"
-- KEYS[3]  draw  ZSET   tickets that joined before the opening → their random draw key
-- KEYS[4]  adm   HASH   ticket → admitted_at_ms: the first poll that found it admitted, in whole
--                       seconds (admission tokens carry whole seconds)
-- ARGV[1]  ticket
-- ARGV[2]  now_ms, or '' for the Redis server's clock
-- ARGV[3]  admission_ttl_ms: how long an admission lasts from admitted_at, or '' for no limit
-- Returns  {0} for an unknown ticket;
--          {-1, candidate_id} when the place has expired (not seen within ttl_ms, or passed over
--          by the serving counter as dead): it is marked expired and stays so;
--          {-2, candidate_id, admitted_at_ms} when the place was admitted and now >= admitted_at
--          + admission_ttl_ms: it is marked expired too (joining again gives a new place);
--          {1, candidate_id, position, serving, draw size, opens_at_ms, now_ms, measured rate,
--          admit rate, ttl_ms, admitted_at_ms}: position 0 while the draw has not happened,
--          admitted when 0 < position <= serving (then admitted_at_ms is set, else 0); the rates
--          (positions/s) as text, '' if unknown.
-- Opens the room (freezes the draw) if it is due, like join and advance.
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local meta, tix, draw, adm_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ticket = ARGV[1]
local admission_ttl = tonumber(ARGV[3])
local rec = redis.call('HGET', tix, ticket)
if not rec then
  return {0}
end
local cand, pos, seen = string.match(rec, '^(%d+):(%d+):(%d+)$')
pos, seen = tonumber(pos), tonumber(seen)
local m = redis.call('HMGET', meta, 'opened', 'opens_at', 'ttl_ms', 'serving', 'rate', 'admit')
local opened, opens_at, ttl = tonumber(m[1]), tonumber(m[2]) or 0, tonumber(m[3]) or 0
local serving = tonumber(m[4]) or 0
if not opened and now >= opens_at then
  opened = redis.call('ZCARD', draw)
  redis.call('HSET', meta, 'opened', opened, 'tail', opened, 'serving', 0, 'last_ms', now, 'credit', 0)
end
if pos == 0 and opened then
  pos = redis.call('ZRANK', draw, ticket) + 1
end
local admitted_at
if pos > 0 and pos <= serving then
  admitted_at = tonumber(redis.call('HGET', adm_key, ticket))
end
if admitted_at and admission_ttl and now >= admitted_at + admission_ttl then
  if seen > 0 then
    redis.call('HSET', tix, ticket, cand .. ':' .. pos .. ':0')
  end
  return {-2, cand, admitted_at}
end
if seen == 0 or now - seen > ttl then
  if seen > 0 then
    redis.call('HSET', tix, ticket, cand .. ':' .. pos .. ':0')
  end
  return {-1, cand}
end
if pos > 0 and pos <= serving and not admitted_at then
  admitted_at = now - now % 1000
  redis.call('HSET', adm_key, ticket, admitted_at)
end
redis.call('HSET', tix, ticket, cand .. ':' .. pos .. ':' .. math.max(now, seen))
local size = opened or redis.call('ZCARD', draw)
return {1, cand, pos, serving, size, opens_at, now, m[5] or '', m[6] or '', ttl, admitted_at or 0}
