-- Store a new live-config document if the stored version is still the one the caller read,
-- and only at a version the audit does not hold yet (after Redis lost its data it starts at 0).
-- KEYS[1]  the config hash (fields: version, doc)
-- ARGV[1]  the version the caller read (0 when nothing, or nothing readable, was stored)
-- ARGV[2]  the new document, JSON
-- ARGV[3]  the newest audited version (0 when nothing was ever audited)
-- Returns {1, new_version} when stored, {0, current_version} when another change won,
-- {-1, current_version} when the stored version is behind the audit (restore it first).
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0') or 0
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
if current + 1 <= tonumber(ARGV[3]) then
  return {-1, current}
end
redis.call('HSET', KEYS[1], 'version', current + 1, 'doc', ARGV[2])
return {1, current + 1}
