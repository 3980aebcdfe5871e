-- Take an amount from a stock, refusing to go below zero.
-- KEYS[1]  stock
-- ARGV[1]  amount (integer)
-- Returns  the stock left, or an error reply "EMPTY" when there is not enough
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if left < amount then
  return redis.error_reply('EMPTY stock too low')
end
return redis.call('DECRBY', KEYS[1], amount)
