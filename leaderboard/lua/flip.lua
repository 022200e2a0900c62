-- Make a rebuilt generation the live one, atomically, once it has caught up with the live generation.
-- KEYS[1] meta hash, KEYS[2] the new generation's position hash, KEYS[3] (if any) the live one's
-- ARGV[1] key base   ARGV[2] new generation   ARGV[3] the live generation the caller read ("" if none):
-- if another one is live now, {"stale"} and the caller reads it again (every key a script touches is declared).
-- ARGV[4] the definition version the new generation was built under ('' for a board from the boards file):
-- recorded as meta.def in the same step, so live writes made under another version are refused from then on
-- (apply.lua's {"defstale", version}).
-- Caught up: for every partition, the new generation's position >= the live one's. Otherwise returns
-- {"behind", partition, live_position} and the rebuild applies more of the tail before trying again.
-- With no live generation (first start, or Redis lost) the flip is immediate.
-- Returns {"flipped", previous live generation or ""}, {"behind", partition, live_position} or {"stale"}.
local base = ARGV[1]
local new = ARGV[2]
local active = redis.call('HGET', KEYS[1], 'active')
if (active or '') ~= ARGV[3] then return {'stale'} end
if active and active ~= new then
  local live = redis.call('HGETALL', gkey_position(key_gen(base, active)))
  for i = 1, #live, 2 do
    local mine = tonumber(redis.call('HGET', gkey_position(key_gen(base, new)), live[i]) or '-1')
    if tonumber(live[i + 1]) > mine then return {'behind', live[i], live[i + 1]} end
  end
end
redis.call('HSET', KEYS[1], 'active', new, 'writing', new)
if ARGV[4] and ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'def', ARGV[4])
else
  redis.call('HDEL', KEYS[1], 'def')
end
return {'flipped', active or ''}
