-- A shared part, not a script: included by bump_twice.lua.
local function bump(key, amount)
  return redis.call('INCRBY', key, amount)
end
