-- Decide a batch of requests against their rate-limit rules, each request atomically and in
-- order (GCRA, Redis TIME as the clock). One call decides every request one gateway process
-- gathered in one event-loop tick; a batch of one is a single request.
-- KEYS[i]   TAT (theoretical arrival time, integer µs since the epoch) of one rule for its
--           subject: request 1's rule keys, then request 2's, … (a key may repeat across requests)
-- ARGV[1]   ttl_pad_ms: added to each key's exact lifetime (until its bucket is full again)
-- ARGV[2]   number of requests R; then for each request: its number of rules n, then per rule
--           emission_us, tolerance_us (burst × emission_us), cost, flags: 1 = enforce (else shadow)
--           + 2 = check only (the rule counts failures: it may deny but this request never consumes)
-- Returns   flat, per request: allowed (1|0), retry_after_ms, then per rule: allowed_i (1|0),
--           remaining_i, ms_i. allowed_i is the rule's own answer; remaining_i the quota left
--           after the request (≥ 0); ms_i its retry time when it denies, else the time until its
--           bucket is full; retry_after_ms the largest retry time of the denying enforce rules.
-- If any enforce rule of a request denies, that request writes nothing. Otherwise each of its
-- rules that allows consumes (check-only rules excepted); a shadow rule that would deny is reported, consumes nothing and
-- blocks nothing. A later request in the batch sees what earlier ones consumed; each key is
-- written once, at the end, with its final TAT (SET PX).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pad = tonumber(ARGV[1])
local requests = tonumber(ARGV[2])
local ceil, floor = math.ceil, math.floor
local stored = redis.call('MGET', unpack(KEYS))
local tat, dirty = {}, {}
for i = 1, #KEYS do
  local key = KEYS[i]
  if tat[key] == nil then
    tat[key] = tonumber(stored[i]) or 0
  end
end

local reply, r = {}, 0
local a, k = 3, 0
for _ = 1, requests do
  local n = tonumber(ARGV[a])
  a = a + 1
  -- First pass: does an enforce rule deny?
  local denied, retry = false, 0
  for i = 0, n - 1 do
    local base = a + 4 * i
    local flags = ARGV[base + 3]
    if flags == '1' or flags == '3' then
      local cur = tat[KEYS[k + i + 1]]
      if cur < now then
        cur = now
      end
      local over = cur + ARGV[base + 2] * ARGV[base] - ARGV[base + 1] - now
      if over > 0 then
        denied = true
        local wait = ceil(over / 1000)
        if wait > retry then
          retry = wait
        end
      end
    end
  end
  reply[r + 1], reply[r + 2] = denied and 0 or 1, retry
  r = r + 2
  -- Second pass: consume (unless denied) and report every rule.
  for i = 0, n - 1 do
    local base = a + 4 * i
    local key = KEYS[k + i + 1]
    local em, tol = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
    local cur = tat[key]
    if cur < now then
      cur = now
    end
    local new = cur + ARGV[base + 2] * em
    local ok = new - tol <= now
    local final, ms = cur, 0
    if ok then
      if not denied and tonumber(ARGV[base + 3]) < 2 then
        final = new
        tat[key] = new
        dirty[key] = true
      end
      ms = ceil((final - now) / 1000)
    else
      ms = ceil((new - tol - now) / 1000)
    end
    local remaining = floor((now - final + tol) / em)
    if remaining < 0 then
      remaining = 0
    end
    reply[r + 1], reply[r + 2], reply[r + 3] = ok and 1 or 0, remaining, ms
    r = r + 3
  end
  a = a + 4 * n
  k = k + n
end

for key in pairs(dirty) do
  local final = tat[key]
  -- %.0f: tostring() keeps only 14 significant digits, too few for µs since the epoch.
  redis.call('SET', key, string.format('%.0f', final), 'PX', ceil((final - now) / 1000) + pad)
end
return reply
