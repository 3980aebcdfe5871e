-- Grant a registration its seat right (it is approved at this version): expiring holds need one.
-- KEYS[1]  seat rights: hash registration -> version, positive while approved, negative once revoked
-- ARGV[1]  registration id
-- ARGV[2]  the registration's version at approval
-- Returns  1 when granted, 0 when the right already names this or a later version (a revocation
-- made after this approval wins, whichever reached Redis first).
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if math.abs(cur) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
