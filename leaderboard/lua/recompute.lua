-- Set some players' standings on one generation of a board to absolute values computed from the event log
-- (moderation: consumers/moderation_apply.py), only if no apply moved a watermark since they were read.
-- KEYS[1] meta hash, then the generation's keys for the payload's periods (leaderboard.keys.Keys.generation)
-- ARGV[1] key base   ARGV[2] generation   ARGV[3] JSON payload
-- payload: {last=<bool>, periods=[{p=<period>, wm={partition=offset,...}, set=[score, member, ...],
--           lt=[member, "us:partition:offset", ...], rem=[member, ...]}], floor={partition=offset,...}}
--           (offset "" = absent; only the partitions of the players' events)
-- Scores are Redis scores the caller packed with the board's rule (leaderboard.aggregate.Rule.pack: the rank
-- key, MAXP - value on asc boards, and the tie-break), so nothing here depends on the order or aggregation.
-- On a ``last`` board (last=true) the period's "lt" hash follows: lt gives the event each set member now
-- shows (apply.lua compares later events with it), a removed member's mark goes.
-- The caller read each period's watermarks and the floor BEFORE reading the players' events from
-- PostgreSQL, and folded only events at or below them: an event applied after that read moved a
-- watermark (answer {"moved"}: read again), an event applied before it is in PostgreSQL (a batch is
-- stored there before it is applied here). So the absolute values never lose nor double an event. Only
-- the partitions holding the players' events are checked: a player's events share one partition (the
-- contract's key is the player id), so other partitions' moves cannot touch these members.
-- Returns {"ok", updates} | {"moved"} | {"gone"} (the generation is no longer written).
-- key_gen and the gkey_* functions come from the generated prelude (leaderboard.lua_scripts).
local base = ARGV[1]
local gen = ARGV[2]
local payload = cjson.decode(ARGV[3])
local writing = redis.call('HGET', KEYS[1], 'writing') or ''
local found = false
for g in string.gmatch(writing, '[^,]+') do if g == gen then found = true end end
if not found then return {'gone'} end
local g = key_gen(base, gen)
-- want: partition -> the offset the caller read ("" = the field was absent)
local function same(key, want)
  for pt, v in pairs(want) do
    if (redis.call('HGET', key, pt) or '') ~= v then return false end
  end
  return true
end
if not same(gkey_floor(g), payload.floor) then return {'moved'} end
for _, per in ipairs(payload.periods) do
  if not same(gkey_watermark(g, per.p), per.wm) then return {'moved'} end
end
local last = payload.last == true
local n = 0
for _, per in ipairs(payload.periods) do
  local zkey = gkey_board(g, per.p)
  if #per.set > 0 then
    redis.call('ZADD', zkey, unpack(per.set))
    n = n + #per.set / 2
  end
  if last and per.lt and #per.lt > 0 then redis.call('HSET', gkey_latest(g, per.p), unpack(per.lt)) end
  if #per.rem > 0 then
    n = n + redis.call('ZREM', zkey, unpack(per.rem))
    if last then redis.call('HDEL', gkey_latest(g, per.p), unpack(per.rem)) end
  end
end
return {'ok', n}
