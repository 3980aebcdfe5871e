-- Spend one attempt of a recovery record, or give one back, atomically.
-- KEYS[1]  the record written by reset_put.lua (hash: "left" = attempts remaining, other fields)
-- ARGV[1]  "take" or "refund"
-- ARGV[2..] (take) names of the fields to return
-- Returns  take:   false when the record is missing (unknown, expired or used);
--                  0 when no attempt was left (the record is deleted: dead for good);
--                  else {attempts left after this one, values of the fields asked for}
--          refund: 1 when an attempt was given back, 0 when the record is gone
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[1] == 'refund' then
    return 0
  end
  return false
end
if ARGV[1] == 'refund' then
  redis.call('HINCRBY', KEYS[1], 'left', 1)
  return 1
end
local left = redis.call('HINCRBY', KEYS[1], 'left', -1)
if left < 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
local reply = {left}
if #ARGV > 1 then
  local values = redis.call('HMGET', KEYS[1], unpack(ARGV, 2))
  for i = 1, #values do
    reply[i + 1] = values[i] or ''
  end
end
return reply
