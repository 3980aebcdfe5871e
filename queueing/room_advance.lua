-- Move an exam's serving counter on by the admissions owed since the last call: elapsed time ×
-- admit rate, the fraction carried over. Calling it more often, or from several processes at
-- once, never admits more: each call spends only the time since the stored last_ms.
-- Dead places cost nothing: passing a place not seen within ttl_ms marks it expired and does not
-- spend an admission, so serving moves over admit_per_s live places per second plus the dead
-- ones among them. Time that finds nobody waiting is not banked (no burst when people arrive).
-- A call scans at most max_scan places; admissions still owed then carry over to the next call.
-- Passed places are forgotten keep_ms after they were passed (when ARGV[5] is given): their ticket
-- record, admission, position and, when it still names them, their candidate's entry are deleted,
-- at most max_scan places a call, oldest first. The trail remembers when positions were passed,
-- one entry a second at most; the meta field 'pruned' is the highest position forgotten.
-- KEYS[1]  meta  HASH   the room's counters (see room_join.lua)
-- KEYS[2]  tix   HASH   ticket → "<candidate_id>:<position>:<last_seen_ms>"
-- KEYS[3]  draw  ZSET   tickets that joined before the opening (positions 1..N by rank)
-- KEYS[4]  order HASH   position → ticket, for places taken after the opening
-- KEYS[5]  cand  HASH   candidate id → current ticket
-- KEYS[6]  adm   HASH   ticket → admitted_at_ms
-- KEYS[7]  trail LIST   "<position>:<passed_at_ms>": every position up to it was passed by then
-- ARGV[1]  admit_per_s: live admissions per second (may change between calls)
-- ARGV[2]  now_ms, or '' for the Redis server's clock
-- ARGV[3]  max_scan: most places passed in one call
-- ARGV[4]  rate_window_ms: time constant of the measured serving rate (an exponential average of
--          positions passed per second, sampled only while people are waiting)
-- ARGV[5]  keep_ms: how long a passed place is kept (its ticket still answers), or '' to keep it
-- Returns  {serving, admitted, skipped, tail, opened (1|0)}: admitted and skipped by this call.
-- Opens the room (freezes the draw) if it is due, like join and status; before that does nothing.
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local meta, tix, draw, order, cands, adm, trail = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local admit, max_scan, window = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4])
local keep = ARGV[5] and tonumber(ARGV[5])
local f = redis.call('HMGET', meta, 'opened', 'opens_at', 'tail', 'serving', 'last_ms', 'credit', 'rate', 'ttl_ms',
  'pruned')
local opened = tonumber(f[1])
if not opened then
  local opens_at = tonumber(f[2])
  if not opens_at or now < opens_at then
    return {0, 0, 0, 0, 0}
  end
  opened = redis.call('ZCARD', draw)
  redis.call('HSET', meta, 'opened', opened, 'tail', opened, 'serving', 0, 'last_ms', now, 'credit', 0)
  f[3], f[4], f[5], f[6] = opened, 0, now, 0
end
redis.call('HSET', meta, 'admit', ARGV[1])
local tail, serving, last = tonumber(f[3]), tonumber(f[4]), tonumber(f[5])
if now <= last then
  return {serving, 0, 0, tail, 1}
end
local ttl = tonumber(f[8]) or math.huge
local dt = now - last
local budget = (tonumber(f[6]) or 0) + dt * admit / 1000
local whole = math.floor(budget)
local frac = budget - whole
local CHUNK = 128

-- The tickets at positions a..b ('' where none), and the positions among them taken after the opening.
local function tickets_at(a, b)
  local tickets, fields = {}, {}
  if a <= opened then
    local r = redis.call('ZRANGE', draw, a - 1, math.min(b, opened) - 1)
    for i = 1, math.min(b, opened) - a + 1 do
      tickets[#tickets + 1] = r[i] or ''
    end
  end
  if b > opened then
    for q = math.max(a, opened + 1), b do
      fields[#fields + 1] = q
    end
    local r = redis.call('HMGET', order, unpack(fields))
    for i = 1, #fields do
      tickets[#tickets + 1] = r[i] or ''
    end
  end
  return tickets, fields
end

local p, admitted, skipped, scanned = serving, 0, 0, 0
while whole > 0 and p < tail and scanned < max_scan do
  local a = p + 1
  local b = math.min(tail, p + CHUNK, p + max_scan - scanned)
  local tickets = tickets_at(a, b)
  local recs = redis.call('HMGET', tix, unpack(tickets))
  for i = 1, #tickets do
    p = a + i - 1
    scanned = scanned + 1
    local rec = recs[i]
    local cand, seen
    if rec then
      cand, seen = string.match(rec, '^(%d+):%d+:(%d+)$')
      seen = tonumber(seen)
    end
    if seen and seen > 0 and now - seen <= ttl then
      admitted = admitted + 1
      whole = whole - 1
    else
      skipped = skipped + 1
      if seen and seen > 0 then
        redis.call('HSET', tix, tickets[i], cand .. ':' .. p .. ':0')
      end
    end
    if whole == 0 then
      break
    end
  end
end

local credit = frac
if whole > 0 then
  if p < tail then
    credit = whole + frac  -- stopped by max_scan: still owed
  else
    credit = 0  -- nobody left waiting: idle time is not banked
  end
end
-- The rate is sampled only when the budget, not the queue, limited the move.
if whole == 0 or p < tail then
  local prev = tonumber(f[7]) or admit
  local sample = (p - serving) * 1000 / dt
  local rate = prev + (1 - math.exp(-dt / window)) * (sample - prev)
  redis.call('HSET', meta, 'rate', rate)
end
redis.call('HSET', meta, 'serving', p, 'last_ms', now, 'credit', credit)

if keep then
  if p > serving then
    local last = redis.call('LINDEX', trail, -1)
    local at = last and tonumber(string.match(last, ':(%d+)$'))
    if at and now - at < 1000 then
      redis.call('LSET', trail, -1, p .. ':' .. at)  -- within a second: kept from the earlier time
    else
      redis.call('RPUSH', trail, p .. ':' .. now)
    end
  end
  local pruned, budget = tonumber(f[9]) or 0, max_scan
  while budget > 0 do
    local head = redis.call('LINDEX', trail, 0)
    if not head then
      break
    end
    local upto, at = string.match(head, '^(%d+):(%d+)$')
    upto, at = tonumber(upto), tonumber(at)
    if now - at < keep then
      break
    end
    while pruned < upto and budget > 0 do
      local a = pruned + 1
      local b = math.min(upto, pruned + CHUNK, pruned + budget)
      local tickets, fields = tickets_at(a, b)
      local recs = redis.call('HMGET', tix, unpack(tickets))
      local owners, owned = {}, {}
      for i = 1, #tickets do
        local cand = recs[i] and string.match(recs[i], '^(%d+):')
        if cand then
          owners[#owners + 1] = cand
          owned[#owned + 1] = tickets[i]
        end
      end
      if #owners > 0 then
        local current = redis.call('HMGET', cands, unpack(owners))
        local gone = {}
        for i = 1, #owners do
          if current[i] == owned[i] then
            gone[#gone + 1] = owners[i]
          end
        end
        if #gone > 0 then
          redis.call('HDEL', cands, unpack(gone))
        end
        redis.call('HDEL', tix, unpack(owned))
        redis.call('HDEL', adm, unpack(owned))
      end
      if #fields > 0 then
        redis.call('HDEL', order, unpack(fields))
      end
      budget = budget - (b - a + 1)
      pruned = b
    end
    if pruned < upto then
      break
    end
    redis.call('LPOP', trail)
  end
  redis.call('HSET', meta, 'pruned', pruned)
end
return {p, admitted, skipped, tail, 1}
