-- Write or check one chunk of a board-period's standings: a rebuild's load and verify's comparison.
-- PostgreSQL scores the rows and the caller sends them as they come (consumers/checkpoints.stream_entries),
-- so no per-player work is left in Python; a chunk is ~1,000 entries, so a call holds Redis ~1-2 ms.
-- KEYS[1]  the period's sorted set      KEYS[2] (``last`` boards only) its hash player -> mark (keys.latest)
-- ARGV[1]  "add" | "check"               ARGV[2] entries "<score> [<mark> ]<n> <player>" back to back, where
--          <n> is the player id's length in bytes (any id passes unchanged); the mark only with KEYS[2]
-- add:   ZADD every entry (and HSET its mark); returns the number of entries.
-- check: compares each entry's score with ZMSCORE's; returns {matched, player, expected, found, ...}: how many
--        players are members of the set, then every differing entry (found is "" when the player is missing).
local CHUNK = 1000             -- unpack() pushes 2 * CHUNK values; Redis' Lua stack allows ~8000
local zkey, lkey = KEYS[1], KEYS[2]
local mode, blob = ARGV[1], ARGV[2]
local find, sub = string.find, string.sub
local pos, len = 1, #blob
local function next_entry()
  local s = find(blob, ' ', pos, true)
  local score = sub(blob, pos, s - 1)
  local mark
  if lkey then
    local m = find(blob, ' ', s + 1, true)
    mark = sub(blob, s + 1, m - 1)
    s = m
  end
  local n = find(blob, ' ', s + 1, true)
  local size = tonumber(sub(blob, s + 1, n - 1))
  local player = sub(blob, n + 1, n + size)
  pos = n + size + 1
  return score, mark, player
end

if mode == 'add' then
  local total = 0
  while pos <= len do
    local z, h = {}, {}
    while pos <= len and #z < 2 * CHUNK do
      local score, mark, player = next_entry()
      z[#z + 1] = score
      z[#z + 1] = player
      if mark then
        h[#h + 1] = player
        h[#h + 1] = mark
      end
    end
    redis.call('ZADD', zkey, unpack(z))
    if #h > 0 then redis.call('HSET', lkey, unpack(h)) end
    total = total + #z / 2
  end
  return total
end

-- check: one ZMSCORE per CHUNK players (a redis.call per player costs more than the lookups)
local out = {0}
while pos <= len do
  local players, scores = {}, {}
  while pos <= len and #players < CHUNK do
    local score, _, player = next_entry()
    players[#players + 1] = player
    scores[#scores + 1] = score
  end
  local found = redis.call('ZMSCORE', zkey, unpack(players))
  for i = 1, #players do
    local have = found[i]
    if have then out[1] = out[1] + 1 end
    if not (have and tonumber(have) == tonumber(scores[i])) then
      out[#out + 1] = players[i]
      out[#out + 1] = scores[i]
      out[#out + 1] = have or ''
    end
  end
end
return out
