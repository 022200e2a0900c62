-- Players around one player: ARGV[2] player id, ARGV[3] radius.
-- Window as leaderboard.ranking.window (keep in step): min(2r+1, n) rows containing the player, filled from
-- the other side at the edges.
-- JSON: {s: nometa} | {s: stale, gen} | {s: absent, ...} | {s: missing, gen, updated, total}
--     | {s: ok, gen, updated, total, first_rank, first, index, rows, names} (first, index: 0-based).
local gen, updated, total = open_period()
if not gen then return updated end
local z = KEYS[2]
local idx = redis.call('ZREVRANK', z, ARGV[2])
if not idx then return missing(gen, updated, total) end
local r = tonumber(ARGV[3])
local count = 2 * r + 1
if count > total then count = total end
local first = idx - r
if first > total - count then first = total - count end
if first < 0 then first = 0 end
local rows = redis.call('ZRANGE', z, first, first + count - 1, 'REV', 'WITHSCORES')
return cjson.encode({s = 'ok', gen = gen, updated = updated, total = total, first_rank = rank_of(z, rows[2]),
                     first = first, index = idx, rows = rows, names = row_names(rows)})
