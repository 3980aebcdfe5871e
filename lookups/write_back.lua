-- A record found by a PostgreSQL fallback, written back to its hash unless it is there already or a
-- correction wrote it since the fallback read the record's marker (lookups.corrections): the check and
-- the write touch one hash, so they are one step (cluster-safe: one key).
-- KEYS[1]  the hash holding the record's field
-- ARGV[1]  the field (i:<id number> or t:<ticket number>)
-- ARGV[2]  the stored value
-- ARGV[3]  the field's marker (~<field>) as the fallback read it before its query; "" for none
-- Returns 1 when written, 0 when the field is present or the marker changed.
local marker = redis.call('HGET', KEYS[1], '~' .. ARGV[1]) or ''
if marker ~= ARGV[3] then
  return 0
end
return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
