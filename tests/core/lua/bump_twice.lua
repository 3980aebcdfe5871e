-- Add an amount to a counter twice, through a function included from _bump.lua.
-- KEYS[1]  counter
-- ARGV[1]  amount (integer)
-- Returns  the counter after both additions
--#include _bump.lua
bump(KEYS[1], ARGV[1])
return bump(KEYS[1], ARGV[1])
