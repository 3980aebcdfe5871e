-- Take a candidate's place in an exam's waiting room, or find it again (idempotent per candidate).
-- Before the opening a new place joins the draw (a secret random key per ticket, so the order at
-- the opening is a random permutation of everyone who came early, however fast they were); from
-- the opening on a new place takes the next position (first come, first served). The first script
-- of the room (join, status or advance) that runs at or after opens_at freezes the draw: its size
-- becomes the number of drawn positions 1..N, once, atomically.
-- KEYS[1]  meta  HASH   opens_at (ms), opened (draw size N, set once at the opening), tail (last
--                       position given), serving, last_ms, credit, rate, admit, ttl_ms
-- KEYS[2]  cand  HASH   candidate id → current ticket
-- KEYS[3]  tix   HASH   ticket → "<candidate_id>:<position>:<last_seen_ms>"; position 0 = in the
--                       draw and not yet opened (then it is the ticket's rank in KEYS[4] + 1);
--                       last_seen 0 = expired
-- KEYS[4]  draw  ZSET   tickets that joined before the opening → their random draw key
-- KEYS[5]  order HASH   position → ticket, for places taken after the opening
-- ARGV[1]  candidate id
-- ARGV[2]  a fresh random ticket (used only when the candidate needs a new place)
-- ARGV[3]  a fresh random draw key, an integer below 2^53 (used only for a new place in the draw)
-- ARGV[4]  opens_at_ms: when the room opens (recorded while it has not opened)
-- ARGV[5]  now_ms, or '' for the Redis server's clock
-- ARGV[6]  place_ttl_ms: a place not seen for longer has expired (recorded for status and advance)
-- Returns  {ticket, position, serving, draw size, opens_at_ms, now_ms, measured rate, admit rate}:
--          position 0 while the draw has not happened; the rates (positions/s) as text, '' if unknown.
-- A place that has expired is replaced by a new one at the back (the old ticket stays expired),
-- except a place still in the draw before the opening, which is simply seen again.
local now
if ARGV[5] ~= '' then
  now = tonumber(ARGV[5])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local meta, cand_key, tix, draw, order = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local cand, ttl = ARGV[1], tonumber(ARGV[6])
redis.call('HSET', meta, 'ttl_ms', ARGV[6])
local opened = tonumber(redis.call('HGET', meta, 'opened'))
if not opened then
  redis.call('HSET', meta, 'opens_at', ARGV[4])
  if now >= tonumber(ARGV[4]) then
    opened = redis.call('ZCARD', draw)
    redis.call('HSET', meta, 'opened', opened, 'tail', opened, 'serving', 0, 'last_ms', now, 'credit', 0)
  end
end

local function reply(ticket, pos)
  local m = redis.call('HMGET', meta, 'serving', 'opens_at', 'rate', 'admit')
  local size = opened or redis.call('ZCARD', draw)
  return {ticket, pos, tonumber(m[1]) or 0, size, tonumber(m[2]) or 0, now, m[3] or '', m[4] or ''}
end

local existing = redis.call('HGET', cand_key, cand)
if existing then
  local rec = redis.call('HGET', tix, existing)
  if rec then
    local pos, seen = string.match(rec, '^%d+:(%d+):(%d+)$')
    pos, seen = tonumber(pos), tonumber(seen)
    if (seen > 0 and now - seen <= ttl) or (pos == 0 and not opened) then
      if pos == 0 and opened then
        pos = redis.call('ZRANK', draw, existing) + 1
      end
      redis.call('HSET', tix, existing, cand .. ':' .. pos .. ':' .. math.max(now, seen))
      return reply(existing, pos)
    end
    if seen > 0 then
      if pos == 0 then
        pos = redis.call('ZRANK', draw, existing) + 1
      end
      redis.call('HSET', tix, existing, cand .. ':' .. pos .. ':0')
    end
  end
end

local ticket = ARGV[2]
if redis.call('HEXISTS', tix, ticket) == 1 then
  return redis.error_reply('ticket already in use')
end
local pos = 0
if opened then
  pos = redis.call('HINCRBY', meta, 'tail', 1)
  redis.call('HSET', order, pos, ticket)
else
  redis.call('ZADD', draw, ARGV[3], ticket)
end
redis.call('HSET', tix, ticket, cand .. ':' .. pos .. ':' .. now)
redis.call('HSET', cand_key, cand, ticket)
return reply(ticket, pos)
