-- Players around one player: ARGV[3] player id, ARGV[4] radius, ARGV[5] names hash key.
-- Window as leaderboard.ranking.window: min(2r+1, n) rows containing the player, filled from the other
-- side at the edges. Returns {'nometa'} | {'absent', gen, updated} | {'missing', gen, updated, total}
--       | {'ok', gen, updated, total, first_rank, first, index, rows, names} (first, index: 0-based).
local gen, g, z, updated = open()
if not gen then return {'nometa'} end
local total = redis.call('ZCARD', z)
if total == 0 then return {'absent', gen, updated} end
local idx = redis.call('ZREVRANK', z, ARGV[3])
if not idx then return {'missing', gen, updated, total} end
local r = tonumber(ARGV[4])
local count = 2 * r + 1
if count > total then count = total end
local first = idx - r
if first > total - count then first = total - count end
if first < 0 then first = 0 end
local rows = redis.call('ZRANGE', z, first, first + count - 1, 'REV', 'WITHSCORES')
return {'ok', gen, updated, total, rank_of(z, rows[2]), first, idx, rows, names_of(rows, ARGV[5])}
