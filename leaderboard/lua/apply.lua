-- Apply one chunk of canonical events to every period key of one board, exactly once.
-- The caller (consumers/redis_sink.py) bounds a call to ~500 sorted-set updates, in offset order per
-- partition, so the script holds Redis a few ms whatever the batch; each call moves its own watermarks.
-- KEYS[1]  meta hash of the board (fields: active, writing)
-- ARGV[1]  key base "<prefix>:{board}"   ARGV[2] JSON payload   ARGV[3] now in ms
-- payload: {agg="sum"|"best", gen=<optional target generation>, pos=[[partition, last offset, seen], ...],
--           periods=[{p=<period key>, parts=[{pt=<partition>, lo=<first offset>, hi=<last offset>, n=<events>,
--                                             after=<optional>, m=[player, ...], v=[points, ...], t=[tb, ...]}]}]}
-- pos covers the whole batch (also records this board ignores) and feeds the generation's position ("hi"),
-- which a rebuild must reach before it may flip. ``seen`` (optional): the partition's last offset the caller
-- saw this board accept; the ACTIVE generation's position below it means Redis lost acknowledged writes (a
-- failover to a replica that had not received them, a restart from an old AOF): reported as behind = 1.
-- Per key and partition the watermark decides: hi <= wm -> already applied (skip); lo > wm -> apply all;
-- otherwise the batch overlaps what was applied and the caller resends only offsets > wm ("partial").
-- A part may carry after=<last offset an earlier chunk of the same batch had for this slot>: while the
-- watermark is below it, that chunk has not landed, so this one is a partial too (never skip records).
-- Returns {"ok", applied_updates, behind, partials...} or {"nometa"}; a partial is "gen|period|partition|wm".
-- Each slot costs one ZMSCORE and one variadic ZADD per CHUNK players, not two calls per player: the call
-- overhead, not the skiplist, dominated Redis' CPU (docs/benchmarks.md).
local SPAN = 16777216          -- 2^24, leaderboard.scoring.TIME_SPAN
local MAXP = 536870911         -- leaderboard.scoring.MAX_SCORE
local CHUNK = 1000             -- unpack() pushes 2 * CHUNK values; Redis' Lua stack allows ~8000
local base = ARGV[1]
local payload = cjson.decode(ARGV[2])
local now = ARGV[3]
local gens = {}
if payload.gen then
  gens[1] = tostring(payload.gen)
else
  local writing = redis.call('HGET', KEYS[1], 'writing')
  if not writing then return {'nometa'} end
  for g in string.gmatch(writing, '[^,]+') do gens[#gens + 1] = g end
end
local best = payload.agg == 'best'
local applied = 0
local out = {'ok', 0, 0}
local active = redis.call('HGET', KEYS[1], 'active')
for _, gen in ipairs(gens) do
  local g = base .. ':g' .. gen
  local floors = {}
  for _, per in ipairs(payload.periods) do
    local zkey = g .. ':' .. per.p
    local wkey = g .. ':wm:' .. per.p
    local events = 0
    for _, part in ipairs(per.parts) do
      local pt = tostring(part.pt)
      local fl = floors[pt]
      if fl == nil then
        fl = tonumber(redis.call('HGET', g .. ':floor', pt) or '-1')
        floors[pt] = fl
      end
      local wm = tonumber(redis.call('HGET', wkey, pt) or '-1')
      if fl > wm then wm = fl end
      if part.hi <= wm then
        -- already applied: redelivery, replay or a zombie
      elseif part.lo > wm and (part.after == nil or wm >= part.after) then
        local m, v, t = part.m, part.v, part.t
        local count = #m
        for i = 1, count, CHUNK do
          local j = math.min(i + CHUNK - 1, count)
          local olds = redis.call('ZMSCORE', zkey, unpack(m, i, j))
          local args = {}
          for k = i, j do
            local pts, tb, old = v[k], t[k], olds[k - i + 1]
            if old then
              old = tonumber(old)
              local opts = math.floor(old / SPAN)
              local otb = old - opts * SPAN
              if best then
                if opts > pts or (opts == pts and otb >= tb) then pts = opts; tb = otb end
              else
                pts = opts + pts
                if otb < tb then tb = otb end
              end
            end
            if pts > MAXP then pts = MAXP end
            args[#args + 1] = pts * SPAN + tb
            args[#args + 1] = m[k]
          end
          redis.call('ZADD', zkey, unpack(args))
        end
        events = events + part.n
        applied = applied + count
        redis.call('HSET', wkey, pt, part.hi)
      else
        out[#out + 1] = gen .. '|' .. per.p .. '|' .. pt .. '|' .. wm
      end
    end
    if events > 0 then
      redis.call('SADD', g .. ':periods', per.p)
      redis.call('HINCRBY', g .. ':st:' .. per.p, 'events', events)
      redis.call('HSET', g .. ':st:' .. per.p, 'updated_ms', now)
    end
  end
  for _, pos in ipairs(payload.pos) do
    local pt = tostring(pos[1])
    local hi = tonumber(redis.call('HGET', g .. ':hi', pt) or '-1')
    if pos[3] and gen == active and hi < pos[3] then out[3] = 1 end
    if pos[2] > hi then redis.call('HSET', g .. ':hi', pt, pos[2]) end
  end
end
out[2] = applied
return out
