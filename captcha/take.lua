-- Issue one pre-drawn image captcha: pop the oldest pool entry and arm its single-use answer.
-- KEYS[1]   the pool list; entries are "<id>\n<answer>\n<png bytes>" (see captcha/pool.py)
-- ARGV[1]   answer key prefix; the answer goes to ARGV[1] .. <id>. The id is known only
--           after the pop, so this is the one script that derives a key name: the prefix
--           carries KEYS[1]'s hash tag, so the key is in the same cluster slot.
-- ARGV[2]   answer_ttl_s: lifetime of the answer key, whole seconds
-- Returns   the popped entry (bulk string), or nil when the pool is empty;
--           an error reply (the entry dropped) when the entry is malformed.
local entry = redis.call('LPOP', KEYS[1])
if not entry then
  return false
end
local first = string.find(entry, '\n', 1, true)
local second = first and string.find(entry, '\n', first + 1, true)
if not second or first == 1 then
  return redis.error_reply('ERR malformed captcha pool entry')
end
redis.call('SET', ARGV[1] .. string.sub(entry, 1, first - 1), string.sub(entry, first + 1, second - 1), 'EX', ARGV[2])
return entry
