-- Add an amount to a counter and echo a tag back.
-- KEYS[1]  counter
-- ARGV[1]  amount (integer)
-- ARGV[2]  tag, returned as is
-- Returns  {new counter value, tag}
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
return {value, ARGV[2]}
