-- (Re)create a recovery record: a hash of the caller's fields plus an attempt budget, one TTL.
-- KEYS[1]  the record (a previous record under the same key is replaced, attempts and all)
-- ARGV[1]  ttl_ms
-- ARGV[2]  attempts allowed
-- ARGV[3..] field, value pairs to store beside "left"
-- Returns  1
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'left', ARGV[2], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
