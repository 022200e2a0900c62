-- Top of a board-period: ARGV[2] offset, ARGV[3] limit.
-- JSON: {s: nometa} | {s: stale, gen} | {s: absent, gen, updated}
--     | {s: ok, gen, updated, total, first_rank, rows: [member, score, ...], names}.
local gen, updated, total = open_period()
if not gen then return updated end
local z = KEYS[2]
local off = tonumber(ARGV[2])
local rows = redis.call('ZRANGE', z, off, off + tonumber(ARGV[3]) - 1, 'REV', 'WITHSCORES')
local first = 0
if #rows > 0 then first = rank_of(z, rows[2]) end
return cjson.encode({s = 'ok', gen = gen, updated = updated, total = total, first_rank = first, rows = rows,
                     names = row_names(rows)})
