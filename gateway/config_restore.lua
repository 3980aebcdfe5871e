-- Put the newest audited live config back into Redis when Redis holds an older one or none
-- (it restarted empty, or from an old snapshot); never replaces a newer one. Every process may
-- run it at once after a loss: the first restores, the others find it done.
-- KEYS[1]  the config hash (fields: version, doc)
-- ARGV[1]  the newest audited version
-- ARGV[2]  its document, JSON
-- Returns 1 when restored, 0 when Redis already held that version or a newer one.
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0') or 0
if current >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'doc', ARGV[2])
return 1
