-- Set some players' standings on one generation of a board to absolute values computed from the event log
-- (moderation: consumers/moderation_apply.py), only if no apply moved a watermark since they were read.
-- KEYS[1] meta hash   ARGV[1] key base   ARGV[2] generation   ARGV[3] JSON payload
-- payload: {periods=[{p=<period>, wm={partition=offset,...}, set=[score, member, ...], rem=[member, ...]}],
--           floor={partition=offset,...}}   (offset "" = absent; only the partitions of the players' events)
-- The caller read each period's watermarks and the floor BEFORE reading the players' events from
-- PostgreSQL, and folded only events at or below them: an event applied after that read moved a
-- watermark (answer {"moved"}: read again), an event applied before it is in PostgreSQL (a batch is
-- stored there before it is applied here). So the absolute values never lose nor double an event. Only
-- the partitions holding the players' events are checked: a player's events share one partition (the
-- contract's key is the player id), so other partitions' moves cannot touch these members.
-- Returns {"ok", updates} | {"moved"} | {"gone"} (the generation is no longer written).
local base = ARGV[1]
local gen = ARGV[2]
local payload = cjson.decode(ARGV[3])
local writing = redis.call('HGET', KEYS[1], 'writing') or ''
local found = false
for g in string.gmatch(writing, '[^,]+') do if g == gen then found = true end end
if not found then return {'gone'} end
local g = base .. ':g' .. gen
-- want: partition -> the offset the caller read ("" = the field was absent)
local function same(key, want)
  for pt, v in pairs(want) do
    if (redis.call('HGET', key, pt) or '') ~= v then return false end
  end
  return true
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
