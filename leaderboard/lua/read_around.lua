-- Players around one player: ARGV[3] player id, ARGV[4] radius, ARGV[5] names hash key.
-- Window as leaderboard.ranking.window (keep in step): min(2r+1, n) rows containing the player, filled from
-- the other side at the edges.
-- JSON: {s: nometa} | {s: absent, ...} | {s: missing, gen, updated, total}
--     | {s: ok, gen, updated, total, first_rank, first, index, rows, names} (first, index: 0-based).
local gen, g, z, updated = open()
if not gen then return NOMETA end
local total = redis.call('ZCARD', z)
if total == 0 then return absent(gen, updated) end
local idx = redis.call('ZREVRANK', z, ARGV[3])
if not idx then return cjson.encode({s = 'missing', gen = gen, updated = updated, total = total}) end
local r = tonumber(ARGV[4])
local count = 2 * r + 1
if count > total then count = total end
local first = idx - r
if first > total - count then first = total - count end
if first < 0 then first = 0 end
local rows = redis.call('ZRANGE', z, first, first + count - 1, 'REV', 'WITHSCORES')
return cjson.encode({s = 'ok', gen = gen, updated = updated, total = total, first_rank = rank_of(z, rows[2]),
                     first = first, index = idx, rows = rows, names = names_of(rows, ARGV[5])})
