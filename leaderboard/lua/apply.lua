-- Apply one chunk of canonical events to every period key of one board, exactly once.
-- The caller (consumers/redis_sink.py) bounds a call to ~500 sorted-set updates, in offset order per
-- partition, so the script holds Redis a few ms whatever the batch; each call moves its own watermarks.
-- KEYS[1]  meta hash of the board (fields: active, writing), then every key of every generation written
--          (leaderboard.keys.Keys.generation for the payload's periods): all declared, as Redis Cluster wants
-- ARGV[1]  key base "<prefix>:{board}"   ARGV[2] JSON payload   ARGV[3] now in ms
-- ARGV[4]  without payload.gen: the generations the caller declared keys for (meta's "writing" as it read
--          it); another "writing" now (a rebuild started or flipped) -> {"stale", writing}: declare again.
-- payload: {agg="sum"|"best"|"last", asc=<bool>, gen=<optional target generation>, def=<optional version>,
--           pos=[[partition, last offset, seen], ...],
--           periods=[{p=<period key>, parts=[{pt=<partition>, lo=<first offset>, hi=<last offset>, n=<events>,
--                                             after=<optional>, m=[player, ...], v=[value, ...], t=[tb, ...],
--                                             u=[us, ...], q=[partition, ...], o=[offset, ...]}]}]}
-- v are values (the board's points or scores), folded per player by leaderboard.aggregate; u/q/o (``last``
-- boards only) are the microsecond instant and Kafka position of each player's latest event.
-- Redis stores rank keys (value on desc boards, MAXP - value on asc ones: higher is always better) and the
-- same merges as leaderboard.aggregate.Rule.merge: sum adds values (saturating) and keeps the latest
-- instant's tie-break; best keeps the higher key, of equal keys the earlier (larger) tie-break; last keeps
-- the event latest by (us, partition, offset), remembered in the period's "lt" hash.
-- pos covers the whole batch (also records this board ignores) and feeds the generation's position ("hi"),
-- which a rebuild must reach before it may flip. ``seen`` (optional): the partition's last offset the caller
-- saw this board accept; the ACTIVE generation's position below it means Redis lost acknowledged writes (a
-- failover to a replica that had not received them, a restart from an old AOF): reported as behind = 1.
-- Per key and partition the watermark decides: hi <= wm -> already applied (skip); lo > wm -> apply all;
-- otherwise the batch overlaps what was applied and the caller resends only offsets > wm ("partial").
-- A part may carry after=<last offset an earlier chunk of the same batch had for this slot>: while the
-- watermark is below it, that chunk has not landed, so this one is a partial too (never skip records).
-- def (boards managed at runtime, docs/adr/0019): the definition version the caller's board has. Without
-- payload.gen, meta's "def" ('' for a board of the boards file, 'retired' once retired) must equal it, else
-- the call is refused whole with {"defstale", live definition version} and the caller reloads the boards.
-- The definition fence is checked before the writing one: a call under another rule is refused whatever
-- keys it declared, and a flip changes both.
-- Returns {"ok", applied_updates, behind, partials...}, {"nometa"}, {"defstale", def} or {"stale", writing};
-- a partial is "gen|period|partition|wm". Only "ok" wrote anything.
-- Each slot costs one variadic ZADD per CHUNK players (sum: after one ZMSCORE; last: after one HMGET of
-- "lt"), not two calls per player. A best board's merge (the higher score wins) is ZADD GT itself, so it
-- reads nothing. On large sets the skiplist now dominates Redis' CPU (bench/apply_cost.py,
-- docs/benchmarks.md); the guard's per-command check costs nothing measurable there.
-- SPAN, MAXP and the key_*/gkey_* functions come from the generated prelude (leaderboard.lua_scripts).
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
  -- The definition fence (boards managed at runtime): a live write made under another definition version
  -- than the board's live one is refused whole; the caller reloads the definitions and retries.
  local def = redis.call('HGET', KEYS[1], 'def') or ''
  if def ~= tostring(payload.def or '') then return {'defstale', def} end
  if writing ~= ARGV[4] then return {'stale', writing} end
  for g in string.gmatch(writing, '[^,]+') do gens[#gens + 1] = g end
end
local agg = payload.agg
local asc = payload.asc == true
local call = redis.call
local floor, format = math.floor, string.format
-- The rank key of a value: saturated at MAXP, flipped on asc boards (higher is always better).
local function key_of(value)
  if value > MAXP then value = MAXP end
  if asc then return MAXP - value end
  return value
end
local function later(u1, q1, o1, u2, q2, o2)
  if u1 ~= u2 then return u1 > u2 end
  if q1 ~= q2 then return q1 > q2 end
  return o1 > o2
end
local applied = 0
local out = {'ok', 0, 0}
local active = call('HGET', KEYS[1], 'active')
for _, gen in ipairs(gens) do
  local g = key_gen(base, gen)
  local floors = {}
  for _, per in ipairs(payload.periods) do
    local zkey = gkey_board(g, per.p)
    local wkey = gkey_watermark(g, per.p)
    local lkey = gkey_latest(g, per.p)
    local events = 0
    for _, part in ipairs(per.parts) do
      local pt = tostring(part.pt)
      local fl = floors[pt]
      if fl == nil then
        fl = tonumber(call('HGET', gkey_floor(g), pt) or '-1')
        floors[pt] = fl
      end
      local wm = tonumber(call('HGET', wkey, pt) or '-1')
      if fl > wm then wm = fl end
      if part.hi <= wm then
        -- already applied: redelivery, replay or a zombie
      elseif part.lo > wm and (part.after == nil or wm >= part.after) then
        local m, v, t = part.m, part.v, part.t
        local count = #m
        for i = 1, count, CHUNK do
          local j = math.min(i + CHUNK - 1, count)
          local args = {}
          local n = 0
          if agg == 'best' then
            -- The higher score wins, of equal keys the larger tie-break: exactly ZADD GT, no read needed.
            n = 1
            args[1] = 'GT'
            for k = i, j do
              args[n + 1] = key_of(v[k]) * SPAN + t[k]
              args[n + 2] = m[k]
              n = n + 2
            end
          elseif agg == 'last' then
            local u, q, o = part.u, part.q, part.o
            local lts = call('HMGET', lkey, unpack(m, i, j))
            local marks = {}
            local nm = 0
            for k = i, j do
              local lt = lts[k - i + 1]
              local newer = true
              if lt then
                local ou, oq, oo = string.match(lt, '^(%d+):(-?%d+):(%d+)$')
                newer = later(u[k], q[k], o[k], tonumber(ou), tonumber(oq), tonumber(oo))
              end
              if newer then
                args[n + 1] = key_of(v[k]) * SPAN + t[k]
                args[n + 2] = m[k]
                n = n + 2
                marks[nm + 1] = m[k]
                marks[nm + 2] = format('%.0f:%.0f:%.0f', u[k], q[k], o[k])
                nm = nm + 2
              end
            end
            if nm > 0 then call('HSET', lkey, unpack(marks, 1, nm)) end
          else
            -- sum: add the values (saturating), keep the smaller tie-break; a member left as it was is
            -- not rewritten (ZADD of its own score changes nothing).
            local olds = call('ZMSCORE', zkey, unpack(m, i, j))
            for k = i, j do
              local value, tb, old = v[k], t[k], olds[k - i + 1]
              if old then
                old = tonumber(old)
                local okey = floor(old / SPAN)
                local otb = old - okey * SPAN
                if asc then value = value + (MAXP - okey) else value = value + okey end
                if otb < tb then tb = otb end
              end
              local score = key_of(value) * SPAN + tb
              if score ~= old then
                args[n + 1] = score
                args[n + 2] = m[k]
                n = n + 2
              end
            end
          end
          if n > 0 then call('ZADD', zkey, unpack(args, 1, n)) end
        end
        events = events + part.n
        applied = applied + count
        call('HSET', wkey, pt, part.hi)
      else
        out[#out + 1] = gen .. '|' .. per.p .. '|' .. pt .. '|' .. wm
      end
    end
    if events > 0 then
      call('SADD', gkey_periods(g), per.p)
      call('HINCRBY', gkey_stats(g, per.p), 'events', events)
      call('HSET', gkey_stats(g, per.p), 'updated_ms', now)
    end
  end
  for _, pos in ipairs(payload.pos) do
    local pt = tostring(pos[1])
    local hi = tonumber(call('HGET', gkey_position(g), pt) or '-1')
    if pos[3] and gen == active and hi < pos[3] then out[3] = 1 end
    if pos[2] > hi then call('HSET', gkey_position(g), pt, pos[2]) end
  end
end
out[2] = applied
return out
