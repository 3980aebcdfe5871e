-- Decide every rate-limit rule that applies to one request, atomically (GCRA, Redis TIME as the clock).
-- KEYS[i]   TAT (theoretical arrival time, integer µs since the epoch) of rule i for its subject
-- ARGV[1]   ttl_pad_ms: added to each key's exact lifetime (until its bucket is full again)
-- ARGV[2+4(i-1) .. 5+4(i-1)]  rule i: emission_us, tolerance_us (burst × emission_us), cost,
--           enforce flag (1 = enforce, 0 = shadow)
-- Returns   {allowed (1|0), retry_after_ms, then per rule i: allowed_i (1|0), remaining_i, ms_i}
--           allowed_i is the rule's own answer; remaining_i the quota left after this request
--           (≥ 0); ms_i its retry time when it denies, else the time until its bucket is full;
--           retry_after_ms the largest retry time of the denying enforce rules (0 if allowed).
-- If any enforce rule denies, nothing is written. Otherwise every rule that allows consumes
-- (SET PX); a shadow rule that would deny is reported, consumes nothing and blocks nothing.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pad = tonumber(ARGV[1])
local ceil, floor = math.ceil, math.floor
local n = #KEYS
local stored = redis.call('MGET', unpack(KEYS))
local ems, tols, tats, news, oks = {}, {}, {}, {}, {}
local denied = false
local retry = 0

for i = 1, n do
  local base = 4 * i - 2
  local em = tonumber(ARGV[base])
  local tol = tonumber(ARGV[base + 1])
  local tat = tonumber(stored[i]) or now
  if tat < now then
    tat = now
  end
  local new = tat + ARGV[base + 2] * em
  local ok = new - tol <= now
  ems[i], tols[i], tats[i], news[i], oks[i] = em, tol, tat, new, ok
  if not ok and ARGV[base + 3] == '1' then
    denied = true
    local wait = ceil((new - tol - now) / 1000)
    if wait > retry then
      retry = wait
    end
  end
end

local reply = {denied and 0 or 1, retry}
local at = 2
for i = 1, n do
  local ok, final, tol = oks[i], tats[i], tols[i]
  local ms
  if ok then
    if not denied then
      final = news[i]
      -- %.0f: tostring() keeps only 14 significant digits, too few for µs since the epoch.
      redis.call('SET', KEYS[i], string.format('%.0f', final), 'PX', ceil((final - now) / 1000) + pad)
    end
    ms = ceil((final - now) / 1000)
  else
    ms = ceil((news[i] - tol - now) / 1000)
  end
  local remaining = floor((now - final + tol) / ems[i])
  if remaining < 0 then
    remaining = 0
  end
  reply[at + 1], reply[at + 2], reply[at + 3] = ok and 1 or 0, remaining, ms
  at = at + 3
end
return reply
