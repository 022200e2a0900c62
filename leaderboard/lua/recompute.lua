-- Set some players' standings on one generation of a board to absolute values computed from the event log
-- (moderation: consumers/moderation_apply.py), only if no apply moved a watermark since they were read.
-- KEYS[1] meta hash   ARGV[1] key base   ARGV[2] generation   ARGV[3] JSON payload
-- payload: {periods=[{p=<period>, wm={partition=offset,...}, set=[member, score, ...], rem=[member, ...]}],
--           floor={partition=offset,...}}
-- The caller read each period's watermarks and the floor BEFORE reading the players' events from
-- PostgreSQL, and folded only events at or below them: an event applied after that read moved a
-- watermark (answer {"moved"}: read again), an event applied before it is in PostgreSQL (a batch is
-- stored there before it is applied here). So the absolute values never lose nor double an event.
-- Returns {"ok", updates} | {"moved"} | {"gone"} (the generation is no longer written).
local base = ARGV[1]
local gen = ARGV[2]
local payload = cjson.decode(ARGV[3])
local writing = redis.call('HGET', KEYS[1], 'writing') or ''
local found = false
for g in string.gmatch(writing, '[^,]+') do if g == gen then found = true end end
if not found then return {'gone'} end
local g = base .. ':g' .. gen
local function same(key, want)
  local have = redis.call('HGETALL', key)
  local n = 0
  for i = 1, #have, 2 do
    if want[have[i]] ~= have[i + 1] then return false end
    n = n + 1
  end
  for _ in pairs(want) do n = n - 1 end
  return n == 0
end
if not same(g .. ':floor', payload.floor) then return {'moved'} end
for _, per in ipairs(payload.periods) do
  if not same(g .. ':wm:' .. per.p, per.wm) then return {'moved'} end
end
local n = 0
for _, per in ipairs(payload.periods) do
  local zkey = g .. ':' .. per.p
  if #per.set > 0 then
    redis.call('ZADD', zkey, unpack(per.set))
    n = n + #per.set / 2
  end
  if #per.rem > 0 then n = n + redis.call('ZREM', zkey, unpack(per.rem)) end
end
return {'ok', n}
